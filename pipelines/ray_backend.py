"""The Ray backend of sharded mode: the same stages, on a Ray cluster.

A stage runs as one Ray Data pipeline over the input shards (one row per shard):
`map_batches` steps hold the same operator objects as the local backend. Runs of
ordinary operators are CPU tasks; an operator that holds a model (`fork_safe`
False, or `accelerator: cuda`) gets its own actor pool (`ActorPoolStrategy`, one
GPU per actor when it asks for cuda) so the model stays loaded. The last step of
a stage commits the shard (`checkpoint.Checkpoint`); a stage's deduplicator is
decided by Ray tasks over the committed keys (`decide`), with the same result as
the local decision. Ray retries a task whose worker died and restarts dead actors;
a retried shard rewrites the same bytes, and `--resume` after a dead driver skips
every committed shard.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

import numpy as np

from dj_synth.operators.base import Deduplicator, GlobalOp, Op
from dj_synth.operators.dedup_decision import (
    DedupEntry,
    Position,
    components,
    decide,
    stable_bucket,
    star_edges,
)

from .recipe import Recipe
from .sharded import ShardResult, StageTask, decide_gathered, shard_entries
from .shards import ShardSpec
from .stages import StageRunner, plan_stages, prepare_op
from .worker import WorkerSetupError, start_worker

log = logging.getLogger("dj_synth")


class RayConnectionError(RuntimeError):
    """`ray_address` names no reachable Ray cluster."""


def connect(address: str | None, quiet: bool = True) -> None:
    """Join the cluster at `address` (`auto`, `host:port`, `ray://...`), or start a local one."""
    try:
        import ray
    except ImportError:
        raise RayConnectionError(
            "executor_type: ray needs Ray: pip install 'dj-synth[ray]'"
        ) from None

    if ray.is_initialized():
        return
    hint = (
        "start one with `ray start --head` (other nodes: `ray start --address HEAD:6379`), "
        "or leave ray_address unset to start a local Ray instance"
    )
    if address and address != "auto":
        host_port = address.split("://", 1)[-1]
        host, _, port = host_port.rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port or 6379)), timeout=5).close()
        except (OSError, ValueError) as exc:
            raise RayConnectionError(
                f"cannot reach Ray at ray_address {address!r} ({exc}); {hint}"
            ) from None
    if quiet:
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.WARNING)
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": not quiet}
    if address:
        kwargs["address"] = address
    else:
        kwargs["num_cpus"] = os.cpu_count()
    try:
        ray.init(**kwargs, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError) as exc:
        raise RayConnectionError(
            f"cannot join Ray at ray_address {address!r}: {exc}; {hint}"
        ) from None


def _needs_actor(op: Op) -> bool:
    """Operators holding a model run in actors so it is loaded once, not per task."""
    return not op.fork_safe or op.accelerator == "cuda"


def segments(ops: list[Op]) -> list[list[Op]]:
    """Consecutive ordinary operators together (one task per shard), and consecutive model
    operators together (one actor pool holding their models)."""
    out: list[list[Op]] = []
    for op in ops:
        if out and _needs_actor(op) == _needs_actor(out[-1][0]):
            out[-1].append(op)
        else:
            out.append([op])
    return out or [[]]


def cpu_shares(workers: int, actor_pools: int) -> tuple[float, float]:
    """(CPUs per actor, CPUs per task): every actor pool's first actor and one task must fit
    in the cluster at once, or Ray Data waits forever for a pool that cannot start."""
    task = min(1.0, workers / 2)
    actor = min(1.0, max(workers - task, 0.1) / max(actor_pools, 1))
    return actor, task


# -- the work of one step on a batch of shard rows (runs in Ray workers) --------------


def _runner(task: StageTask) -> StageRunner:
    """This worker's operators for the run (each step sets up only its own operators)."""
    return start_worker(task.recipe, task.run_id, final_pass=True, setup=False)


