"""Generate a synthetic Data-Juicer-format image-caption corpus, deterministically.

    python bench/make_corpus.py N OUT_DIR [--pool-dir DIR] [--pool-size 5000] [--seed 0] [-j 2]

Writes OUT_DIR/corpus.jsonl: N samples `{"id", "text": "<__dj__image>\\n... <|__dj__eoc|>",
"images": [path]}` with image paths relative to OUT_DIR, over a pool of at most
`--pool-size` distinct JPEGs (default OUT_DIR/images; several corpora may share one pool).
Pool image i depends only on (seed, i), so a pool built for one corpus serves any other
with the same seed, and existing images are not regenerated.

What the corpus holds (so the cleaning recipe has work to do):
- images: long side 48-1024 px; aspect ratio mostly 1:2-2:1, ~10% up to 1:5 / 5:1; content =
  a colour gradient, a low-frequency noise texture and random shapes (compresses like a
  photo, unlike pure noise), saved as JPEG quality 85.
- image references: the first min(0.8 N, pool) samples use pool images 0, 1, 2, ... in order;
  later samples reuse random pool images (exact image duplicates).
- captions: 3-40 words from a fixed word list; ~2% have only 1-2 words; ~5% repeat an
  earlier sample's caption exactly.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
from multiprocessing import Pool

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

IMAGE_TOKEN = "<__dj__image>"
EOC_TOKEN = "<|__dj__eoc|>"

WORDS = """
a an the this that two three several many some small large tiny huge old new young bright dark
red orange yellow green blue purple pink brown black white gray golden silver wooden metal
glass stone plastic paper cotton leather shiny dusty wet dry sunny cloudy rainy snowy foggy quiet
busy empty crowded modern ancient rustic urban rural coastal tropical frozen colorful pale
man woman child boy girl person people family couple crowd dog cat horse bird cow sheep duck
fish bear deer rabbit squirrel car bus truck bicycle motorcycle train boat ship airplane bridge
road street highway path river lake sea ocean beach mountain hill valley forest tree trees
flower flowers grass field garden park city town village house building tower church castle
window door roof wall fence table chair bench bed sofa lamp clock book cup plate bowl bottle
bag hat shirt dress jacket shoes umbrella phone computer camera guitar piano ball kite sign
flag map painting photo picture poster logo sky cloud clouds sun moon stars snow rain sunset
sunrise night morning evening shadow light reflection smoke fire water ice sand rock rocks
is are sits stands walks runs flies swims rides holds carries looks plays eats drinks reads
waits rests leans hangs floats grows lies shows covered filled surrounded parked standing
sitting lying walking running flying swimming riding holding looking playing eating near
beside behind under over above below inside outside along across through around between on
in at with without from into onto toward against of and or but while its their his her
close-up view aerial illustration drawing cartoon sketch vintage portrait landscape pattern
texture background foreground center corner edge top bottom left right side front back
""".split()


# ---------------------------------------------------------------------------
# images


def image_size(rng: random.Random) -> tuple[int, int]:
    long_side = rng.randint(48, 1024)
    if rng.random() < 0.9:
        ratio = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
    else:
        ratio = math.exp(rng.uniform(math.log(0.2), math.log(5.0)))
    if ratio >= 1:
        w, h = long_side, long_side / ratio
    else:
        w, h = long_side * ratio, long_side
    return max(1, round(w)), max(1, round(h))


def make_image(seed: int, index: int) -> Image.Image:
    rng = random.Random(f"{seed}-image-{index}")
    nrng = np.random.default_rng([seed, index])
    w, h = image_size(rng)
    # background: a linear gradient between two random colours at a random angle
    c0 = np.array([rng.randint(0, 255) for _ in range(3)], dtype=np.float32)
    c1 = np.array([rng.randint(0, 255) for _ in range(3)], dtype=np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    t = xs / max(w, 1) * math.cos(angle) + ys / max(h, 1) * math.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = c0 + (c1 - c0) * t[..., None]
    # a low-frequency texture: coarse noise scaled up (smooth blobs, compresses well)
    cw, ch = max(2, w // 32), max(2, h // 32)
    coarse = nrng.normal(0, rng.uniform(8, 40), size=(ch, cw, 3)).astype(np.float32)
    blobs = np.asarray(
        Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize(
            (w, h), Image.BICUBIC
        ),
        dtype=np.float32,
    )
    img = np.clip(img + blobs - 128, 0, 255).astype(np.uint8)
    im = Image.fromarray(img, "RGB")
    # random shapes
    draw = ImageDraw.Draw(im)
    for _ in range(rng.randint(2, 12)):
        color = tuple(rng.randint(0, 255) for _ in range(3))
        x0, y0 = rng.randint(-w // 4, w), rng.randint(-h // 4, h)
        x1, y1 = x0 + rng.randint(4, max(5, w // 2)), y0 + rng.randint(4, max(5, h // 2))
        kind = rng.random()
        if kind < 0.35:
            draw.ellipse((x0, y0, x1, y1), fill=color)
        elif kind < 0.65:
            draw.rectangle((x0, y0, x1, y1), fill=color)
        elif kind < 0.85:
            pts = [(rng.randint(0, w), rng.randint(0, h)) for _ in range(rng.randint(3, 6))]
            draw.polygon(pts, fill=color)
        else:
            draw.line((x0, y0, x1, y1), fill=color, width=rng.randint(1, max(2, w // 40)))
    if rng.random() < 0.3:
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.5)))
    # a little fine grain, as in photos
    grain = nrng.normal(0, 3, size=(h, w, 3))
    arr = np.clip(np.asarray(im, dtype=np.float32) + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def image_name(index: int) -> str:
    return f"{index // 1000:03d}/{index:06d}.jpg"


def _write_image(job: tuple[int, int, str]) -> int:
    seed, index, pool_dir = job
    path = os.path.join(pool_dir, image_name(index))
    if os.path.exists(path):
        return 0
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    make_image(seed, index).save(tmp, "JPEG", quality=85)
    os.replace(tmp, path)  # an interrupted run never leaves a half-written image
    return 1


def build_pool(pool_dir: str, size: int, seed: int, jobs: int) -> int:
    todo = [(seed, i, pool_dir) for i in range(size)
            if not os.path.exists(os.path.join(pool_dir, image_name(i)))]  # fmt: skip
    if not todo:
        return 0
    if jobs <= 1:
        return sum(_write_image(j) for j in todo)
    with Pool(jobs) as pool:
        return sum(pool.imap_unordered(_write_image, todo, chunksize=16))


# ---------------------------------------------------------------------------
# captions


def caption(rng: random.Random) -> str:
    n = rng.randint(1, 2) if rng.random() < 0.02 else rng.randint(3, 40)
    words = [rng.choice(WORDS) for _ in range(n)]
    words[0] = words[0].capitalize()
    return " ".join(words) + "."


def write_corpus(n: int, out_dir: str, pool_dir: str, pool_size: int, seed: int) -> str:
    rng = random.Random(f"{seed}-corpus")
    path = os.path.join(out_dir, "corpus.jsonl")
    tmp = path + ".tmp"
    captions: list[str] = []
    with open(tmp, "w", encoding="utf-8") as fh:
        for i in range(n):
            image = i if i < pool_size else rng.randrange(pool_size)
            if captions and rng.random() < 0.05:
                text = rng.choice(captions)  # an exact duplicate caption
            else:
                text = caption(rng)
                if len(captions) < 100_000:
                    captions.append(text)
            rel = os.path.relpath(os.path.join(pool_dir, image_name(image)), out_dir)
            row = {
                "id": f"{i:08d}",
                "text": f"{IMAGE_TOKEN}\n{text} {EOC_TOKEN}",
                "images": [rel],
            }
            fh.write(json.dumps(row) + "\n")
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("n", type=int, help="number of samples")
    ap.add_argument("out_dir")
    ap.add_argument("--pool-dir", help="image pool folder (default OUT_DIR/images)")
    ap.add_argument("--pool-size", type=int, default=5000, help="max distinct images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    out_dir = os.path.abspath(args.out_dir)
    pool_dir = os.path.abspath(args.pool_dir or os.path.join(out_dir, "images"))
    os.makedirs(out_dir, exist_ok=True)
    pool_size = max(1, min(args.pool_size, args.n * 4 // 5))  # ~20% or more repeats
    made = build_pool(pool_dir, pool_size, args.seed, args.jobs)
    path = write_corpus(args.n, out_dir, pool_dir, pool_size, args.seed)
    print(f"{path}: {args.n} samples over {pool_size} images in {pool_dir} ({made} new)",
          file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
