"""Deduplication benchmark (issue 5): peak RSS and samples/s of image pHash dedup and caption
MinHash dedup, with memory vs the number of hashes held. Writes a block into bench/RESULTS.md.

    # the full benchmark, as recorded in RESULTS.md (corpora are generated on first use,
    # ~5 min, then cached in bench/data/, ~2 GB; the runs take ~25 min, t=8 at 100k alone 10):
    .venv/bin/python bench/dedup_bench.py --code head --no-write
    .venv/bin/python bench/dedup_bench.py --render-only --notes "$(cat reading.md)"
    # = --images 200000 --image-subsets 50000 100000 --thresholds 0 4 8 --threshold-max 8:100000
    #   --captions 1000000 --caption-subsets 250000 500000 --window-size 1 --np 2
    # a quick end-to-end check (prints only):
    .venv/bin/python bench/dedup_bench.py --images 5000 --image-subsets 2000 \\
        --captions 50000 --caption-subsets 20000 --no-write
    # only build the corpora / only one part:
    .venv/bin/python bench/dedup_bench.py --generate-only
    .venv/bin/python bench/dedup_bench.py --skip-captions   # or --skip-images
    # rewrite the RESULTS.md block from the last runs (bench/out/dedup/runs.json), new reading:
    .venv/bin/python bench/dedup_bench.py --render-only --notes "..."

`--code head` runs dj-run on a `git archive` copy of the committed HEAD (so that edits in the
working tree during the runs do not mix in); the default runs the working tree.

Corpora (deterministic for a --seed; generated with -j worker processes):

- bench/data/dedup_images_N_sSEED/: N DISTINCT JPEG originals (quality 85, long side 64-320 px,
  aspect 1:2-2:1) cut from scikit-image's bundled photos (random crop at a random scale, flip /
  quarter turn, colour jitter; 70% blended or collaged with a crop of another photo;
  a few translucent shapes), so that pHashes are photo-like and distinct; plus planted
  near-duplicates (~10% of the samples, each after its original): re-encodes at JPEG
  quality 60-95, resizes 0.5x-2x (JPEG), lossless PNG copies. corpus.jsonl lines:
  {"id": "LINE-oORIG" | "LINE-dORIG-KIND", "text": "<__dj__image>\\n<caption> <|__dj__eoc|>",
  "images": ["images/..."]}. The subset of K images is the corpus up to original #K
  (corpus_imagesK.jsonl: K originals plus their planted duplicates, ~1.11 K samples).
- bench/data/dedup_captions_N_sSEED/corpus.jsonl: N text-only samples {"id", "text"}
  (no images key): captions of 3-20 words from make_corpus.WORDS; ~5% are near duplicates
  of an earlier caption (1-2 word substitutions / insertions / deletions; id "LINE-near"),
  ~3% exact repeats ("LINE-exact"), the rest "LINE-orig". Subsets: the first K lines.

Runs: `dj-run RECIPE --set dataset_path=... --set export_path=... --set np=2 -q` through
run_bench.run_one (/proc polling of the process tree every 50 ms, `/usr/bin/time -v`), with
one-operator recipes written to bench/out/dedup/recipes/:
  image_deduplicator {method: phash, hamming_threshold: T} for each --thresholds T (T=8 only
  up to 100k images by default: its multi-index lookup costs O(hashes held) per sample:
  131 s at 50k, 578 s at 100k, so ~40 min at 200k), and
  document_minhash_deduplicator {tokenization: space, window_size: 1, lowercase: true}
  (other arguments at their defaults: 256 permutations, jaccard 0.7 -> 25 bands x 10 rows).
  window_size 1 (word sets) because the captions are 3-20 words: a 1-word edit of a 10-word
  caption keeps Jaccard ~0.8 on words but ~0.6 on word pairs and ~0.45 on triples, so
  windows 2 / 3 miss most planted near duplicates at the default threshold 0.7.
The planted duplicates are counted back from the run's filtered/*.jsonl (by sample id).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import math
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_bench  # noqa: E402
from make_corpus import EOC_TOKEN, IMAGE_TOKEN, WORDS  # noqa: E402

DATA = run_bench.DATA
OUT = run_bench.OUT / "dedup"
BLOCK = ("dedup", "image_and_caption_dedup")  # run_bench block marks: run_bench:dedup:...

PHOTOS = [
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png",
    "coffee.png", "coins.png", "color.png", "grass.png", "gravel.png", "hubble_deep_field.jpg",
    "ihc.png", "logo.png", "moon.png", "motorcycle_left.png", "motorcycle_right.png", "page.png",
    "retina.jpg", "rocket.jpg", "text.png",
]  # fmt: skip
DUP_KINDS = ("jpeg", "resize", "png")
DUP_RATE = 0.1  # planted near-duplicates: this fraction of all image samples
MINHASH_ARGS = {"tokenization": "space", "window_size": 1, "lowercase": True}


# ---------------------------------------------------------------------------
# image corpus


_SOURCES: list[np.ndarray] = []


def sources() -> list[np.ndarray]:
    """scikit-image's bundled photos as RGB arrays (loaded once per process)."""
    if not _SOURCES:
        spec = importlib.util.find_spec("skimage")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(
                "scikit-image is needed for the image corpus (pip install scikit-image)"
            )
        folder = Path(list(spec.submodule_search_locations)[0]) / "data"
        for name in PHOTOS:
            im = Image.open(folder / name)
            if im.mode in ("RGBA", "LA", "P"):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            _SOURCES.append(np.asarray(im.convert("RGB")))
    return _SOURCES


