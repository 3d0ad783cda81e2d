"""The run's output layer, the same for every engine: export (one file or `-i-of-n` shards),
the stats side file, filtered records, quarantine, LLaVA export and `summary.json`.

Engines hand it what their workers produced (`absorb` a stage's output, `export` the
last stage's survivors, `drop` a deduplicator's decisions); `commit` checks that every
input sample is accounted for, renames everything into place and writes the summary.
Nothing is visible under its final name before that.
"""

from __future__ import annotations

import os
import time
from typing import Any

from dj_synth.operators.base import Filter, GlobalOp, Op
from dj_synth.operators.ledger import OpMetrics

from .export import RecordWriters, ShardedWriter, remove_stale_exports, stats_path
from .recipe import Recipe
from .stages import Stage, StageOutput, Survivor, filtered_line
from .summary import RunAccount, machine, now_iso, write_summary
from .tracer import Tracer, clear_trace

EMPTY_STATS = b'{"__dj__stats__":{}}'
# Operator errors are judged against the input only after this many samples.
QUARANTINE_RATIO_MIN_SAMPLES = 2000


class QuarantineRatioError(RuntimeError):
    """Operators failed on too large a share of the samples: a bug, not bad data."""


def writes_stats_file(recipe: Recipe, ops: list[Op]) -> bool:
    """Data-Juicer's `<export base>_stats.jsonl` exists when filters computed stats."""
    return any(isinstance(op, Filter) for op in ops) and not recipe.settings.keep_stats_in_res_ds


class QuarantineGuard:
    """Stops the run when operators (not the input reader) quarantine more than
    `max_quarantine_ratio` of the samples, once enough samples were seen to judge."""

    def __init__(self, max_ratio: float) -> None:
        self.max_ratio = max_ratio
        self.samples = 0
        self.op_errors = 0
        self.by_op: dict[int, int] = {}

    def add(self, samples: int, errors: dict[int, int]) -> None:
        """`samples` more input samples seen; `errors`: samples quarantined per operator."""
        self.samples += samples
        for index, count in errors.items():
            self.op_errors += count
            self.by_op[index] = self.by_op.get(index, 0) + count
        if self.samples >= QUARANTINE_RATIO_MIN_SAMPLES and self.max_ratio < 1.0:
            if self.op_errors > self.max_ratio * self.samples:
                worst = max(self.by_op, key=self.by_op.__getitem__)
                raise QuarantineRatioError(
                    f"operators quarantined {self.op_errors:,} of the first {self.samples:,} "
                    f"samples (max_quarantine_ratio {self.max_ratio}); most from process"
                    f"[{worst}]. That many failures is a bug or a wrong setting, not bad data: "
                    "see the errors in the quarantine records of a smaller run, or raise "
                    "max_quarantine_ratio"
                )


class RunOutput:
    """Everything a run writes; engines call `absorb` / `drop` / `export`, then `commit`."""

    def __init__(self, recipe: Recipe, ops: list[Op]) -> None:
        s = recipe.settings
        self.recipe = recipe
        self.account = RunAccount(ops)
        self.records = RecordWriters(recipe.work_dir)
        self.exports = ShardedWriter(s.export_path, s.export_shard_size)
        self.stats = (
            ShardedWriter(stats_path(s.export_path)) if writes_stats_file(recipe, ops) else None
        )
        self.guard = QuarantineGuard(s.max_quarantine_ratio)
        self.names = {op.index: op.name for op in ops}
        self.tracer = (
            Tracer(recipe.work_dir, ops, self.account.op_keys(), s.trace_num)
            if s.open_tracer else None
        )  # fmt: skip
        self.started, self.t0 = now_iso(), time.perf_counter()

    def absorb(self, stage: Stage, out: StageOutput) -> list[Survivor]:
        """Merge a unit of work's counters and records into the run's; return its survivors."""
        acc = self.account
        acc.merge_metrics(out.metrics)
        for op_index, line in out.filtered:
            self.records.write_filtered(op_index, self.names[op_index], line)
            if self.tracer is not None:
                self.tracer.filtered(op_index, line)
        if self.tracer is not None:
            for op_index, line in out.traced:
                self.tracer.changed(op_index, line)
        for line in out.quarantined:
            self.records.write_quarantine(stage.index, line)
        acc.quarantined_samples += len(out.quarantined)
        acc.quarantine_kinds.update(out.quarantine_kinds)
        acc.read_seconds += out.read_seconds
        return out.survivors

    def export(self, survivors: list[Survivor]) -> None:
        for sv in survivors:
            self.exports.write(sv.export or sv.sample)
            if self.stats is not None:
                self.stats.write(sv.stats or EMPTY_STATS)
        self.account.exported_samples += len(survivors)

    def abort(self) -> None:
        self.exports.abort()
        if self.stats is not None:
            self.stats.abort()
        self.records.abort()

    def commit(self, input_samples: int, blank_lines: int, **extra: Any) -> dict[str, Any]:
        """Check the account, put every file in place, write and return the summary."""
        recipe, s, acc = self.recipe, self.recipe.settings, self.account
        acc.input_samples, acc.blank_lines = input_samples, blank_lines
        try:
            acc.check()
        except BaseException:
            self.abort()
            raise
        export_files = self.exports.commit()
        if self.stats is not None:
            stats_files = self.stats.commit()
        else:
            stats_files = []
            remove_stale_exports(stats_path(s.export_path), keep=[])
        records = self.records.commit()
        if self.tracer is not None:
            extra["trace_files"] = self.tracer.commit(extra.get("dataset_files", []))
        else:
            clear_trace(recipe.work_dir)
        llava: dict[str, Any] = {}
        if s.export_format == "llava":
            from dj_synth.tools.llava import dj_to_llava

            path = recipe.llava_export_path
            count = dj_to_llava(export_files, path, recipe.llava_options())
            llava = {"llava_export_file": path, "llava_samples": count}
        elapsed = time.perf_counter() - self.t0
        summary = acc.to_dict(
            project_name=s.project_name,
            recipe=recipe.path,
            started=self.started,
            finished=now_iso(),
            elapsed_seconds=round(elapsed, 3),
            samples_per_second=round(acc.input_samples / elapsed, 1) if elapsed > 0 else 0.0,
            machine=machine(),
            export_files=export_files,
            stats_files=stats_files,
            work_dir=recipe.work_dir,
            filtered_files=records["filtered"],
            quarantine_file=records["quarantine"],
            accounting_ok=True,
            **extra,
            **llava,
        )
        write_summary(os.path.join(recipe.work_dir, "summary.json"), summary)
        return summary


def apply_drops(
    op: GlobalOp, survivors: list[Survivor], reasons: list[str | None]
) -> tuple[list[Survivor], StageOutput]:
    """Apply a global operator's decision (a reason per survivor, None to keep): the kept
    survivors, and the drops as that operator's filtered records and counts."""
    dropped = StageOutput()
    kept = []
    for sv, reason in zip(survivors, reasons):
        if reason is None:
            kept.append(sv)
            continue
        dropped.filtered.append((op.index, filtered_line(op.name, reason, sv.ref, sv.sample)))
        m = dropped.metrics.setdefault(op.index, OpMetrics())
        m.filtered += 1
        m.n_out -= 1
    return kept, dropped