class Step:
    """One `map_batches` step: a segment of a stage's operators over whole shards."""

    def __init__(self, task: StageTask, op_indices: list[int], first: bool, last: bool) -> None:
        self.task, self.first, self.last = task, first, last
        self.runner = _runner(task)
        stage_ops = self.runner.stages[task.stage].ops
        self.ops = [op for op in stage_ops if op.index in op_indices]
        for op in self.ops:  # actors load their model here, once (Ray sets the visible GPU)
            try:
                prepare_op(op, 0)
            except Exception as exc:
                raise WorkerSetupError(
                    f"worker setup failed: {type(exc).__name__}: {exc}"
                ) from None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, list[Any]] = {k: [] for k in ("shard", "spec", "work", "dropped", "result")}
        for j in range(len(batch["shard"])):
            spec = ShardSpec(**json.loads(batch["spec"][j]))
            if self.first:
                drops = {(o, k): r for o, k, r in json.loads(batch["drops"][j])}
                items, dropped = self.task.begin_items(self.runner, spec, drops)
                work = self.runner.begin(self.task.stage, items)
            else:
                work, dropped = batch["work"][j], batch["dropped"][j]
            self.runner.apply(work, self.ops)
            result = None
            if self.last:
                res = self.task.finish(spec, self.runner.finish(work), dropped)
                result, work, dropped = json.dumps(vars(res)), None, None
            out["shard"].append(int(batch["shard"][j]))
            out["spec"].append(batch["spec"][j])
            out["work"].append(work)
            out["dropped"].append(dropped)
            out["result"].append(result)
        cols = {"shard": np.array(out["shard"]), "spec": np.array(out["spec"], dtype=object)}
        if self.last:
            cols["result"] = np.array(out["result"], dtype=object)
        else:
            cols["work"] = _objects(out["work"])
            cols["dropped"] = _objects(out["dropped"])
        return cols


def _objects(values: list[Any]) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


def _step_fn(batch: dict[str, np.ndarray], task: StageTask, op_indices: list[int],
             first: bool, last: bool) -> dict[str, np.ndarray]:  # fmt: skip
    """CPU steps run as plain tasks; the Step (cheap to build) is cached per worker and run."""
    key = (task.run_id, task.stage, tuple(op_indices))
    step = _STEPS.get(key)
    if step is None:
        if any(k[0] != task.run_id for k in _STEPS):
            _STEPS.clear()  # an earlier run's steps
        step = _STEPS[key] = Step(task, op_indices, first, last)
    return step(batch)


_STEPS: dict[tuple, Step] = {}


# -- dedup as a distributed step ---------------------------------------------------
# Map: each committed shard's keys -> (bucket, position) pairs, hash-partitioned.
# Reduce: per partition, star edges between the members of each bucket. The driver
# joins the edges into components (union-find over edges only: few, as they link
# duplicate candidates). Map: entries of samples in a component, partitioned by
# component. Reduce: `decide` per component. Same result as deciding globally
# (see `dedup_decision`), without any process holding every key.


def _shard_entries(task: StageTask, shard: int) -> list[DedupEntry]:
    return shard_entries(task.work_dir, task.stage, shard)


def _dedup_op(task: StageTask) -> Deduplicator:
    dedup = _runner(task).stages[task.stage].global_op
    assert isinstance(dedup, Deduplicator)
    return dedup


def _bucket_map(task: StageTask, shard: int, parts: int) -> list[list[tuple[int, Position]]]:
    index = _dedup_op(task).new_index()
    out: list[list[tuple[int, Position]]] = [[] for _ in range(parts)]
    for _, position, _, _, key in _shard_entries(task, shard):
        for bucket in index.buckets(key):
            b = stable_bucket(bucket)
            out[b % parts].append((b, position))
    return out if parts > 1 else out[0]  # one return value per partition (num_returns)


def _bucket_reduce(*chunks: list[tuple[int, Position]]) -> list[tuple[Position, Position]]:
    members: dict[int, list[Position]] = {}
    for chunk in chunks:
        for bucket, position in chunk:
            members.setdefault(bucket, []).append(position)
    return [edge for group in members.values() if len(group) > 1 for edge in star_edges(group)]


def _component_map(task: StageTask, shard: int, comp: dict[Position, Position],
                   parts: int) -> list[list[tuple[Position, DedupEntry]]]:  # fmt: skip
    out: list[list[tuple[Position, DedupEntry]]] = [[] for _ in range(parts)]
    for entry in _shard_entries(task, shard):
        root = comp.get(entry[1])
        if root is not None:
            out[hash(root) % parts].append((root, entry))
    return out if parts > 1 else out[0]


