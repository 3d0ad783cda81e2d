"""Streaming mode: one pass over the input through a local pool, nothing checkpointed.

Batches of raw lines go to the pool through a bounded window (memory stays flat
whatever the dataset size) and come back in submission order, so the same input
and recipe give byte-identical output for any `np`. Stages are chained lazily; a
stage's global operator is decided here, in input order (a deduplicator with
`keep_policy: first`: online; otherwise after the stage's whole input was keyed, samples
waiting in a spool).
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any

from dj_synth.operators.base import GlobalOp, Op
from dj_synth.operators.dedup_decision import DedupEntry

from .dataset import DatasetReader, RawItem
from .output import RunOutput, apply_drops
from .progress import Progress
from .recipe import Recipe
from .spool import Spool
from .stages import Positions, Stage, StageOutput, Survivor, plan_stages
from .worker import LocalPool, run_stage_items


def ordered_map(pool: Any, fn: Callable[..., Any], tasks: Iterable[tuple], window: int) -> Iterator:
    """Like `Pool.imap` but with at most `window` tasks in flight (bounded memory)."""
    pending: deque[Future] = deque()
    for args in tasks:
        pending.append(pool.submit(fn, *args))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def rebatch(upstream: Iterator[list[Survivor]], size: int) -> Iterator[list[Survivor]]:
    """Regroup survivors (fewer after filtering) into full batches for the next stage."""
    buf: list[Survivor] = []
    for chunk in upstream:
        buf.extend(chunk)
        while len(buf) >= size:
            yield buf[:size]
            buf = buf[size:]
    if buf:
        yield buf


class StreamingRun:
    def __init__(
        self, recipe: Recipe, ops: list[Op], output: RunOutput, run_id: str,
        progress: bool | None = None,
    ) -> None:  # fmt: skip
        self.recipe, self.ops, self.output, self.run_id = recipe, ops, output, run_id
        self.interactive = progress
        self.size = recipe.settings.io_batch_size

    def run(self) -> tuple[int, int, dict[str, Any]]:
        """(input samples, blank lines, summary fields) once the output has everything."""
        reader = DatasetReader(self.recipe.settings.dataset_path)
        self.reader, self.done = reader, 0
        pool = LocalPool(self.recipe, self.run_id, final_pass=False)  # before any thread starts
        self.progress = Progress(reader.total_bytes, self.interactive)
        window = 2 * pool.workers + 1
        try:
            stream: Iterator[list[Survivor]] = (
                [Survivor(it.ref, it.payload) for it in items]  # type: ignore[arg-type]
                for items in reader.batches(self.size)
            )
            for stage in plan_stages(self.ops):
                stream = self._stage(pool, stage, stream, window)
            for survivors in stream:
                self.output.export(survivors)
        except BaseException:
            pool.close(cancel=True)
            self.progress.close()
            raise
        pool.close()
        self.progress.close()
        extra = {"executor": "local", "mode": "streaming", "np": pool.workers,
                 "dataset_files": reader.files}  # fmt: skip
        return reader.samples_read, reader.blank_lines, extra

    def _stage(
        self, pool: LocalPool, stage: Stage, upstream: Iterator[list[Survivor]], window: int
    ) -> Iterator[list[Survivor]]:
        tasks = (
            (self.run_id, stage.index, [RawItem(sv.ref, sv.sample) for sv in chunk])
            for chunk in rebatch(upstream, self.size)
        )
        outputs = ordered_map(pool, run_stage_items, tasks, window)
        chunks = (self._absorb(stage, out) for out in outputs)
        op = stage.global_op
        if op is None:
            yield from chunks
        elif op.ranked:
            yield from self._decide_over_all(stage, op, chunks)
        else:
            index = op.new_index()
            for survivors in chunks:
                start = time.perf_counter()
                reasons = [index.admit(sv.key, sv.ref, sv.sample_id) for sv in survivors]
                yield self._drop(stage, op, survivors, reasons, time.perf_counter() - start)

    def _decide_over_all(
        self, stage: Stage, op: GlobalOp, chunks: Iterator[list[Survivor]]
    ) -> Iterator[list[Survivor]]:
        """Key everything (samples wait in a spool), decide once, then drop in a second pass."""
        spool = Spool(os.path.join(self.recipe.work_dir, f".spool-op{op.index:02d}.bin"))
        try:
            entries: list[DedupEntry] = []
            count = Positions()
            for survivors in chunks:
                entries.extend(
                    (sv.rank, count(sv), sv.ref, sv.sample_id, sv.key) for sv in survivors
                )
                spool.write(survivors)
            start = time.perf_counter()
            drops = op.decide(entries)
            seconds = time.perf_counter() - start
            del entries
            count = Positions()
            for survivors in spool.read(self.size):
                reasons = [drops.get(count(sv)) for sv in survivors]
                yield self._drop(stage, op, survivors, reasons, seconds)
                seconds = 0.0
        finally:
            spool.close()

    def _drop(
        self, stage: Stage, op: GlobalOp, survivors: list[Survivor],
        reasons: list[str | None], seconds: float,
    ) -> list[Survivor]:  # fmt: skip
        kept, dropped = apply_drops(op, survivors, reasons)
        self.output.absorb(stage, dropped)
        self.output.account.op(op.index).seconds += seconds
        return kept

    def _absorb(self, stage: Stage, out: StageOutput) -> list[Survivor]:
        survivors = self.output.absorb(stage, out)
        errors = {i: m.quarantined for i, m in out.metrics.items() if m.quarantined}
        self.output.guard.add(out.n_items if stage.index == 0 else 0, errors)
        if stage.index == 0:
            self.done += out.n_items
            self.progress.update(self.done, self.reader.bytes_done)
        return survivors
