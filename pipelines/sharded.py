"""Sharded mode: stage by stage, shard by shard, every result committed to the checkpoint.

Each stage runs on every shard through a backend (a local process pool, or Ray);
each (stage, shard) result is committed to `checkpoint.Checkpoint`, so `--resume`
skips what is done. Between stages, the stage's global operator is decided over the
committed keys of all its shards (`ShardBackend.decide`), and its drops are applied
as the next stage reads its shards. At the end, the driver reads the committed results
in input order into the output layer, which writes exactly what a streaming run writes.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from dj_synth.operators.base import GlobalOp, Op
from dj_synth.operators.dedup_decision import DedupEntry, Position

from .checkpoint import Checkpoint, fingerprint
from .dataset import DatasetReader, RawItem
from .output import RunOutput, apply_drops
from .recipe import Recipe
from .shards import ShardSpec, plan_shards, read_shard
from .stages import Positions, StageOutput, StageRunner, Survivor, plan_stages
from .worker import LocalPool, worker_runner

log = logging.getLogger("dj_synth")


@dataclass
class ShardResult:
    """What a committed (stage, shard) tells the driver: progress and operator errors."""

    stage: int
    shard: int
    n_items: int
    survivors: int
    op_quarantined: dict[int, int] = field(default_factory=dict)


@dataclass
class StageTask:
    """Everything a worker needs for one stage, shipped once per stage."""

    recipe: Recipe
    stage: int
    n_stages: int
    work_dir: str
    run_id: str = ""  # one per run: workers cache their operators under it
    drops: dict[Position, str] = field(default_factory=dict)  # the previous global op's drops

    def shard_drops(self, spec: ShardSpec) -> dict[Position, str]:
        """The part of `drops` in one shard (what a worker is sent with the shard)."""
        if not self.drops:
            return {}
        keys = self.drop_keys
        lo = bisect.bisect_left(keys, (spec.first_ordinal, 0))
        hi = bisect.bisect_left(keys, (spec.first_ordinal + spec.count, 0))
        return {p: self.drops[p] for p in keys[lo:hi]}

    @cached_property
    def drop_keys(self) -> list[Position]:
        return sorted(self.drops)

    def without_drops(self) -> StageTask:
        """The task as shipped to workers (each shard comes with its own drops)."""
        return StageTask(self.recipe, self.stage, self.n_stages, self.work_dir, self.run_id)

    def begin_items(
        self, runner: StageRunner, spec: ShardSpec, drops: dict[Position, str]
    ) -> tuple[list[RawItem], StageOutput]:
        """The shard's input; the previous global op's drops become records of that op."""
        if self.stage == 0:
            return read_shard(spec), StageOutput()
        prev = Checkpoint(self.work_dir).read(self.stage - 1, spec.index).survivors
        op = runner.stages[self.stage - 1].global_op
        if op is None or not drops:
            return [RawItem(sv.ref, sv.sample) for sv in prev], StageOutput()
        position = Positions()
        kept, dropped = apply_drops(op, prev, [drops.get(position(sv)) for sv in prev])
        return [RawItem(sv.ref, sv.sample) for sv in kept], dropped

    def finish(self, spec: ShardSpec, out: StageOutput, dropped: StageOutput) -> ShardResult:
        """Merge the dedup drops into the stage's output and commit it."""
        out.filtered[:0] = dropped.filtered
        for index, m in dropped.metrics.items():
            out.metrics.setdefault(index, type(m)()).add(m)
        Checkpoint(self.work_dir).write(self.stage, spec.index, out)
        errors = {i: m.quarantined for i, m in out.metrics.items() if m.quarantined}
        return ShardResult(self.stage, spec.index, out.n_items, len(out.survivors), errors)


def run_shard(task: StageTask, spec: ShardSpec, drops: dict[Position, str]) -> ShardResult:
    """One whole stage on one shard, in one worker (the local backend's unit of work)."""
    runner = worker_runner(task.run_id)
    items, dropped = task.begin_items(runner, spec, drops)
    return task.finish(spec, runner.run(task.stage, items), dropped)


def shard_entries(work_dir: str, stage: int, shard: int) -> list[DedupEntry]:
    """A committed shard's decision entries (rank, position, ref, id, key), in stream order."""
    position = Positions()
    survivors: list[Survivor] = Checkpoint(work_dir).read(stage, shard).survivors
    return [(sv.rank, position(sv), sv.ref, sv.sample_id, sv.key) for sv in survivors]


