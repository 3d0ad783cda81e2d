"""operators/media.py: header reads stay header-only, decodes give the RGB a person would see."""

from __future__ import annotations

import resource
import struct
import sys
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from dj_synth.operators import media
from dj_synth.operators.media import (
    ImageHeader,
    MediaCache,
    MediaError,
    decode_rgb,
    read_header,
)

BLUE, RED = (0, 0, 255), (255, 0, 0)


@pytest.fixture
def load_calls(monkeypatch):
    """Records every pixel decode (ImageFile.load) while the test runs."""
    calls: list[str] = []
    original = ImageFile.ImageFile.load

    def spy(self, *args, **kwargs):
        calls.append(self.format)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return calls


def _near(pixel, expected, tol=12):
    return all(abs(a - b) <= tol for a, b in zip(pixel, expected))


def _marked(width=40, height=20):
    """Red landscape image with a blue 10x10 square in its top-left corner."""
    img = Image.new("RGB", (width, height), RED)
    img.paste(BLUE, (0, 0, 10, 10))
    return img


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _patch_ihdr(png: bytes, width: int, height: int) -> bytes:
    """The same PNG with its IHDR claiming width x height (CRC fixed)."""
    b = bytearray(png)
    assert b[12:16] == b"IHDR"
    b[16:24] = struct.pack(">II", width, height)
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
    return bytes(b)


# -- header: no pixel decode ----------------------------------------------------


def test_header_jpeg_reads_no_pixels(tmp_path, load_calls):
    path = tmp_path / "a.jpg"
    _marked(64, 48).save(path, quality=90)
    assert read_header(str(path)) == ImageHeader(64, 48, "JPEG", "RGB")
    assert MediaCache().header(str(path)) == ImageHeader(64, 48, "JPEG", "RGB")
    assert load_calls == []


def test_header_png_reads_no_pixels(tmp_path, load_calls):
    path = tmp_path / "a.png"
    _marked(64, 48).save(path)
    assert read_header(str(path)) == ImageHeader(64, 48, "PNG", "RGB")
    assert load_calls == []


