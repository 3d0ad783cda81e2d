"""Data-Juicer's overall analysis: `overall.csv` / `overall.md` from a stats table.

Same layout as Data-Juicer's `OverallAnalysis`: pandas `describe` per stat column (list
columns exploded, one value per image), percentiles 0.25/0.5/0.75 plus the recipe's
`percentiles`, the columns side by side (`pd.DataFrame(columns).T`). Columns are read one at
a time from the Parquet table, so memory is one column, whatever the number of stats.
The same pass keeps what the report needs of each numeric column (`Distribution`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .stats_table import NUM, NUM_LIST, StatsTable

DEFAULT_PERCENTILES = (0.25, 0.5, 0.75)
# Quantiles the report's suggestions and plot ranges use (not written to overall.csv).
REPORT_QUANTILES = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999)


@dataclass
class Distribution:
    """What the report keeps of one numeric stat (values exploded: one per image)."""

    name: str
    count: int
    mean: float
    std: float
    min: float
    max: float
    quantiles: dict[float, float]
    integral: bool  # every value a whole number (lengths, pixel sizes)
    per_image: bool  # a list column: one value per image

    def q(self, p: float) -> float:
        return self.quantiles[p]


def merged_percentiles(extra: list[float] | None) -> list[float]:
    """Data-Juicer's `list(set(percentiles + default))`, sorted (pandas sorts them anyway)."""
    return sorted(set(DEFAULT_PERCENTILES) | {float(p) for p in (extra or [])})


def overall(
    table: StatsTable,
    percentiles: list[float] | None = None,
    on_column: Callable[[str, np.ndarray, Distribution], None] | None = None,
) -> tuple[pd.DataFrame, dict[str, Distribution]]:
    """The describe table (rows: count, mean, ...; columns: stats) and numeric distributions.

    `on_column(name, values, dist)` is called with each numeric column while it is in
    memory (the plots are drawn there, so no column is read twice).
    """
    pcts = merged_percentiles(percentiles)
    described, dists = [], {}
    for name, kind in table.kinds.items():
        col = table.column(name)
        if kind in (NUM, NUM_LIST):
            values = col.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
            described.append(pd.Series(values, name=name).describe(percentiles=pcts))
            if len(values):
                dist = _distribution(name, values, per_image=kind == NUM_LIST)
                dists[name] = dist
                if on_column is not None:
                    on_column(name, values, dist)
        else:
            values = col.to_pylist()
            described.append(pd.Series(values, name=name, dtype=object).describe())
    frame = pd.DataFrame(described).T if described else pd.DataFrame()
    return frame, dists


def _distribution(name: str, values: np.ndarray, per_image: bool) -> Distribution:
    qs = np.quantile(values, REPORT_QUANTILES)
    return Distribution(
        name=name,
        count=int(values.size),
        mean=float(values.mean()),
        std=float(values.std(ddof=1)) if values.size > 1 else 0.0,
        min=float(values.min()),
        max=float(values.max()),
        quantiles={p: float(v) for p, v in zip(REPORT_QUANTILES, qs)},
        integral=bool(np.all(np.mod(values, 1) == 0)),
        per_image=per_image,
    )


def write_overall(frame: pd.DataFrame, folder: str) -> tuple[str, str]:
    """`overall.csv` and `overall.md`, as Data-Juicer writes them."""
    os.makedirs(folder, exist_ok=True)
    csv, md = os.path.join(folder, "overall.csv"), os.path.join(folder, "overall.md")
    frame.to_csv(csv)
    frame.to_markdown(md)
    return csv, md
