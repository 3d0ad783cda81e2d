"""Reading the text in images with RapidOCR (PP-OCRv4 detection + recognition, ONNX, CPU).

`rapidocr-onnxruntime` ships its models inside the wheel: nothing is downloaded. The
engine finds text lines (boxes), reads each (text, confidence) and returns them in
reading order (top to bottom, left to right). `OcrOp` is the shared base of the OCR
operators: one engine per worker, every distinct image of a batch read once.

The recognizer is trained mostly on Chinese; on Latin text it sometimes drops the
space between words ("OPEN24HOURS"), see bench/RESULTS.md for measured quality.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .batch import Batch
from .models import ModelOp, cpu_threads

# RapidOCR upscales images whose short side is below 736 px before detection (PP-OCR's
# default). Measured on 60 rendered images (bench/RESULTS.md, bench/ocr_quality.py): at 320
# px, 3.3x faster, exact-word recall 0.92 instead of 0.74 (upscaled crops lose more spaces
# between words: "OPEN24HOURS"), recall with spaces ignored 0.95 instead of 0.97, and no
# text "read" in text-free photos (736 read some in one of six).
DETECT_MIN_SIDE = 320

OcrLine = dict[str, Any]  # {"text": str, "box": [[x, y] x 4], "confidence": float}


def load_engine(min_confidence: float) -> Any:
    import logging

    from rapidocr_onnxruntime import RapidOCR

    logging.getLogger("RapidOCR").setLevel(logging.WARNING)
    return RapidOCR(
        text_score=min_confidence, intra_op_num_threads=cpu_threads(), print_verbose=False,
        det_limit_side_len=DETECT_MIN_SIDE,
    )  # fmt: skip


def read_lines(engine: Any, image: Any, min_confidence: float) -> list[OcrLine]:
    """The text lines of one RGB PIL image with confidence >= `min_confidence`."""
    found, _ = engine(image, text_score=min_confidence)
    lines = []
    for box, text, confidence in found or []:
        if text.strip() and confidence >= min_confidence:
            lines.append({
                "text": text.strip(),
                "box": [[round(float(x), 1), round(float(y), 1)] for x, y in box],
                "confidence": round(float(confidence), 4),
            })  # fmt: skip
    return lines


def polygon_area(box: list[list[float]]) -> float:
    """Shoelace area of a (convex) quadrilateral."""
    n = len(box)
    twice = sum(box[i][0] * box[(i + 1) % n][1] - box[(i + 1) % n][0] * box[i][1] for i in range(n))
    return abs(twice) / 2.0


class OcrOp(ModelOp):
    """Mixin for operators reading text in images: `self.ocr(batch)` maps each distinct
    image path of the batch to its text lines. Needs `min_confidence` set in __init__."""

    accelerator = "cpu"  # the ONNX models run on CPU here
    needs_pixels = True
    pixel_side: ClassVar[int | None] = None  # small text needs the full resolution
    default_batch_size = 64
    gpu_batch_size = 8
    min_confidence: float = 0.5

    def check_installed(self) -> None:
        import importlib.util

        if importlib.util.find_spec("rapidocr_onnxruntime") is None:
            raise ValueError(
                f"{self.name} needs rapidocr-onnxruntime: pip install 'dj-synth[models]'"
            )

    def load_model(self, device: str) -> Any:
        return load_engine(self.min_confidence)

    def ocr(self, batch: Batch) -> dict[str, list[OcrLine]]:
        media = batch.ctx.media
        paths = sorted({p for row in batch.images for p in row})
        lines = self.map_batched(
            paths,
            lambda images, _: [read_lines(self._model, im, self.min_confidence) for im in images],
            lambda chunk: [self.pixels(media, p) for p in chunk],
        )
        return dict(zip(paths, lines))
