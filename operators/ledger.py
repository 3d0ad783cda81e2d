"""What happened to every sample in one unit of work: counts, timings, drops, errors.

Operators write into a `Ledger` through the base classes; executors merge the
ledgers of all units into the run's summary and write the records to disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .batch import SampleRef


@dataclass
class OpMetrics:
    """Per-operator counters. `generated` is the mapper's net change in row count."""

    n_in: int = 0
    n_out: int = 0
    seconds: float = 0.0
    filtered: int = 0
    quarantined: int = 0
    generated: int = 0
    cache_hits: int = 0  # model outputs found in the model-output cache
    cache_misses: int = 0  # model outputs computed

    def add(self, other: OpMetrics) -> None:
        self.n_in += other.n_in
        self.n_out += other.n_out
        self.seconds += other.seconds
        self.filtered += other.filtered
        self.quarantined += other.quarantined
        self.generated += other.generated
        self.cache_hits += other.cache_hits
        self.cache_misses += other.cache_misses


@dataclass
class FilteredRecord:
    op_index: int
    op_name: str
    reason: str
    ref: SampleRef
    row: Any  # the sample as a dict, or its JSON bytes when it never left the executor


@dataclass
class QuarantineRecord:
    stage: str  # the operator name, or "read" for input that never parsed
    error: str
    ref: SampleRef
    row: Any = None  # the sample dict, if it parsed
    raw: str | None = None  # the raw line, if it did not


@dataclass
class Ledger:
    metrics: dict[int, OpMetrics] = field(default_factory=dict)
    filtered: list[FilteredRecord] = field(default_factory=list)
    quarantined: list[QuarantineRecord] = field(default_factory=list)
    traced: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (op index, change)

    def op(self, index: int) -> OpMetrics:
        if index not in self.metrics:
            self.metrics[index] = OpMetrics()
        return self.metrics[index]
