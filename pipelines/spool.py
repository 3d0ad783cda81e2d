"""A temporary on-disk queue of survivors, for the second pass of a ranked dedup.

A dedup that keeps the best sample of each duplicate group can only decide after
its whole input has been hashed; meanwhile the samples wait here, on disk, so the
process holds only the hashes. Frame per survivor: one JSON header line with the
ref, id and byte lengths, then the raw bytes (nothing is parsed twice).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import orjson

from dj_synth.operators.batch import SampleRef

from .stages import Survivor, dumps


class Spool:
    def __init__(self, path: str) -> None:
        self.path = path
        self._fh = open(path, "wb")  # noqa: SIM115 - closed by close()/read()
        self.count = 0

    def write(self, survivors: list[Survivor]) -> None:
        fh = self._fh
        for sv in survivors:
            parts = (sv.sample, sv.export, sv.stats)
            head = [sv.ref.ordinal, sv.ref.source, sv.ref.line, sv.sample_id]
            head += [-1 if p is None else len(p) for p in parts]
            fh.write(dumps(head) + b"\n")
            for part in parts:
                if part:
                    fh.write(part)
        self.count += len(survivors)

    def read(self, size: int) -> Iterator[list[Survivor]]:
        """The survivors back, in the order written, `size` at a time."""
        self._fh.close()
        chunk: list[Survivor] = []
        with open(self.path, "rb") as fh:
            for _ in range(self.count):
                ordinal, source, line, sid, *lengths = _loads(fh.readline())
                sample, export, stats = (None if n < 0 else fh.read(n) for n in lengths)
                sv = Survivor(SampleRef(ordinal, source, line), sample or b"", sid)
                sv.export, sv.stats = export, stats
                chunk.append(sv)
                if len(chunk) >= size:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk

    def close(self) -> None:
        self._fh.close()
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass


def _loads(line: bytes) -> list:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:  # an id beyond 64-bit integers
        return json.loads(line)
