"""maximum_line_length_filter: keep samples whose longest line is within [min_len, max_len]."""

from __future__ import annotations

import sys

from .base import RangeFilter
from .batch import Batch
from .registry import register


@register("maximum_line_length_filter")
class MaximumLineLengthFilter(RangeFilter):
    """Stat `max_line_length`: the longest of `text.splitlines()` in characters (0 if none).

    `str.splitlines` as Data-Juicer: '\\r', '\\r\\n', '\\v', '\\f', '\\x1c'-'\\x1e', '\\x85',
    U+2028 and U+2029 end lines too; special tokens count as characters.
    """

    stats_key = "max_line_length"
    stats_keys = ("max_line_length",)
    min_arg, max_arg = "min_len", "max_len"

    def __init__(self, min_len: int = 10, max_len: int = sys.maxsize, **kwargs) -> None:
        super().__init__(**kwargs)
        self.min_len = min_len
        self.max_len = max_len

    def compute(self, batch: Batch) -> list[int]:
        return [max(map(len, text.splitlines()), default=0) for text in batch.texts]