def _component_reduce(task: StageTask, *chunks: list[tuple[Position, DedupEntry]]) -> dict:
    groups: dict[Position, list[DedupEntry]] = {}
    for chunk in chunks:
        for root, entry in chunk:
            groups.setdefault(root, []).append(entry)
    dedup = _dedup_op(task)
    drops: dict[Position, str] = {}
    for group in groups.values():
        drops.update(decide(dedup, group))
    return drops


def distributed_decide(task: StageTask, shards: list[ShardSpec], parts: int) -> dict[Position, str]:
    """A stage's dedup decision computed by Ray tasks (see the comment above)."""
    import ray

    shipped = ray.put(task.without_drops())
    bucket_map = (
        ray.remote(_bucket_map).options(num_returns=parts) if parts > 1 else ray.remote(_bucket_map)
    )
    mapped = [bucket_map.remote(shipped, sh.index, parts) for sh in shards]
    if parts == 1:
        mapped = [[m] for m in mapped]
    reduce = ray.remote(_bucket_reduce)
    edges = ray.get([reduce.remote(*[m[p] for m in mapped]) for p in range(parts)])
    comp = components(e for part in edges for e in part)
    if not comp:
        return {}
    comp_ref = ray.put(comp)
    comp_map = ray.remote(_component_map)
    comp_map = comp_map.options(num_returns=parts) if parts > 1 else comp_map
    mapped = [comp_map.remote(shipped, sh.index, comp_ref, parts) for sh in shards]
    if parts == 1:
        mapped = [[m] for m in mapped]
    reduce = ray.remote(_component_reduce)
    drops: dict[Position, str] = {}
    for part in ray.get([reduce.remote(shipped, *[m[p] for m in mapped]) for p in range(parts)]):
        drops.update(part)
    return drops


class RayBackend:
    name = "ray"

    def __init__(self, recipe: Recipe, run_id: str, quiet: bool = True) -> None:
        import ray
        import ray.data

        connect(recipe.settings.ray_address, quiet)
        resources = ray.cluster_resources()
        self.workers = int(resources.get("CPU", 1))
        self.gpus = int(resources.get("GPU", 0))
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = not quiet
        ctx.execution_options.preserve_order = False
        self.ray = ray

    def run_stage(self, task: StageTask, shards: list[ShardSpec]) -> Iterator[ShardResult]:
        import ray.data

        rows = [
            {
                "shard": sh.index,
                "spec": json.dumps(sh.to_dict()),
                "drops": json.dumps([[o, k, r] for (o, k), r in task.shard_drops(sh).items()]),
            }
            for sh in shards
        ]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        shipped = task.without_drops()
        steps = segments(plan_stages(task.recipe.build_ops(), final_pass=True)[task.stage].ops)
        pools = sum(1 for seg in steps if seg and _needs_actor(seg[0]))
        actor_cpus, task_cpus = cpu_shares(self.workers, pools)
        for n, seg in enumerate(steps):
            indices = [op.index for op in seg]
            first, last = n == 0, n == len(steps) - 1
            if seg and _needs_actor(seg[0]):
                gpu = any(op.accelerator == "cuda" for op in seg) and self.gpus > 0
                asked = min((op.num_proc for op in seg if op.num_proc), default=None)
                size = asked or (self.gpus if gpu else max(1, self.workers // 2))
                ds = ds.map_batches(
                    Step, batch_size=1, batch_format="numpy",
                    fn_constructor_args=(shipped, indices, first, last),
                    compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, size)),
                    num_gpus=1 if gpu else 0, num_cpus=actor_cpus,
                )  # fmt: skip
            else:
                ds = ds.map_batches(
                    _step_fn, batch_size=1, batch_format="numpy",
                    fn_kwargs=dict(task=shipped, op_indices=indices, first=first, last=last),
                    num_cpus=task_cpus,
                )  # fmt: skip
        for row in ds.iter_rows():
            yield ShardResult(**json.loads(row["result"]))

    def decide(
        self, task: StageTask, op: GlobalOp, shards: list[ShardSpec]
    ) -> dict[Position, str]:
        """A deduplicator by Ray tasks over its buckets (workers rebuild it from the task);
        a selector's entries (one small key per sample) are gathered here."""
        if isinstance(op, Deduplicator):
            return distributed_decide(task, shards, parts=max(1, min(self.workers, len(shards))))
        return decide_gathered(task, op, shards)

    def close(self, cancel: bool = False) -> None:
        pass
