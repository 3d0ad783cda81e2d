"""Near-duplicate images: re-encoded, resized and PNG<->JPEG copies of real photos are found
with a Hamming threshold, distinct photos are not, and every drop names its kept sample."""

from __future__ import annotations

import json
import math
import os
import random
import re

import imagehash
import numpy as np
import pytest
from helpers import dct_phash, dedup_drops, read_jsonl, run_recipe, write_recipe
from PIL import Image, ImageDraw, ImageEnhance

from dj_synth.operators import media
from dj_synth.operators.batch import SampleRef
from dj_synth.operators.hamming_index import HammingIndex
from dj_synth.operators.image_fingerprint import (
    DECODE_SIDE,
    low_frequencies,
    phash_hex,
    thumbnail,
    thumbnail_distance,
)
from dj_synth.operators.media import Axis, Reduced, decode_reduced

skimage_data = pytest.importorskip("skimage.data")
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "horse", "page",
          "text", "moon", "retina", "hubble_deep_field", "brick", "grass", "gravel",
          "motorcycle_left", "clock_motion", "cell"]  # fmt: skip


def _photo(name: str) -> Image.Image:
    folder = os.path.dirname(skimage_data.__file__)
    for ext in ("png", "jpg"):
        path = os.path.join(folder, f"{name}.{ext}")
        if os.path.exists(path):
            return Image.open(path).convert("RGB")
    raise FileNotFoundError(name)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Each base photo, then its variants (byte copy, quality 60-95, 0.5x-2x, PNG<->JPEG), shuffled."""
    root = tmp_path_factory.mktemp("near")
    rng = random.Random(0)
    rows, truth = [], {}
    for name in PHOTOS:
        img = _photo(name)
        base = root / f"{name}.jpg"
        img.save(base, quality=90)
        copy = root / f"{name}_copy.jpg"
        copy.write_bytes(base.read_bytes())  # byte-identical
        variants = [copy]
        for q in (60, 95):
            p = root / f"{name}_q{q}.jpg"
            img.save(p, quality=q)
            variants.append(p)
        for scale in (0.5, 2.0):
            p = root / f"{name}_x{scale}.jpg"
            img.resize(
                (int(img.width * scale), int(img.height * scale)), Image.Resampling.LANCZOS
            ).save(p, quality=85)
            variants.append(p)
        p = root / f"{name}.png"
        img.save(p)
        variants.append(p)
        rows.append({"id": name, "text": f"<__dj__image> {name}", "images": [str(base)]})
        for v in variants:
            vid = f"{v.stem}_{v.suffix[1:]}"
            rows.append({"id": vid, "text": f"<__dj__image> {vid}", "images": [str(v)]})
            truth[vid] = name
    # bases stay first so the kept sample is the base; variants follow in random order
    bases = [r for r in rows if r["id"] in PHOTOS]
    others = [r for r in rows if r["id"] not in PHOTOS]
    rng.shuffle(others)
    rows = bases + others + [{"id": "no-image-1", "text": "x"}, {"id": "no-image-2", "text": "x"}]
    data = root / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root, data, truth


def _run(root, data, name, threshold, np_=2):
    recipe = write_recipe(
        root / f"{name}.yaml", dataset_path=str(data), export_path=str(root / name / "res.jsonl"),
        np=np_, process=[{"image_deduplicator": {"method": "phash", "hamming_threshold": threshold}}],
    )  # fmt: skip
    return run_recipe(recipe)


def test_threshold_finds_variants_and_spares_distinct_photos(planted):
    root, data, truth = planted
    s = _run(root, data, "t10", 10)
    kept = [r["id"] for r in read_jsonl(s["export_files"][0])]
    dropped = read_jsonl(root / "t10" / "filtered" / "00_image_deduplicator.jsonl")
    # every base photo survives (they are distinct), image-less samples are never deduplicated
    assert set(PHOTOS) | {"no-image-1", "no-image-2"} <= set(kept)
    # recall: every planted variant is found, and each names its own base photo
    found = {r["sample"]["id"]: r["reason"] for r in dropped}
    assert len(found) == len(truth) == 108  # recall 100%: variants are within 4 bits here
    for variant, reason in found.items():
        assert reason.startswith(f"near-duplicate of id='{truth[variant]}'"), (variant, reason)
        m = re.search(r"hamming distance (\d+), thumbnail distance ([\d.]+)$", reason)
        assert m and int(m.group(1)) <= 10 and float(m.group(2)) <= 1.4, reason
    assert set(found) <= set(truth)  # precision: no distinct photo is dropped
    # exact matching (Data-Juicer's) misses some re-encodings that the threshold finds
    _run(root, data, "t0", 0)
    exact_found = {
        r["sample"]["id"]
        for r in read_jsonl(root / "t0" / "filtered" / "00_image_deduplicator.jsonl")
    }
    assert exact_found <= set(found) and {f"{p}_copy_jpg" for p in PHOTOS} <= exact_found
    assert len(exact_found) == 99  # measured: 9 re-encodings change a bit or more of the pHash
    # deterministic across np
    again = _run(root, data, "t10_np1", 10, np_=1)
    assert open(again["export_files"][0], "rb").read() == open(s["export_files"][0], "rb").read()


def test_index_matches_brute_force():
    rng = random.Random(1)
    base = [rng.getrandbits(64) for _ in range(200)]
    keys = []
    for _ in range(2000):
        h = rng.choice(base)
        for _ in range(rng.randrange(12)):
            h ^= 1 << rng.randrange(64)
        keys.append(h)
    for t in (1, 3, 8):
        index = HammingIndex(t)
        kept: list[int] = []
        for i, h in enumerate(keys):
            reason = index.admit((f"{h:016x}",), SampleRef(i, "x", i), None)
            brute = next((k for k in kept if (keys[k] ^ h).bit_count() <= t), None)
            if brute is None:
                assert reason is None
                kept.append(i)
            else:
                assert reason is not None and f"#{brute})" in reason


# -- verified near-duplicates: flat images, crops and colour jitter ----------------------


def _flat(seed: int, side: int = 64) -> Image.Image:
    """A gradient between two random colours and 1-3 random shapes (the kind of image on
    which pHash puts distinct pictures within a few bits of each other)."""
    rng = random.Random(seed)
    c0, c1 = (np.array([rng.randint(0, 255) for _ in range(3)], np.float32) for _ in range(2))
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32) / side
    t = xs * math.cos(angle) + ys * math.sin(angle)
    t = (t - t.min()) / (t.max() - t.min())
    img = Image.fromarray((c0 + (c1 - c0) * t[..., None]).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(1, 3)):
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        x0, y0 = rng.randint(0, side - 8), rng.randint(0, side - 8)
        x1, y1 = x0 + rng.randint(6, side // 2), y0 + rng.randint(6, side // 2)
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    return img


def _variant(img: Image.Image, kind: str) -> Image.Image:
    w, h = img.size
    if kind == "crop":  # 3% off each side
        return img.crop((2, 2, w - 2, h - 2))
    if kind == "jitter":
        img = ImageEnhance.Brightness(img).enhance(1.1)
        img = ImageEnhance.Contrast(img).enhance(0.9)
        return ImageEnhance.Color(img).enhance(1.15)
    if kind == "x2":
        return img.resize((2 * w, 2 * h), Image.Resampling.LANCZOS)
    return img  # "q70" and "png": the same pixels, another encoding


def _phash(path) -> int:
    """The operator's pHash of one image file (to know which pairs the hash can find)."""
    return int(phash_hex(low_frequencies(decode_reduced(str(path), DECODE_SIDE))[None])[0], 16)


