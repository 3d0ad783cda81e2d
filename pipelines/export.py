"""Writing results atomically: nothing appears under its final name until the run is done.

Every writer streams into a hidden temp file beside its target and renames it
on `commit`; a crashed or interrupted run leaves no half-written export behind.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

EXPORT_SUFFIXES = (".jsonl", ".json")


class ExportError(OSError):
    """The export or work directory cannot be written; the message says which and why."""


def check_writable(directory: str, what: str) -> None:
    """Fail fast, before any work, if `directory` cannot be created or written."""
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create {what} {directory}: {exc.strerror}") from None
    probe = os.path.join(directory, f".dj-synth-write-test-{os.getpid()}")
    try:
        with open(probe, "wb"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise ExportError(f"{what} {directory} is not writable: {exc.strerror}") from None


def _safe_child(directory: str, name: str) -> str:
    """Join without letting `name` escape `directory` (operator names end up in file names)."""
    clean = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "_"
    return os.path.join(directory, clean)


class AtomicWriter:
    """One file, written to `.<name>.tmp` and renamed into place on commit."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.tmp")
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self._fh = open(self.tmp, "wb")  # noqa: SIM115 - closed in commit/abort
        self.lines = 0
        self.bytes = 0

    def write(self, line: bytes) -> None:
        """One JSON Lines record (the newline is added)."""
        self._fh.write(line)
        self._fh.write(b"\n")
        self.lines += 1
        self.bytes += len(line) + 1

    def write_raw(self, data: bytes) -> None:
        self._fh.write(data)
        self.bytes += len(data)

    def __enter__(self) -> AtomicWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        """Commit on success; on an exception remove the temporary file."""
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def commit(self) -> str:
        self._fh.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._fh.close()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


class ShardedWriter:
    """JSONL export, one file or shards of about `shard_size` bytes.

    Shards are named as Data-Juicer names them, `<base>-<i>-of-<n><suffix>`;
    `n` is known only at the end, so shards are renamed on commit.
    """

    def __init__(self, export_path: str, shard_size: int = 0) -> None:
        self.export_path = export_path
        self.shard_size = shard_size
        self._shards: list[AtomicWriter] = []
        self.lines = 0

    def write(self, line: bytes) -> None:
        if not self._shards or (
            self.shard_size > 0
            and self._shards[-1].bytes + len(line) + 1 > self.shard_size
            and self._shards[-1].lines > 0
        ):
            part = f"{self.export_path}.part{len(self._shards)}"
            self._shards.append(AtomicWriter(part))
        self._shards[-1].write(line)
        self.lines += 1

    def commit(self) -> list[str]:
        if not self._shards:  # an empty result is still a (empty) file
            self._shards.append(AtomicWriter(f"{self.export_path}.part0"))
        if self.shard_size <= 0:
            self._shards[0].path = self.export_path
            return [self._shards[0].commit()]
        base, suffix = _split_suffix(self.export_path)
        n = len(self._shards)
        paths = []
        for i, shard in enumerate(self._shards):
            shard.path = f"{base}-{i}-of-{n}{suffix}"
            paths.append(shard.commit())
        return paths

    def abort(self) -> None:
        for shard in self._shards:
            shard.abort()


def _split_suffix(path: str) -> tuple[str, str]:
    for suffix in EXPORT_SUFFIXES:
        if path.endswith(suffix):
            return path[: -len(suffix)], suffix
    return path, ""


def stats_path(export_path: str) -> str:
    """Data-Juicer's side file name: `<export base>_stats.jsonl`."""
    base, _ = _split_suffix(export_path)
    return f"{base}_stats.jsonl"


class RecordWriters:
    """Filtered samples per operator (`work_dir/filtered/NN_<op>.jsonl`) and the quarantine."""

    def __init__(self, work_dir: str) -> None:
        self.filtered_dir = os.path.join(work_dir, "filtered")
        self.quarantine_path = os.path.join(work_dir, "quarantine.jsonl")
        self._filtered: dict[int, AtomicWriter] = {}
        self._names: dict[int, str] = {}
        self.quarantine = AtomicWriter(self.quarantine_path)

    def filtered_path(self, op_index: int, op_name: str) -> str:
        return _safe_child(self.filtered_dir, f"{op_index:02d}_{op_name}.jsonl")

    def write_filtered(self, op_index: int, op_name: str, line: bytes) -> None:
        if op_index not in self._filtered:
            self._filtered[op_index] = AtomicWriter(self.filtered_path(op_index, op_name))
        self._filtered[op_index].write(line)

    def commit(self) -> dict[str, object]:
        files = {w.commit(): w.lines for w in self._filtered.values()}
        for old in Path(self.filtered_dir).glob("[0-9][0-9]_*.jsonl"):
            if str(old) not in files:  # a previous run's records must not mix with this run's
                old.unlink()
        self.quarantine.commit()
        return {"filtered": files, "quarantine": self.quarantine_path}

    def abort(self) -> None:
        for w in self._filtered.values():
            w.abort()
        self.quarantine.abort()
