"""`dj-run recipe.yaml`: validate, run, report. Exit 0 when the run completes (even with
quarantined samples), 2 for a recipe or configuration mistake, 1 for anything else."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from dj_synth.operators import OPERATORS
from dj_synth.operators.base import Deduplicator, Filter, Mapper
from dj_synth.tools.llava import ConversionError

from .dataset import DatasetError
from .export import ExportError
from .recipe import RecipeError, load_recipe, operator_parameters

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
log = logging.getLogger("dj_synth")


def _kind(cls: type) -> str:
    for base, name in ((Filter, "filter"), (Mapper, "mapper"), (Deduplicator, "deduplicator")):
        if issubclass(cls, base):
            return name
    return "op"


def _list_ops() -> None:
    for name in sorted(OPERATORS):
        cls = OPERATORS[name]
        params = [p for p in operator_parameters(cls) if p not in _COMMON]
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        typer.echo(f"{name:40s} {_kind(cls):13s} {', '.join(params)}")
        if doc:
            typer.echo(f"{'':40s} {doc}")


_COMMON = {"text_key", "image_key", "image_special_token", "eoc_special_token", "batch_size",
           "num_proc", "accelerator", "min_closed_interval", "max_closed_interval",
           "reversed_range"}  # fmt: skip


@app.command()
def main(
    recipe: Annotated[str | None, typer.Argument(help="Recipe YAML (Data-Juicer format)")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a key: np=2, export_path=out/x.jsonl, OP.ARG=V"),
    ] = None,
    executor: Annotated[
        str | None, typer.Option(help="local (default) or ray; overrides executor_type")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Validate the recipe and print the plan")] = False,
    list_ops: Annotated[bool, typer.Option("--list-ops", help="List operators and exit")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or table")] = False,
    resume: Annotated[
        bool,
        typer.Option(help="Finish an interrupted run from its checkpoint (Ray, or use_checkpoint)"),
    ] = False,
) -> None:
    """Run a recipe over a Data-Juicer-format dataset."""
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if list_ops:
        _list_ops()
        return
    if recipe is None:
        typer.echo("usage: dj-run RECIPE.yaml [--set KEY=VALUE ...]  (dj-run --help)", err=True)
        raise typer.Exit(2)
    overrides = list(set_ or [])
    if executor:
        overrides.append(f"executor_type={executor}")
    try:
        rec = load_recipe(recipe, overrides)
    except RecipeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    ops = rec.build_ops()
    if dry_run:
        typer.echo(f"recipe OK: {len(ops)} operators, np={rec.np}, work_dir={rec.work_dir}")
        for op in ops:
            typer.echo(f"  [{op.index}] {op.name}")
        return
    from .local_executor import WorkerSetupError
    from .ray_executor import RayConnectionError
    from .sharded import ResumeError
    from .summary import render

    try:
        summary = _execute(rec, resume, quiet)
    except (ResumeError, RayConnectionError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except (DatasetError, ExportError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except WorkerSetupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except ConversionError as exc:
        typer.echo(
            f"error: the JSONL export is written, but the LLaVA export failed: {exc}", err=True
        )
        raise typer.Exit(1) from None
    if not quiet:
        render(summary)


def _execute(rec, resume: bool, quiet: bool) -> dict:
    """The executor the recipe asks for; checkpointed (sharded) runs when resuming is possible."""
    s = rec.settings
    if s.executor_type == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(rec, resume=resume).run()
    if s.use_checkpoint or resume:
        from .sharded import LocalBackend, ShardedRun

        backend = LocalBackend(rec)
        try:
            return ShardedRun(rec, backend, resume=resume, log=log).run()
        finally:
            backend.close()
    from .local_executor import LocalExecutor

    return LocalExecutor(rec, progress=False if quiet else None).run()


if __name__ == "__main__":
    app()
