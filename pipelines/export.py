"""Writing results atomically: nothing appears under its final name until the run is done.

Every writer streams into a hidden temp file beside its target and renames it
on `commit`; a crashed or interrupted run leaves no half-written export behind.
"""

from __future__ import annotations

import os
import re
import shutil
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
        self.file = open(self.tmp, "wb")  # noqa: SIM115 - closed in commit/abort
        self.lines = 0
        self.bytes = 0

    def write(self, line: bytes) -> None:
        """One JSON Lines record (the newline is added)."""
        self.file.write(line)
        self.file.write(b"\n")
        self.lines += 1
        self.bytes += len(line) + 1

    def write_raw(self, data: bytes) -> None:
        self.file.write(data)
        self.bytes += len(data)

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> AtomicWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        """Commit on success; on an exception remove the temporary file."""
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def commit(self) -> str:
        self.file.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        self.file.close()
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
        """Rename the shards into place; a previous run's files under this name go away."""
        if not self._shards:  # an empty result is still a (empty) file
            self._shards.append(AtomicWriter(f"{self.export_path}.part0"))
        if self.shard_size <= 0:
            self._shards[0].path = self.export_path
            paths = [self._shards[0].commit()]
        else:
            base, suffix = _split_suffix(self.export_path)
            n = len(self._shards)
            paths = []
            for i, shard in enumerate(self._shards):
                shard.path = f"{base}-{i}-of-{n}{suffix}"
                paths.append(shard.commit())
        remove_stale_exports(self.export_path, keep=paths)
        return paths

    def abort(self) -> None:
        for shard in self._shards:
            shard.abort()


def remove_stale_exports(export_path: str, keep: list[str]) -> None:
    """Delete a previous run's export under this name (one file or `-i-of-n` shards, and
    temp files a killed run left), so a folder never mixes two runs' outputs."""
    base, suffix = _split_suffix(export_path)
    folder = os.path.dirname(os.path.abspath(export_path))
    name = re.escape(os.path.basename(base))
    ours = re.compile(rf"{name}(-\d+-of-\d+)?{re.escape(suffix)}")
    temp = re.compile(rf"\.{name}(-\d+-of-\d+)?{re.escape(suffix)}.*\.tmp")
    kept = {os.path.abspath(p) for p in keep}
    for entry in os.listdir(folder):
        path = os.path.join(folder, entry)
        if path not in kept and (ours.fullmatch(entry) or temp.fullmatch(entry)):
            os.remove(path)


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
    """Filtered samples per operator (`work_dir/filtered/NN_<op>.jsonl`) and the quarantine.

    Quarantine records are kept per stage and joined in stage order on commit, so the
    file is the same whichever way the data moved (streaming interleaves stages,
    sharded runs finish one stage before the next).
    """

    def __init__(self, work_dir: str) -> None:
        self.filtered_dir = os.path.join(work_dir, "filtered")
        self.quarantine_path = os.path.join(work_dir, "quarantine.jsonl")
        self._filtered: dict[int, AtomicWriter] = {}
        self._quarantine: dict[int, AtomicWriter] = {}

    def filtered_path(self, op_index: int, op_name: str) -> str:
        return _safe_child(self.filtered_dir, f"{op_index:02d}_{op_name}.jsonl")

    def write_filtered(self, op_index: int, op_name: str, line: bytes) -> None:
        if op_index not in self._filtered:
            self._filtered[op_index] = AtomicWriter(self.filtered_path(op_index, op_name))
        self._filtered[op_index].write(line)

    def write_quarantine(self, stage: int, line: bytes) -> None:
        if stage not in self._quarantine:
            self._quarantine[stage] = AtomicWriter(f"{self.quarantine_path}.stage{stage}")
        self._quarantine[stage].write(line)

    def commit(self) -> dict[str, object]:
        files = {w.commit(): w.lines for w in self._filtered.values()}
        for old in Path(self.filtered_dir).glob("[0-9][0-9]_*.jsonl"):
            if str(old) not in files:  # a previous run's records must not mix with this run's
                old.unlink()
        with AtomicWriter(self.quarantine_path) as out:
            for stage in sorted(self._quarantine):
                part = self._quarantine[stage]
                part.close()
                with open(part.tmp, "rb") as fh:
                    shutil.copyfileobj(fh, out.file)
                part.abort()
        return {"filtered": files, "quarantine": self.quarantine_path}

    def abort(self) -> None:
        for w in [*self._filtered.values(), *self._quarantine.values()]:
            w.abort()
