"""What Data-Juicer's field selectors share: a field named by a dotted key, its value as a
number, how many samples a ratio or a count selects, and the argument checks.

A dotted key walks nested dicts: `__dj__stats__.text_len`, `meta.source`. Where a level is
missing the value is None (Data-Juicer stops the run with an assertion instead).
"""

from __future__ import annotations

import math
import sys
from typing import Any

from .base import Selector
from .batch import MISSING, Batch


class TopFieldSelector(Selector):
    """Data-Juicer's `field_key`, `top_ratio`, `topk`, `reverse` and their checks: the
    arguments of the top-k and frequency selectors (`topk` counts `topk_counts`)."""

    topk_counts = "samples"

    def __init__(
        self,
        field_key: str = "",
        top_ratio: float | None = None,
        topk: int | None = None,
        reverse: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_field_key(self.name, field_key)
        check_ratio(self.name, "top_ratio", top_ratio)
        check_count(self.name, "topk", topk)
        if not top_ratio and topk is None:
            raise ValueError(
                f"{self.name}: set topk (a count of {self.topk_counts}) or top_ratio (0-1)"
            )
        self.field_key, self.top_ratio, self.topk = field_key, top_ratio, topk
        self.reverse = reverse


def field_values(batch: Batch, field_key: str) -> list[Any]:
    """Each sample's value at `field_key` (None where absent)."""
    first, *rest = field_key.split(".")
    column = batch.columns.get(first)
    if column is None:
        return [None] * len(batch)
    out = []
    for value in column:
        for key in rest:
            value = value.get(key) if isinstance(value, dict) else None
        out.append(None if value is MISSING else value)
    return out


def to_number(value: Any) -> float | None:
    """Data-Juicer's `stats_to_number`: a numeric string as its number, a list as its mean;
    None where that fails (empty, not numeric, NaN), so the caller ranks it last."""
    import numpy as np

    try:
        if isinstance(value, str):
            number = float(value)
        elif value is None or value == []:
            return None
        else:
            number = float(np.asarray(value).mean())
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def number_key(value: Any) -> float | str | None:
    """`to_number` as a key the engine can store (checkpoints write JSON: infinities as
    text); `key_number` reads it back."""
    number = to_number(value)
    if number is not None and math.isinf(number):
        return repr(number)
    return number


def key_number(key: float | str | None) -> float | None:
    return float(key) if isinstance(key, str) else key


# Data-Juicer's stand-ins for values that are not numbers: last whatever the order.
NOT_A_NUMBER_LOW, NOT_A_NUMBER_HIGH = float(-sys.maxsize), float(sys.maxsize)


def ranked(values: list[float | None], descending: bool) -> list[int]:
    """Indices by value (`heapq.nlargest` / `nsmallest` order): ties keep the earlier
    index; a missing value counts as -maxsize descending and +maxsize ascending (last)."""
    if descending:
        filled = [NOT_A_NUMBER_LOW if v is None else v for v in values]
        return sorted(range(len(values)), key=lambda i: (-filled[i], i))
    filled = [NOT_A_NUMBER_HIGH if v is None else v for v in values]
    return sorted(range(len(values)), key=lambda i: (filled[i], i))


def count_from(ratio: float | None, count: int | None, total: int) -> int | None:
    """Data-Juicer's rule for a ratio and a count: the ratio of `total` (truncated), or the
    count when the ratio is unset or 0; with both, the smaller. None: neither set."""
    if not ratio:
        return count or None
    selected = ratio * total
    if count and count < selected:
        selected = count
    return int(selected)


def check_ratio(op: str, name: str, value: float | None) -> None:
    if value is not None and not (isinstance(value, (int, float)) and 0 <= value <= 1):
        raise ValueError(f"{op}: {name} must be a number from 0 to 1, got {value!r}")


def check_count(op: str, name: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f"{op}: {name} must be a positive integer, got {value!r}")


def check_field_key(op: str, field_key: str) -> None:
    if not field_key or not isinstance(field_key, str):
        raise ValueError(
            f"{op}: field_key is required, e.g. __dj__stats__.image_text_similarity or "
            "meta.source (Data-Juicer keeps every sample without it)"
        )


def shown(value: Any) -> str:
    """A value for a drop reason: numbers short, text cut."""
    if isinstance(value, float):
        return f"{value:.4g}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
