"""image_shape_filter: keep samples whose images' width and height are within bounds."""

from __future__ import annotations

import sys
from typing import Literal

from .base import Filter
from .batch import Batch
from .registry import register


@register("image_shape_filter")
class ImageShapeFilter(Filter):
    """Stats `image_width` / `image_height`: one value per image, read from the header.

    Unlike Data-Juicer, which decodes every image to RGB to learn its size, this
    reads the file header only, and reports the size as displayed (EXIF-rotated).
    """

    stats_keys = ("image_width", "image_height")

    def __init__(
        self,
        min_width: int = 1,
        max_width: int = sys.maxsize,
        min_height: int = 1,
        max_height: int = sys.maxsize,
        any_or_all: Literal["any", "all"] = "any",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.min_width, self.max_width = min_width, max_width
        self.min_height, self.max_height = min_height, max_height
        self.any_or_all = any_or_all

    def compute_stats(self, batch: Batch) -> None:
        media = batch.ctx.media
        for stats, paths in zip(batch.stats, batch.images):
            headers = [media.header(p) for p in paths]
            stats["image_width"] = [h.width for h in headers]
            stats["image_height"] = [h.height for h in headers]

    def keep(self, batch: Batch) -> list[bool]:
        flags = []
        for stats in batch.stats:
            oks = [
                self.in_range(w, self.min_width, self.max_width)
                and self.in_range(h, self.min_height, self.max_height)
                for w, h in zip(stats["image_width"], stats["image_height"])
            ]
            flags.append(not oks or (any(oks) if self.any_or_all == "any" else all(oks)))
        return flags
