"""What each dj-train stage consumed and produced, as fingerprints, and the check that a run's
recorded stages still fit together.

A stage counts as done only while everything it consumed is what it consumed then, so
``output/dj_train_state.json`` records for every stage the fingerprints of its inputs (its
command lines -- the config section it uses --, the recipe and the files it names, upstream
outputs) and of its outputs. Fingerprints:

* a file: the sha256 of its bytes; a file over ``LARGE_FILE`` (checkpoint shards) by size and
  modification time, as hashing gigabytes on every resume would cost minutes;
* a folder (model folders, image folders, a finetuned checkpoint): the names, sizes and
  modification times of its top-level entries; ``deep=True`` (custom operator code): every
  file's content, recursively;
* a path that does not exist: ``missing``.

Content hashes are cached by (size, modification time) in the state file, so each version of a
file is hashed once. ``chain_problems`` is what ``dj-pack`` checks before packaging.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

LARGE_FILE = 1 << 30  # 1 GiB
_CHUNK = 1 << 20
_SKIP = frozenset({"__pycache__", ".git"})


def text_digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


class Fingerprints:
    """Fingerprints of paths; ``cache`` (kept in the state file) maps a path to
    ``[size, mtime_ns, digest]`` so unchanged files are not hashed again."""

    def __init__(self, cache: dict[str, list[Any]] | None = None) -> None:
        self.cache = cache if cache is not None else {}

    def of(self, path: Path, deep: bool = False) -> str:
        if path.is_dir():
            return self._deep(path) if deep else self._folder(path)
        if path.is_file():
            return self._file(path)
        return "missing"

    def _file(self, path: Path) -> str:
        st = path.stat()
        if st.st_size > LARGE_FILE:
            return f"stat:{st.st_size}:{st.st_mtime_ns}"
        key = str(path)
        cached = self.cache.get(key)
        if cached and cached[0] == st.st_size and cached[1] == st.st_mtime_ns:
            return cached[2]
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
        value = "sha256:" + digest.hexdigest()
        self.cache[key] = [st.st_size, st.st_mtime_ns, value]
        return value

    @staticmethod
    def _folder(path: Path) -> str:
        lines = []
        for entry in sorted(os.scandir(path), key=lambda e: e.name):
            try:
                st = entry.stat()
            except OSError:  # a broken link: its own times
                st = entry.stat(follow_symlinks=False)
            kind = "d" if entry.is_dir() else "f"
            lines.append(
                f"{entry.name}\t{kind}\t{st.st_size if kind == 'f' else 0}\t{st.st_mtime_ns}"
            )
        return "folder:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()

    def _deep(self, path: Path) -> str:
        lines = []
        for folder, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP)
            for name in sorted(files):
                if name.endswith(".pyc"):
                    continue
                full = Path(folder) / name
                lines.append(f"{full.relative_to(path)}\t{self._file(full)}")
        return "tree:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()


def chain_problems(state: dict[str, Any], fp: Fingerprints | None = None) -> list[str]:
    """Why the stages recorded in a dj-train state do not make one consistent, finished run.

    Every recorded stage must be done; a stage must have consumed the outputs its upstream
    stage last produced, after that stage finished; and every output must still be what its
    stage wrote (not replaced by hand or by a later partial run). Empty when all is well.
    """
    fp = fp or Fingerprints(state.get("fingerprints"))
    stages: dict[str, dict[str, Any]] = state.get("stages") or {}
    fix = "rerun `dj-train CONFIG --resume` (it reruns exactly the out-of-date stages)"
    problems: list[str] = []
    producer: dict[str, str] = {}
    for name, rec in stages.items():
        status = rec.get("status")
        if status != "done":
            why = f" ({rec['reason']})" if rec.get("reason") else ""
            problems.append(f"stage {name} is {status}{why}: the run is not finished; {fix}")
            continue
        if "inputs" not in rec or "outputs" not in rec:
            problems.append(
                f"stage {name} has no input fingerprints (written by an older dj-train), so "
                f"what it consumed cannot be checked; {fix}"
            )
            continue
        for path in rec["outputs"]:
            producer[path] = name
    for name, rec in stages.items():
        if rec.get("status") != "done" or "inputs" not in rec:
            continue
        for path, digest in rec["inputs"].get("paths", {}).items():
            up = producer.get(path)
            if up is None or up == name:
                continue
            up_rec = stages[up]
            if up_rec["outputs"][path] != digest:
                problems.append(
                    f"stage {name} consumed a different {path} than stage {up} last produced "
                    f"({up} reran after {name}): {name}'s results are not derived from it; {fix}"
                )
            elif str(up_rec.get("finished", "")) > str(rec.get("started", "")):
                problems.append(
                    f"stage {name} started ({rec.get('started')}) before stage {up} finished "
                    f"({up_rec.get('finished')}): its results are older than {path}; {fix}"
                )
    for path, name in producer.items():
        if fp.of(Path(path)) != stages[name]["outputs"][path]:
            problems.append(
                f"{path} changed after stage {name} wrote it (replaced or rewritten by hand): "
                f"what was packaged would not be what the run produced; {fix}"
            )
    return problems
