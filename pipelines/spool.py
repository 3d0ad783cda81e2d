"""A temporary on-disk queue of survivors, for the second pass of a ranked dedup.

A dedup that keeps the best sample of each duplicate group can only decide after
its whole input has been hashed; meanwhile the samples wait here, on disk, so the
process holds only the hashes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from .frames import read_survivors, write_survivors
from .stages import Survivor


class Spool:
    def __init__(self, path: str) -> None:
        self.path = path
        self._fh = open(path, "wb")  # noqa: SIM115 - closed by close()/read()
        self.count = 0

    def write(self, survivors: list[Survivor]) -> None:
        keys = [sv.key for sv in survivors]
        for sv in survivors:  # the keys stay in memory; only the samples wait on disk
            sv.key = None
        write_survivors(self._fh, survivors)
        for sv, key in zip(survivors, keys):
            sv.key = key
        self.count += len(survivors)

    def read(self, size: int) -> Iterator[list[Survivor]]:
        """The survivors back, in the order written, `size` at a time."""
        self._fh.close()
        chunk: list[Survivor] = []
        with open(self.path, "rb") as fh:
            for sv in read_survivors(fh, self.count):
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
