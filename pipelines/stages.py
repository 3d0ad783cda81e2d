"""The unit of work every executor runs: a batch of samples through one stage of operators.

A recipe is cut into stages at each global operator (deduplicator, selector): a stage
is a run of ordinary operators (run in parallel, batch by batch) that may end with a
global operator's keys; its keep/drop decision is then taken in one place, in input
order, by the engine (`GlobalOp.decide`), which is what makes it deterministic.

`StageRunner.run` turns raw input (first stage) or serialized samples (later
stages) into serialized survivors plus the records of everything dropped, so a
worker process returns only bytes and counters.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from dj_synth.operators.base import DEDUP_KEY, GlobalOp, Op
from dj_synth.operators.batch import MISSING, STATS, Batch, BatchContext, SampleRef
from dj_synth.operators.ledger import Ledger, OpMetrics, QuarantineRecord
from dj_synth.operators.media import MediaCache, MediaFacts
from dj_synth.operators.models import pick_device

from .dataset import IngestError, RawItem, Unreadable, check_sample, parse_line
from .recipe import Recipe


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON; falls back to the stdlib for values orjson refuses (huge ints)."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        return json.dumps(obj, ensure_ascii=True, separators=(",", ":"), default=str).encode()


def prepare_op(op: Op, rank: int) -> None:
    """Set an operator up for this worker: its models go on the device of the worker's rank."""
    op.prepare(pick_device(op.accelerator, rank), rank)


def open_model_cache(recipe: Recipe, ops: list[Op]) -> Any:
    """The run's model-output cache, when the recipe uses one and has a model operator."""
    s = recipe.settings
    if not s.use_cache or not any(hasattr(op, "model_cache") for op in ops):
        return None
    from dj_synth.operators.model_cache import ModelCache, default_cache_dir

    return ModelCache(s.cache_dir or default_cache_dir(), s.cache_size_gb)


@dataclass
class Stage:
    index: int
    ops: list[Op]  # ordinary operators, then possibly one GlobalOp last

    @property
    def global_op(self) -> GlobalOp | None:
        """The deduplicator or selector that ends the stage, if any."""
        last = self.ops[-1] if self.ops else None
        return last if isinstance(last, GlobalOp) else None


def plan_stages(ops: list[Op], final_pass: bool = False) -> list[Stage]:
    """Cut after each global operator; always at least one stage (ingest runs in it).

    `final_pass` adds an empty last stage after a trailing global operator, for engines
    that apply its drops at the start of the next stage (sharded mode).
    """
    stages: list[Stage] = []
    current: list[Op] = []
    for op in ops:
        current.append(op)
        if isinstance(op, GlobalOp):
            stages.append(Stage(len(stages), current))
            current = []
    if current or not stages or (final_pass and stages[-1].global_op is not None):
        stages.append(Stage(len(stages), current))
    return stages


@dataclass
class Survivor:
    ref: SampleRef
    sample: bytes  # the full sample, stats included (input of the next stage)
    sample_id: Any = None
    key: Any = None  # the key of the global operator that ends the stage, if any
    rank: float | None = None  # its rank value (e.g. a dedup's keep_stats_key)
    export: bytes | None = None  # last stage only: the exported line, without stats
    stats: bytes | None = None  # last stage only: the stats side-file line


class Positions:
    """Numbers survivors `(ordinal, k)` in stream order: samples a mapper generated from
    one input sample share its ordinal and follow it, so `k` tells them apart."""

    def __init__(self) -> None:
        self.last, self.k = -1, 0

    def __call__(self, sv: Survivor) -> tuple[int, int]:
        ordinal = sv.ref.ordinal
        self.k = self.k + 1 if ordinal == self.last else 0
        self.last = ordinal
        return (ordinal, self.k)


@dataclass
class StageOutput:
    survivors: list[Survivor] = field(default_factory=list)
    filtered: list[tuple[int, bytes]] = field(default_factory=list)  # (op index, record line)
    quarantined: list[bytes] = field(default_factory=list)
    quarantine_kinds: Counter[str] = field(default_factory=Counter)
    metrics: dict[int, OpMetrics] = field(default_factory=dict)
    traced: list[tuple[int, bytes]] = field(default_factory=list)  # (op index, tracer line)
    n_items: int = 0  # rows that entered the stage
    read_seconds: float = 0.0  # parsing and checking input (first stage only)


def filtered_line(op_name: str, reason: str, ref: SampleRef, sample: bytes) -> bytes:
    head = dumps({"op": op_name, "reason": reason, "source": ref.source, "line": ref.line})
    return head[:-1] + b',"sample":' + sample + b"}"


def quarantine_line(rec: QuarantineRecord) -> bytes:
    body: dict[str, Any] = {
        "stage": rec.stage,
        "error": rec.error,
        "source": rec.ref.source,
        "line": rec.ref.line,
    }
    if rec.row is not None:
        body["sample"] = rec.row
    if rec.raw is not None:
        body["raw"] = rec.raw
    return dumps(body)


def quarantine_kind(stage: str, error: str) -> str:
    """A short bucket for the summary: where it happened and the error up to its first colon."""
    kind = error.split(":", 1)[0].strip()[:80]
    return kind if stage == "read" else f"{stage}: {kind}"


@dataclass
class Work:
    """A unit of work between the steps of a stage: plain, picklable columns and records."""

    stage_index: int
    columns: dict[str, list[Any]]
    refs: list[SampleRef]
    ledger: Ledger
    out: StageOutput
    media: MediaFacts = field(default_factory=MediaFacts)  # headers read on entry, reused


