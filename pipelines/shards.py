"""The input cut into shards: the unit of work, retry and resume of the sharded executors.

A shard is a run of consecutive samples of one input file. Plain JSONL shards are
byte ranges (workers read their own range); a compressed, JSON-array or Parquet file
is one shard. The plan numbers samples exactly as the streaming reader does (blank lines
skipped, input order), so dedup decisions and outputs match the local executor's.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from dj_synth.operators.batch import SampleRef

from .dataset import BOM, DatasetReader, RawItem, is_json_array


@dataclass(frozen=True)
class ShardSpec:
    index: int
    path: str
    start: int  # byte range of a plain JSONL file; -1: the whole (compressed/Parquet) file
    end: int
    first_ordinal: int
    first_line: int
    count: int  # samples (non-blank lines)

    def to_dict(self) -> dict:
        return asdict(self)


def _plain(path: str) -> bool:
    """JSON Lines read by byte range; anything else is one shard read by the reader."""
    return path.endswith((".jsonl", ".json")) and not is_json_array(path)


def plan_shards(files: list[str], shard_size: int) -> tuple[list[ShardSpec], int]:
    """Shards of at most `shard_size` samples, and the number of blank lines skipped."""
    shards: list[ShardSpec] = []
    ordinal = blank = 0
    for path in files:
        if not _plain(path):
            reader = DatasetReader([path])
            count = sum(len(items) for items in reader.batches(4096))
            blank += reader.blank_lines
            shards.append(ShardSpec(len(shards), path, -1, -1, ordinal, 1, count))
            ordinal += count
            continue
        pos = start = first_line = count = 0
        with open(path, "rb") as fh:
            for line_no, line in enumerate(fh, start=1):
                size = len(line)
                if line_no == 1 and line.startswith(BOM):
                    line = line[len(BOM) :]
                if not line.strip():
                    blank += 1
                    pos += size
                    continue
                if count == 0:
                    start, first_line = pos, line_no
                count += 1
                pos += size
                if count == shard_size:
                    shards.append(
                        ShardSpec(len(shards), path, start, pos, ordinal, first_line, count)
                    )
                    ordinal += count
                    count = 0
        if count:
            shards.append(ShardSpec(len(shards), path, start, pos, ordinal, first_line, count))
            ordinal += count
    return shards, blank


def read_shard(spec: ShardSpec) -> list[RawItem]:
    """The shard's samples with the same refs the streaming reader gives them."""
    if spec.start < 0:
        reader = DatasetReader([spec.path])
        reader.samples_read = spec.first_ordinal
        return [item for items in reader.batches(1 << 30) for item in items]
    with open(spec.path, "rb") as fh:
        fh.seek(spec.start)
        data = fh.read(spec.end - spec.start)
    return list(_items(spec, data))


def _items(spec: ShardSpec, data: bytes) -> Iterator[RawItem]:
    ordinal = spec.first_ordinal
    for offset, line in enumerate(io.BytesIO(data)):
        line_no = spec.first_line + offset
        if line_no == 1 and line.startswith(BOM):
            line = line[len(BOM) :]
        if not line.strip():
            continue
        yield RawItem(SampleRef(ordinal, spec.path, line_no), line)
        ordinal += 1


def input_fingerprint(files: list[str]) -> list[list]:
    """What must not change between a run and its resume: each file's path, size, mtime."""
    return [[f, os.path.getsize(f), int(os.path.getmtime(f))] for f in files]
