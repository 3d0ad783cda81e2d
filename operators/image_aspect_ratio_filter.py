"""image_aspect_ratio_filter: keep samples whose images' width/height is within [min_ratio, max_ratio]."""

from __future__ import annotations

from typing import Literal

from .base import RangeFilter
from .batch import Batch
from .registry import register


@register("image_aspect_ratio_filter")
class ImageAspectRatioFilter(RangeFilter):
    """Stat `aspect_ratios`: width / height per image, unrounded, as displayed (EXIF-rotated).

    Data-Juicer decodes every image to RGB to learn its size; we read the header only.
    """

    stats_key = "aspect_ratios"
    stats_keys = ("aspect_ratios",)
    min_arg, max_arg = "min_ratio", "max_ratio"

    def __init__(
        self,
        min_ratio: float = 0.333,
        max_ratio: float = 3.0,
        any_or_all: Literal["any", "all"] = "any",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if any_or_all not in ("any", "all"):
            raise ValueError(f"any_or_all must be 'any' or 'all', not {any_or_all!r}")
        self.min_ratio = min_ratio
        self.max_ratio = max_ratio
        self.any_or_all = any_or_all

    def compute(self, batch: Batch) -> list[list[float]]:
        header = batch.ctx.media.header
        out = []
        for paths in batch.images:
            headers = [header(p) for p in paths]
            out.append([h.width / h.height for h in headers])
        return out