def test_header_png_size_and_format(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGBA", (7, 5)).save(path)
    assert read_header(str(path)) == ImageHeader(7, 5, "PNG", "RGBA")


# -- EXIF orientation ------------------------------------------------------------


@pytest.mark.parametrize("ext", ["jpg", "png"])
def test_exif_orientation_6_swaps_header_and_rotates_pixels(tmp_path, ext):
    path = str(tmp_path / f"rot.{ext}")
    _marked(40, 20).save(path, exif=_exif(6), **({"quality": 95} if ext == "jpg" else {}))
    head = read_header(path)
    assert (head.width, head.height) == (20, 40)
    img = MediaCache().rgb(path)
    assert img.mode == "RGB" and img.size == (20, 40)
    # orientation 6 = rotate 90 degrees clockwise: the top-left square moves top-right
    assert _near(img.getpixel((15, 2)), BLUE)
    assert _near(img.getpixel((2, 2)), RED)
    assert _near(img.getpixel((15, 35)), RED)


def test_exif_orientation_1_keeps_size(tmp_path):
    path = str(tmp_path / "plain.jpg")
    _marked(40, 20).save(path, exif=_exif(1), quality=95)
    assert (read_header(path).width, read_header(path).height) == (40, 20)
    assert decode_rgb(path).size == (40, 20)


def test_small_decode_is_rotated_too(tmp_path):
    path = str(tmp_path / "rot.jpg")
    _marked(400, 200).save(path, exif=_exif(6), quality=95)
    img = MediaCache().small(path, 16)
    assert img.mode == "RGB" and img.width < img.height


def test_small_decode_of_large_jpeg_is_reduced(tmp_path):
    path = str(tmp_path / "big.jpg")
    Image.new("RGB", (1600, 1200), RED).save(path)
    img = MediaCache().small(path, 64)
    assert img.mode == "RGB"
    assert 64 <= min(img.size) < 1200  # DCT scaling: 1/8 at most, so 200x150
    assert img.size == (200, 150)


# -- colour modes ----------------------------------------------------------------


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = str(tmp_path / "cmyk.jpg")
    Image.new("CMYK", (10, 10), (0, 255, 255, 0)).save(path)  # pure red in CMYK
    assert read_header(path).mode == "CMYK"
    img = decode_rgb(path)
    assert img.mode == "RGB"
    assert _near(img.getpixel((5, 5)), RED)


def test_palette_png_transparency_is_composited_on_white(tmp_path):
    path = str(tmp_path / "pal.png")
    img = Image.new("P", (10, 10), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # index 0 black, index 1 red
    img.putpixel((0, 0), 1)
    img.save(path, transparency=0)  # index 0 fully transparent
    out = decode_rgb(path)
    assert out.mode == "RGB"
    assert out.getpixel((5, 5)) == (255, 255, 255)  # transparent black -> white, not black
    assert out.getpixel((0, 0)) == RED


def test_rgba_half_transparent_over_white(tmp_path):
    path = str(tmp_path / "rgba.png")
    Image.new("RGBA", (4, 4), (0, 0, 0, 128)).save(path)
    r, g, b = decode_rgb(path).getpixel((1, 1))
    assert r == g == b and 120 <= r <= 135


def test_16bit_grayscale_scaled_to_8bit(tmp_path):
    path = str(tmp_path / "g16.png")
    Image.fromarray(np.array([[0, 65535], [32768, 1028]], dtype=np.uint16)).save(path)
    assert read_header(path).mode == "I;16"
    img = decode_rgb(path)
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (0, 0, 0)
    assert img.getpixel((1, 0)) == (255, 255, 255)  # not clipped garbage, not 65535 % 256
    assert img.getpixel((0, 1)) == (127, 127, 127)
    assert img.getpixel((1, 1)) == (4, 4, 4)


def test_animated_gif_gives_first_frame(tmp_path):
    path = str(tmp_path / "anim.gif")
    palette = [0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759
    frames = []
    for index in (1, 2):  # red frame, then green frame
        frame = Image.new("P", (10, 10), index)
        frame.putpalette(palette)
        frames.append(frame)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(path).n_frames == 2
    assert read_header(path) == ImageHeader(10, 10, "GIF", "P")
    img = decode_rgb(path)
    assert img.mode == "RGB" and img.getpixel((3, 3)) == RED


# -- bad files ---------------------------------------------------------------------


def test_truncated_jpeg_header_ok_but_rgb_fails(tmp_path):
    path = tmp_path / "trunc.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    cache = MediaCache()
    assert cache.header(str(path)).width == 400
    with pytest.raises(MediaError, match="trunc.jpg"):
        cache.rgb(str(path))


def test_zero_byte_file(tmp_path):
    path = tmp_path / "zero.jpg"
    path.write_bytes(b"")
    cache = MediaCache()
    assert cache.file_size(str(path)) == 0
    with pytest.raises(MediaError, match="not a readable image"):
        cache.header(str(path))


def test_non_image_file(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("just some text, not a picture\n")
    with pytest.raises(MediaError, match="not a readable image"):
        MediaCache().header(str(path))
    with pytest.raises(MediaError):
        MediaCache().rgb(str(path))


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.jpg")
    cache = MediaCache()
    for read in (cache.file_size, cache.header, cache.rgb, lambda p: cache.small(p, 64)):
        with pytest.raises(MediaError, match="missing image"):
            read(path)


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(MediaError):
        MediaCache().header(str(tmp_path))


# -- decompression bombs -----------------------------------------------------------


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def test_png_claiming_40000_square(tmp_path):
    small = tmp_path / "small.png"
    Image.new("RGB", (8, 8), RED).save(small)
    path = tmp_path / "bomb.png"
    path.write_bytes(_patch_ihdr(small.read_bytes(), 40000, 40000))
    cache = MediaCache()
    before = _peak_rss_bytes()
    head = cache.header(str(path))
    assert (head.width, head.height) == (40000, 40000)
    with pytest.raises(MediaError, match="too large"):
        cache.rgb(str(path))
    with pytest.raises(MediaError, match="too large"):
        cache.small(str(path), 64)
    # a 40000x40000 RGB buffer is 4.8 GB; nothing close to that may be allocated
    assert _peak_rss_bytes() - before < 256 * 2**20


# -- the cache ---------------------------------------------------------------------


def test_cache_decodes_once(tmp_path, monkeypatch):
    decodes = []

    def counting(path, reduce_to=None):
        decodes.append((path, reduce_to))
        return decode_rgb(path, reduce_to)

    monkeypatch.setattr(media, "decode_rgb", counting)
    path = str(tmp_path / "a.png")  # no reduced decode for PNG: small() may reuse the full one
    _marked().save(path)
    cache = MediaCache()
    first = cache.rgb(path)
    assert cache.rgb(path) is first
    assert cache.small(path, 8) is first
    assert decodes == [(path, None)]
    cache.clear()
    assert cache.rgb(path) is not first


def test_header_does_not_depend_on_cache_state(tmp_path):
    path = str(tmp_path / "cmyk.jpg")
    Image.new("CMYK", (12, 10)).save(path)
    cache = MediaCache()
    cache.rgb(path)
    assert cache.header(path) == read_header(path) == ImageHeader(12, 10, "JPEG", "CMYK")


def test_small_jpeg_does_not_depend_on_cache_state(tmp_path):
    path = str(tmp_path / "big.jpg")
    Image.new("RGB", (1600, 1200), RED).save(path)
    fresh = MediaCache().small(path, 64)
    cache = MediaCache()
    cache.rgb(path)
    assert cache.small(path, 64).size == fresh.size == (200, 150)


def test_threaded_decodes_leave_pil_limit_alone(tmp_path):
    """16 threads reading headers and decoding (as the decode pool does): PIL's global
    bomb limit is set once at import and never swapped per call, so no thread can
    leave it changed; the huge PNG is still refused for a pixel decode in every thread."""
    from concurrent.futures import ThreadPoolExecutor

    small = tmp_path / "small.png"
    Image.new("RGB", (8, 8), RED).save(small)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_patch_ihdr(small.read_bytes(), 40000, 40000))
    jpeg = tmp_path / "a.jpg"
    _marked(64, 48).save(jpeg, quality=90)
    limit_at_import = Image.MAX_IMAGE_PIXELS

    def work(i: int) -> str:
        read_header(str(bomb))
        decode_rgb(str(jpeg), reduce_to=16 if i % 2 else None)
        try:
            decode_rgb(str(bomb))
        except MediaError as exc:
            return str(exc)
        return "decoded"

    for _ in range(5):
        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(work, range(400)))
        assert Image.MAX_IMAGE_PIXELS is limit_at_import
        assert all(r.startswith("image too large to decode") for r in results), set(results)
    assert limit_at_import is None  # media's own limit replaces PIL's (see media.py)


def _pil_draft_reference(path: str, side: int) -> Image.Image:
    """The reduced decode as PIL does it: draft at the smallest DCT scale >= side, EXIF
    rotation, RGB."""
    from PIL import ImageOps

    with Image.open(path) as img:
        img.draft("RGB", (side, side))
        img.load()
        return ImageOps.exif_transpose(img).convert("RGB")


@pytest.mark.parametrize("flavour", ["420", "444", "progressive", "gray", "rotated", "odd", "tiny"])
def test_reduced_jpeg_decode_is_pils_draft_pixel_for_pixel(tmp_path, flavour):
    rng = np.random.default_rng(3)
    size = {"odd": (517, 333), "tiny": (40, 23)}.get(flavour, (640, 400))
    base = rng.integers(0, 256, (size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize(size, Image.Resampling.BICUBIC)
    path = str(tmp_path / f"{flavour}.jpg")
    kwargs = {
        "444": {"subsampling": 0},
        "progressive": {"progressive": True},
        "rotated": {"exif": _exif(6)},
    }.get(flavour, {})
    (img.convert("L") if flavour == "gray" else img).save(path, quality=88, **kwargs)
    for side in (16, 32, 64, 200):
        ours = decode_rgb(path, reduce_to=side)
        ref = _pil_draft_reference(path, side)
        assert ours.mode == "RGB" and ours.size == ref.size, (side, ours.size, ref.size)
        assert np.array_equal(np.asarray(ours), np.asarray(ref)), side
    if flavour == "rotated":
        assert decode_rgb(path, reduce_to=64).size == (100, 160)  # 640x400 at 1/4, turned


@pytest.mark.parametrize("orientation", range(2, 9))
def test_reduced_jpeg_turns_as_pil_does(tmp_path, orientation):
    """Every EXIF orientation: the same pixels as PIL's draft decode + exif_transpose."""
    rng = np.random.default_rng(orientation)
    img = Image.fromarray(rng.integers(0, 256, (41, 67, 3), dtype=np.uint8))
    path = str(tmp_path / "turned.jpg")
    img.resize((517, 333), Image.Resampling.BICUBIC).save(path, exif=_exif(orientation))
    for side in (32, 1000):
        ours, ref = decode_rgb(path, reduce_to=side), _pil_draft_reference(path, side)
        assert np.array_equal(np.asarray(ours), np.asarray(ref)), side


def test_reduced_decode_falls_back_to_pil(tmp_path):
    """CMYK goes through PIL's conversion; a truncated JPEG still raises PIL's error."""
    cmyk = str(tmp_path / "cmyk.jpg")
    Image.new("CMYK", (64, 64), (0, 255, 255, 0)).save(cmyk)
    assert _near(decode_rgb(cmyk, reduce_to=16).getpixel((1, 1)), RED)
    trunc = tmp_path / "trunc.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    Image.fromarray(noise).save(trunc, quality=90)
    trunc.write_bytes(trunc.read_bytes()[:20000])
    with pytest.raises(MediaError, match="undecodable image.*trunc.jpg"):
        decode_rgb(str(trunc), reduce_to=32)


def test_each_header_is_read_once_per_stage_ingest_included(tmp_path, monkeypatch):
    """The header read on entry (image_check: header) serves the image filters after it."""
    import json

    from helpers import write_recipe

    from dj_synth.pipelines.recipe import load_recipe
    from dj_synth.pipelines.run import run_recipe

    rows = []
    for i in range(6):
        Image.new("RGB", (20 + i, 30)).save(tmp_path / f"{i}.jpg")
        rows.append({"text": f"<__dj__image> {i}", "images": [f"{i}.jpg"]})
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    reads = []
    monkeypatch.setattr(media, "read_header", lambda p: reads.append(p) or read_header(p))
    recipe = write_recipe(
        tmp_path / "r.yaml", dataset_path=str(tmp_path / "d.jsonl"), np=1,
        export_path=str(tmp_path / "o" / "r.jsonl"),
        process=[{"image_shape_filter": {"min_width": 22}}, {"image_aspect_ratio_filter": {}}],
    )  # fmt: skip
    summary = run_recipe(load_recipe(recipe), progress=False)
    assert summary["exported_samples"] == 4
    assert sorted(reads) == sorted(str(tmp_path / f"{i}.jpg") for i in range(6))
