"""One run at a time per work dir and per export: an advisory file lock held for the run.

The lock file says who holds it (pid, host, recipe, start time), so a second run can
name the first. The operating system drops the lock when its process dies, so a
killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from typing import IO, Any

from .summary import now_iso


class LockError(RuntimeError):
    """Another run holds the work dir or the export."""


class RunLock:
    def __init__(self, paths: list[str], recipe: str | None) -> None:
        self.paths = list(dict.fromkeys(paths))
        self.recipe = recipe
        self._held: list[IO[str]] = []

    def acquire(self) -> None:
        for path in self.paths:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - kept open while locked
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                message = _held_message(path, fh.read())
                fh.close()
                self.release()
                raise LockError(message) from None
            fh.seek(0)
            fh.truncate()
            info = {"pid": os.getpid(), "host": socket.gethostname(), "recipe": self.recipe,
                    "started": now_iso()}  # fmt: skip
            fh.write(json.dumps(info))
            fh.flush()
            self._held.append(fh)

    def check_free(self) -> None:
        """Raise `LockError` if another run holds any of the locks (`--dry-run`: creates
        nothing)."""
        for path in self.paths:
            if not os.path.exists(path):
                continue
            with open(path, encoding="utf-8") as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise LockError(_held_message(path, fh.read())) from None

    def release(self) -> None:
        for fh in self._held:
            fh.close()  # closing drops the lock; the file stays (removing it would race)
        self._held = []

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _held_message(path: str, text: str) -> str:
    try:
        info = json.loads(text)
        holder = (
            f"pid {info.get('pid')} on {info.get('host')}, recipe {info.get('recipe')}, "
            f"started {info.get('started')}"
        )
    except ValueError:
        holder = "holder unknown"
    return (
        f"{path} is held by another dj-synth run ({holder}); wait for it to finish, or give "
        "this run another export_path / work_dir"
    )


def run_lock_paths(work_dir: str, export_path: str) -> list[str]:
    """The work dir's lock and the export's (two runs may share one without the other)."""
    export_dir, name = os.path.split(os.path.abspath(export_path))
    return [
        os.path.join(os.path.abspath(work_dir), ".dj-synth.lock"),
        os.path.join(export_dir, f".{name}.lock"),
    ]