@pytest.fixture(scope="module")
def flat_corpus(tmp_path_factory):
    """400 distinct flat images, then variants of the first 40 (crop, colour jitter, 2x,
    JPEG q70, PNG), each variant after all originals."""
    root = tmp_path_factory.mktemp("flat")
    rows, originals, variants = [], [], {}
    for i in range(400):
        path = root / f"o{i}.jpg"
        _flat(i).save(path, quality=90)
        originals.append(path)
        rows.append({"id": f"o{i}", "text": "x", "images": [str(path)]})
    for i in range(40):
        for kind in ("crop", "jitter", "x2", "q70", "png"):
            path = root / f"v{i}_{kind}.{'png' if kind == 'png' else 'jpg'}"
            _variant(_flat(i), kind).save(path, **({} if kind == "png" else {"quality": 70}))
            rows.append({"id": f"v{i}_{kind}", "text": "x", "images": [str(path)]})
            variants[f"v{i}_{kind}"] = (f"o{i}", path)
    return rows, originals, variants


def test_verified_near_duplicates_keep_distinct_flat_images(flat_corpus):
    rows, originals, variants = flat_corpus
    t = 8
    refs = [_phash(p) for p in originals]
    close = [(i, j) for i in range(400) for j in range(i + 1, 400)
             if (refs[i] ^ refs[j]).bit_count() <= t]  # fmt: skip
    assert len(close) >= 5  # distinct originals within the threshold: the test has teeth
    # planted variants within the threshold of their original (the hash can find them)
    findable = {
        vid: orig
        for vid, (orig, path) in variants.items()
        if (_phash(path) ^ refs[int(orig[1:])]).bit_count() <= t
    }
    assert len(findable) >= 180  # of 200: most crops stay within 8 bits too

    def dropped(**args):
        return dedup_drops("image_deduplicator", rows, hamming_threshold=t, **args)

    hash_only = dropped(max_thumbnail_distance=None)
    assert {f"o{j}" for _, j in close} <= set(hash_only)  # the hash alone drops them
    verified = dropped()
    assert not [sid for sid in verified if sid.startswith("o")]  # every original is kept
    for vid, orig in findable.items():  # every findable variant is caught, by its original
        assert verified.get(vid, "").startswith(f"near-duplicate of id='{orig}'"), vid
    for vid, reason in verified.items():  # the others: caught through a kept sibling
        family = vid.split("_")[0][1:]
        assert re.match(rf"near-duplicate of id='(o{family}|v{family}_\w+)'", reason), reason