class StageRunner:
    """Owns one set of operator objects; lives once per worker process (or actor)."""

    def __init__(
        self, recipe: Recipe, setup: bool = True, final_pass: bool = False, rank: int = 0
    ) -> None:
        self.recipe = recipe
        self.rank = rank
        self.stages = plan_stages(recipe.build_ops(), final_pass)
        ops = [op for stage in self.stages for op in stage.ops]
        self.model_cache = open_model_cache(recipe, ops)
        for op in ops:
            if hasattr(op, "model_cache"):
                op.model_cache = self.model_cache
        if setup:  # load every model now; without it, each op loads on its first batch
            for stage in self.stages:
                for op in stage.ops:
                    prepare_op(op, rank)
        s = recipe.settings
        self.text_key = recipe.text_key
        self.image_key = s.image_key
        self.keep_stats = s.keep_stats_in_res_ds
        self.ctx_args = dict(
            text_key=recipe.text_key,
            image_key=s.image_key,
            image_token=s.image_special_token,
            eoc_token=s.eoc_special_token,
            op_timeout_s=s.op_timeout_s,
        )

    def run(self, stage_index: int, items: list[RawItem]) -> StageOutput:
        work = self.begin(stage_index, items)
        self.apply(work, self.stages[stage_index].ops)
        return self.finish(work)

    # The three steps of `run`, separate so an executor can run a stage's operators in
    # different places (CPU tasks, GPU actors) and ship the `Work` between them.
    def begin(self, stage_index: int, items: list[RawItem]) -> Work:
        ledger = Ledger()
        out = StageOutput(n_items=len(items))
        ctx = self._context()
        if stage_index == 0:
            start = time.perf_counter()
            batch = self._ingest(items, ctx, ledger, out)
            out.read_seconds = time.perf_counter() - start
        else:
            rows = [orjson.loads(item.payload) for item in items]
            batch = Batch.from_rows(rows, [item.ref for item in items], ctx)
        return Work(stage_index, batch.columns, batch.refs, ledger, out, ctx.media.facts())

    def apply(self, work: Work, ops: list[Op]) -> None:
        batch = Batch(work.columns, work.refs, self._context(work.media))
        for op in ops:
            if not len(batch):
                break
            batch = op.run(batch, work.ledger)
        work.media = batch.ctx.media.facts()
        batch.ctx.media.clear()
        work.columns, work.refs = batch.columns, batch.refs

    def finish(self, work: Work) -> StageOutput:
        stage = self.stages[work.stage_index]
        batch = Batch(work.columns, work.refs, self._context())
        self._collect(stage, batch, work.ledger, work.out)
        return work.out

    def _context(self, known: MediaFacts | None = None) -> BatchContext:
        return BatchContext(media=MediaCache(known), **self.ctx_args)

    def _ingest(
        self, items: list[RawItem], ctx: BatchContext, ledger: Ledger, out: StageOutput
    ) -> Batch:
        s = self.recipe.settings
        rows, refs = [], []
        for item in items:
            try:
                sample = parse_line(item.payload)
                base_dir = item.ref.source.rsplit("/", 1)[0]
                check_sample(sample, base_dir, self.text_key, s.image_key, s.image_check, ctx.media)
            except IngestError as exc:
                raw = item.payload
                if isinstance(raw, Unreadable):
                    raw = raw.raw or None
                raw_text = (
                    raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else None
                )
                row = raw if isinstance(raw, dict) else None
                ledger.quarantined.append(
                    QuarantineRecord("read", str(exc), item.ref, row=row, raw=raw_text)
                )
                continue
            rows.append(sample)
            refs.append(item.ref)
        return Batch.from_rows(rows, refs, ctx)

    def _collect(self, stage: Stage, batch: Batch, ledger: Ledger, out: StageOutput) -> None:
        is_last = stage.index == len(self.stages) - 1
        keys = batch.columns.pop(DEDUP_KEY, None)
        ranked = stage.global_op if stage.global_op is not None and stage.global_op.ranked else None
        ids = batch.columns.get("id")
        # the full sample is needed to feed the next stage or to record a global op's drop
        need_full = not is_last or keys is not None or self.keep_stats
        for i, row in enumerate(batch.rows()):
            sid = ids[i] if ids and ids[i] is not MISSING else None
            survivor = Survivor(batch.refs[i], b"", sid, keys[i] if keys else None)
            if ranked is not None:
                survivor.rank = ranked.rank_value(row.get(STATS))
            if need_full:
                survivor.sample = dumps(row)
            if is_last:
                if self.keep_stats:
                    survivor.export = survivor.sample
                else:
                    stats = row.pop(STATS, {})
                    survivor.export = dumps(row)
                    survivor.stats = dumps({STATS: stats})
            out.survivors.append(survivor)
        names = {op.index: op.name for op in stage.ops}
        for rec in ledger.filtered:
            out.filtered.append(
                (
                    rec.op_index,
                    filtered_line(names[rec.op_index], rec.reason, rec.ref, dumps(rec.row)),
                )
            )
        for rec in ledger.quarantined:
            out.quarantined.append(quarantine_line(rec))
            out.quarantine_kinds[quarantine_kind(rec.stage, rec.error)] += 1
        out.traced = [(index, dumps(change)) for index, change in ledger.traced]
        out.metrics = ledger.metrics
