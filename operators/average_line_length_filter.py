"""average_line_length_filter: keep samples whose mean line length is within [min_len, max_len]."""

from __future__ import annotations

import sys

from .base import RangeFilter
from .batch import Batch
from .registry import register


@register("average_line_length_filter")
class AverageLineLengthFilter(RangeFilter):
    """Stat `avg_line_length` = `len(text)` / number of `text.splitlines()` (0.0 if none).

    As Data-Juicer: the numerator is the whole text, line breaks included, so
    "ab\\ncd" is 5 / 2 = 2.5; lines end as in `str.splitlines`.
    """

    stats_key = "avg_line_length"
    stats_keys = ("avg_line_length",)
    min_arg, max_arg = "min_len", "max_len"

    def __init__(self, min_len: int = 10, max_len: int = sys.maxsize, **kwargs) -> None:
        super().__init__(**kwargs)
        self.min_len = min_len
        self.max_len = max_len

    def compute(self, batch: Batch) -> list[float]:
        out = []
        for text in batch.texts:
            lines = len(text.splitlines())
            out.append(len(text) / lines if lines else 0.0)
        return out
