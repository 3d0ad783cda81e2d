"""`dj-analyze`'s two entry points.

* `analyze_recipe`: Data-Juicer's analyzer. The recipe's filters run in stats-only mode
  (`Recipe.stats_only`: every stat computed, nothing dropped; mappers and deduplicators
  left out, as Data-Juicer's analyzer does) through the ordinary run driver, into
  `work_dir/analysis/`; the stats side file is then streamed into Parquet and analysed.
* `run_report`: the report of a finished run, from its own files (no recomputation): each
  stat as its filter saw it (the kept samples' stats plus the stats of the samples dropped
  at or after that filter), the funnel and dropped samples. `dj-run` calls it for
  `report: true`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import yaml

from dj_synth.operators import Filter, get_operator
from dj_synth.pipelines.dataset import DatasetReader, IngestError, Unreadable, parse_line
from dj_synth.pipelines.recipe import Recipe, RecipeError, apply_override

from .analysis import Analysis, analyse
from .report import ReportInput, render_report
from .run_view import RunView, read_run
from .stats_table import (
    build_stats_table,
    chain,
    filtered_lines,
    stats_lines,
    stats_table_from_files,
)

log = logging.getLogger("dj_synth")

# Data-Juicer's analyzer keys (the run loader accepts and ignores them; the analyzer reads them).
ANALYZER_KEYS = ("percentiles", "auto", "auto_num", "export_original_dataset")


@dataclass
class AnalyzeOptions:
    auto: bool = False
    auto_num: int = 1000
    percentiles: list[float] | None = None
    export_original_dataset: bool = False
    run_dir: str | None = None  # a finished run's work_dir: its funnel and dropped samples
    progress: bool | None = None


@dataclass
class AnalyzeResult:
    folder: str
    report: str
    files: list[str]
    summary: dict[str, Any]  # of the stats-only run
    seconds: dict[str, float] = field(default_factory=dict)
    analysis: Analysis | None = None


def analyzer_options(path: str, overrides: list[str] | None = None) -> AnalyzeOptions:
    """The analyzer keys of a recipe file (`percentiles`, `auto`, `auto_num`, ...)."""
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    for item in overrides or []:
        apply_override(data, item)
    opts = AnalyzeOptions()
    pcts = data.get("percentiles")
    if pcts is not None:
        if not isinstance(pcts, list) or not all(
            isinstance(p, (int, float)) and 0 <= p <= 1 for p in pcts
        ):
            raise RecipeError(f"{path}: 'percentiles' must be a list of numbers in [0, 1]")
        opts.percentiles = [float(p) for p in pcts]
    opts.auto = bool(data.get("auto", False))
    num = data.get("auto_num", 1000)
    if not isinstance(num, int) or num < 1:
        raise RecipeError(f"{path}: 'auto_num' must be a positive integer, got {num!r}")
    opts.auto_num = num
    opts.export_original_dataset = bool(data.get("export_original_dataset", False))
    return opts


def stats_only_recipe(recipe: Recipe, folder: str, dataset_path: str | None = None) -> Recipe:
    """The recipe's filters alone, in stats-only mode, exporting into `folder`."""
    specs = [s for s in recipe.ops if issubclass(get_operator(s.name), Filter)]
    if not specs:
        raise RecipeError(
            f"{recipe.path}: the recipe has no filters, so there are no stats to analyse; add "
            "the filters whose stats you want (e.g. text_length_filter, image_shape_filter)"
        )
    base = os.path.basename(recipe.settings.export_path)
    settings = recipe.settings.model_copy(
        update={
            "dataset_path": dataset_path or recipe.settings.dataset_path,
            "export_path": os.path.join(folder, base),
            "work_dir": folder,
            "keep_stats_in_res_ds": False,
            "export_format": "jsonl",
            "export_shard_size": 0,
            "use_checkpoint": False,
            "open_tracer": False,
            "report": False,
        }
    )
    return dataclasses.replace(recipe, settings=settings, ops=specs, stats_only=True)


def first_samples(recipe: Recipe, n: int, path: str) -> int:
    """Data-Juicer's `--auto`: the first `n` samples, image paths made absolute (the copy
    lives elsewhere than the input). Returns how many were written."""
    key = recipe.settings.image_key
    written = 0
    with open(path, "wb") as out:
        for batch in DatasetReader(recipe.settings.dataset_path).batches(min(n, 4096)):
            for item in batch:
                if written >= n:
                    return written
                if isinstance(item.payload, Unreadable):
                    continue
                try:
                    sample = parse_line(item.payload)
                except IngestError:  # copied as it is: the run quarantines it
                    raw = item.payload if isinstance(item.payload, bytes) else b"{}"
                    out.write(raw.rstrip(b"\r\n") + b"\n")
                    written += 1
                    continue
                images = sample.get(key)
                if isinstance(images, list):
                    base = os.path.dirname(item.ref.source)
                    sample[key] = [
                        os.path.normpath(os.path.join(base, p))
                        if isinstance(p, str) and not os.path.isabs(p) else p
                        for p in images
                    ]  # fmt: skip
                out.write(orjson.dumps(sample) + b"\n")
                written += 1
    return written