def decide_gathered(task: StageTask, op: GlobalOp, shards: list[ShardSpec]) -> dict[Position, str]:
    """The decision over every committed shard's entries, gathered in this process."""
    entries: list[DedupEntry] = []
    for sh in shards:
        entries.extend(shard_entries(task.work_dir, task.stage, sh.index))
    return op.decide(entries)


class ShardBackend(Protocol):
    """Where a sharded run's work happens: a local process pool, or a Ray cluster."""

    name: str
    workers: int

    def run_stage(self, task: StageTask, shards: list[ShardSpec]) -> Iterator[ShardResult]:
        """Run `task` on every shard (any order, any retries); yield each commit."""
        ...

    def decide(
        self, task: StageTask, op: GlobalOp, shards: list[ShardSpec]
    ) -> dict[Position, str]:
        """The stage's global operator's decision over every committed shard's keys."""
        ...

    def close(self, cancel: bool = False) -> None: ...


class LocalShardBackend:
    """`np` processes (or this one), one task per (stage, shard)."""

    name = "local"

    def __init__(self, recipe: Recipe, run_id: str) -> None:
        self.pool = LocalPool(recipe, run_id, final_pass=True)
        self.workers = self.pool.workers

    def run_stage(self, task: StageTask, shards: list[ShardSpec]) -> Iterator[ShardResult]:
        from concurrent.futures import as_completed

        shipped = task.without_drops()
        futures = [self.pool.submit(run_shard, shipped, sh, task.shard_drops(sh)) for sh in shards]
        for fut in as_completed(futures):
            yield fut.result()

    def decide(
        self, task: StageTask, op: GlobalOp, shards: list[ShardSpec]
    ) -> dict[Position, str]:
        return decide_gathered(task, op, shards)

    def close(self, cancel: bool = False) -> None:
        self.pool.close(cancel)


class ShardedRun:
    """The sharded mode's stage loop; the backend does the work, the output layer the files."""

    def __init__(
        self, recipe: Recipe, ops: list[Op], output: RunOutput, run_id: str,
        backend: Callable[[Recipe, str], ShardBackend], resume: bool = False,
    ) -> None:  # fmt: skip
        self.recipe, self.ops, self.output, self.run_id = recipe, ops, output, run_id
        self.make_backend, self.resume = backend, resume
        self.shard_size = recipe.settings.io_batch_size * 4

    def run(self) -> tuple[int, int, dict[str, Any]]:
        """(input samples, blank lines, summary fields) once the output has everything."""
        recipe = self.recipe
        files = DatasetReader(recipe.settings.dataset_path).files
        ckpt = Checkpoint(recipe.work_dir)
        fp = fingerprint(recipe, files)
        stages = plan_stages(self.ops, final_pass=True)
        backend = self.make_backend(recipe, self.run_id)  # may fail: before any file is written
        drops: dict[Position, str] = {}
        reused = 0
        try:
            if self.resume:
                shards, blank = ckpt.load_plan(fp)
            else:
                ckpt.remove()
                shards, blank = plan_shards(files, self.shard_size)
                ckpt.save_plan(fp, shards, blank)
            for stage in stages:
                task = StageTask(recipe, stage.index, len(stages), recipe.work_dir, self.run_id,
                                 drops)  # fmt: skip
                pending = [sh for sh in shards if not ckpt.done(stage.index, sh.index)]
                reused += len(shards) - len(pending)
                for result in backend.run_stage(task, pending) if pending else ():
                    self.output.guard.add(result.n_items if stage.index == 0 else 0,
                                          result.op_quarantined)  # fmt: skip
                    log.info("stage %d: shard %d/%d committed (%d in, %d out)", stage.index,
                             result.shard + 1, len(shards), result.n_items, result.survivors)  # fmt: skip
                op = stage.global_op
                drops = backend.decide(task, op, shards) if op is not None else {}
        except BaseException:
            backend.close(cancel=True)
            raise
        backend.close()
        for stage in stages:  # the committed results, in input order, into the output layer
            for sh in shards:
                survivors = self.output.absorb(stage, ckpt.read(stage.index, sh.index))
                if stage.index == len(stages) - 1:
                    self.output.export(survivors)
        extra = {"executor": backend.name, "mode": "sharded", "np": backend.workers,
                 "dataset_files": files, "shards": len(shards), "shards_resumed": reused}  # fmt: skip
        return sum(sh.count for sh in shards), blank, extra
