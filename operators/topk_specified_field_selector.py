"""topk_specified_field_selector: keep the samples with the highest (or lowest) field value."""

from __future__ import annotations

from typing import Any

from .batch import Batch
from .field_selection import (
    TopFieldSelector,
    count_from,
    field_values,
    key_number,
    number_key,
    ranked,
    shown,
)
from .registry import register


@register("topk_specified_field_selector")
class TopkSpecifiedFieldSelector(TopFieldSelector):
    """Keeps the `topk` samples (or `top_ratio` of them; with both, the fewer) with the
    highest `field_key` value (`reverse: false`: the lowest).

    `field_key` is dotted for nested fields (`__dj__stats__.image_text_similarity`); a list
    counts as its mean, a numeric string as its number; a missing or non-numeric value ranks
    last, ties keep the earlier sample (as Data-Juicer's heapq selection). Kept samples stay
    in input order (Data-Juicer reorders them by the field). Unlike Data-Juicer, a missing
    `field_key` or a missing nested key is not a crash: the recipe is refused for the first,
    the sample ranks last for the second; and setting neither `topk` nor `top_ratio` is
    refused (Data-Juicer keeps every sample).
    """

    def compute_key(self, batch: Batch) -> list[float | str | None]:
        return [number_key(v) for v in field_values(batch, self.field_key)]

    def select(self, entries: list[Any]) -> dict[tuple[int, int], str]:
        n = len(entries)
        count = count_from(self.top_ratio, self.topk, n)
        if n <= 1 or count is None or count >= n:
            return {}
        values = [key_number(e[4]) for e in entries]
        keep = set(ranked(values, descending=self.reverse)[:count])
        side = "highest" if self.reverse else "lowest"
        return {
            e[1]: f"{self.field_key}={shown(e[4])} not among the {count} {side}"
            for i, e in enumerate(entries)
            if i not in keep
        }