def analyze_recipe(recipe: Recipe, opts: AnalyzeOptions | None = None) -> AnalyzeResult:
    """Compute every filter's stats on the dataset (nothing dropped) and analyse them."""
    from dj_synth.pipelines.run import run_recipe

    opts = opts or AnalyzeOptions()
    folder = os.path.join(recipe.work_dir, "analysis")
    os.makedirs(folder, exist_ok=True)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    dataset = None
    if opts.auto:
        dataset = os.path.join(folder, "auto_sample.jsonl")
        first_samples(recipe, opts.auto_num, dataset)
    stats_recipe = stats_only_recipe(recipe, folder, dataset)
    t1 = time.perf_counter()
    summary = run_recipe(stats_recipe, progress=opts.progress)
    seconds["stats"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    table = stats_table_from_files(summary["stats_files"], os.path.join(folder, "stats.parquet"))
    if not opts.export_original_dataset:
        for f in summary["export_files"]:
            if os.path.isfile(f):
                os.remove(f)
    seconds["table"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    run = (
        read_run(opts.run_dir, text_key=recipe.text_key, image_key=recipe.settings.image_key)
        if opts.run_dir
        else None
    )
    ops = recipe.build_ops()
    analysis = analyse(table, ops, folder, opts.percentiles, sequential=True)
    seconds["analysis"] = time.perf_counter() - t3
    t4 = time.perf_counter()
    meta = [f"recipe {recipe.path}", f"dataset {recipe.settings.dataset_path}"]
    if run is not None:
        meta.append(f"run {run.work_dir}")
    inp = ReportInput(
        project=recipe.settings.project_name,
        meta=meta,
        analysis=analysis,
        ops=ops,
        op_args={i: spec.args for i, spec in enumerate(recipe.ops)},
        run=run,
        input_samples=summary["input_samples"],
        quarantined=summary["quarantined_samples"],
        auto_num=opts.auto_num if opts.auto else None,
        notes=[
            "Stats are computed on the input as read: mappers and deduplicators are not applied "
            "(as in Data-Juicer's analyzer). Shares are of the samples analysed; a per-image stat "
            "is judged per sample with the filter's any_or_all."
        ],
        footer=_footer(folder, analysis.files, summary),
    )
    report = render_report(inp, os.path.join(folder, "report.html"))
    seconds["report"] = time.perf_counter() - t4
    seconds["total"] = time.perf_counter() - t0
    files = [*analysis.files, table.path, report]
    return AnalyzeResult(folder, report, files, summary, seconds, analysis)


def run_report(
    work_dir: str, recipe: Recipe | None = None, summary: dict[str, Any] | None = None
) -> str:
    """`report.html` (and Data-Juicer's analysis files) for a finished run, from its files."""
    text_key = recipe.text_key if recipe else "text"
    image_key = recipe.settings.image_key if recipe else "images"
    run: RunView = read_run(work_dir, text_key=text_key, image_key=image_key)
    folder = os.path.join(work_dir, "analysis")
    source = chain(stats_lines(run.stats_files()), filtered_lines(run.filtered_files))
    table = build_stats_table(source, os.path.join(folder, "stats.parquet"))
    ops = recipe.build_ops() if recipe else []
    analysis = analyse(table, ops, folder, sequential=False)
    s = run.summary
    inp = ReportInput(
        project=str(s.get("project_name", "dj-synth run")),
        meta=[f"run {work_dir}", f"recipe {s.get('recipe')}"],
        analysis=analysis,
        ops=ops,
        op_args={i: spec.args for i, spec in enumerate(recipe.ops)} if recipe else {},
        run=run,
        notes=[
            "Each stat is shown over the samples that reached its filter in this run (those "
            "kept, and those dropped there or later); shares are of those samples."
            + (
                ""
                if recipe
                else " Pass the recipe (dj-analyze RECIPE --run DIR) to draw its thresholds."
            )
        ],  # fmt: skip
        footer=_footer(folder, analysis.files, s),
    )
    return render_report(inp, os.path.join(folder, "report.html"))


def _footer(folder: str, files: list[str], summary: dict[str, Any]) -> list[str]:
    names = sorted({os.path.basename(f) for f in files})
    plots = [n for n in names if n.endswith(".png")]
    return [
        f"Written to {folder}: overall.csv, overall.md, {len(plots)} figures "
        f"({', '.join(plots[:4])}{', …' if len(plots) > 4 else ''}), stats.parquet.",
        f"Input: {', '.join(summary.get('dataset_files', [])[:3])}. "
        "This page is self-contained: figures and thumbnails are inlined; it loads nothing.",
    ]