def test_phash_of_a_whole_image_is_the_dct_of_its_luma(tmp_path):
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(32, 32), (37, 53), (100, 64), (9, 250)]):
        noise = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
        smooth = np.asarray(Image.fromarray(noise).resize((3, 2)).resize((w, h), Image.BICUBIC))
        for rgb in (noise, smooth):
            path = tmp_path / f"{i}.png"
            Image.fromarray(rgb).save(path)  # PNG: decoded in full, every pixel one pixel
            ours = phash_hex(low_frequencies(decode_reduced(str(path), DECODE_SIDE))[None])
            assert ours == [dct_phash(rgb)]
    flat = Reduced.whole(np.full((20, 30, 3), 77, np.uint8))  # every AC term is 0
    assert phash_hex(low_frequencies(flat)[None]) == ["8000000000000000"]


def _photo_jpeg(tmp_path, name: str, size: tuple[int, int], stem: str = "", **save) -> str:
    """A photo cut to a size that is not a multiple of 8 (partial pixels at 1/8), as JPEG."""
    img = _photo(name)
    path = tmp_path / f"{name}_{size[0]}x{size[1]}{stem}.jpg"
    img.crop((0, 0, *size)).save(path, quality=95, **save)
    return str(path)


def test_phash_hardly_depends_on_the_decode_scale(tmp_path):
    """The 1/8 decode and the full decode of a JPEG give (almost) the same low frequencies,
    where a 32x32 resize of each decode (imagehash's pHash) does not."""
    ours, theirs = [], []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "horse"):
        path = _photo_jpeg(tmp_path, name, (427, 283))
        small, full = decode_reduced(path, DECODE_SIDE), decode_reduced(path, 10**6)
        assert small.pixels.shape[:2] == (36, 54) and full.pixels.shape[:2] == (283, 427)
        lows = [low_frequencies(img) for img in (small, full)]
        assert np.abs(lows[0] - lows[1]).max() < 0.25  # grey levels (measured <= 0.14)
        a, b = (int(h, 16) for h in phash_hex(np.stack(lows)))
        ours.append((a ^ b).bit_count())
        a, b = (int(str(imagehash.phash(Image.fromarray(i.pixels))), 16) for i in (small, full))
        theirs.append((a ^ b).bit_count())
    assert max(ours) <= 2 and sum(ours) <= 3  # measured: 2 bits in one of the 6 photos
    assert sum(theirs) >= 20  # measured 28 bits: the test has teeth


