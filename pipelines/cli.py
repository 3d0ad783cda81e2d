"""`dj-run recipe.yaml`: validate, run, report.

Exit codes: 0 the run completed (quarantined samples included); 2 a recipe or
configuration mistake, found before any work; 1 the run failed (an operator bug, a
worker that could not set up, every input sample quarantined, anything unexpected).
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Any

import typer

from dj_synth.operators import OPERATORS
from dj_synth.operators.base import OperatorError
from dj_synth.tools.cli_common import VersionOpt, make_app, run_app
from dj_synth.tools.llava import ConversionError

from .checkpoint import ResumeError
from .dataset import DatasetError
from .export import ExportError
from .lock import LockError
from .op_docs import describe_operator, list_operators
from .output import QuarantineRatioError
from .ray_backend import RayConnectionError
from .recipe import Recipe, RecipeError, load_recipe
from .worker import WorkerSetupError

app = make_app(commands=False)
log = logging.getLogger("dj_synth")

# Mistakes found before any work: exit 2.
CONFIG_ERRORS = (RecipeError, DatasetError, ExportError, ResumeError, LockError, RayConnectionError)


@app.command(help="Run a recipe over a Data-Juicer-format dataset.")
def main(
    recipe: Annotated[str | None, typer.Argument(help="Recipe YAML (Data-Juicer format)")] = None,
    config: Annotated[
        str | None, typer.Option("--config", help="The recipe, as dj-process --config takes it")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a key: np=2, export_path=out/x.jsonl, OP.ARG=V"),
    ] = None,
    executor: Annotated[
        str | None, typer.Option(help="local (default) or ray; overrides executor_type")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="Make every check a run makes, print the plan, run nothing")
    ] = False,
    list_ops: Annotated[
        bool,
        typer.Option("--list-ops", help="List operators; with a NAME, document that operator"),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or table")] = False,
    resume: Annotated[
        bool, typer.Option(help="Finish an interrupted checkpointed run (use_checkpoint, Ray)")
    ] = False,
    fresh: Annotated[
        bool, typer.Option(help="Discard an interrupted run's checkpoint and start over")
    ] = False,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Compute every model output (no cache)")
    ] = False,
    version: VersionOpt = False,
) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if list_ops:
        typer.echo(describe_operator(recipe or config) if recipe or config else list_operators())
        return
    if recipe and config and recipe != config:
        _fail(2, "give the recipe once: as an argument or with --config")
    path = recipe or config
    if path is None:
        _fail(2, "usage: dj-run RECIPE.yaml [--set KEY=VALUE ...]  (dj-run --help)")
    overrides = list(set_ or [])
    if executor:
        overrides.append(f"executor_type={executor}")
    if no_cache:
        overrides.append("use_cache=false")
    from .run import preflight, run_recipe

    try:
        rec = load_recipe(path, overrides)
        if dry_run:
            preflight(rec, resume, fresh, dry=True)
            _print_plan(rec)
            return
        summary = run_recipe(rec, resume, fresh, progress=False if quiet else None)
    except CONFIG_ERRORS as exc:
        _fail(2, str(exc))
    except Exception as exc:
        _fail(1, _run_error(exc))
    _report(summary, quiet)


def _fail(code: int, message: str) -> None:
    typer.echo(message if message.startswith("usage:") else f"error: {message}", err=True)
    raise typer.Exit(code)


def _run_error(exc: BaseException) -> str:
    """The message for a failed run; exceptions Ray wrapped are unwrapped first."""
    cause = _cause(exc, (OperatorError, WorkerSetupError, QuarantineRatioError, ConversionError))
    if isinstance(cause, OperatorError):
        return f"{cause}\n{cause.trace.rstrip()}\nnothing was written (the run stopped)"
    if isinstance(cause, ConversionError):
        return f"the JSONL export is written, but the LLaVA export failed: {cause}"
    if cause is not None:
        return f"{cause}" + ("" if isinstance(cause, WorkerSetupError) else "; nothing was written")
    raise exc  # a bug of ours: the full traceback


def _cause(exc: BaseException, types: tuple[type, ...]) -> BaseException | None:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, types):
            return e
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    return None


def _print_plan(rec: Recipe) -> None:
    s = rec.settings
    mode = "sharded" if s.executor_type == "ray" or s.use_checkpoint else "streaming"
    typer.echo(
        f"recipe OK: {len(rec.ops)} operators, {mode}, executor {s.executor_type}, np={rec.np}"
    )
    typer.echo(
        f"  dataset: {s.dataset_path}\n  export:  {s.export_path}\n  work_dir: {rec.work_dir}"
    )
    common = {"text_key", "image_key", "image_special_token", "eoc_special_token"}
    for index, spec in enumerate(rec.ops):
        typer.echo(f"  [{index}] {spec.name}")
        cls = OPERATORS[spec.name]
        for name, value in _resolved_args(cls, spec.args).items():
            if name not in common:
                typer.echo(f"        {name}: {value!r}")


def _resolved_args(cls: type, given: dict[str, Any]) -> dict[str, Any]:
    """The operator's arguments as the run will use them: the recipe's, else the defaults."""
    from .op_docs import operator_arguments

    return {a.name: given.get(a.name, a.default) for a in operator_arguments(cls)}


def _report(summary: dict[str, Any], quiet: bool) -> None:
    from .summary import render

    if not quiet:
        render(summary)
    n, q = summary["input_samples"], summary["quarantined_samples"]
    if n == 0:
        typer.echo(
            f"warning: the input holds no samples ({summary['skipped_blank_lines']} blank "
            f"lines in {len(summary['dataset_files'])} file(s)); nothing was exported",
            err=True,
        )
    elif q == n:
        reasons = ", ".join(
            f"{k} ({v})" for k, v in list(summary["quarantine_reasons"].items())[:3]
        )
        _fail(
            1,
            f"every input sample ({n:,}) was quarantined: {reasons}. Is the input in the "
            f"format the recipe expects (text_keys, image_key)? See {summary['quarantine_file']}",
        )


def entry() -> int:
    """The `dj-run` console script."""
    return run_app(app, "dj-run")


if __name__ == "__main__":
    entry()
