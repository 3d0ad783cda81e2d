"""character_repetition_filter: keep samples whose char n-gram repetition ratio is within bounds."""

from __future__ import annotations

import math
from collections import Counter

from .base import RangeFilter
from .batch import Batch
from .registry import register


def char_rep_ratio(text: str, n: int) -> float:
    """Share of all character n-grams taken by the top floor(sqrt(#distinct)) repeated ones."""
    total = len(text) - n + 1
    if total <= 0:
        return 0.0
    freq = Counter([text[i : i + n] for i in range(total)])
    values = sorted(freq.values(), reverse=True)
    distinct = len(values)
    k = min(int(math.sqrt(distinct)), distinct - values.count(1))
    return sum(values[:k]) / total


@register("character_repetition_filter")
class CharacterRepetitionFilter(RangeFilter):
    """Stat `char_rep_ratio` (BigScience): repeated character `rep_len`-grams / all of them.

    Over the overlapping character n-grams of the raw text (n = `rep_len`), the
    occurrences of the floor(sqrt(D)) most frequent ones (D = distinct n-grams),
    counting only n-grams seen more than once, divided by the number of n-grams;
    0.0 for text shorter than `rep_len`.
    """

    stats_key = "char_rep_ratio"
    stats_keys = ("char_rep_ratio",)
    min_arg, max_arg = "min_ratio", "max_ratio"

    def __init__(
        self, rep_len: int = 10, min_ratio: float = 0.0, max_ratio: float = 0.5, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if rep_len < 1:
            raise ValueError(f"character_repetition_filter: rep_len must be >= 1, got {rep_len}")
        self.n = rep_len
        self.rep_len = rep_len
        self.min_ratio = min_ratio
        self.max_ratio = max_ratio

    def compute(self, batch: Batch) -> list[float]:
        n = self.n
        return [char_rep_ratio(text, n) for text in batch.texts]