@pytest.mark.parametrize("orientation", range(2, 9))
def test_exif_orientation_turns_the_hash_inputs(tmp_path, orientation):
    """A turned or mirrored JPEG's low frequencies are those of the upright pixels with the
    DCT's symmetries applied (a mirror flips the sign of the odd frequencies), also where
    the 1/8 decode ends in a partial pixel; its thumbnail is the thumbnail turned."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    raw = decode_reduced(_photo_jpeg(tmp_path, "chelsea", (203, 131)), DECODE_SIDE)
    turned = decode_reduced(
        _photo_jpeg(tmp_path, "chelsea", (203, 131), "_turned", exif=exif.tobytes()), DECODE_SIDE
    )
    transpose, flip_rows, flip_cols = media._EXIF_ORIENT[orientation]
    low = low_frequencies(raw)
    thumb = np.frombuffer(thumbnail(raw), np.uint8).reshape(8, 8, 3).astype(int)
    odd = (-1.0) ** np.arange(8)
    if transpose:
        low, thumb = low.T, thumb.transpose(1, 0, 2)
    if flip_rows:
        low, thumb = low * odd[:, None], thumb[::-1]
    if flip_cols:
        low, thumb = low * odd[None, :], thumb[:, ::-1]
    np.testing.assert_allclose(low_frequencies(turned), low, atol=1e-9)
    got = np.frombuffer(thumbnail(turned), np.uint8).reshape(8, 8, 3).astype(int)
    assert np.abs(got - thumb).max() <= 1  # the same cell means, rounded


def test_axis_extents_put_the_partial_pixel_where_it_is():
    left, right = Axis(full=203, scale=8).extents(26)
    assert (left[0], right[0], left[-1], right[-1]) == (0, 8, 200, 203)
    left, right = Axis(full=203, scale=8, reversed=True).extents(26)
    assert (left[0], right[0], left[-1], right[-1]) == (0, 3, 195, 203)
    assert (right - left).sum() == 203


def test_thumbnail_distance_worked_examples():
    board = np.indices((8, 8)).sum(axis=0) % 2  # checkerboard of 0/1, 8x8
    rgb = lambda a: np.repeat(a[..., None], 3, axis=2).astype(np.uint8).tobytes()  # noqa: E731
    low_high = rgb(50 + 100 * board)  # mean 100, std 50: normalised cells are -1 / +1
    assert thumbnail_distance(low_high, low_high) == 0.0
    # +10 levels everywhere: the same normalised cells; the means differ by 10 / std 50
    assert thumbnail_distance(low_high, rgb(60 + 100 * board)) == pytest.approx(0.2)
    # the inverse board: every normalised cell flips from -1 to +1 or back
    assert thumbnail_distance(low_high, rgb(150 - 100 * board)) == pytest.approx(2.0)
    # flat black vs flat white: std floored at 8, means 255 apart
    assert thumbnail_distance(rgb(0 * board), rgb(0 * board + 255)) == pytest.approx(255 / 8)
