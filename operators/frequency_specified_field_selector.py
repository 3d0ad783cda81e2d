"""frequency_specified_field_selector: keep the samples whose field value is among the most
(or least) frequent values."""

from __future__ import annotations

import json
import math
from typing import Any

from .batch import Batch
from .field_selection import (
    TopFieldSelector,
    count_from,
    field_values,
    shown,
)
from .registry import register


@register("frequency_specified_field_selector")
class FrequencySpecifiedFieldSelector(TopFieldSelector):
    """Groups the samples by their `field_key` value (dotted for nested fields,
    `meta.source`), ranks the groups by size (`reverse: true`: the largest first; equal
    sizes keep first-seen order) and keeps every sample of the first `topk` groups (or
    `top_ratio` of the groups; with both, the fewer).

    Kept samples stay in input order (Data-Juicer writes them group by group). Where
    Data-Juicer stops the run, we go on: a missing value or NaN counts as None (null), and a
    list or dict value groups by its JSON text. An empty `field_key`, or neither `topk` nor
    `top_ratio`, is refused (Data-Juicer keeps every sample).
    """

    topk_counts = "values"

    def compute_key(self, batch: Batch) -> list[Any]:
        return [_group_key(v) for v in field_values(batch, self.field_key)]

    def select(self, entries: list[Any]) -> dict[tuple[int, int], str]:
        if len(entries) <= 1:
            return {}
        groups: dict[Any, list[int]] = {}
        for i, e in enumerate(entries):
            groups.setdefault(e[4], []).append(i)
        count = count_from(self.top_ratio, self.topk, len(groups))
        if count is None:
            return {}
        by_size = sorted(groups.values(), key=len, reverse=self.reverse)  # stable
        keep = {i for group in by_size[:count] for i in group}
        side = "most" if self.reverse else "least"
        return {
            e[1]: f"{self.field_key}={shown(e[4])} ({len(groups[e[4]])} samples) not among "
            f"the {count} {side} frequent values"
            for i, e in enumerate(entries)
            if i not in keep
        }


def _group_key(value: Any) -> Any:
    """A storable, hashable key: scalars as they are, lists and dicts as JSON text."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("float", repr(value))  # JSON has no inf
    if value is None or isinstance(value, (str, int, float)):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
