"""Thresholds: the recipe's current ones, what share each drops, and suggested ones.

Shares are judged by the operators themselves: `op.keep` on the stats rows, with copies
of the operator whose bound arguments are changed (one bound alone, or a suggested
value). So closed/open intervals, `reversed_range` and `any_or_all` over images count
exactly as in a run. Beyond `WHAT_IF_ROWS` samples, an evenly spaced subset of that size
is judged (the report says so): the shares move by well under a percentage point, and
the cost stays flat however large the dataset.

Suggestions follow what the published Better Synth solutions cut at: the mean (CLIP
similarity), a percentile (the 25th for CLIP/ITM) and k-sigma (3 sigma on other stats).
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Literal

import pyarrow as pa

from dj_synth.operators import Filter, Op
from dj_synth.operators.base import RangeFilter
from dj_synth.pipelines.recipe import operator_parameters

from .overall import Distribution

log = logging.getLogger("dj_synth")

WHAT_IF_ROWS = 100_000
NO_BOUND = 1e18  # Data-Juicer spells "no upper bound" sys.maxsize

# Filters with several stats or a non-range keep rule: (stat, argument, side) per bound.
OTHER_BOUNDS: dict[str, list[tuple[str, str, str]]] = {
    "image_shape_filter": [
        ("image_width", "min_width", "min"), ("image_width", "max_width", "max"),
        ("image_height", "min_height", "min"), ("image_height", "max_height", "max"),
    ],
    "language_id_score_filter": [("lang_score", "min_score", "min")],
}  # fmt: skip

LOW_RULES = ("mean", "p25", "p10", "p5", "mean − 2σ", "mean − 3σ")
HIGH_RULES = ("p75", "p90", "p95", "mean + 2σ", "mean + 3σ")


@dataclass
class Bound:
    """One threshold argument of a filter and its value in the recipe (None: unset)."""

    stat: str
    arg: str
    side: Literal["min", "max"]
    value: float | None

    @property
    def active(self) -> bool:
        return self.value is not None and math.isfinite(self.value) and abs(self.value) < NO_BOUND


def filter_bounds(op: Op) -> list[Bound]:
    """The threshold arguments of a filter that the recipe can set."""
    if not isinstance(op, Filter):
        return []
    if isinstance(op, RangeFilter):
        spec = [(op.stats_key, op.min_arg, "min"), (op.stats_key, op.max_arg, "max")]
    else:
        spec = OTHER_BOUNDS.get(op.name, [])
    params = operator_parameters(type(op))
    bounds = []
    for stat, arg, side in spec:
        if arg not in params:  # a fixed class attribute (watermark's min_prob), not an argument
            continue
        value = getattr(op, arg, None)
        number = float(value) if isinstance(value, (int, float)) else None
        bounds.append(Bound(stat, arg, side, number))  # type: ignore[arg-type]
    return bounds


def needed_stats(op: Op) -> list[str]:
    """The stats `op.keep` reads (a row without them was not seen by the operator)."""
    if isinstance(op, RangeFilter):
        return [op.stats_key]
    return list(getattr(op, "stats_keys", ()))


def suggestions(bound: Bound, dist: Distribution) -> list[tuple[str, float]]:
    """(rule, value) candidates for one bound, rounded to what a recipe would say; rules
    that land on the same value are merged, values outside the data left out."""
    m, s = dist.mean, dist.std
    values = {
        "mean": m, "p25": dist.q(0.25), "p10": dist.q(0.1), "p5": dist.q(0.05),
        "mean − 2σ": m - 2 * s, "mean − 3σ": m - 3 * s,
        "p75": dist.q(0.75), "p90": dist.q(0.9), "p95": dist.q(0.95),
        "mean + 2σ": m + 2 * s, "mean + 3σ": m + 3 * s,
    }  # fmt: skip
    rules = LOW_RULES if bound.side == "min" else HIGH_RULES
    merged: dict[float, list[str]] = {}
    for rule in rules:
        value = round_threshold(values[rule], dist.integral)
        if dist.min <= value <= dist.max:  # outside the data a cut removes nothing
            merged.setdefault(value, []).append(rule)
    return [(" = ".join(names), value) for value, names in merged.items()]


def round_threshold(value: float, integral: bool) -> float:
    """Whole numbers for whole-number stats, else 4 significant digits."""
    if integral:
        return float(round(value))
    if value == 0 or not math.isfinite(value):
        return value
    digits = 3 - int(math.floor(math.log10(abs(value))))
    return round(value, digits)


@dataclass
class Variant:
    label: str
    op: Op
    dropped: int = 0


@dataclass
class BoundWhatIf:
    bound: Bound
    alone: Variant
    suggested: list[tuple[str, Variant]] = field(default_factory=list)


@dataclass
class FilterWhatIf:
    """One filter: how many sampled rows it judged and what each variant dropped."""

    op: Op
    needs: list[str]
    configured: Variant
    bounds: list[BoundWhatIf]
    judged: int = 0
    error: str | None = None

    def share(self, variant: Variant) -> float:
        return variant.dropped / self.judged if self.judged else 0.0


def _with(op: Op, values: dict[str, float | None]) -> Op:
    clone = copy.copy(op)
    for arg, value in values.items():
        setattr(clone, arg, value)
    return clone


class WhatIf:
    """Drop counts of every filter's variants over (a subset of) the stats rows."""

    def __init__(
        self,
        ops: list[Op],
        dists: dict[str, Distribution],
        total_rows: int,
        sequential: bool,
        max_rows: int = WHAT_IF_ROWS,
    ) -> None:
        self.filters: list[FilterWhatIf] = []
        for op in ops:
            bounds = filter_bounds(op)
            needs = needed_stats(op)
            if not isinstance(op, Filter) or not needs:
                continue
            unset = {b.arg: None for b in bounds}
            items = []
            for b in bounds:
                others = {k: v for k, v in unset.items() if k != b.arg}
                alone = Variant(f"{b.arg} alone", _with(op, others))
                item = BoundWhatIf(b, alone)
                dist = dists.get(b.stat)
                if dist is not None and not op.reversed_range:
                    for rule, value in suggestions(b, dist):
                        item.suggested.append(
                            (rule, Variant(rule, _with(op, {**others, b.arg: value})))
                        )
                items.append(item)
            self.filters.append(FilterWhatIf(op, needs, Variant("as configured", op), items))
        self.step = max(1, math.ceil(total_rows / max_rows))
        self.total_rows = total_rows
        self.sampled = 0
        self.sequential = sequential
        self.remaining = [0] * len(self.filters)  # after each filter, in recipe order
        self._offset = 0

    @property
    def columns(self) -> list[str]:
        return sorted({c for f in self.filters for c in f.needs})

    def add(self, batch: pa.RecordBatch) -> None:
        """Judge the sampled rows of one batch (which must hold `self.columns`)."""
        n = batch.num_rows
        first = (-self._offset) % self.step
        self._offset += n
        picked = list(range(first, n, self.step))
        if not picked or not self.filters:
            self.sampled += len(picked)
            return
        table = pa.Table.from_batches([batch]).select(
            [c for c in self.columns if c in batch.schema.names]
        )
        rows = table.take(pa.array(picked)).to_pylist()
        self.sampled += len(rows)
        alive = [True] * len(rows)
        for k, f in enumerate(self.filters):
            if f.error is None:
                self._judge(f, rows, alive)
            self.remaining[k] += sum(alive)

    def _judge(self, f: FilterWhatIf, rows: list[dict[str, Any]], alive: list[bool]) -> None:
        """Each variant's `keep` runs once per distinct stats row (lengths, word counts and
        pixel sizes repeat a lot), its verdict counted for every row that has those stats."""
        idx: list[int] = []
        keys: list[tuple[Any, ...]] = []
        counts: dict[tuple[Any, ...], int] = {}
        for i, row in enumerate(rows):
            values = [row.get(c) for c in f.needs]
            if any(v is None for v in values):  # the operator never saw this sample
                continue
            key = tuple(tuple(v) if isinstance(v, list) else v for v in values)
            idx.append(i)
            keys.append(key)
            counts[key] = counts.get(key, 0) + 1
        if not idx:
            return
        unique = list(counts)
        weights = [counts[k] for k in unique]
        view = SimpleNamespace(
            stats=[
                {c: list(v) if isinstance(v, tuple) else v for c, v in zip(f.needs, key)}
                for key in unique
            ]
        )

        def dropped(flags: list[bool]) -> int:
            return sum(w for w, keep in zip(weights, flags) if not keep)

        try:
            flags = f.op.keep(view)  # type: ignore[arg-type]
            f.configured.dropped += dropped(flags)
            for b in f.bounds:
                b.alone.dropped += dropped(b.alone.op.keep(view))  # type: ignore[arg-type]
                for _, v in b.suggested:
                    v.dropped += dropped(v.op.keep(view))  # type: ignore[arg-type]
        except Exception as exc:  # a custom filter whose keep needs more than its stats
            f.error = f"{type(exc).__name__}: {exc}"
            log.warning("cannot judge %s from its stats alone: %s", f.op.name, f.error)
            return
        f.judged += len(idx)
        if self.sequential:
            verdict = dict(zip(unique, flags))
            for i, key in zip(idx, keys):
                alive[i] = alive[i] and verdict[key]

    @property
    def subset(self) -> bool:
        return self.step > 1
