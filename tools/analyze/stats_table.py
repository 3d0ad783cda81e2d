"""Per-sample stats streamed into one Parquet file, read back a column or a batch at a time.

Stats arrive as JSON lines (`{"__dj__stats__": {...}}`, or samples carrying them). Two
passes over them: the first learns each stat's kind (number, string, list of numbers, list
of strings), the second writes row groups with that fixed schema. Neither pass, nor any
reader here, holds more than one row group or one column in memory, so a million samples
cost megabytes, not the dataset.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

log = logging.getLogger("dj_synth")

STATS_FIELD = "__dj__stats__"
ROW_GROUP = 65_536
# Bytes of JSON per block of Arrow's reader, which reads ~32 blocks ahead: ~35 MiB at most.
ARROW_BLOCK = 1 << 20

NUM, STR, NUM_LIST, STR_LIST = "number", "string", "number list", "string list"
_ARROW = {
    NUM: pa.float64(),
    STR: pa.string(),
    NUM_LIST: pa.list_(pa.float64()),
    STR_LIST: pa.list_(pa.string()),
}

# A source of stats dicts that can be iterated more than once (two passes).
StatsSource = Callable[[], Iterable[dict[str, Any]]]


def _kind(value: Any) -> str | None:
    """The kind of one stat value; None for what the analysis cannot use (dicts, None)."""
    if isinstance(value, bool) or isinstance(value, str):
        return STR
    if isinstance(value, (int, float)):
        return NUM
    if isinstance(value, list):
        if any(isinstance(v, str) for v in value):
            return STR_LIST
        return NUM_LIST
    return None


def _merge_kind(old: str | None, new: str) -> str:
    """A column that mixes kinds: numbers with number lists become lists; else strings."""
    if old is None or old == new:
        return new
    if {old, new} == {NUM, NUM_LIST}:
        return NUM_LIST
    return STR_LIST if NUM_LIST in (old, new) or STR_LIST in (old, new) else STR


def _coerce(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == NUM:
        return _number(value)
    if kind == STR:
        return value if isinstance(value, str) else str(value)
    items = value if isinstance(value, list) else [value]
    if kind == NUM_LIST:
        return [x for x in (_number(v) for v in items) if x is not None]
    return [v if isinstance(v, str) else str(v) for v in items if v is not None]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    x = float(value)
    return x if math.isfinite(x) else None


@dataclass
class StatsTable:
    """The Parquet file of stats: one row per sample, one column per stat (in first-seen order)."""

    path: str
    kinds: dict[str, str]
    rows: int

    def numeric(self) -> list[str]:
        return [c for c, k in self.kinds.items() if k in (NUM, NUM_LIST)]

    def column(self, name: str) -> pa.Array:
        """One column, list columns flattened (Data-Juicer's `explode`), nulls dropped."""
        col = pq.read_table(self.path, columns=[name]).column(name).combine_chunks()
        if self.kinds[name] in (NUM_LIST, STR_LIST):
            col = pc.list_flatten(col)
        return col.drop_null()

    def batches(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        yield from pq.ParquetFile(self.path).iter_batches(batch_size=ROW_GROUP, columns=columns)


@dataclass
class _Columns:
    kinds: dict[str, str]
    data: dict[str, list[Any]] = field(default_factory=dict)
    n: int = 0

    def __post_init__(self) -> None:
        self.data = {c: [] for c in self.kinds}

    def add(self, stats: dict[str, Any]) -> None:
        for name, kind in self.kinds.items():
            self.data[name].append(_coerce(stats.get(name), kind))
        self.n += 1

    def table(self) -> pa.Table:
        arrays = [pa.array(self.data[c], type=_ARROW[k]) for c, k in self.kinds.items()]
        return pa.Table.from_arrays(arrays, names=list(self.kinds))


def build_stats_table(source: StatsSource, path: str) -> StatsTable:
    """Stream the stats of `source` into Parquet at `path` (two passes, bounded memory)."""
    kinds: dict[str, str | None] = {}
    skipped: set[str] = set()
    for stats in source():
        for name, value in stats.items():
            kind = _kind(value)
            if kind is None:
                if value is not None:
                    skipped.add(name)
                kinds.setdefault(name, None)
                continue
            kinds[name] = _merge_kind(kinds.get(name), kind)
    for name in sorted(skipped):
        log.warning(
            "stat %r holds values that are not numbers, strings or lists: not analysed", name
        )
    usable = {name: kind for name, kind in kinds.items() if kind is not None}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    schema = pa.schema([(c, _ARROW[k]) for c, k in usable.items()])
    rows = 0
    with pq.ParquetWriter(path, schema) as writer:
        cols = _Columns(usable)
        for stats in source():
            cols.add(stats)
            if cols.n >= ROW_GROUP:
                writer.write_table(cols.table())
                rows += cols.n
                cols = _Columns(usable)
        if cols.n or rows == 0:
            writer.write_table(cols.table())
            rows += cols.n
    return StatsTable(path, usable, rows)


def stats_table_from_files(paths: list[str], path: str) -> StatsTable:
    """`<export>_stats.jsonl` files into Parquet: in one pass with Arrow's JSON reader when
    every block has the same shape (the usual case: ~6x faster), else `build_stats_table`."""
    table = _arrow_stats(paths, path)
    return table if table is not None else build_stats_table(stats_lines(paths), path)


def _arrow_kind(t: pa.DataType) -> str | None:
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return NUM
    if pa.types.is_string(t):
        return STR
    if pa.types.is_list(t):
        v = t.value_type
        if pa.types.is_integer(v) or pa.types.is_floating(v):
            return NUM_LIST
        if pa.types.is_string(v):
            return STR_LIST
    return None  # bools, nested objects, lists that were all empty so far: the Python path


def _arrow_stats(paths: list[str], path: str) -> StatsTable | None:
    """The table, or None (and no file) when the files are not uniform enough for Arrow."""
    import pyarrow.json as pj

    kinds: dict[str, str] | None = None
    writer: pq.ParquetWriter | None = None
    rows = 0
    ok = False
    try:
        for f in paths:
            for batch in pj.open_json(
                f, read_options=pj.ReadOptions(block_size=ARROW_BLOCK, use_threads=False)
            ):
                stats = batch.column(batch.schema.get_field_index(STATS_FIELD))
                if not pa.types.is_struct(stats.type) or stats.null_count:
                    return None
                fields = [stats.type.field(i) for i in range(stats.type.num_fields)]
                these = {fd.name: _arrow_kind(fd.type) for fd in fields}
                if not these or None in these.values():
                    return None
                if kinds is None:
                    kinds = these  # type: ignore[assignment]
                    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                    schema = pa.schema([(c, _ARROW[k]) for c, k in kinds.items()])
                    writer = pq.ParquetWriter(path, schema)
                elif these != kinds:
                    return None
                arrays = [
                    a.cast(_ARROW[k], safe=False) for a, k in zip(stats.flatten(), these.values())
                ]
                writer.write_table(pa.Table.from_arrays(arrays, names=list(these)))  # type: ignore[union-attr]
                rows += batch.num_rows
        ok = kinds is not None
    except (pa.ArrowException, KeyError):  # a block of another shape, a malformed line
        return None
    finally:
        if writer is not None:
            writer.close()
        if not ok and os.path.exists(path):
            os.remove(path)
    return StatsTable(path, kinds, rows) if ok and kinds is not None else None


# ---------------------------------------------------------------------------
# Sources: the JSON-lines files a run writes


def _lines(path: str) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(obj, dict):
                    yield obj


def stats_lines(paths: list[str]) -> StatsSource:
    """`<export>_stats.jsonl` files (or exports with stats kept): each line's stats."""

    def read() -> Iterator[dict[str, Any]]:
        for path in paths:
            for obj in _lines(path):
                stats = obj.get(STATS_FIELD)
                if isinstance(stats, dict):
                    yield stats

    return read


def filtered_lines(paths: list[str]) -> StatsSource:
    """`filtered/NN_<op>.jsonl` files: the stats each dropped sample had when it was dropped."""

    def read() -> Iterator[dict[str, Any]]:
        for path in paths:
            for obj in _lines(path):
                sample = obj.get("sample")
                stats = sample.get(STATS_FIELD) if isinstance(sample, dict) else None
                if isinstance(stats, dict):
                    yield stats

    return read


def chain(*sources: StatsSource) -> StatsSource:
    def read() -> Iterator[dict[str, Any]]:
        for source in sources:
            yield from source()

    return read


def row_means(column: pa.Array, kind: str) -> np.ndarray:
    """Per-row values for correlation: numbers as they are, lists by their mean (NaN if empty)."""
    if kind == NUM:
        return column.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    n = len(column)
    flat = pc.list_flatten(column)
    parents = pc.list_parent_indices(column).to_numpy()
    values = flat.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    sums = np.bincount(parents, weights=values, minlength=n)
    counts = np.bincount(parents, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
