"""Survivors written to and read back from a binary file, byte for byte.

Used by the dedup spool and by the per-shard checkpoints. Frame per survivor: one
JSON header line (ref, id, rank, dedup key, byte lengths), then the raw bytes, so
no sample is parsed twice. Keys (str, bytes, tuples of those) are tagged JSON, not
pickle: a checkpoint on a shared disk is data, never code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import IO, Any

import orjson

from dj_synth.operators.batch import SampleRef

from .stages import Survivor, dumps


def encode_key(key: Any) -> Any:
    if isinstance(key, float) and not math.isfinite(key):
        return {"f": repr(key)}  # JSON has no inf/nan: tagged, so they come back as floats
    if key is None or isinstance(key, (str, int, float)):
        return key
    if isinstance(key, bytes):
        return {"b": key.hex()}
    if isinstance(key, tuple):
        return {"t": [encode_key(k) for k in key]}
    raise TypeError(f"cannot store a dedup key of type {type(key).__name__}")


def decode_key(value: Any) -> Any:
    if isinstance(value, dict):
        if "b" in value:
            return bytes.fromhex(value["b"])
        if "f" in value:
            return float(value["f"])
        return tuple(decode_key(v) for v in value["t"])
    return value


def write_survivors(fh: IO[bytes], survivors: list[Survivor]) -> None:
    for sv in survivors:
        parts = (sv.sample, sv.export, sv.stats)
        head = [sv.ref.ordinal, sv.ref.source, sv.ref.line, sv.sample_id, encode_key(sv.rank)]
        head += [encode_key(sv.key), *(-1 if p is None else len(p) for p in parts)]
        fh.write(dumps(head) + b"\n")
        for part in parts:
            if part:
                fh.write(part)


def read_survivors(fh: IO[bytes], count: int) -> Iterator[Survivor]:
    for _ in range(count):
        ordinal, source, line, sid, rank, key, *lengths = loads(fh.readline())
        sample, export, stats = (None if n < 0 else fh.read(n) for n in lengths)
        ref = SampleRef(ordinal, source, line)
        sv = Survivor(ref, sample or b"", sid, decode_key(key), decode_key(rank))
        sv.export, sv.stats = export, stats
        yield sv


def loads(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:  # an id beyond 64-bit integers
        return json.loads(line)
