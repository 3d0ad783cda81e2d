"""Worker setup, one implementation for every engine and backend.

A worker (a pool process, this process when `np` is 1, or a Ray worker) builds the
recipe's operators once per run: custom operator files are imported, and every
operator is set up (models loaded) on the device of the worker's rank. A setup
failure is the run's error, reported the same way everywhere ("worker setup
failed: ..."), never an opaque broken pool.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from dj_synth.operators.base import Op

from .recipe import Recipe
from .stages import StageRunner

# One run's operators per process: {run_id: runner, or the setup error's text}.
_WORKER: dict[str, StageRunner | str] = {}


class WorkerSetupError(RuntimeError):
    """A worker could not build its operators (e.g. a model failed to load)."""


def start_worker(
    recipe: Recipe, run_id: str, rank: int = 0, final_pass: bool = False, setup: bool = True
) -> StageRunner:
    """This process's operators for `run_id`, built on first call (a previous run's go)."""
    held = _WORKER.get(run_id)
    if held is None:
        _WORKER.clear()  # models of an earlier run in this process are released first
        try:
            if recipe.settings.custom_operator_paths:
                from dj_synth.operators import load_custom_operators

                load_custom_operators(recipe.settings.custom_operator_paths)
            held = StageRunner(recipe, setup=setup, final_pass=final_pass, rank=rank)
        except Exception as exc:
            held = f"{type(exc).__name__}: {exc}"
        _WORKER[run_id] = held
    if isinstance(held, str):
        raise WorkerSetupError(f"worker setup failed: {held}")
    return held


def release_worker() -> None:
    """Drop this process's operators (and their models) at the end of a run."""
    _WORKER.clear()


def _init_pool_worker(recipe: Recipe, run_id: str, final_pass: bool, counter: Any) -> None:
    with counter.get_lock():
        rank = counter.value
        counter.value += 1
    try:
        start_worker(recipe, run_id, rank, final_pass)
    except WorkerSetupError:
        pass  # remembered; the first task raises it, so the pool itself never breaks


def start_method(ops: list[Op]) -> str:
    """`fork` is fastest; `spawn` when this process holds torch state that an operator will
    use (torch imported here: its thread pools and CUDA state do not survive a fork) or runs
    other threads (e.g. an in-process Ray client): forking either can hang a worker. Models
    load lazily in the workers, so a plain `dj-run` forks even for model operators."""
    fork_safe = "torch" not in sys.modules or all(
        op.fork_safe and op.accelerator != "cuda" for op in ops
    )
    return "fork" if fork_safe and threading.active_count() == 1 else "spawn"


class LocalPool:
    """`np` worker processes, or this process itself when `np` is 1 (no pickling; easy to
    debug and profile). Tasks are module-level functions taking the run id first."""

    def __init__(self, recipe: Recipe, run_id: str, final_pass: bool) -> None:
        self.workers = recipe.np
        self._pool: ProcessPoolExecutor | None = None
        if self.workers == 1:
            start_worker(recipe, run_id, 0, final_pass)
            return
        ctx = mp.get_context(start_method(recipe.build_ops()))
        self._pool = ProcessPoolExecutor(
            self.workers, mp_context=ctx, initializer=_init_pool_worker,
            initargs=(recipe, run_id, final_pass, ctx.Value("i", 0)),
        )  # fmt: skip

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        if self._pool is not None:
            return self._pool.submit(fn, *args)
        fut: Future = Future()
        try:
            fut.set_result(fn(*args))
        except Exception as exc:
            fut.set_exception(exc)
        return fut

    def close(self, cancel: bool = False) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=cancel)
        release_worker()


def run_stage_items(run_id: str, stage_index: int, items: list) -> Any:
    """A pool task: one batch of items through one stage (the streaming unit of work)."""
    return worker_runner(run_id).run(stage_index, items)


def worker_runner(run_id: str) -> StageRunner:
    """The runner `start_worker` built in this process for `run_id`."""
    held = _WORKER.get(run_id)
    if held is None:
        raise WorkerSetupError(f"worker setup failed: no operators for run {run_id}")
    if isinstance(held, str):
        raise WorkerSetupError(f"worker setup failed: {held}")
    return held
