"""The shared shape of image-text score filters (CLIP similarity, BLIP matching).

A sample's text splits into chunks; each chunk with images gets one score: the
model's score of each (image, chunk text) pair, reduced over the chunk's images.
Subclasses only score a list of distinct pairs; the pairs of a whole batch are
scored together, so the accelerator sees full batches.
"""

from __future__ import annotations

from .base import RangeFilter
from .batch import Batch, image_chunks
from .models import ModelOp

REDUCERS = {
    "avg": lambda xs: sum(xs) / len(xs),
    "max": max,
    "min": min,
}


class ImageTextScoreFilter(ModelOp, RangeFilter):
    accelerator = "cuda"
    needs_pixels = True
    pixel_side = 448  # CLIP / BLIP inputs are 224-384 px
    default_batch_size = 256
    min_arg, max_arg = "min_score", "max_score"
    reduce_mode = "avg"

    def check_reduce_mode(self, reduce_mode: str) -> None:
        if reduce_mode not in REDUCERS:
            raise ValueError(f"reduce_mode must be one of {sorted(REDUCERS)}, got {reduce_mode!r}")

    def score_pairs(
        self, pairs: list[tuple[str, str]], batch: Batch
    ) -> dict[tuple[str, str], float]:
        """Score per distinct (image path, chunk text)."""
        raise NotImplementedError

    def compute(self, batch: Batch) -> list[list[float]]:
        ctx = batch.ctx
        per_sample = [
            image_chunks(text, paths, ctx.image_token, ctx.eoc_token)
            for text, paths in zip(batch.texts, batch.images)
        ]
        pairs = sorted(
            {(p, text) for chunks in per_sample for text, paths in chunks for p in paths}
        )
        scores = self.score_pairs(pairs, batch) if pairs else {}
        reduce = REDUCERS[self.reduce_mode]
        return [
            [reduce([scores[(p, text)] for p in paths]) for text, paths in chunks if paths]
            for chunks in per_sample
        ]
