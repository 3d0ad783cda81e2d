"""Data-Juicer's tracer (`open_tracer`, `op_list_to_trace`, `trace_num`): what each operator
did to the first few samples, in `work_dir/trace/` under Data-Juicer's file names.

* `mapper-<op>.jsonl`: `{"original text", "processed_text"}` of samples whose text changed
  (a generated sample against the sample it came from; Data-Juicer's tracer refuses
  mappers that add samples);
* `filter-<op>.jsonl`: the samples the filter dropped, with their stats;
* `duplicate-<op>.jsonl`: `{"dup1", "dup2"}`: the kept sample as it was read from the input,
  and the dropped duplicate as the deduplicator saw it (whole samples, as Data-Juicer's image
  and MinHash deduplicators write them).

It is built from what every engine already hands the output layer (the operators' filtered
records and the mappers' traced changes), so streaming, sharded and Ray runs trace alike.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import orjson

from dj_synth.operators.base import Deduplicator, Mapper, Op

from .dataset import DatasetReader, IngestError, parse_line
from .export import AtomicWriter, _safe_child
from .stages import dumps

KEPT_ORDINAL = re.compile(r"\(input sample #(\d+)\)")


class Tracer:
    def __init__(self, work_dir: str, ops: list[Op], keys: list[str], trace_num: int) -> None:
        self.folder = os.path.join(work_dir, "trace")
        self.limit = trace_num
        self.ops = {op.index: op for op in ops if op.trace_num}
        self.keys = dict(zip((op.index for op in ops), keys))  # unique names (name#2)
        self.records: dict[int, list[Any]] = {index: [] for index in self.ops}

    def _room(self, op_index: int) -> bool:
        return op_index in self.records and len(self.records[op_index]) < self.limit

    def filtered(self, op_index: int, line: bytes) -> None:
        """A filtered record (`{"op", "reason", "source", "line", "sample"}`) of any operator."""
        if not self._room(op_index) or isinstance(self.ops[op_index], Mapper):
            return
        record = orjson.loads(line)
        if isinstance(self.ops[op_index], Deduplicator):
            match = KEPT_ORDINAL.search(record["reason"])
            kept = int(match.group(1)) if match else None
            self.records[op_index].append((kept, record["sample"]))
        else:
            self.records[op_index].append(record["sample"])

    def changed(self, op_index: int, line: bytes) -> None:
        """A mapper's traced change."""
        if self._room(op_index):
            self.records[op_index].append(orjson.loads(line))

    def commit(self, dataset_files: list[str]) -> list[str]:
        """Write the trace files (a previous run's go); their paths."""
        clear_trace(os.path.dirname(self.folder))
        kept = self._kept_samples(dataset_files)
        written = []
        for index, op in self.ops.items():
            rows = self.records[index]
            if not rows:
                continue
            if isinstance(op, Mapper):
                kind = "mapper"
            elif isinstance(op, Deduplicator):
                kind = "duplicate"
                rows = [{"dup1": kept.get(k), "dup2": sample} for k, sample in rows]
            else:  # filters, and selectors: the samples they dropped
                kind = "filter"
            path = _safe_child(self.folder, f"{kind}-{self.keys[index]}.jsonl")
            with AtomicWriter(path) as w:
                for row in rows:
                    w.write(dumps(row))
            written.append(path)
        return written

    def _kept_samples(self, dataset_files: list[str]) -> dict[int, Any]:
        """The kept side of each traced duplicate pair, read back from the input by ordinal."""
        wanted = {
            k for index, op in self.ops.items() if isinstance(op, Deduplicator)
            for k, _ in self.records[index] if k is not None
        }  # fmt: skip
        found: dict[int, Any] = {}
        if not wanted:
            return found
        for items in DatasetReader(dataset_files).batches(1024):
            for item in items:
                if item.ref.ordinal in wanted:
                    try:
                        found[item.ref.ordinal] = parse_line(item.payload)
                    except IngestError:
                        pass
            if len(found) == len(wanted) or items[-1].ref.ordinal >= max(wanted):
                break
        return found


def clear_trace(work_dir: str) -> None:
    """Remove a previous run's trace files (a run without the tracer leaves none behind)."""
    for old in Path(work_dir, "trace").glob("*.jsonl"):
        old.unlink()
