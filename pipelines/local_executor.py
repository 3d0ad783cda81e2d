"""The local executor: streaming, `np` worker processes, deterministic output.

Batches of raw lines go to a process pool through a bounded window (memory
stays flat whatever the dataset size) and come back in submission order, so
the same input and recipe give byte-identical output for any `np`. Stages are
chained lazily; the deduplication decision between stages runs here, in input
order (see `stages.py`).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from dj_synth.operators.base import Deduplicator, Filter
from dj_synth.operators.dedup_decision import DedupEntry, decide

from .dataset import DatasetReader, RawItem
from .export import ExportError, RecordWriters, ShardedWriter, check_writable, stats_path
from .progress import Progress
from .recipe import Recipe
from .spool import Spool
from .stages import Positions, Stage, StageOutput, StageRunner, Survivor, filtered_line, plan_stages
from .summary import RunAccount, machine, now_iso, write_summary

log = logging.getLogger("dj_synth")

_RUNNER: StageRunner | None = None
_SETUP_ERROR: str | None = None


class WorkerSetupError(RuntimeError):
    """A worker could not build its operators (e.g. a model failed to load)."""


def _init_worker(recipe: Recipe, counter: Any = None) -> None:
    """Build the operators (and load their models) once per worker process.

    Each worker takes a rank from `counter`, so model operators spread over the GPUs.
    """
    global _RUNNER, _SETUP_ERROR
    rank = 0
    if counter is not None:
        with counter.get_lock():
            rank = counter.value
            counter.value += 1
    try:
        if recipe.settings.custom_operator_paths:
            from dj_synth.operators import load_custom_operators

            load_custom_operators(recipe.settings.custom_operator_paths)
        _RUNNER = StageRunner(recipe, rank=rank)
    except Exception as exc:  # reported by the first task, not as an opaque broken pool
        _SETUP_ERROR = f"{type(exc).__name__}: {exc}"


def _run_task(stage_index: int, items: list[RawItem]) -> StageOutput:
    if _RUNNER is None:
        raise WorkerSetupError(f"worker setup failed: {_SETUP_ERROR}")
    return _RUNNER.run(stage_index, items)


class _InlinePool:
    """np == 1: run tasks in this process (no pickling; easy to debug and profile)."""

    def __init__(self, recipe: Recipe) -> None:
        _init_worker(recipe)
        if _RUNNER is None:
            raise WorkerSetupError(f"setup failed: {_SETUP_ERROR}")

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        fut: Future = Future()
        fut.set_result(fn(*args))
        return fut

    def shutdown(self, cancel_futures: bool = False) -> None:
        pass


def ordered_map(pool: Any, fn: Callable[..., Any], tasks: Iterable[tuple], window: int) -> Iterator:
    """Like `Pool.imap` but with at most `window` tasks in flight (bounded memory)."""
    pending: deque[Future] = deque()
    for args in tasks:
        pending.append(pool.submit(fn, *args))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


class LocalExecutor:
    def __init__(self, recipe: Recipe, progress: bool | None = None) -> None:
        self.recipe = recipe
        self.settings = recipe.settings
        self.interactive = progress

    def run(self) -> dict[str, Any]:
        recipe, s = self.recipe, self.settings
        export_dir = os.path.dirname(os.path.abspath(s.export_path))
        if not s.export_path.endswith((".jsonl", ".json")):
            raise ExportError(f"export_path {s.export_path!r} must end with .jsonl or .json")
        check_writable(export_dir, "export directory")
        check_writable(recipe.work_dir, "work_dir")
        reader = DatasetReader(s.dataset_path)

        ops = recipe.build_ops()
        self.stages = plan_stages(ops)
        self.account = RunAccount(ops)
        self.records = RecordWriters(recipe.work_dir)
        self.export = ShardedWriter(s.export_path, s.export_shard_size)
        has_filters = any(isinstance(op, Filter) for op in ops)
        self.stats = (
            ShardedWriter(stats_path(s.export_path)) if has_filters and not s.keep_stats_in_res_ds
            else None
        )  # fmt: skip
        self.progress = Progress(reader.total_bytes, self.interactive)
        self.reader = reader
        self._done = 0

        np_ = recipe.np
        started, t0 = now_iso(), time.perf_counter()
        if np_ == 1:
            pool: Any = _InlinePool(recipe)
        else:
            fork_ok = all(op.fork_safe and op.accelerator != "cuda" for op in ops)
            method = "fork" if fork_ok else "spawn"
            ctx = mp.get_context(method)
            pool = ProcessPoolExecutor(
                np_, mp_context=ctx, initializer=_init_worker,
                initargs=(recipe, ctx.Value("i", 0)),
            )  # fmt: skip
        window = 2 * np_ + 1
        try:
            stream: Iterator[list[Survivor]] = self._first(reader, s.io_batch_size)
            for stage in self.stages:
                stream = self._stage(pool, stage, stream, window)
            for survivors in stream:
                for sv in survivors:
                    self.export.write(sv.export or sv.sample)
                    if self.stats is not None:
                        self.stats.write(sv.stats or b'{"__dj__stats__":{}}')
                self.account.exported_samples += len(survivors)
        except BaseException:
            pool.shutdown(cancel_futures=True)
            self.export.abort()
            if self.stats is not None:
                self.stats.abort()
            self.records.abort()
            self.progress.close()
            raise
        pool.shutdown()
        self.progress.close()

        acc = self.account
        acc.input_samples = reader._ordinal
        acc.blank_lines = reader.blank_lines
        acc.check()
        export_files = self.export.commit()
        stats_files = self.stats.commit() if self.stats is not None else []
        records = self.records.commit()
        llava: dict[str, Any] = {}
        if s.export_format == "llava":
            from dj_synth.tools.llava import dj_to_llava

            path = recipe.llava_export_path
            count = dj_to_llava(export_files, path, recipe.llava_options())
            llava = {"llava_export_file": path, "llava_samples": count}
        elapsed = time.perf_counter() - t0
        summary = acc.to_dict(
            project_name=s.project_name,
            recipe=recipe.path,
            executor="local",
            np=np_,
            started=started,
            finished=now_iso(),
            elapsed_seconds=round(elapsed, 3),
            samples_per_second=round(acc.input_samples / elapsed, 1) if elapsed > 0 else 0.0,
            machine=machine(),
            dataset_files=reader.files,
            export_files=export_files,
            stats_files=stats_files,
            work_dir=recipe.work_dir,
            filtered_files=records["filtered"],
            quarantine_file=records["quarantine"],
            accounting_ok=True,
            **llava,
        )
        write_summary(os.path.join(recipe.work_dir, "summary.json"), summary)
        return summary

    # -- stream plumbing --------------------------------------------------
    def _first(self, reader: DatasetReader, size: int) -> Iterator[list[Survivor]]:
        """The raw input, shaped like a stage's output so stages chain uniformly."""
        for items in reader.batches(size):
            yield [Survivor(it.ref, it.payload) for it in items]  # type: ignore[arg-type]

    def _stage(
        self, pool: Any, stage: Stage, upstream: Iterator[list[Survivor]], window: int
    ) -> Iterator[list[Survivor]]:
        size = self.settings.io_batch_size
        tasks = (
            (stage.index, [RawItem(sv.ref, sv.sample) for sv in chunk])
            for chunk in _rebatch(upstream, size)
        )
        chunks = (self._absorb(stage, out) for out in ordered_map(pool, _run_task, tasks, window))
        dedup = stage.dedup
        if dedup is None:
            yield from chunks
        elif dedup.ranked:
            yield from self._dedup_ranked(dedup, chunks)
        else:
            index = dedup.new_index()
            for survivors in chunks:
                start = time.perf_counter()
                reasons = [index.admit(sv.key, sv.ref, sv.sample_id) for sv in survivors]
                yield self._drop(dedup, survivors, reasons, time.perf_counter() - start)

    def _dedup_ranked(
        self, dedup: Deduplicator, chunks: Iterator[list[Survivor]]
    ) -> Iterator[list[Survivor]]:
        """Keep the best of each group: hash everything (samples wait in a spool), decide, drop."""
        spool = Spool(os.path.join(self.recipe.work_dir, f".spool-op{dedup.index:02d}.bin"))
        try:
            entries: list[DedupEntry] = []
            count = Positions()
            for survivors in chunks:
                entries.extend(
                    (sv.rank, count(sv), sv.ref, sv.sample_id, sv.key) for sv in survivors
                )
                spool.write(survivors)
            start = time.perf_counter()
            drops = decide(dedup, entries)
            seconds = time.perf_counter() - start
            del entries
            count = Positions()
            for survivors in spool.read(self.settings.io_batch_size):
                reasons = [drops.get(count(sv)) for sv in survivors]
                yield self._drop(dedup, survivors, reasons, seconds)
                seconds = 0.0
        finally:
            spool.close()

    def _drop(
        self,
        dedup: Deduplicator,
        survivors: list[Survivor],
        reasons: list[str | None],
        seconds: float,
    ) -> list[Survivor]:
        """Record the dedup's drops (a reason per survivor, None to keep); return the kept."""
        metrics = self.account.op(dedup.index)
        metrics.seconds += seconds
        kept = []
        for sv, reason in zip(survivors, reasons):
            if reason is None:
                kept.append(sv)
                continue
            line = filtered_line(dedup.name, reason, sv.ref, sv.sample)
            self.records.write_filtered(dedup.index, dedup.name, line)
            metrics.filtered += 1
            metrics.n_out -= 1
        return kept

    def _absorb(self, stage: Stage, out: StageOutput) -> list[Survivor]:
        """Merge a task's counters and records into the run's; return its survivors."""
        acc = self.account
        acc.merge_metrics(out.metrics)
        names = {op.index: op.name for op in stage.ops}
        for op_index, line in out.filtered:
            self.records.write_filtered(op_index, names[op_index], line)
        for line in out.quarantined:
            self.records.quarantine.write(line)
        acc.quarantined_samples += len(out.quarantined)
        acc.quarantine_kinds.update(out.quarantine_kinds)
        acc.read_seconds += out.read_seconds
        if stage.index == 0:
            self._done += out.n_items
            self.progress.update(self._done, self.reader.bytes_done)
        return out.survivors


def _rebatch(upstream: Iterator[list[Survivor]], size: int) -> Iterator[list[Survivor]]:
    """Regroup survivors (fewer after filtering) into full batches for the next stage."""
    buf: list[Survivor] = []
    for chunk in upstream:
        buf.extend(chunk)
        while len(buf) >= size:
            yield buf[:size]
            buf = buf[size:]
    if buf:
        yield buf
