"""Operator base classes: the bookkeeping lives here so concrete operators are pure logic.

Every operator is called by executors through `Op.run(batch, ledger)`, which
splits the batch to the operator's `batch_size`, times it, counts rows in and
out, and isolates failures: if a batch raises, it is retried row by row and
only the rows that still fail are quarantined with their error. When every row of
a batch fails with the same exception, the operator has a bug (bad data is not
that uniform): `OperatorError` stops the run. With the recipe's `op_timeout_s`,
a CPU operator gets that long per batch and then per sample: a sample over it is
quarantined, so one pathological input never stalls a run.

Concrete operators implement one small method set:
- `Mapper.process(batch) -> batch`
- `Filter.compute_stats(batch)` and `Filter.keep(batch) -> list[bool]`
  (or `RangeFilter.compute(batch) -> list` for the common min/max case)
- `Deduplicator.compute_hash(batch) -> list[key]` plus a `DedupIndex`
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading
import time
import traceback
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, Literal

from .batch import Batch, SampleRef
from .ledger import FilteredRecord, Ledger, QuarantineRecord
from .media import MediaError

# Data-Juicer's per-op keyword arguments that have no meaning here. They are
# accepted (with a warning from the recipe loader) so its recipes run unchanged.
IGNORED_OP_ARGS = frozenset(
    {
        "audio_key", "video_key", "image_bytes_key", "system_key", "instruction_key",
        "prompt_key_", "query_key", "response_key", "history_key", "index_key",
        "skip_op_error", "turbo", "work_dir", "cpu_required", "gpu_required",
        "mem_required", "memory", "num_cpus", "num_gpus", "runtime_env", "batch_mode",
        "ray_execution_mode", "stats_export_path", "audio_special_token",
        "video_special_token",
    }
)  # fmt: skip

DEDUP_KEY = "__dj__dedup_key__"  # column carrying hash keys from workers to the dedup index


class OperatorError(RuntimeError):
    """An operator failed the same way on every row of a batch: a bug in code, not bad data."""

    def __init__(self, op: str, error: str, trace: str) -> None:
        super().__init__(op, error, trace)
        self.op, self.error, self.trace = op, error, trace

    def __str__(self) -> str:
        return (
            f"operator {self.op} failed on every sample of a batch with {self.error}; "
            "this is a bug in the operator or its settings, not bad data"
        )


class OpTimeout(Exception):
    """A sample took longer than the recipe's `op_timeout_s`."""


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise `OpTimeout` in this thread after `seconds` (SIGALRM; main thread only, else off)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise OpTimeout(f"took longer than op_timeout_s={seconds:g}")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Op:
    """Common arguments and the guarded `run` loop."""

    name: ClassVar[str] = "op"  # set by @register
    accelerator: str = "cpu"  # class default; "cuda" for model operators
    default_batch_size: ClassVar[int] = 1000
    # Operators that look at pixels: the base class decodes every image of a batch
    # in parallel first and quarantines the samples whose images cannot be decoded.
    needs_pixels: ClassVar[bool] = False
    # With `needs_pixels`: the smallest side the operator needs (JPEGs then decode at a
    # reduced DCT scale, several times faster); None for the full resolution.
    pixel_side: ClassVar[int | None] = None
    # False for operators holding torch models: executors then start workers with
    # `spawn`, since forking a process whose torch thread pools already ran can hang.
    fork_safe: ClassVar[bool] = True
    # True for operators that create new content (captions, images): the challenge
    # requires a synthesis step, and `dj-pack` checks recipes for one.
    synthesizes: ClassVar[bool] = False
    # Data-Juicer's tracer (`open_tracer`): how many changed samples a mapper records per batch
    # (the run keeps the first `trace_num`); 0 when the op is not traced.
    trace_num: int = 0

    def __init__(
        self,
        *,
        text_key: str | None = None,
        image_key: str | None = None,
        image_special_token: str | None = None,
        eoc_special_token: str | None = None,
        batch_size: int | None = None,
        num_proc: int | None = None,
        accelerator: Literal["cpu", "cuda"] | None = None,
        **kwargs: Any,
    ) -> None:
        unknown = set(kwargs) - IGNORED_OP_ARGS
        if unknown:
            raise TypeError(f"{self.name}: unknown argument(s) {sorted(unknown)}")
        self.text_key = text_key
        self.image_key = image_key
        self.image_special_token = image_special_token
        self.eoc_special_token = eoc_special_token
        self.batch_size = batch_size or self.default_batch_size
        self.num_proc = num_proc
        if accelerator is not None:
            self.accelerator = accelerator
        self.index = 0  # position in the recipe, set by the plan

    # -- what executors call ------------------------------------------
    def setup(self, device: str = "cpu", rank: int = 0) -> None:
        """Load heavy resources (models) once per worker, before any batch.

        Executors call it (through `prepare`) in each worker process or actor, never
        in the process that only validates the recipe, with the device this worker's
        models go on (`cpu`, `cuda:N`) and the worker's rank. Operators that need
        nothing skip it.
        """

    def prepare(self, device: str = "cpu", rank: int = 0) -> None:
        """`setup` once per object; a failure is the run's error, never the samples'."""
        if not getattr(self, "_prepared", False):
            self.setup(device, rank)
            self._prepared = True

    def check(self) -> None:
        """Called once the operator is built (at recipe load): refuse inconsistent settings."""

    def run(self, batch: Batch, ledger: Ledger) -> Batch:
        """Apply to `batch`, recording counts, time, drops and errors in `ledger`."""
        self.prepare()  # executors prepare first with the worker's device; tests may not
        start = time.perf_counter()
        metrics = ledger.op(self.index)
        view = self._view(batch)
        parts = [self._guarded(part, ledger) for part in view.slices(self.batch_size)]
        out = parts[0] if len(parts) == 1 else Batch.concat(parts, view.ctx)
        out.ctx = batch.ctx
        metrics.n_in += len(batch)
        metrics.n_out += len(out)
        metrics.seconds += time.perf_counter() - start
        counts = self.__dict__.pop("cache_counts", None)  # a model op's cache use
        if counts:
            metrics.cache_hits += counts[0]
            metrics.cache_misses += counts[1]
        return out

    def _view(self, batch: Batch) -> Batch:
        """The batch as this operator's own keys and tokens name it (per-op `text_key`...)."""
        ctx = batch.ctx
        mine = {
            "text_key": self.text_key or ctx.text_key,
            "image_key": self.image_key or ctx.image_key,
            "image_token": self.image_special_token or ctx.image_token,
            "eoc_token": self.eoc_special_token or ctx.eoc_token,
        }
        if all(getattr(ctx, k) == v for k, v in mine.items()):
            return batch
        return Batch(batch.columns, batch.refs, dataclasses.replace(ctx, **mine))

    @property
    def _timeout(self) -> bool:
        """The per-sample time limit applies to CPU operators (not to model inference)."""
        return self.accelerator == "cpu" and self.fork_safe

    @property
    def defers_pixels(self) -> bool:
        """True when the operator decodes only the images it needs (model-output cache)."""
        return False

    def _guarded(self, batch: Batch, ledger: Ledger) -> Batch:
        if self.needs_pixels and not self.defers_pixels:
            batch = self._decode_pixels(batch, ledger)
            if not len(batch):
                return batch
        limit = batch.ctx.op_timeout_s if self._timeout else None
        try:
            with time_limit(limit):
                return self._apply(batch, ledger)
        except Exception as exc:
            if len(batch) == 1:
                self._quarantine(batch, exc, ledger)
                return batch.take([])
        kept, failures = [], []
        for i in range(len(batch)):
            row = batch.take([i])
            try:
                with time_limit(limit):
                    kept.append(self._apply(row, ledger))
            except Exception as exc:
                failures.append((row, exc))
        self._stop_if_bug(len(batch), failures)
        for row, exc in failures:
            self._quarantine(row, exc, ledger)
        return Batch.concat(kept, batch.ctx) if kept else batch.take([])

    def _stop_if_bug(self, n_rows: int, failures: list[tuple[Batch, Exception]]) -> None:
        """Every row failing with one exception type is a bug: raise `OperatorError`."""
        if n_rows < 2 or len(failures) < n_rows:
            return
        kinds = {type(exc) for _, exc in failures}
        exc = failures[0][1]
        if len(kinds) > 1 or isinstance(exc, (MediaError, OpTimeout)):
            return
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        raise OperatorError(f"process[{self.index}] {self.name}", _describe(exc), trace)

    def _decode_pixels(self, batch: Batch, ledger: Ledger) -> Batch:
        """Decode all images (threads; PIL releases the GIL) into the shared media cache."""
        from concurrent.futures import ThreadPoolExecutor

        media = batch.ctx.media
        paths = list(dict.fromkeys(p for row in batch.images for p in row))
        errors: dict[str, Exception] = {}

        def decode(path: str) -> None:
            try:
                self.pixels(media, path)
            except MediaError as exc:
                errors[path] = exc

        if len(paths) > 1:
            threads = min(16, os.cpu_count() or 2, len(paths))
            with ThreadPoolExecutor(max_workers=threads) as pool:
                list(pool.map(decode, paths))
        else:
            for path in paths:
                decode(path)
        if not errors:
            return batch
        good = []
        for i, row in enumerate(batch.images):
            bad = next((errors[p] for p in row if p in errors), None)
            if bad is None:
                good.append(i)
            else:
                self._quarantine(batch.take([i]), bad, ledger)
        return batch.take(good)

    def pixels(self, media: Any, path: str) -> Any:
        """The decoded RGB image at the resolution this operator asked for (`pixel_side`)."""
        return media.small(path, self.pixel_side) if self.pixel_side else media.rgb(path)

    def _quarantine(self, row: Batch, exc: Exception, ledger: Ledger) -> None:
        ledger.op(self.index).quarantined += 1
        ledger.quarantined.append(
            QuarantineRecord(self.name, _describe(exc), row.refs[0], row.rows()[0])
        )

    def _apply(self, batch: Batch, ledger: Ledger) -> Batch:
        raise NotImplementedError

    # -- helpers for concrete operators --------------------------------
    def __repr__(self) -> str:
        return f"<{self.name} #{self.index}>"


