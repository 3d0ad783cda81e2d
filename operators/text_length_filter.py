"""text_length_filter: keep samples whose text length is within [min_len, max_len]."""

from __future__ import annotations

import sys

from .base import RangeFilter
from .batch import Batch
from .registry import register


@register("text_length_filter")
class TextLengthFilter(RangeFilter):
    """Stat `text_len` = `len(text)`, special tokens included (as Data-Juicer counts)."""

    stats_key = "text_len"
    stats_keys = ("text_len",)
    min_arg, max_arg = "min_len", "max_len"

    def __init__(self, min_len: int = 10, max_len: int = sys.maxsize, **kwargs) -> None:
        super().__init__(**kwargs)
        self.min_len = min_len
        self.max_len = max_len

    def compute(self, batch: Batch) -> list[int]:
        return [len(text) for text in batch.texts]