def random_crop(rng: random.Random, w: int, h: int) -> Image.Image:
    """A crop of a random photo at a random scale and place, flipped / turned, resized to w x h."""
    src = rng.choice(sources())
    sh, sw = src.shape[:2]
    turn = rng.randrange(4)
    cw, ch = (h, w) if turn % 2 else (w, h)  # the crop's shape before the quarter turns
    scale = math.exp(rng.uniform(math.log(0.12), math.log(0.8))) * min(sw / cw, sh / ch)
    cw, ch = max(8, min(sw, round(cw * scale))), max(8, min(sh, round(ch * scale)))
    x, y = rng.randint(0, sw - cw), rng.randint(0, sh - ch)
    im = Image.fromarray(src[y : y + ch, x : x + cw])
    if rng.random() < 0.5:
        im = ImageOps.mirror(im)
    if turn:
        im = im.rotate(90 * turn, expand=True)
    return im.resize((w, h), Image.BILINEAR)


def make_original(seed: int, index: int, side: int = 0) -> Image.Image:
    """Original #index; its long side is 64-320 px, or `side` px when given."""
    rng = random.Random(f"{seed}-dedup-image-{index}")
    long_side = rng.randint(64, 320)
    long_side = side or long_side
    ratio = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
    w, h = (long_side, long_side / ratio) if ratio >= 1 else (long_side * ratio, long_side)
    w, h = max(32, round(w)), max(32, round(h))
    im = random_crop(rng, w, h)
    mix = rng.random()
    if mix < 0.3:  # blend with a crop of another photo
        im = Image.blend(im, random_crop(rng, w, h), rng.uniform(0.25, 0.6))
    elif mix < 0.7:  # collage: a second crop pasted over a part
        pw, ph = rng.randint(w // 4, w * 3 // 4), rng.randint(h // 4, h * 3 // 4)
        im.paste(random_crop(rng, pw, ph), (rng.randint(0, w - pw), rng.randint(0, h - ph)))
    # colour jitter
    im = ImageEnhance.Color(im).enhance(rng.uniform(0.4, 1.6))
    im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.7, 1.3))
    im = ImageEnhance.Contrast(im).enhance(rng.uniform(0.7, 1.3))
    # a few translucent shapes
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for _ in range(rng.randint(1, 4)):
        color = tuple(rng.randint(0, 255) for _ in range(3)) + (rng.randint(80, 220),)
        x0, y0 = rng.randint(-w // 4, w), rng.randint(-h // 4, h)
        x1, y1 = x0 + rng.randint(w // 8, w // 2), y0 + rng.randint(h // 8, h // 2)
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=color)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=color)
    return Image.alpha_composite(im.convert("RGBA"), layer).convert("RGB")


def original_name(index: int) -> str:
    return f"images/{index // 1000:03d}/{index:06d}.jpg"


def dup_name(dup: int, kind: str) -> str:
    return f"images/dups/{dup // 1000:03d}/{dup:06d}_{kind}.{'png' if kind == 'png' else 'jpg'}"


