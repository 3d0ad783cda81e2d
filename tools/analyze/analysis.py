"""From a stats table to everything the analysis writes: Data-Juicer's files and the report's
figures and what-if counts. Three reads of the Parquet table: one column at a time
(describe, quantiles, plots), then batches (threshold what-ifs and correlation together).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from dj_synth.operators import Op

from . import plots
from .correlation import StreamingCorrelation
from .overall import Distribution, overall, write_overall
from .stats_table import NUM, NUM_LIST, StatsTable
from .thresholds import WhatIf, filter_bounds


@dataclass
class Analysis:
    folder: str
    table: StatsTable
    frame: pd.DataFrame  # overall.csv
    dists: dict[str, Distribution]
    figures: dict[str, bytes]  # stat -> the report's distribution PNG
    categories: dict[str, list[tuple[str, int]]]  # string stat -> most common values
    whatif: WhatIf
    corr: pd.DataFrame
    corr_png: bytes | None
    files: list[str] = field(default_factory=list)


def file_stem(stat: str) -> str:
    """A stat name as a file name (custom filters may use any string as a key)."""
    return re.sub(r"[^\w.-]", "_", stat) or "_"


def threshold_lines(ops: list[Op]) -> dict[str, list[plots.Line]]:
    """The recipe's active bounds, per stat, as lines to draw."""
    lines: dict[str, list[plots.Line]] = {}
    for op in ops:
        reversed_range = getattr(op, "reversed_range", False)
        for b in filter_bounds(op):
            if not b.active:
                continue
            drops = "inside" if reversed_range else ("below" if b.side == "min" else "above")
            label = f"{b.arg} {b.value:g}"
            lines.setdefault(b.stat, []).append(plots.Line(float(b.value), label, drops))  # type: ignore[arg-type]
    return lines


def analyse(
    table: StatsTable,
    ops: list[Op],
    folder: str,
    percentiles: list[float] | None = None,
    sequential: bool = True,
) -> Analysis:
    """Write overall.csv/.md, `<stat>-hist.png`/`-box.png` and `stats-corr-pearson.png` into
    `folder`; return them with the report's figures and the threshold what-ifs."""
    os.makedirs(folder, exist_ok=True)
    lines = threshold_lines(ops)
    figures: dict[str, bytes] = {}
    files: list[str] = []

    def draw(name: str, values: np.ndarray, dist: Distribution) -> None:
        stem = os.path.join(folder, file_stem(name))
        plots.dj_hist(values, name, f"{stem}-hist.png")
        plots.dj_box(values, name, f"{stem}-box.png")
        files.extend([f"{stem}-hist.png", f"{stem}-box.png"])
        # a bound at or beyond the data's edge (a default such as min_ratio 0) cuts nothing
        drawn = [ln for ln in lines.get(name, []) if dist.min < ln.value < dist.max]
        figures[name] = plots.distribution(
            values, name, dist.quantiles, dist.mean, drawn, dist.integral, dist.per_image
        )

    frame, dists = overall(table, percentiles, on_column=draw)
    files[:0] = list(write_overall(frame, folder))
    categories = {}
    for name, kind in table.kinds.items():
        if kind in (NUM, NUM_LIST):
            continue
        values = table.column(name).to_pylist()
        counts = pd.Series(values, dtype=object).value_counts()
        categories[name] = [(str(k), int(v)) for k, v in counts.head(12).items()]
        path = os.path.join(folder, f"{file_stem(name)}-hist.png")
        plots.dj_category_hist(values, name, path)
        files.append(path)

    whatif = WhatIf(ops, dists, table.rows, sequential)
    corr = StreamingCorrelation(table)
    wanted = sorted(set(whatif.columns) | set(corr.names))
    for batch in table.batches(columns=wanted or None):
        whatif.add(batch)
        corr.add(batch)
    matrix = corr.result()
    corr_png = None
    if len(matrix) >= 2:
        path = os.path.join(folder, "stats-corr-pearson.png")
        corr_png = plots.correlation_heatmap(matrix, path)
        files.append(path)
    return Analysis(
        folder, table, frame, dists, figures, categories, whatif, matrix, corr_png, files
    )


def describe_cells(frame: pd.DataFrame, stat: str) -> list[dict[str, Any]]:
    """One stat's overall.csv column as (row label, raw CSV text, value) for the report."""
    if stat not in frame.columns:
        return []
    cells = []
    for label, value in frame[stat].items():
        if value is None or (isinstance(value, float) and np.isnan(value)):
            continue
        cells.append({"label": str(label), "value": value})
    return cells
