"""The run driver: one way to run a recipe, whatever moves the data.

`preflight` makes every check a run makes before work (`--dry-run` stops there); `run_recipe`
then holds the work dir's lock, picks the mode and commits the output:

* streaming (the default): one pass through a local pool, nothing checkpointed;
* sharded (`use_checkpoint: true`, `--resume`, or `executor_type: ray`): per-shard
  commits under `work_dir/checkpoint`, on a local pool or on Ray.

Both modes feed the same output layer (`output.RunOutput`), so the same recipe and
input give the same files and summary either way.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from typing import Any

from .checkpoint import Checkpoint, ResumeError
from .dataset import DatasetReader
from .export import ExportError, check_writable
from .lock import LockError, RunLock, run_lock_paths
from .output import RunOutput
from .recipe import Recipe

log = logging.getLogger("dj_synth")


@dataclass
class Plan:
    """What preflight found: the input files and how the run will go."""

    files: list[str]
    sharded: bool
    resume: bool


def preflight(recipe: Recipe, resume: bool = False, fresh: bool = False, dry: bool = False) -> Plan:
    """Every check a run makes before work; raises with a message that says what to fix.

    `dry` checks without creating or locking anything.
    """
    s = recipe.settings
    if resume and fresh:
        raise ResumeError("--resume and --fresh exclude each other")
    if not s.export_path.endswith((".jsonl", ".json")):
        raise ExportError(f"export_path {s.export_path!r} must end with .jsonl or .json")
    export_dir = os.path.dirname(os.path.abspath(s.export_path))
    for folder, what in ((export_dir, "export directory"), (recipe.work_dir, "work_dir")):
        (_check_creatable if dry else check_writable)(folder, what)
    files = DatasetReader(s.dataset_path).files
    if dry:
        RunLock(run_lock_paths(recipe.work_dir, s.export_path), recipe.path).check_free()
        check_checkpoint(recipe, resume, fresh)
    sharded = s.executor_type == "ray" or s.use_checkpoint or resume
    return Plan(files, sharded, resume)


def check_checkpoint(recipe: Recipe, resume: bool, fresh: bool) -> None:
    """`--resume` needs an interrupted run; a fresh run never discards one silently."""
    ckpt = Checkpoint(recipe.work_dir)
    if resume and not ckpt.exists():
        raise ResumeError(
            f"nothing to resume: {ckpt.plan_path} does not exist (the last run finished, or "
            "none ran with use_checkpoint); run without --resume"
        )
    if ckpt.exists() and not resume and not fresh and ckpt.committed():
        raise ResumeError(
            f"{ckpt.root} holds an interrupted run ({ckpt.committed()} shard results "
            "committed); add --resume to finish it, or --fresh to discard it and start over"
        )


def run_recipe(
    recipe: Recipe, resume: bool = False, fresh: bool = False, progress: bool | None = None
) -> dict[str, Any]:
    """Run the recipe; the summary (also in `work_dir/summary.json`) when it completes."""
    plan = preflight(recipe, resume, fresh)
    s = recipe.settings
    with RunLock(run_lock_paths(recipe.work_dir, s.export_path), recipe.path):
        check_checkpoint(recipe, resume, fresh)
        ckpt = Checkpoint(recipe.work_dir)
        if fresh:
            ckpt.remove()
        ops = recipe.build_ops()
        output = RunOutput(recipe, ops)
        run_id = uuid.uuid4().hex
        try:
            if plan.sharded:
                from .sharded import ShardedRun

                engine: Any = ShardedRun(recipe, ops, output, run_id, _backend(recipe), resume)
            else:
                from .streaming import StreamingRun

                engine = StreamingRun(recipe, ops, output, run_id, progress)
            samples, blank, extra = engine.run()
        except BaseException:
            output.abort()
            raise
        summary = output.commit(samples, blank, **extra)
        ckpt.remove()  # the run is committed: nothing is left to resume
    if s.report:
        from dj_synth.tools.analyze import run_report

        log.info("report: %s", run_report(recipe.work_dir, recipe))
    return summary


def _backend(recipe: Recipe) -> Any:
    if recipe.settings.executor_type == "ray":
        from .ray_backend import RayBackend

        return RayBackend
    from .sharded import LocalShardBackend

    return LocalShardBackend


def _check_creatable(directory: str, what: str) -> None:
    """Dry-run version of `check_writable`: the nearest existing folder must be writable."""
    probe = os.path.abspath(directory)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise ExportError(f"cannot create {what} {directory}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ExportError(f"{what} {directory} is not writable ({probe} is read-only)")


__all__ = ["LockError", "Plan", "preflight", "run_recipe"]
