"""OCR quality and CPU throughput of image_ocr_mapper (RapidOCR, PP-OCRv4 ONNX, CPU).

    python bench/ocr_quality.py                 # 60 rendered images + 6 text-free photos
    python bench/ocr_quality.py -n 20 --no-write

Quality: images with known words (dj_synth.tools.ocr_samples: PIL fonts, sizes 18-44 px,
colours, flat/gradient/photo backgrounds, rotation within 5 degrees) go through the operator
exactly as a recipe runs it (`op.run` on image files, decode included); the text it writes
to `__dj__meta__.ocr` is scored against the words drawn: recall / precision with spaces
ignored (the recognizer often drops the space between Latin words) and with exact words.
Text-free photos from scikit-image should read nothing. Throughput: images per second of
`op.run` after the engine is loaded (one worker). Results go to a marked block of
bench/RESULTS.md (`ocr_quality:cpu`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from dj_synth.operators import Batch, SampleRef, get_operator, ocr
from dj_synth.operators.ledger import Ledger
from dj_synth.tools.ocr_samples import OcrScore, render_samples, save_samples

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_block import write_marked_block  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
TEXT_FREE = ("coffee", "chelsea", "astronaut", "rocket", "brick", "grass")


def run_ocr(paths: list[str]) -> tuple[list[str], float]:
    """The text the mapper found per image (lines joined), and seconds for op.run."""
    op = get_operator("image_ocr_mapper")()
    op.prepare("cpu")
    rows = [{"id": str(i), "text": "<__dj__image>", "images": [p]} for i, p in enumerate(paths)]
    batch = Batch.from_rows(rows, [SampleRef(i, "bench", i + 1) for i in range(len(rows))])
    start = time.perf_counter()
    out = op.run(batch, Ledger())
    seconds = time.perf_counter() - start
    texts = [" ".join(line["text"] for line in r["__dj__meta__"]["ocr"][0]) for r in out.rows()]
    return texts, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=60, help="rendered images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    parser.add_argument("--detect-min-side", type=int, default=ocr.DETECT_MIN_SIDE,
                        help="short side images are upscaled to before detection (PP-OCR: 736)")  # fmt: skip
    args = parser.parse_args(argv)
    ocr.DETECT_MIN_SIDE = args.detect_min_side

    import skimage.data

    with tempfile.TemporaryDirectory() as tmp:
        samples = render_samples(args.n, args.seed)
        paths = save_samples(samples, Path(tmp) / "text")
        photos = []
        for name in TEXT_FREE:
            path = Path(tmp) / f"{name}.jpg"
            Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(path, quality=90)
            photos.append(str(path))
        load_before = os.getloadavg()[0]
        texts, seconds = run_ocr(paths + photos)
        load_after = os.getloadavg()[0]
    score = OcrScore()
    for sample, text in zip(samples, texts):
        score.add(sample.words, text)
    figures = score.figures()
    false_text = [name for name, text in zip(TEXT_FREE, texts[len(samples) :]) if text]
    rate = len(texts) / seconds
    print(f"{figures}  words={score.words} read={score.read}")
    print(f"text-free photos with text read: {false_text or 'none'}")
    print(f"throughput: {rate:.2f} images/s ({len(texts)} images, {seconds:.1f} s)")
    if args.no_write:
        return 0
    command = "python bench/ocr_quality.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    key = "cpu" if args.detect_min_side == 320 else f"cpu-side{args.detect_min_side}"
    begin, end = f"<!-- ocr_quality:{key} begin -->", f"<!-- ocr_quality:{key} end -->"
    block = "\n".join([
        begin,
        f"## OCR: image_ocr_mapper (RapidOCR PP-OCRv4, ONNX on CPU), detection at short side "
        f">= {args.detect_min_side} px",
        "",
        f"`{command.strip()}`, {dt.date.today()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores shared with other work (load average {load_before:.1f} before, "
        f"{load_after:.1f} after: absolute times are noisy).",
        "",
        f"- {args.n} rendered images (seed {args.seed}), {score.words} words drawn, "
        f"{score.read} tokens read:",
        f"  - recall {figures['recall']:.3f}, precision {figures['precision']:.3f} "
        "(spaces between words ignored)",
        f"  - exact words: recall {figures['recall_exact_words']:.3f}, precision "
        f"{figures['precision_exact_words']:.3f} (a dropped space makes two words one wrong token)",
        f"- {len(TEXT_FREE)} text-free photos (scikit-image): text read in "
        f"{', '.join(false_text) if false_text else 'none'}",
        f"- throughput: {rate:.2f} images/s on one worker "
        f"({len(texts)} images of 480x320 px and the photos' sizes, decode included)",
        end,
    ])  # fmt: skip
    write_marked_block(RESULTS, begin, end, block)
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
