"""range_specified_field_selector: keep the samples ranked within a range by a field value."""

from __future__ import annotations

from typing import Any

from .base import Selector
from .batch import Batch
from .field_selection import (
    NOT_A_NUMBER_LOW,
    check_count,
    check_field_key,
    check_ratio,
    field_values,
    key_number,
    number_key,
    shown,
)
from .registry import register


@register("range_specified_field_selector")
class RangeSpecifiedFieldSelector(Selector):
    """Sorts the samples by `field_key` ascending and keeps ranks `lower` (exclusive) to
    `upper` (inclusive): `lower` = `lower_percentile` x N (truncated) or `lower_rank`, the
    larger when both are set; `upper` = `upper_percentile` x N or `upper_rank`, the smaller.

    Values are read as by `topk_specified_field_selector` (dotted key, list mean, numeric
    string); a missing or non-numeric value sorts as the smallest (Data-Juicer's -maxsize).
    Ties are broken as Data-Juicer's two heapq passes break them (the `upper` smallest, ties
    earlier first, then the largest `upper - lower` of those, ties earlier first). Kept
    samples stay in input order (Data-Juicer reorders them by the field). Where we differ:
    Data-Juicer keeps every sample unless both a lower and an upper bound are set; here an
    unset side is the end of the data (refused when no bound at all is set), and an empty
    `field_key` is refused rather than a no-op.
    """

    def __init__(
        self,
        field_key: str = "",
        lower_percentile: float | None = None,
        upper_percentile: float | None = None,
        lower_rank: int | None = None,
        upper_rank: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_field_key(self.name, field_key)
        check_ratio(self.name, "lower_percentile", lower_percentile)
        check_ratio(self.name, "upper_percentile", upper_percentile)
        check_count(self.name, "lower_rank", lower_rank)
        check_count(self.name, "upper_rank", upper_rank)
        bounds = (lower_percentile, upper_percentile, lower_rank, upper_rank)
        if all(b is None for b in bounds):
            raise ValueError(
                f"{self.name}: set a bound (lower_percentile / upper_percentile 0-1, "
                "lower_rank / upper_rank)"
            )
        self.field_key = field_key
        self.lower_percentile, self.upper_percentile = lower_percentile, upper_percentile
        self.lower_rank, self.upper_rank = lower_rank, upper_rank

    def bounds(self, n: int) -> tuple[int, int]:
        """(lower, upper) ranks for `n` samples, as Data-Juicer computes them."""
        lower, upper = 0, n
        if self.lower_percentile is not None:
            lower = int(self.lower_percentile * n)
        if self.lower_rank is not None:
            lower = max(lower, self.lower_rank)
        if self.upper_percentile is not None:
            upper = int(self.upper_percentile * n)
        if self.upper_rank is not None:
            upper = min(upper, self.upper_rank)
        return lower, max(lower, upper)

    def compute_key(self, batch: Batch) -> list[float | str | None]:
        return [number_key(v) for v in field_values(batch, self.field_key)]

    def select(self, entries: list[Any]) -> dict[tuple[int, int], str]:
        n = len(entries)
        if n <= 1:
            return {}
        lower, upper = self.bounds(n)
        numbers = [key_number(e[4]) for e in entries]
        values = [NOT_A_NUMBER_LOW if v is None else v for v in numbers]
        smallest = sorted(range(n), key=lambda i: (values[i], i))[:upper]
        # the largest `upper - lower` of those; ties: earlier in `smallest` first
        order = sorted(range(len(smallest)), key=lambda j: (-values[smallest[j]], j))
        keep = {smallest[j] for j in order[: upper - lower]}
        return {
            e[1]: f"{self.field_key}={shown(e[4])} ranked outside ({lower}, {upper}]"
            for i, e in enumerate(entries)
            if i not in keep
        }
