"""The sharded run: stage by stage, shard by shard, every result committed to disk.

Used by the Ray executor always and by the local executor for `--resume`. Each
stage's output for one shard (its survivors, the records of what it dropped, its
counters) is written to `work_dir/checkpoint/stage<k>/<shard>.out` and renamed into
place: the rename is the commit. A retried task rewrites the same bytes; a resumed
run skips every committed (stage, shard). Between stages, a stage's deduplicator is
decided over the committed keys of all its shards, in the fixed order of
`dedup_decision`, and its drops are applied as the next stage reads its shards.
The last stage writes the export shards `<base>-<shard>-of-<n>.jsonl` itself; read
in file order they hold exactly what the local executor exports, in the same order.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from dj_synth.operators.base import Deduplicator, Filter
from dj_synth.operators.dedup_decision import DedupEntry, Position, decide
from dj_synth.operators.ledger import OpMetrics

from .dataset import DatasetReader, RawItem
from .export import (
    AtomicWriter,
    ExportError,
    RecordWriters,
    _split_suffix,
    check_writable,
    stats_path,
)
from .frames import loads, read_survivors, write_survivors
from .recipe import Recipe
from .shards import ShardSpec, input_fingerprint, plan_shards, read_shard
from .stages import (
    Positions,
    Stage,
    StageOutput,
    StageRunner,
    Survivor,
    dumps,
    filtered_line,
    plan_stages,
)
from .summary import RunAccount, machine, now_iso, write_summary

PLAN_VERSION = 1


class ResumeError(RuntimeError):
    """`--resume` cannot continue this run (nothing to resume, or the recipe or input changed)."""


@dataclass
class ShardResult:
    """What a committed (stage, shard) tells the driver: enough for progress."""

    stage: int
    shard: int
    n_items: int
    survivors: int


# -- the checkpoint ------------------------------------------------------------------


class Checkpoint:
    def __init__(self, work_dir: str) -> None:
        self.root = os.path.join(work_dir, "checkpoint")

    def path(self, stage: int, shard: int) -> str:
        return os.path.join(self.root, f"stage{stage}", f"{shard:06d}.out")

    def done(self, stage: int, shard: int) -> bool:
        return os.path.exists(self.path(stage, shard))

    def write(self, stage: int, shard: int, out: StageOutput, with_survivors: bool) -> None:
        head = {
            "n_items": out.n_items,
            "read_seconds": out.read_seconds,
            "metrics": {str(i): vars(m) for i, m in out.metrics.items()},
            "kinds": dict(out.quarantine_kinds),
            "survivors": len(out.survivors) if with_survivors else 0,
            "exported": len(out.survivors),
            "filtered": len(out.filtered),
            "quarantined": len(out.quarantined),
        }
        with AtomicWriter(self.path(stage, shard)) as w:
            w.write(dumps(head))
            if with_survivors:
                write_survivors(w._fh, out.survivors)
            for op_index, line in out.filtered:
                w.write(dumps([op_index, len(line)]))
                w.write_raw(line)
            for line in out.quarantined:
                w.write(dumps([len(line)]))
                w.write_raw(line)

    def read(self, stage: int, shard: int) -> tuple[dict[str, Any], StageOutput]:
        with open(self.path(stage, shard), "rb") as fh:
            head = loads(fh.readline())
            out = StageOutput(n_items=head["n_items"], read_seconds=head["read_seconds"])
            out.survivors = list(read_survivors(fh, head["survivors"]))
            for _ in range(head["filtered"]):
                op_index, n = loads(fh.readline())
                out.filtered.append((op_index, fh.read(n)))
            for _ in range(head["quarantined"]):
                (n,) = loads(fh.readline())
                out.quarantined.append(fh.read(n))
        out.metrics = {int(i): OpMetrics(**m) for i, m in head["metrics"].items()}
        out.quarantine_kinds = Counter(head["kinds"])
        return head, out


# -- one shard of one stage (runs in a worker: a process or a Ray task/actor) ---------


@dataclass
class StageTask:
    """Everything a worker needs for one stage, shipped once per stage."""

    recipe: Recipe
    stage: int
    n_stages: int
    n_shards: int
    checkpoint: str  # work_dir
    run_id: str = ""  # one per run: workers cache their operators under it
    drops: dict[Position, str] = field(default_factory=dict)  # the previous stage's dedup drops

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
        return StageTask(
            self.recipe, self.stage, self.n_stages, self.n_shards, self.checkpoint, self.run_id
        )

    def begin_items(
        self, runner: StageRunner, spec: ShardSpec, drops: dict[Position, str]
    ) -> tuple[list[RawItem], StageOutput]:
        """The shard's input; the previous dedup's drops become records of that op."""
        if self.stage == 0:
            return read_shard(spec), StageOutput()
        _, prev = Checkpoint(self.checkpoint).read(self.stage - 1, spec.index)
        dropped = StageOutput()
        dedup = runner.stages[self.stage - 1].dedup
        items = []
        position = Positions()
        for sv in prev.survivors:
            reason = drops.get(position(sv))
            if reason is None or dedup is None:
                items.append(RawItem(sv.ref, sv.sample))
                continue
            line = filtered_line(dedup.name, reason, sv.ref, sv.sample)
            dropped.filtered.append((dedup.index, line))
            m = dropped.metrics.setdefault(dedup.index, OpMetrics())
            m.filtered += 1
            m.n_out -= 1
        return items, dropped

    def finish(self, spec: ShardSpec, out: StageOutput, dropped: StageOutput) -> ShardResult:
        """Merge the dedup drops, write the export shard (last stage), commit."""
        out.filtered[:0] = dropped.filtered
        for index, m in dropped.metrics.items():
            out.metrics.setdefault(index, OpMetrics()).add(m)
        last = self.stage == self.n_stages - 1
        if last:
            self._export(spec, out.survivors)
        Checkpoint(self.checkpoint).write(self.stage, spec.index, out, with_survivors=not last)
        return ShardResult(self.stage, spec.index, out.n_items, len(out.survivors))

    def _export(self, spec: ShardSpec, survivors: list[Survivor]) -> None:
        s = self.recipe.settings
        path = export_shard_path(s.export_path, spec.index, self.n_shards)
        with AtomicWriter(path) as w:
            for sv in survivors:
                w.write(sv.export or sv.sample)
        if needs_stats_file(self.recipe):
            spath = export_shard_path(stats_path(s.export_path), spec.index, self.n_shards)
            with AtomicWriter(spath) as w:
                for sv in survivors:
                    w.write(sv.stats or b'{"__dj__stats__":{}}')


def export_shard_path(export_path: str, shard: int, n_shards: int) -> str:
    base, suffix = _split_suffix(export_path)
    return f"{base}-{shard:05d}-of-{n_shards:05d}{suffix}"


def needs_stats_file(recipe: Recipe) -> bool:
    has_filters = any(isinstance(op, Filter) for op in recipe.build_ops())
    return has_filters and not recipe.settings.keep_stats_in_res_ds


def run_shard(
    task: StageTask, runner: StageRunner, spec: ShardSpec, drops: dict[Position, str]
) -> ShardResult:
    """One whole stage on one shard, in one process (the local backend's unit of work)."""
    items, dropped = task.begin_items(runner, spec, drops)
    out = runner.run(task.stage, items)
    return task.finish(spec, out, dropped)


class Backend(Protocol):
    name: str
    workers: int

    def run_stage(self, task: StageTask, shards: list[ShardSpec]) -> Iterator[ShardResult]:
        """Run `task` on every shard (any order, any retries); yield each commit."""
        ...

    def close(self) -> None: ...


# -- the driver ----------------------------------------------------------------------


class ShardedRun:
    def __init__(self, recipe: Recipe, backend: Backend, resume: bool = False,
                 shard_size: int | None = None, log: Any = None) -> None:  # fmt: skip
        self.recipe = recipe
        self.backend = backend
        self.resume = resume
        self.shard_size = shard_size or recipe.settings.io_batch_size * 4
        self.log = log

    def run(self) -> dict[str, Any]:
        recipe, s = self.recipe, self.recipe.settings
        if not s.export_path.endswith((".jsonl", ".json")):
            raise ExportError(f"export_path {s.export_path!r} must end with .jsonl or .json")
        check_writable(os.path.dirname(os.path.abspath(s.export_path)), "export directory")
        check_writable(recipe.work_dir, "work_dir")
        started, t0 = now_iso(), time.perf_counter()
        files = DatasetReader(s.dataset_path).files
        ckpt = Checkpoint(recipe.work_dir)
        shards, blank = self._plan(files, ckpt)
        ops = recipe.build_ops()
        stages = plan_stages(ops, final_pass=True)
        drops: dict[Position, str] = {}
        reused = 0
        run_id = uuid.uuid4().hex
        for stage in stages:
            task = StageTask(recipe, stage.index, len(stages), len(shards), recipe.work_dir,
                             run_id, drops)  # fmt: skip
            pending = [sh for sh in shards if not ckpt.done(stage.index, sh.index)]
            reused += len(shards) - len(pending)
            if pending:
                for result in self.backend.run_stage(task, pending):
                    self._progress(stage, result, len(shards))
            if stage.dedup is None:
                drops = {}
            elif hasattr(self.backend, "decide"):  # a distributed decision, the same result
                drops = self.backend.decide(task, shards)
            else:
                drops = self._decide(stage, shards, ckpt)
        summary = self._account(ops, stages, shards, ckpt, blank)
        elapsed = time.perf_counter() - t0
        summary.update(
            project_name=s.project_name, recipe=recipe.path, executor=self.backend.name,
            np=self.backend.workers, started=started, finished=now_iso(),
            elapsed_seconds=round(elapsed, 3),
            samples_per_second=round(summary["input_samples"] / elapsed, 1) if elapsed else 0.0,
            machine=machine(), dataset_files=files, shards=len(shards),
            shards_resumed=reused, work_dir=recipe.work_dir, accounting_ok=True,
        )  # fmt: skip
        self._llava(summary)
        write_summary(os.path.join(recipe.work_dir, "summary.json"), summary)
        return summary

    def _plan(self, files: list[str], ckpt: Checkpoint) -> tuple[list[ShardSpec], int]:
        """A new plan, or on `--resume` the interrupted run's (if recipe and input are the same)."""
        plan_path = os.path.join(ckpt.root, "plan.json")
        fingerprint = {
            "version": PLAN_VERSION,
            "recipe": _recipe_hash(self.recipe),
            "input": input_fingerprint(files),
        }
        if self.resume:
            if not os.path.exists(plan_path):
                raise ResumeError(
                    f"nothing to resume: {plan_path} does not exist (run without --resume)"
                )
            with open(plan_path, encoding="utf-8") as fh:
                plan = json.load(fh)
            if plan["fingerprint"] != fingerprint:
                raise ResumeError(
                    "the recipe or the input changed since the interrupted run; run without "
                    f"--resume to start over (this removes {ckpt.root})"
                )
            return [ShardSpec(**d) for d in plan["shards"]], plan["blank_lines"]
        if os.path.exists(ckpt.root):
            shutil.rmtree(ckpt.root)
        self._remove_old_export_shards()
        shards, blank = plan_shards(files, self.shard_size)
        os.makedirs(ckpt.root, exist_ok=True)
        with AtomicWriter(plan_path) as w:
            plan = {"fingerprint": fingerprint, "blank_lines": blank,
                    "shards": [sh.to_dict() for sh in shards]}  # fmt: skip
            w.write(json.dumps(plan, indent=1).encode())
        return shards, blank

    def _remove_old_export_shards(self) -> None:
        """A previous run's `<base>-NNNNN-of-NNNNN` shards must not mix with this run's."""
        export = self.recipe.settings.export_path
        for path in (export, stats_path(export)):
            base, suffix = _split_suffix(path)
            pattern = re.compile(
                re.escape(os.path.basename(base)) + r"-\d{5}-of-\d{5}" + re.escape(suffix)
            )
            folder = os.path.dirname(os.path.abspath(base))
            for name in os.listdir(folder):
                if pattern.fullmatch(name):
                    os.remove(os.path.join(folder, name))

    def _decide(
        self, stage: Stage, shards: list[ShardSpec], ckpt: Checkpoint
    ) -> dict[Position, str]:
        """The stage's dedup decision over all its committed keys ({} without a dedup)."""
        dedup: Deduplicator | None = stage.dedup
        if dedup is None:
            return {}
        entries: list[DedupEntry] = []
        for sh in shards:
            _, out = ckpt.read(stage.index, sh.index)
            position = Positions()
            entries.extend(
                (sv.rank, position(sv), sv.ref, sv.sample_id, sv.key) for sv in out.survivors
            )
        return decide(dedup, entries)

    def _account(self, ops: list, stages: list[Stage], shards: list[ShardSpec],
                 ckpt: Checkpoint, blank: int) -> dict[str, Any]:  # fmt: skip
        """Merge every committed shard's counters and records, in input order, as local does."""
        acc = RunAccount(ops)
        names = {op.index: op.name for op in ops}
        records = RecordWriters(self.recipe.work_dir)
        try:
            for stage in stages:
                for sh in shards:
                    head, out = ckpt.read(stage.index, sh.index)
                    acc.merge_metrics(out.metrics)
                    for op_index, line in out.filtered:
                        records.write_filtered(op_index, names[op_index], line)
                    for line in out.quarantined:
                        records.quarantine.write(line)
                    acc.quarantined_samples += len(out.quarantined)
                    acc.quarantine_kinds.update(out.quarantine_kinds)
                    acc.read_seconds += out.read_seconds
                    if stage.index == len(stages) - 1:
                        acc.exported_samples += head["exported"]
        except BaseException:
            records.abort()
            raise
        acc.input_samples = sum(sh.count for sh in shards)
        acc.blank_lines = blank
        acc.check()
        committed = records.commit()
        s = self.recipe.settings
        exports = [export_shard_path(s.export_path, sh.index, len(shards)) for sh in shards]
        stats = []
        if needs_stats_file(self.recipe):
            stats = [export_shard_path(stats_path(s.export_path), sh.index, len(shards))
                     for sh in shards]  # fmt: skip
        return acc.to_dict(
            export_files=exports, stats_files=stats,
            filtered_files=committed["filtered"], quarantine_file=committed["quarantine"],
        )  # fmt: skip

    def _llava(self, summary: dict[str, Any]) -> None:
        if self.recipe.settings.export_format != "llava":
            return
        from dj_synth.tools.llava import dj_to_llava

        path = self.recipe.llava_export_path
        count = dj_to_llava(summary["export_files"], path, self.recipe.llava_options())
        summary.update(llava_export_file=path, llava_samples=count)

    def _progress(self, stage: Stage, result: ShardResult, n_shards: int) -> None:
        if self.log is not None:
            self.log.info("stage %d: shard %d/%d committed (%d in, %d out)", stage.index,
                          result.shard + 1, n_shards, result.n_items, result.survivors)  # fmt: skip


def _recipe_hash(recipe: Recipe) -> str:
    """What the results depend on: the operators and the settings (not np or the executor)."""
    s = recipe.settings.model_dump()
    for volatile in ("np", "executor_type", "ray_address", "process"):
        s.pop(volatile, None)
    body = json.dumps([s, [(op.name, op.args) for op in recipe.ops]], sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


# -- the local backend: a process pool, one task per (stage, shard) -------------------

_RUNNER: StageRunner | None = None


def _init_worker(recipe: Recipe) -> None:
    global _RUNNER
    if recipe.settings.custom_operator_paths:
        from dj_synth.operators import load_custom_operators

        load_custom_operators(recipe.settings.custom_operator_paths)
    _RUNNER = StageRunner(recipe, final_pass=True)


def _local_task(task: StageTask, spec: ShardSpec, drops: dict[Position, str]) -> ShardResult:
    assert _RUNNER is not None
    return run_shard(task, _RUNNER, spec, drops)


class LocalBackend:
    """`np` processes; what the local executor uses when asked to checkpoint (`--resume`)."""

    name = "local"

    def __init__(self, recipe: Recipe) -> None:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        self.workers = recipe.np
        ops = recipe.build_ops()
        fork_ok = all(op.fork_safe and op.accelerator != "cuda" for op in ops)
        ctx = mp.get_context("fork" if fork_ok else "spawn")
        self.pool = ProcessPoolExecutor(
            self.workers, mp_context=ctx, initializer=_init_worker, initargs=(recipe,)
        )

    def run_stage(self, task: StageTask, shards: list[ShardSpec]) -> Iterator[ShardResult]:
        from concurrent.futures import as_completed

        shipped = task.without_drops()
        futures = [
            self.pool.submit(_local_task, shipped, sh, task.shard_drops(sh)) for sh in shards
        ]
        for fut in as_completed(futures):
            yield fut.result()

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)
