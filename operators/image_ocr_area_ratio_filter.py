"""image_ocr_area_ratio_filter: keep samples by how much of each image is text."""

from __future__ import annotations

from typing import Any, Literal

from .base import RangeFilter
from .batch import Batch
from .ocr import OcrOp, polygon_area
from .registry import register


@register("image_ocr_area_ratio_filter")
class ImageOcrAreaRatioFilter(OcrOp, RangeFilter):
    """Stat `image_ocr_area_ratio` (ours): per image, the area of its OCR text boxes
    (lines with confidence >= `min_confidence`) over the image area, capped at 1.
    Kept when within [`min_ratio`, `max_ratio`] (`any_or_all` over its images); a
    sample without images is kept. `max_ratio: 0.3` drops documents and screenshots;
    `min_ratio: 0.01` keeps only images with readable text (TextVQA-style data).
    """

    stats_key = "image_ocr_area_ratio"
    stats_keys = ("image_ocr_area_ratio",)
    min_arg, max_arg = "min_ratio", "max_ratio"

    def __init__(
        self,
        min_ratio: float = 0.0,
        max_ratio: float = 1.0,
        any_or_all: Literal["any", "all"] = "any",
        min_confidence: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if any_or_all not in ("any", "all"):
            raise ValueError(f"any_or_all must be 'any' or 'all', got {any_or_all!r}")
        self.min_ratio, self.max_ratio, self.any_or_all = min_ratio, max_ratio, any_or_all
        self.min_confidence = min_confidence
        self.check_installed()

    def compute(self, batch: Batch) -> list[list[float]]:
        found = self.ocr(batch)
        media = batch.ctx.media
        ratios = {}
        for path, lines in found.items():
            width, height = self.pixels(media, path).size
            text_area = sum(polygon_area(line["box"]) for line in lines)
            ratios[path] = min(1.0, round(text_area / (width * height), 6))
        return [[ratios[p] for p in row] for row in batch.images]