def _describe(exc: Exception) -> str:
    """The error for the quarantine: media errors speak for themselves, others name their type."""
    text = str(exc)
    if isinstance(exc, MediaError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Mapper(Op):
    """Rewrites samples. May add rows (synthesis); must not silently drop them."""

    def process(self, batch: Batch) -> Batch:
        raise NotImplementedError

    def _apply(self, batch: Batch, ledger: Ledger) -> Batch:
        n_in = len(batch)
        before = list(zip(batch.refs, batch.texts)) if self.trace_num else None
        out = self.process(batch)
        ledger.op(self.index).generated += len(out) - n_in
        if before is not None:
            self._trace(before, out, ledger)
        return out

    def _trace(self, before: list[tuple[SampleRef, Any]], out: Batch, ledger: Ledger) -> None:
        """Samples whose text changed, before and after (a generated sample against the
        sample it came from), as Data-Juicer's tracer writes them."""
        origin: dict[SampleRef, Any] = {}
        for ref, text in before:
            origin.setdefault(ref, text)
        found = 0
        for ref, text in zip(out.refs, out.texts):
            old = origin.get(ref)
            if old is not None and old != text:
                ledger.traced.append((self.index, {"original text": old, "processed_text": text}))
                found += 1
                if found >= self.trace_num:
                    break


class Filter(Op):
    """Computes stats into `__dj__stats__`, then keeps or drops each sample.

    Data-Juicer's interval options are honoured: `min_closed_interval`,
    `max_closed_interval` and `reversed_range` (keep what is outside the range).
    """

    stats_keys: ClassVar[tuple[str, ...]] = ()
    # Analysis (`dj-analyze`): compute the stats, drop nothing.
    stats_only: bool = False

    def __init__(
        self,
        *,
        min_closed_interval: bool = True,
        max_closed_interval: bool = True,
        reversed_range: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.reversed_range = reversed_range
        self.min_closed_interval = min_closed_interval != reversed_range
        self.max_closed_interval = max_closed_interval != reversed_range

    def compute_stats(self, batch: Batch) -> None:
        raise NotImplementedError

    def keep(self, batch: Batch) -> list[bool]:
        raise NotImplementedError

    def reason(self, stats: dict[str, Any]) -> str:
        """Why a sample was dropped, from its stats; shown in the filtered files."""
        shown = ", ".join(f"{k}={_short(stats.get(k))}" for k in self.stats_keys)
        return shown or "rejected"

    def in_range(self, value: float, low: float | None, high: float | None) -> bool:
        """Data-Juicer's `get_keep_boolean`."""
        ok = True
        if low is not None:
            ok = value >= low if self.min_closed_interval else value > low
        if ok and high is not None:
            ok = value <= high if self.max_closed_interval else value < high
        return ok != self.reversed_range

    def _apply(self, batch: Batch, ledger: Ledger) -> Batch:
        self.compute_stats(batch)
        if self.stats_only:
            return batch
        keep = self.keep(batch)
        if len(keep) != len(batch):
            raise RuntimeError(f"{self.name}.keep returned {len(keep)} flags for {len(batch)} rows")
        dropped = [i for i, k in enumerate(keep) if not k]
        if not dropped:
            return batch
        stats = batch.stats
        rows = batch.take(dropped).rows()
        for i, row in zip(dropped, rows):
            ledger.filtered.append(
                FilteredRecord(self.index, self.name, self.reason(stats[i]), batch.refs[i], row)
            )
        ledger.op(self.index).filtered += len(dropped)
        return batch.take([i for i, k in enumerate(keep) if k])


class RangeFilter(Filter):
    """A filter on one stat against `[min, max]`: implement `compute` only.

    `compute` returns one value per sample: a number, or a list of numbers (one
    per image) judged with `any_or_all`; an empty list keeps the sample.
    """

    stats_key: ClassVar[str]
    min_arg: ClassVar[str]
    max_arg: ClassVar[str]
    any_or_all: str = "any"

    def compute(self, batch: Batch) -> list[Any]:
        raise NotImplementedError

    def check(self) -> None:
        """A typo in `stats_key`, `min_arg` or `max_arg` fails at load, not on every sample."""
        super().check()
        cls = type(self).__name__
        if not isinstance(getattr(self, "stats_key", None), str):
            raise TypeError(f"{cls} must set the class attribute stats_key (a string)")
        for attr in ("min_arg", "max_arg"):
            name = getattr(self, attr, None)
            if not isinstance(name, str) or not hasattr(self, name):
                raise TypeError(
                    f"{cls}.{attr} = {name!r} names no attribute of the operator (set in "
                    f"__init__); attributes: {', '.join(sorted(vars(self)))}"
                )

    def compute_stats(self, batch: Batch) -> None:
        values = self.compute(batch)
        for stats, value in zip(batch.stats, values):
            stats[self.stats_key] = value

    def keep(self, batch: Batch) -> list[bool]:
        low, high = getattr(self, self.min_arg), getattr(self, self.max_arg)
        flags = []
        for stats in batch.stats:
            value = stats[self.stats_key]
            if isinstance(value, list):
                oks = [self.in_range(v, low, high) for v in value]
                flags.append(not oks or (any(oks) if self.any_or_all == "any" else all(oks)))
            else:
                flags.append(self.in_range(value, low, high))
        return flags

    def reason(self, stats: dict[str, Any]) -> str:
        low, high = getattr(self, self.min_arg), getattr(self, self.max_arg)
        span = f"[{_short(low)}, {_short(high)}]"
        if self.reversed_range:
            return f"{self.stats_key}={_short(stats.get(self.stats_key))} inside {span} (reversed_range)"
        qualifier = f" ({self.any_or_all})" if isinstance(stats.get(self.stats_key), list) else ""
        return f"{self.stats_key}={_short(stats.get(self.stats_key))} outside {span}{qualifier}"


def _short(value: Any) -> str:
    if isinstance(value, float):
        if math.isinf(value) or value >= 2**62:
            return "inf"
        return f"{value:.4g}"
    if isinstance(value, int) and value >= 2**62:
        return "inf"
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value[:8]) + (", ...]" if len(value) > 8 else "]")
    return repr(value) if isinstance(value, str) else str(value)


class DedupIndex:
    """Decides, one sample at a time and in one place, whether a hashed sample is new.

    Samples are admitted in input order (keep policy `first`) or best first
    (`max`/`min` of a stats key, see `decide_ranked`); a sample is dropped only as a
    duplicate of a sample already admitted, so every drop names a kept sample.
    """

    def admit(self, key: Hashable | None, ref: SampleRef, sample_id: Any) -> str | None:
        """None to keep the sample; otherwise the reason it is a duplicate."""
        raise NotImplementedError

    def buckets(self, key: Hashable | None) -> list[Hashable]:
        """Blocking keys: two samples whose keys can be duplicates share at least one.

        Values must be stable across processes (no `hash()` of str/bytes): a distributed
        executor groups samples by them (see `dedup_decision.decide_by_components`).
        """
        raise NotImplementedError


class ExactIndex(DedupIndex):
    """The first admitted sample of each key wins; a None key is never a duplicate."""

    def __init__(self) -> None:
        self.first: dict[Hashable, tuple[int, Any]] = {}

    def admit(self, key: Hashable | None, ref: SampleRef, sample_id: Any) -> str | None:
        if key is None:
            return None
        seen = self.first.get(key)
        if seen is None:  # (a generated sample shares its parent's ref: compare keys only)
            self.first[key] = (ref.ordinal, sample_id)
            return None
        who = f"id={seen[1]!r} " if seen[1] is not None else ""
        return f"duplicate of {who}(input sample #{seen[0]})"

    def buckets(self, key: Hashable | None) -> list[Hashable]:
        return [] if key is None else [key]


class GlobalOp(Op):
    """An operator whose keep/drop decision needs the other samples (deduplicators, selectors).

    Workers compute one key per sample in parallel (`compute_key`, stored in the
    `__dj__dedup_key__` column); the engine gathers the keys and decides in one place
    (`decide`, or `new_index` online), in a fixed order, so the same samples are kept
    whatever the parallelism, the mode or the backend. The recipe is cut into stages
    after each global operator.
    """

    @property
    def ranked(self) -> bool:
        """True when the decision needs every key first (else `new_index` decides online)."""
        return True

    def rank_value(self, stats: Any) -> float | None:
        """A number the decision may order samples by (from the sample's stats); None."""
        return None

    def compute_key(self, batch: Batch) -> list[Any]:
        raise NotImplementedError

    def decide(self, entries: list[Any]) -> dict[tuple[int, int], str]:
        """{position: reason} of the samples to drop, from every sample's
        `(rank, position, ref, id, key)` entry (`dedup_decision.DedupEntry`)."""
        raise NotImplementedError

    def new_index(self) -> DedupIndex:
        raise NotImplementedError(f"{self.name} decides over all samples (ranked)")

    def _apply(self, batch: Batch, ledger: Ledger) -> Batch:
        keys = self.compute_key(batch)
        if len(keys) != len(batch):
            raise RuntimeError(f"{self.name} computed {len(keys)} keys for {len(batch)} rows")
        batch.columns[DEDUP_KEY] = keys
        return batch


class Deduplicator(GlobalOp):
    """Hashes samples in parallel (`compute_hash`); a `DedupIndex` keeps or drops them.

    Keep policy (ours; Data-Juicer keeps the first): `keep_policy: first` decides
    online, in input order, holding only the kept hashes. `max` / `min` keep the
    sample with the highest / lowest `keep_stats_key` (computed by an earlier
    filter; a list of values counts as its mean; missing values rank last, ties go
    to input order): all hashes are held until the stage's input ends, then
    admitted best first (`dedup_decision.decide`), and the drop is applied in a second pass.
    """

    def __init__(
        self,
        *,
        keep_policy: Literal["first", "max", "min"] = "first",
        keep_stats_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if keep_policy not in ("first", "max", "min"):
            raise ValueError(f"keep_policy must be first, max or min, not {keep_policy!r}")
        if keep_policy == "first" and keep_stats_key:
            raise ValueError(
                f"keep_stats_key {keep_stats_key!r} needs keep_policy: max or min "
                "(the default policy, first, keeps the first sample in input order)"
            )
        if keep_policy != "first" and not keep_stats_key:
            raise ValueError(
                f"keep_policy {keep_policy!r} needs keep_stats_key: the stats key to rank "
                "duplicates by, e.g. image_text_similarity"
            )
        self.keep_policy = keep_policy
        self.keep_stats_key = keep_stats_key

    @property
    def ranked(self) -> bool:
        """True when the keep decision needs every hash first (policy max or min)."""
        return self.keep_policy != "first"

    def rank_value(self, stats: Any) -> float | None:
        """The sample's value of `keep_stats_key` (mean of a list); None if absent."""
        return stats_number(stats, self.keep_stats_key)

    def compute_hash(self, batch: Batch) -> list[Hashable | None]:
        raise NotImplementedError

    def compute_key(self, batch: Batch) -> list[Any]:
        return self.compute_hash(batch)

    def decide(self, entries: list[Any]) -> dict[tuple[int, int], str]:
        from .dedup_decision import decide

        return decide(self, entries)

    def new_index(self) -> DedupIndex:
        return ExactIndex()


class Selector(GlobalOp):
    """Keeps a subset chosen over the whole dataset (top-k, random, balanced...).

    Workers compute each sample's key (`compute_key`: a field's value, an embedding);
    `select` sees every sample's entry at once, in input order, and names the samples
    to drop with a reason. Kept samples stay in input order.
    """

    def decide(self, entries: list[Any]) -> dict[tuple[int, int], str]:
        return self.select(sorted(entries, key=lambda e: e[1]))

    def select(self, entries: list[Any]) -> dict[tuple[int, int], str]:
        raise NotImplementedError


def stats_number(stats: Any, key: str | None) -> float | None:
    """A stats value as one number (the mean of a list); None if absent or not numeric."""
    value = stats.get(key) if isinstance(stats, dict) and key else None
    if isinstance(value, list):
        numbers = [v for v in value if _is_number(v)]
        value = sum(numbers) / len(numbers) if numbers else None
    if not _is_number(value) or math.isnan(value):
        return None
    return float(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