def jpeg_bytes(im: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _save(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)  # an interrupted run never leaves a half-written image


def _write_image(job: tuple) -> int:
    """job: (root, seed, side, "orig", index) or (root, seed, side, "dup", dup, original,
    kind); side 0 for the default sizes."""
    root, seed, side, what, *rest = job
    name = original_name(rest[0]) if what == "orig" else dup_name(rest[0], rest[2])
    path = os.path.join(root, name)
    if os.path.exists(path):
        return 0
    if what == "orig":
        _save(path, jpeg_bytes(make_original(seed, rest[0], side), 85))
        return 1
    dup, original, kind = rest
    rng = random.Random(f"{seed}-dedup-dup-{dup}")
    im = Image.open(io.BytesIO(jpeg_bytes(make_original(seed, original, side), 85))).convert("RGB")
    if kind == "jpeg":
        data = jpeg_bytes(im, rng.randint(60, 95))
    elif kind == "resize":
        f = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
        size = (max(16, round(im.width * f)), max(16, round(im.height * f)))
        data = jpeg_bytes(im.resize(size, Image.LANCZOS), rng.randint(75, 95))
    else:
        buf = io.BytesIO()
        im.save(buf, "PNG")
        data = buf.getvalue()
    _save(path, data)
    return 1


def short_caption(rng: random.Random, lo: int, hi: int) -> list[str]:
    return [rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]


def render_caption(words: list[str]) -> str:
    return " ".join([words[0].capitalize(), *words[1:]]) + "."


def image_corpus(n: int, seed: int, jobs: int, side: int = 0) -> Path:
    """Generate (once) the image corpus of n distinct originals + planted near-duplicates
    (originals `side` px on their long side when given: quicker to make and to hash)."""
    root = DATA / (f"dedup_images_{n}_s{seed}" + (f"_side{side}" if side else ""))
    path = root / "corpus.jsonl"
    if path.exists():
        return path
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{seed}-dedup-image-corpus")
    lines: list[tuple[str, str]] = []  # (id, image name)
    work: list[tuple] = []
    dups = 0
    for i in range(n):
        lines.append((f"{len(lines):07d}-o{i:06d}", original_name(i)))
        work.append((str(root), seed, side, "orig", i))
        while rng.random() < DUP_RATE:  # on average DUP_RATE / (1 - DUP_RATE) per original
            original, kind = rng.randint(0, i), rng.choice(DUP_KINDS)
            lines.append((f"{len(lines):07d}-d{original:06d}-{kind}", dup_name(dups, kind)))
            work.append((str(root), seed, side, "dup", dups, original, kind))
            dups += 1
    t0 = time.perf_counter()
    made = 0
    with Pool(jobs) as pool:
        for k, new in enumerate(pool.imap_unordered(_write_image, work, chunksize=64), 1):
            made += new
            if k % 20000 == 0:
                print(f"  images: {k:,}/{len(work):,} ({time.perf_counter() - t0:.0f} s)",
                      file=sys.stderr, flush=True)  # fmt: skip
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for sid, name in lines:
            text = f"{IMAGE_TOKEN}\n{render_caption(short_caption(rng, 3, 12))} {EOC_TOKEN}"
            fh.write(json.dumps({"id": sid, "text": text, "images": [name]}) + "\n")
    os.replace(tmp, path)
    print(f"{path}: {len(lines):,} samples, {n:,} originals + {dups:,} near-duplicates "
          f"({made:,} images written in {time.perf_counter() - t0:.0f} s)", file=sys.stderr)  # fmt: skip
    return path


def image_subset(full: Path, k: int) -> Path:
    """The corpus up to original #k: k originals and their planted duplicates."""
    path = full.with_name(f"corpus_images{k}.jsonl")
    if not path.exists():
        marker = re.compile(r'^\{"id": "\d+-o(\d+)"')  # {"id": "0001234-o000123", ...
        tmp = path.with_suffix(".tmp")
        with open(full, encoding="utf-8") as src, open(tmp, "w", encoding="utf-8") as dst:
            for line in src:
                m = marker.match(line)
                if m and int(m.group(1)) >= k:
                    break
                dst.write(line)
        os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------
# caption corpus


def edit_caption(rng: random.Random, words: list[str]) -> list[str]:
    words = list(words)
    for _ in range(rng.randint(1, 2)):
        op = rng.random()
        pos = rng.randrange(len(words))
        if op < 0.5 or (op >= 0.8 and len(words) <= 3):
            words[pos] = rng.choice([w for w in WORDS if w != words[pos]])
        elif op < 0.8:
            words.insert(pos, rng.choice(WORDS))
        else:
            del words[pos]
    return words


def caption_corpus(n: int, seed: int) -> Path:
    root = DATA / f"dedup_captions_{n}_s{seed}"
    path = root / "corpus.jsonl"
    if path.exists():
        return path
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{seed}-dedup-caption-corpus")
    originals: list[list[str]] = []
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for i in range(n):
            r = rng.random()
            if originals and r < 0.05:
                words, kind = edit_caption(rng, rng.choice(originals)), "near"
            elif originals and r < 0.08:
                words, kind = rng.choice(originals), "exact"
            else:
                words, kind = short_caption(rng, 3, 20), "orig"
                originals.append(words)
            row = {"id": f"{i:07d}-{kind}", "text": render_caption(words)}
            fh.write(json.dumps(row) + "\n")
    os.replace(tmp, path)
    print(f"{path}: {n:,} captions", file=sys.stderr)
    return path


def head_subset(full: Path, k: int) -> Path:
    path = full.with_name(f"corpus_head{k}.jsonl")
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        with open(full, encoding="utf-8") as src, open(tmp, "w", encoding="utf-8") as dst:
            for _, line in zip(range(k), src):
                dst.write(line)
        os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------
# the indexes alone, in this process (no dj-run: no JSON, no export)


def _signatures(lines: list[str]) -> list[tuple[str, bytes | None]]:
    from dj_synth.operators import get_operator

    op = get_operator("document_minhash_deduplicator")(**MINHASH_ARGS)
    out = []
    for line in lines:
        row = json.loads(line)
        shingles = op.shingles(row["text"])
        out.append((row["id"], op.signature(shingles) if shingles else None))
    return out


def _chunks(path: Path, n: int, size: int = 2000):
    with open(path, encoding="utf-8") as fh:
        chunk: list[str] = []
        for _, line in zip(range(n), fh):
            chunk.append(line)
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def minhash_replay(path: Path, n: int, marks: list[int], drops_out: Path | None) -> list[dict]:
    """Signatures in 2 worker processes, admitted in input order into the MinHash index of
    this process (whatever `dj_synth` is on the path: --code selects old code). Reports
    time and this process's peak RSS at each mark; writes `id<TAB>reason` per drop."""
    import resource

    from dj_synth.operators import get_operator
    from dj_synth.operators.batch import SampleRef

    op = get_operator("document_minhash_deduplicator")(**MINHASH_ARGS)
    index = op.new_index()
    rows, done, dropped, t0 = [], 0, Counter(), time.perf_counter()
    out = open(drops_out, "w", encoding="utf-8") if drops_out else None
    with Pool(2) as pool:
        for keys in pool.imap(_signatures, _chunks(path, n), chunksize=1):
            for sid, key in keys:
                reason = index.admit(key, SampleRef(done, "c", done + 1), sid)
                done += 1
                if reason is not None:
                    dropped[sid.split("-", 1)[1]] += 1
                    if out:
                        out.write(f"{sid}\t{reason}\n")
                if done in marks:
                    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                    rows.append({"n": done, "s": round(time.perf_counter() - t0, 1),
                                 "peak_mib": round(peak), "dropped": dict(dropped),
                                 "loadavg": round(os.getloadavg()[0], 2)})  # fmt: skip
                    print(f"  minhash replay {done:,}: {rows[-1]}", file=sys.stderr, flush=True)
    if out:
        out.close()
    return rows


def band_table_fill(kept: int, bands: int = 25, chunk: int = 100_000) -> list[tuple]:
    """The MinHash band table's own memory: `kept` captions' worth of random band hashes,
    stored in chunks (`BandTable.extend`, growth included). Peak RSS of this process."""
    import resource

    from dj_synth.operators.document_minhash_deduplicator import BandTable

    rng = np.random.default_rng(0)
    table, out, t0 = BandTable(), [], time.perf_counter()
    for lo in range(0, kept, chunk):
        n = min(chunk, kept - lo)
        table.extend(rng.integers(1, 2**32, (n, bands), dtype=np.uint64), np.arange(lo, lo + n))
        if (lo + n) % 1_000_000 == 0 or lo + n == kept:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            out.append((lo + n, table.slots.size, round(peak), round(time.perf_counter() - t0)))
            print(f"  band table {lo + n:,} kept: {out[-1]}", file=sys.stderr, flush=True)
    return out


def hamming_replay(n: int, threshold: int, seed: int = 0) -> dict:
    """Synthetic pHash keys (uniform random 64-bit hashes, 10% near copies with up to
    `threshold` bits flipped, each with a random 8x8 thumbnail, copies with the same one)
    admitted into the image_deduplicator's index: the lookup cost alone as N grows."""
    import resource

    from dj_synth.operators import get_operator
    from dj_synth.operators.batch import SampleRef

    op = get_operator("image_deduplicator")(hamming_threshold=threshold)
    index = op.new_index()
    rng = random.Random(f"{seed}-hamming-replay")
    thumbs = np.random.default_rng(seed).integers(0, 256, (1024, 192), dtype=np.uint8)
    originals: list[tuple[int, bytes]] = []
    marks, out, dropped, t0 = {n // 10, n // 2, n}, {}, 0, time.perf_counter()
    cpu0 = time.process_time()
    for i in range(1, n + 1):
        if originals and rng.random() < 0.1:
            h, look = rng.choice(originals)
            for b in rng.sample(range(64), rng.randint(0, threshold)):
                h ^= 1 << b
        else:
            h, look = rng.getrandbits(64), thumbs[rng.randrange(1024)].tobytes()
            originals.append((h, look))
        dropped += index.admit(((f"{h:016x}",), None, (look,)), SampleRef(i, "h", i), i) is not None
        if i in marks:
            out[i] = (round(time.perf_counter() - t0, 1), dropped,
                      round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      round(time.process_time() - cpu0, 1))  # fmt: skip
            print(f"  hamming replay t={threshold} {i:,}: {out[i]}", file=sys.stderr, flush=True)
    return out


# ---------------------------------------------------------------------------
# runs


def write_recipe(name: str, op: str, args: dict) -> Path:
    path = OUT / "recipes" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"      {k}: {json.dumps(v)}\n" for k, v in args.items())
    path.write_text(
        f"# written by bench/dedup_bench.py; dataset_path / export_path / np are --set per run\n"
        f"project_name: {name}\ndataset_path: none.jsonl\nexport_path: {OUT}/{name}/r.jsonl\n"
        f"np: 2\n\nprocess:\n  - {op}:\n{body}"
    )
    return path


def id_kinds(path: Path) -> Counter:
    """Sample kinds by id suffix: 'o' (original image), 'd-KIND', 'orig'/'near'/'exact'."""
    kinds: Counter = Counter()
    pat = re.compile(r'"id": ?"\d+-([a-z]+|o\d+|d\d+-[a-z]+)"')
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            m = pat.search(line)
            if m:
                kinds[_kind(m.group(1))] += 1
    return kinds


def _kind(suffix: str) -> str:
    if suffix[0] == "o" and suffix[1:].isdigit():
        return "o"
    if suffix[0] == "d" and "-" in suffix:
        return "d-" + suffix.split("-", 1)[1]
    return suffix


def dropped_kinds(out_dir: Path) -> Counter:
    kinds: Counter = Counter()
    for f in sorted((out_dir / "filtered").glob("*.jsonl")):
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                sid = json.loads(line)["sample"]["id"]
                kinds[_kind(sid.split("-", 1)[1])] += 1
    return kinds


def busy_seconds() -> float:
    """CPU seconds spent busy, all CPUs, since boot (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds(time_log: Path) -> float | None:
    """user + system seconds of the run (children included) from `/usr/bin/time -v`."""
    if not time_log.exists():
        return None
    text = time_log.read_text()
    got = [re.search(rf"{k} time \(seconds\): ([\d.]+)", text) for k in ("User", "System")]
    return sum(float(m.group(1)) for m in got) if all(got) else None


def measure_once(n: int, data: Path, recipe: Path, np_: int, out_dir: Path) -> dict:
    busy0 = busy_seconds()
    row = run_bench.run_one(n, np_, recipe, data=data, out_dir=out_dir)
    busy = busy_seconds() - busy0
    own = own_cpu_seconds(out_dir / "time.txt")
    row["cpu_s"] = round(own, 1) if own is not None else None
    row["loadavg"] = round(os.getloadavg()[0], 2)  # `uptime`'s 1-minute load at the end
    # CPU used by anything else on the machine meanwhile (another job skews the timing)
    row["other_cores"] = round(max(0.0, busy - own) / row["wall_s"], 2) if own is not None else None
    return row


def measure(label: str, n: int, data: Path, recipe: Path, args: argparse.Namespace,
            **extra) -> dict:  # fmt: skip
    """One run; repeated (up to --retries times) while other processes used more than
    --max-other-load cores meanwhile; the least disturbed attempt is kept."""
    out_dir = OUT / f"{recipe.stem}-{label}"
    t0 = time.perf_counter()
    row = measure_once(n, data, recipe, args.np_, out_dir)
    row["attempts"] = 1
    for _ in range(args.retries):
        if row["other_cores"] is None or row["other_cores"] <= args.max_other_load:
            break
        print(f"  {recipe.stem} {label}: other load {row['other_cores']} cores, running again",
              file=sys.stderr, flush=True)  # fmt: skip
        again = measure_once(n, data, recipe, args.np_, out_dir)
        again["attempts"] = row["attempts"] + 1
        if again["other_cores"] <= row["other_cores"]:
            row = again
        else:  # keep the earlier, quieter attempt's numbers (its records were overwritten)
            row["attempts"] = again["attempts"]
    row.update(extra)
    row["label"] = label
    row["corpus"] = str(data.relative_to(run_bench.REPO))
    row["kinds"] = dict(id_kinds(data))
    row["dropped_kinds"] = dict(dropped_kinds(out_dir))
    print(f"  {recipe.stem} {label}: {row['wall_s']:.1f} s, largest "
          f"{row['peak_single_mib']:.0f} MiB ({time.perf_counter() - t0:.0f} s incl. counting)",
          file=sys.stderr, flush=True)  # fmt: skip
    return row


def caught(row: dict, kinds: tuple[str, ...]) -> str:
    total = sum(row["kinds"].get(k, 0) for k in kinds)
    got = sum(row["dropped_kinds"].get(k, 0) for k in kinds)
    return f"{got:,}/{total:,}" if total else "-"


def render(rows: list[dict], info: dict[str, str], commands: list[str], notes: str,
           block: str = BLOCK[1], title: str = "") -> str:  # fmt: skip
    begin, end = run_bench._marks(BLOCK[0], block)
    lines = [
        begin,
        title or "## Deduplication: image pHash and caption MinHash (`bench/dedup_bench.py`)",
        "",
        f"Measured {info['date']} on {info['nproc']} CPUs ({info['cpu']}), {info['ram']} RAM, "
        f"Python {info['python']}, {info['os']}; code at {info.get('git', '?')}. np 2, io defaults.",
        "",
        "```bash",
        *commands,
        "```",
        "",
        "| run | samples | hashes held (= exported) | wall s | samples/s | largest process MiB "
        "| process tree MiB | `time -v` max RSS MiB | CPU s | other load | load avg "
        "| filtered | planted dups caught | originals dropped |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        if r["kind"] == "image":
            planted = caught(r, tuple(f"d-{k}" for k in DUP_KINDS))
            by_kind = ", ".join(f"{k} {caught(r, (f'd-{k}',))}" for k in DUP_KINDS)
            planted = f"{planted} ({by_kind})"
            originals = r["dropped_kinds"].get("o", 0)
        else:
            planted = f"near {caught(r, ('near',))}, exact {caught(r, ('exact',))}"
            originals = r["dropped_kinds"].get("orig", 0)
        lines.append(
            f"| {r['title']} | {r['n']:,} | {r['exported']:,} | {r['wall_s']:.1f} "
            f"| {r['samples_per_s']:,.0f} | {r['peak_single_mib']:.0f} | {r['peak_tree_mib']:.0f} "
            f"| {r['time_max_rss_mib'] if r['time_max_rss_mib'] is not None else '-'} "
            f"| {r['cpu_s'] if r['cpu_s'] is not None else '-'} "
            f"| {r['other_cores'] if r['other_cores'] is not None else '-'} "
            f"| {r.get('loadavg', '-')} "
            f"| {sum(r['filtered'].values()):,} | {planted} | {originals:,} |"
        )
    lines += ["", notes.strip(), end]
    return "\n".join(lines)


def slope_note(rows: list[dict]) -> str:
    """MiB of the largest process per 100k hashes held, between the smallest and largest run."""
    parts = []
    for group in dict.fromkeys(r["group"] for r in rows):
        rs = sorted((r for r in rows if r["group"] == group), key=lambda r: r["exported"])
        if len(rs) < 2 or rs[-1]["exported"] == rs[0]["exported"]:
            continue
        d_mib = rs[-1]["peak_single_mib"] - rs[0]["peak_single_mib"]
        d_hash = rs[-1]["exported"] - rs[0]["exported"]
        per = d_mib / d_hash * 1e5
        parts.append(f"{group}: {per:.1f} MiB per 100k hashes ({per * 1024 * 1024 / 1e5:,.0f} B "
                     f"each; {rs[0]['exported']:,} -> {rs[-1]['exported']:,} hashes, "
                     f"{rs[0]['peak_single_mib']:.0f} -> {rs[-1]['peak_single_mib']:.0f} MiB)")  # fmt: skip
    return "; ".join(parts)


def git(*a: str) -> str:
    return subprocess.run(["git", *a], cwd=run_bench.REPO, capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip


def use_commit_snapshot(rev: str) -> str:
    """Run dj-run on committed code: `git archive REV` of operators/, pipelines/, tools/
    into bench/out/dedup/code-SHA/dj_synth/, put first on PYTHONPATH (ahead of the editable
    install), so edits in the working tree during a long benchmark do not mix in."""
    sha = git("rev-parse", "--verify", f"{'HEAD' if rev == 'head' else rev}^{{commit}}")
    root = OUT / f"code-{sha[:10]}"
    if not (root / "dj_synth").exists():
        tmp = root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha, "operators", "pipelines", "tools"],
                                 cwd=run_bench.REPO, capture_output=True, check=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        tmp.rename(root / "dj_synth")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    return f"`{sha[:7]}` (committed, run from a `git archive` copy; working tree not used)"


def git_state() -> str:
    head = git("rev-parse", "--short", "HEAD") or "?"
    dirty = [ln[3:] for ln in git("status", "--porcelain").splitlines()
             if ln[3:].startswith(("operators/", "pipelines/"))]  # fmt: skip
    return f"`{head}`" + (f" + uncommitted changes in {', '.join(dirty)}" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=int, default=200_000, help="distinct images (originals)")
    ap.add_argument("--image-subsets", type=int, nargs="*", default=[50_000, 100_000],
                    help="also run on the corpus up to these many originals")  # fmt: skip
    ap.add_argument("--thresholds", type=int, nargs="+", default=[0, 4, 8],
                    help="image_deduplicator hamming_threshold values")  # fmt: skip
    ap.add_argument("--threshold-max", nargs="*", default=["8:100000"], metavar="T:K",
                    help="run threshold T only on subsets of at most K images")  # fmt: skip
    ap.add_argument("--image-side", type=int, default=0, metavar="PX",
                    help="originals PX on their long side (default 64-320 px)")  # fmt: skip
    ap.add_argument("--captions", type=int, default=1_000_000, help="caption samples")
    ap.add_argument("--caption-subsets", type=int, nargs="*", default=[250_000, 500_000])
    ap.add_argument("--window-size", type=int, default=MINHASH_ARGS["window_size"],
                    help="document_minhash_deduplicator window_size (words)")  # fmt: skip
    ap.add_argument("--np", type=int, default=2, dest="np_")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-j", "--jobs", type=int, default=2, help="generator processes")
    ap.add_argument("--skip-images", action="store_true")
    ap.add_argument("--skip-captions", action="store_true")
    ap.add_argument("--generate-only", action="store_true")
    ap.add_argument("--code", default="worktree", metavar="worktree|head|COMMIT",
                    help="run the working tree (editable install), or a copy of a commit")  # fmt: skip
    ap.add_argument("--max-other-load", type=float, default=0.25,
                    help="run again when other processes used more CPU cores than this")  # fmt: skip
    ap.add_argument("--retries", type=int, default=1, help="at most this many reruns per run")
    ap.add_argument("--merge", action="store_true",
                    help="replace the same runs in bench/out/dedup/runs.json, keep the others "
                         "(the code must be the same commit)")  # fmt: skip
    ap.add_argument("--block", default=BLOCK[1],
                    help="the RESULTS.md block (marks run_bench:dedup:BLOCK) to write")  # fmt: skip
    ap.add_argument("--title", default="", help="the block's heading line")
    ap.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    ap.add_argument("--minhash-replay", type=int, nargs="+", metavar="N",
                    help="only the MinHash index, in this process, on the first N captions of "
                         "the caption corpus, reporting at each N (prints; no RESULTS.md)")  # fmt: skip
    ap.add_argument("--drops-out", type=Path, help="with --minhash-replay: id<TAB>reason per drop")
    ap.add_argument("--band-table-fill", type=int, metavar="KEPT",
                    help="only the MinHash band table: KEPT captions of random band hashes")  # fmt: skip
    ap.add_argument("--hamming-replay", type=int, nargs="+", metavar="N",
                    help="only the image Hamming index, synthetic keys, t = --thresholds")  # fmt: skip
    ap.add_argument("--notes", default="", help="text appended to the block's reading")
    ap.add_argument("--render-only", action="store_true",
                    help="no runs: rewrite the block from bench/out/dedup/runs.json "
                         "(e.g. with new --notes)")  # fmt: skip
    args = ap.parse_args(argv)
    if args.minhash_replay:
        path = caption_corpus(args.captions, args.seed)
        rows = minhash_replay(path, max(args.minhash_replay), args.minhash_replay, args.drops_out)
        print(json.dumps(rows))
        return 0
    if args.band_table_fill:
        print(json.dumps(band_table_fill(args.band_table_fill)))
        return 0
    if args.hamming_replay:
        for t in args.thresholds:
            print(json.dumps({t: hamming_replay(max(args.hamming_replay), t)}))
        return 0
    saved_path = OUT / ("runs.json" if args.block == BLOCK[1] else f"runs-{args.block}.json")

    if args.render_only:
        saved = json.loads(saved_path.read_text())
    else:
        saved = run_all(args, argv if argv is not None else sys.argv[1:])
        if saved is None:
            return 0
        if args.merge:
            saved = merge(json.loads(saved_path.read_text()), saved)
        OUT.mkdir(parents=True, exist_ok=True)
        saved_path.write_text(json.dumps(saved, indent=1))
    rows, commands = saved["rows"], list(saved["commands"])
    if args.render_only and args.notes:
        commands.append('# this block (the reading below from --notes): .venv/bin/python '
                        'bench/dedup_bench.py --render-only --notes "..."')  # fmt: skip
    notes = f"Largest process vs hashes held: {slope_note(rows)}.\n\n{args.notes}"
    block = render(rows, saved["info"], commands, notes, args.block, args.title)
    print(block)
    if not args.no_write:
        run_bench.write_results(block, BLOCK[0], args.block)
    return 0


def merge(old: dict, new: dict) -> dict:
    """Rows of `new` replace the rows of `old` with the same title; the others stay."""
    if old["info"]["git"] != new["info"]["git"]:
        raise SystemExit(f"--merge: runs.json was measured on {old['info']['git']}, "
                         f"this run on {new['info']['git']}; use --code with the same commit")  # fmt: skip
    fresh = {r["title"]: r for r in new["rows"]}
    rows = [fresh.pop(r["title"], r) for r in old["rows"]] + list(fresh.values())
    commands = old["commands"] + [f"# then, replacing those runs: {new['commands'][0]}"]
    return {"rows": rows, "info": old["info"], "commands": commands}


def run_all(args: argparse.Namespace, argv: list[str]) -> dict | None:
    """Generate (or reuse) the corpora and measure every run; None with --generate-only."""
    img = None if args.skip_images else image_corpus(args.images, args.seed, args.jobs,
                                                      args.image_side)  # fmt: skip
    cap = None if args.skip_captions else caption_corpus(args.captions, args.seed)
    image_sets = [(k, image_subset(img, k)) for k in sorted(args.image_subsets)
                  if img and k < args.images] + ([(args.images, img)] if img else [])  # fmt: skip
    caption_sets = [(k, head_subset(cap, k)) for k in sorted(args.caption_subsets)
                    if cap and k < args.captions] + ([(args.captions, cap)] if cap else [])  # fmt: skip
    if args.generate_only:
        return None

    code = git_state() if args.code == "worktree" else use_commit_snapshot(args.code)
    limits = {int(t): int(k) for t, k in (x.split(":") for x in args.threshold_max)}
    rows: list[dict] = []
    for t in args.thresholds:
        recipe = write_recipe(f"image_phash_t{t}", "image_deduplicator",
                              {"method": "phash", "hamming_threshold": t})  # fmt: skip
        for k, data in image_sets:
            if k > limits.get(t, k):
                continue
            with open(data, "rb") as fh:
                n = sum(1 for _ in fh)
            px = f" ({args.image_side} px)" if args.image_side else ""
            rows.append(measure(f"img{k}", n, data, recipe, args, kind="image",
                                group=f"pHash t={t}",
                                title=f"pHash t={t}, {k:,} images{px}"))  # fmt: skip
    if caption_sets:
        mh = dict(MINHASH_ARGS, window_size=args.window_size)
        recipe = write_recipe(f"caption_minhash_w{args.window_size}",
                              "document_minhash_deduplicator", mh)  # fmt: skip
        for k, data in caption_sets:
            rows.append(measure(f"cap{k}", k, data, recipe, args, kind="caption",
                                group="MinHash", title=f"MinHash, {k:,} captions"))  # fmt: skip

    info = run_bench.machine_info()
    info["git"] = code
    commands = [(".venv/bin/python bench/dedup_bench.py " + " ".join(argv)).strip(),
                "# each run is one command, e.g.:"]  # fmt: skip
    for r in rows:
        if r["label"] in (f"img{args.images}", f"cap{args.captions}"):
            commands.append(f"dj-run bench/out/dedup/recipes/{r['recipe']}.yaml --set dataset_path="
                            f"{r['corpus']} --set export_path=... --set np={args.np_} -q")  # fmt: skip
    return {"rows": rows, "info": info, "commands": commands}


if __name__ == "__main__":
    sys.exit(main())
