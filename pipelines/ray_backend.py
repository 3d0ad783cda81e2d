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
    sample_cutoff,
    sample_orders,
    stable_bucket,
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
# Map: each committed shard's keys -> (bucket, input ordinal, k) rows (int64 arrays, 24 B a
# row), hash-partitioned. Reduce: per partition, star edges between the members of each
# bucket, deduplicated. The driver joins the edges into components (union-find over edges
# only: few, as they link duplicate candidates). Map: entries of samples in a component,
# partitioned by component. Reduce: `decide` per component. Same result as deciding
# globally (see `dedup_decision`), without any process holding every key. An operator
# fitted to the data (semantic dedup's centroids) is fitted first on the driver from a
# seeded sample that tasks pick (only the sample travels); an index whose keys have one
# bucket each (`partitions`) skips the edges: its buckets are the components.


def _shard_entries(task: StageTask, shard: int) -> list[DedupEntry]:
    return shard_entries(task.work_dir, task.stage, shard)


def _dedup_op(task: StageTask, state: Any = None) -> Deduplicator:
    dedup = _runner(task).stages[task.stage].global_op
    assert isinstance(dedup, Deduplicator)
    return dedup if state is None else dedup.with_fit(state)  # type: ignore[attr-defined]


def _sample_orders(task: StageTask, shard: int, size: int, seed: int) -> np.ndarray:
    """The shard's `size` smallest sample draws (only they can be in the fit sample)."""
    positions = [e[1] for e in _shard_entries(task, shard) if e[4] is not None]
    return np.sort(sample_orders(positions, seed))[:size]


def _sample_keys(task: StageTask, shard: int, seed: int, cutoff: int) -> list:
    keyed = [e for e in _shard_entries(task, shard) if e[4] is not None]
    orders = sample_orders([e[1] for e in keyed], seed).tolist()
    return [(e[1], e[4]) for e, o in zip(keyed, orders) if o <= cutoff]


def _fit_on_sample(task: Any, op: Deduplicator, shards: list[ShardSpec]) -> Any:
    """`op.fit` on the seeded sample of every shard's keys (as `dedup_decision.fit_sample`)."""
    import ray

    size, seed = op.fit_sample_size, op.seed  # type: ignore[attr-defined]
    orders = ray.get([ray.remote(_sample_orders).remote(task, sh.index, size, seed)
                      for sh in shards])  # fmt: skip
    cutoff = sample_cutoff(np.concatenate(orders) if orders else np.zeros(0, np.uint64), size)
    if cutoff is None:
        return op.fit([])  # type: ignore[attr-defined]
    picked = ray.get([ray.remote(_sample_keys).remote(task, sh.index, seed, cutoff)
                      for sh in shards])  # fmt: skip
    sample = sorted((p for part in picked for p in part), key=lambda p: p[0])
    return op.fit([key for _, key in sample])  # type: ignore[attr-defined]


def _bucket_map(task: StageTask, shard: int, parts: int, state: Any) -> list[np.ndarray]:
    index = _dedup_op(task, state).new_index()
    rows = [
        (stable_bucket(bucket), o, k)
        for _, (o, k), _, _, key in _shard_entries(task, shard)
        for bucket in index.buckets(key)
    ]
    table = np.array(rows, dtype=np.int64).reshape(-1, 3)
    part = table[:, 0] % parts
    out = [table[part == p] for p in range(parts)]
    return out if parts > 1 else out[0]  # one return value per partition (num_returns)


def _bucket_reduce(*chunks: np.ndarray) -> np.ndarray:
    """(first member, member) edges of each bucket, as rows (o1, k1, o2, k2), no repeats."""
    table = np.concatenate(chunks) if chunks else np.zeros((0, 3), dtype=np.int64)
    table = table[np.lexsort((table[:, 2], table[:, 1], table[:, 0]))]  # bucket, position
    new = np.ones(len(table), dtype=bool)
    new[1:] = table[1:, 0] != table[:-1, 0]
    first = np.maximum.accumulate(np.where(new, np.arange(len(table)), 0))
    member = ~new
    edges = np.concatenate([table[first[member], 1:], table[member, 1:]], axis=1)
    return np.unique(edges, axis=0)


def _component_map(task: StageTask, shard: int, comp: dict[Position, Position] | None,
                   parts: int, state: Any) -> list[list[tuple[Any, DedupEntry]]]:  # fmt: skip
    """Entries by component: `comp` (None: the index's one bucket is the component)."""
    index = _dedup_op(task, state).new_index() if comp is None else None
    out: list[list[tuple[Any, DedupEntry]]] = [[] for _ in range(parts)]
    for entry in _shard_entries(task, shard):
        if index is not None:
            buckets = index.buckets(entry[4])
            root = stable_bucket(buckets[0]) if buckets else None
        else:
            root = comp.get(entry[1])  # type: ignore[union-attr]
        if root is not None:
            out[hash(root) % parts].append((root, entry))
    return out if parts > 1 else out[0]


def _component_reduce(task: StageTask, state: Any, *chunks: list[tuple[Any, DedupEntry]]) -> dict:
    groups: dict[Any, list[DedupEntry]] = {}
    for chunk in chunks:
        for root, entry in chunk:
            groups.setdefault(root, []).append(entry)
    dedup = _dedup_op(task, state)
    drops: dict[Position, str] = {}
    for group in groups.values():
        drops.update(decide(dedup, group))
    return drops


def distributed_decide(task: StageTask, shards: list[ShardSpec], parts: int,
                       op: Deduplicator | None = None) -> dict[Position, str]:  # fmt: skip
    """A stage's dedup decision computed by Ray tasks (see the comment above); `op` is the
    driver's copy of the operator (fitted here when it needs a fit)."""
    import ray

    shipped = ray.put(task.without_drops())
    state = None
    if op is not None and getattr(op, "fit_sample_size", 0):
        state = _fit_on_sample(shipped, op, shards)
        op = op.with_fit(state)  # type: ignore[attr-defined]
    partitions = op is not None and getattr(op.new_index(), "partitions", False)
    comp_ref = None
    if not partitions:
        bucket_map = ray.remote(_bucket_map)
        bucket_map = bucket_map.options(num_returns=parts) if parts > 1 else bucket_map
        mapped = [bucket_map.remote(shipped, sh.index, parts, state) for sh in shards]
        if parts == 1:
            mapped = [[m] for m in mapped]
        reduce = ray.remote(_bucket_reduce)
        edges = ray.get([reduce.remote(*[m[p] for m in mapped]) for p in range(parts)])
        comp = components(
            ((a, b), (c, d)) for part in edges for a, b, c, d in part.tolist()
        )
        if not comp:
            return {}
        comp_ref = ray.put(comp)
    comp_map = ray.remote(_component_map)
    comp_map = comp_map.options(num_returns=parts) if parts > 1 else comp_map
    mapped = [comp_map.remote(shipped, sh.index, comp_ref, parts, state) for sh in shards]
    if parts == 1:
        mapped = [[m] for m in mapped]
    reduce = ray.remote(_component_reduce)
    drops: dict[Position, str] = {}
    for part in ray.get([reduce.remote(shipped, state, *[m[p] for m in mapped])
                         for p in range(parts)]):  # fmt: skip
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
            parts = max(1, min(self.workers, len(shards)))
            return distributed_decide(task, shards, parts, op)
        return decide_gathered(task, op, shards)

    def close(self, cancel: bool = False) -> None:
        pass
