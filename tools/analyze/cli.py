"""`dj-analyze RECIPE.yaml`: analyse a dataset with a recipe's filters; `--run WORK_DIR` adds a
finished run's funnel and dropped samples (alone: the run's report from its own files).

Exit codes: 0 done; 2 a recipe or configuration mistake, found before any work; 1 a failure.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer

from dj_synth.pipelines.cli import CONFIG_ERRORS, _run_error
from dj_synth.pipelines.recipe import load_recipe
from dj_synth.tools.cli_common import VersionOpt, make_app, run_app

from .analyzer import ANALYZER_KEYS, analyze_recipe, analyzer_options, run_report
from .run_view import RunViewError

app = make_app(commands=False)
log = logging.getLogger("dj_synth")


class _AnalyzerKeysAreRead(logging.Filter):
    """The run loader warns that it ignores `percentiles` & co.; the analyzer reads them."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(msg.startswith(f"recipe key {k!r} ") for k in ANALYZER_KEYS)


@app.command(
    help="Compute the stats of every filter of a recipe on its dataset, dropping nothing, "
    "and write work_dir/analysis/: overall.csv and overall.md (Data-Juicer's layout), a "
    "histogram and box plot per stat, stats-corr-pearson.png and report.html (thresholds, "
    "what they drop, suggestions; with --run, a run's funnel and dropped samples)."
)
def main(
    recipe: Annotated[str | None, typer.Argument(help="Recipe YAML (Data-Juicer format)")] = None,
    config: Annotated[
        str | None,
        typer.Option("--config", help="The recipe, as Data-Juicer's dj-analyze takes it"),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a key: np=2, work_dir=out/x, OP.ARG=V"),
    ] = None,
    auto: Annotated[
        bool, typer.Option("--auto", help="Analyse only the first --auto-num samples")
    ] = False,
    auto_num: Annotated[
        int | None,
        typer.Option("--auto-num", "--auto_num", min=1, help="Samples for --auto (default 1000)"),
    ] = None,
    run: Annotated[
        str | None,
        typer.Option("--run", help="A finished run's work_dir: add its funnel and dropped samples"),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar")] = False,
    version: VersionOpt = False,
) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_AnalyzerKeysAreRead())
    if recipe and config and recipe != config:
        _fail(2, "give the recipe once: as an argument or with --config")
    path = recipe or config
    if path is None and run is None:
        _fail(2, "usage: dj-analyze RECIPE.yaml [--auto] [--run WORK_DIR]  (dj-analyze --help)")
    try:
        if path is None:
            assert run is not None
            if not os.path.isdir(run):
                _fail(2, f"--run {run}: not a folder (give the work_dir of a finished dj-run)")
            report = run_report(run)
            typer.echo(f"report: {report}")
            return
        overrides = list(set_ or [])
        opts = analyzer_options(path, overrides)
        rec = load_recipe(path, overrides)
        opts.auto = opts.auto or auto
        if auto_num is not None:
            opts.auto_num = auto_num
        if run is not None and not os.path.isfile(os.path.join(run, "summary.json")):
            _fail(2, f"--run {run}: no summary.json there (give the work_dir of a finished dj-run)")
        opts.run_dir = run
        opts.progress = False if quiet else None
        result = analyze_recipe(rec, opts)
    except (*CONFIG_ERRORS, RunViewError) as exc:
        _fail(2, str(exc))
    except typer.Exit:
        raise
    except Exception as exc:
        _fail(1, _run_error(exc))
    s = result.summary
    typer.echo(
        f"analysed {s['exported_samples']:,} samples ({s['quarantined_samples']:,} quarantined) "
        f"in {result.seconds['total']:.1f}s: stats {result.seconds['stats']:.1f}s, "
        f"analysis {result.seconds['table'] + result.seconds['analysis']:.1f}s, "
        f"report {result.seconds['report']:.1f}s"
    )
    typer.echo(f"analysis: {result.folder}")
    typer.echo(f"report: {result.report}")
    n, q = s["input_samples"], s["quarantined_samples"]
    if n and q == n:
        reasons = ", ".join(f"{k} ({v})" for k, v in list(s["quarantine_reasons"].items())[:3])
        _fail(
            1,
            f"every input sample ({n:,}) was quarantined, nothing was analysed: {reasons}. Is "
            "the input in the format the recipe expects (text_keys, image_key)? See "
            f"{s['quarantine_file']}",
        )


def _fail(code: int, message: str) -> None:
    typer.echo(message if message.startswith("usage:") else f"error: {message}", err=True)
    raise typer.Exit(code)


def entry() -> int:
    """The `dj-analyze` console script."""
    return run_app(app, "dj-analyze")


if __name__ == "__main__":
    entry()
