"""The figures, drawn with matplotlib (Agg: no display needed).

Data-Juicer's files (`<stat>-hist.png`, `<stat>-box.png`, `stats-corr-pearson.png`) keep its
content (sqrt(n) bins, one box, an annotated heatmap); the report's figures are PNG bytes
(embedded as base64): a stat's distribution with the recipe's thresholds, and the funnel.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import cbook  # noqa: E402

KEPT = "#3b7dd8"
DROPPED = "#e0524d"
GREY = "#8a94a6"
INK = "#1f2937"
MAX_FLIERS = 2000  # box plots of a million values: the outlier markers are thinned out

plt.rcParams.update(
    {
        "font.family": "DejaVu Sans",
        "font.size": 9,
        "axes.edgecolor": "#c8ced8",
        "axes.labelcolor": INK,
        "xtick.color": "#4b5563",
        "ytick.color": "#4b5563",
        "axes.spines.top": False,
        "axes.spines.right": False,
        "figure.dpi": 100,
    }
)


def _save(fig: plt.Figure, path: str | None = None, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)  # fixed margins: one draw (no bbox "tight" pass)
    plt.close(fig)
    data = buf.getvalue()
    if path:
        with open(path, "wb") as fh:
            fh.write(data)
    return data


# ---------------------------------------------------------------------------
# Data-Juicer's files


def dj_hist(values: np.ndarray, name: str, path: str) -> None:
    bins = max(int(math.sqrt(len(values))), 10)
    fig, ax = plt.subplots(figsize=(8, 5))
    fig.subplots_adjust(left=0.1, right=0.97, top=0.95, bottom=0.11)
    ax.hist(values, bins=bins, color=KEPT, histtype="stepfilled")  # one polygon, not n bars
    ax.set_xlabel(name)
    ax.set_ylabel("Count")
    _save(fig, path)


def dj_box(values: np.ndarray, name: str, path: str) -> None:
    stats = cbook.boxplot_stats(values)[0]
    fliers = np.sort(stats["fliers"])
    if len(fliers) > MAX_FLIERS:
        stats["fliers"] = fliers[np.linspace(0, len(fliers) - 1, MAX_FLIERS).astype(int)]
    fig, ax = plt.subplots(figsize=(4, 5))
    fig.subplots_adjust(left=0.22, right=0.95, top=0.95, bottom=0.05)
    ax.bxp([stats], showfliers=True, flierprops={"markersize": 2, "alpha": 0.4})
    ax.set_ylabel(name)
    ax.set_xticks([])
    _save(fig, path)


def dj_category_hist(values: Sequence[str], name: str, path: str, top: int = 30) -> None:
    counts = Counter(values).most_common(top)
    fig, ax = plt.subplots(figsize=(8, 5))
    fig.subplots_adjust(left=0.1, right=0.97, top=0.95, bottom=0.2)
    if counts:
        labels, heights = zip(*counts)
        ax.bar(range(len(labels)), heights, color=KEPT)
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_xlabel(name)
    ax.set_ylabel("Count")
    _save(fig, path)


def correlation_heatmap(corr: pd.DataFrame, path: str | None = None) -> bytes:
    k = len(corr)
    size = max(4.0, 0.55 * k + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.6, size + 0.9))
    fig.subplots_adjust(left=1.6 / (size + 1.6), right=0.98, top=0.98, bottom=1.2 / (size + 0.9))
    im = ax.imshow(corr.values, cmap="RdBu_r", vmin=-1, vmax=1)
    cbar = fig.colorbar(im, ax=ax, shrink=0.8)
    cbar.ax.set_ylabel("Pearson correlation", rotation=-90, va="bottom")
    ax.set_xticks(range(k), corr.columns, rotation=40, ha="right")
    ax.set_yticks(range(k), corr.index)
    ax.spines[:].set_visible(False)
    for i in range(k):
        for j in range(k):
            v = corr.values[i, j]
            if np.isfinite(v):
                colour = "white" if abs(v) > 0.6 else INK
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", color=colour, fontsize=8)
    return _save(fig, path)


# ---------------------------------------------------------------------------
# The report's figures


@dataclass
class Line:
    """A threshold drawn on a distribution: `label` at `value`, dropping below or above."""

    value: float
    label: str
    drops: str  # "below" / "above" / "inside" (reversed_range: between min and max)


def _range(
    values: np.ndarray, lines: list[Line], quantile: dict[float, float]
) -> tuple[float, float]:
    lo, hi = quantile[0.005], quantile[0.995]
    vmin, vmax = float(values.min()), float(values.max())
    if lo == hi:
        lo, hi = vmin, vmax
    for line in lines:  # a threshold inside the data is always on the chart
        if vmin <= line.value <= vmax:
            lo, hi = min(lo, line.value), max(hi, line.value)
    if lo == hi:
        pad = abs(lo) * 0.05 or 0.5
        lo, hi = lo - pad, hi + pad
    return lo, hi


def distribution(
    values: np.ndarray,
    name: str,
    quantile: dict[float, float],
    mean: float,
    lines: list[Line],
    integral: bool,
    per_image: bool,
) -> bytes:
    """A histogram: bins in a dropped zone red, thresholds as labelled lines, the mean dotted."""
    lo, hi = _range(values, lines, quantile)
    log = lo > 0 and hi / lo > 100
    if integral and hi - lo <= 80:
        edges = np.arange(math.floor(lo) - 0.5, math.ceil(hi) + 1.5)
    elif log:
        edges = np.geomspace(lo, hi, 61)
    else:
        edges = np.linspace(lo, hi, 61)
    inside = values[(values >= edges[0]) & (values <= edges[-1])]
    counts, _ = np.histogram(inside, bins=edges)
    centres = np.sqrt(edges[:-1] * edges[1:]) if log else (edges[:-1] + edges[1:]) / 2
    dropped = np.zeros(len(centres), dtype=bool)
    for line in lines:
        if line.drops == "below":
            dropped |= centres < line.value
        elif line.drops == "above":
            dropped |= centres > line.value
    inside_lines = [ln for ln in lines if ln.drops == "inside"]
    if len(inside_lines) == 2:
        a, b = sorted(ln.value for ln in inside_lines)
        dropped |= (centres >= a) & (centres <= b)

    fig, ax = plt.subplots(figsize=(7.6, 2.6))
    fig.subplots_adjust(left=0.115, right=0.96, top=0.9, bottom=0.2)
    # two filled step outlines (kept, dropped): two artists, not one patch per bin
    ax.stairs(np.where(dropped, 0, counts), edges, fill=True, color=KEPT, linewidth=0)
    ax.stairs(np.where(dropped, counts, 0), edges, fill=True, color=DROPPED, linewidth=0)
    if log:
        ax.set_xscale("log")
    ax.set_xlim(edges[0], edges[-1])
    top = counts.max() if counts.size and counts.max() > 0 else 1
    ax.set_ylim(0, top * 1.28)
    for line in lines:
        if not edges[0] <= line.value <= edges[-1]:
            continue
        ax.axvline(line.value, color=DROPPED, linewidth=1.6)
        side = "right" if line.drops == "below" else "left"
        ax.text(line.value, top * 1.22, f" {line.label} ", color=DROPPED, fontsize=8.5,
                fontweight="bold", ha="left" if side == "right" else "right", va="top")  # fmt: skip
    if edges[0] <= mean <= edges[-1]:
        ax.axvline(mean, color=GREY, linewidth=1, linestyle=(0, (2, 2)))
        ax.text(mean, top * 1.05, " mean", color=GREY, fontsize=7.5, va="bottom")
    below, above = int((values < edges[0]).sum()), int((values > edges[-1]).sum())
    if below:
        ax.text(0.0, 1.0, f"◂ {below:,} below", transform=ax.transAxes, fontsize=7.5,
                color=GREY, va="bottom")  # fmt: skip
    if above:
        ax.text(1.0, 1.0, f"{above:,} above ▸", transform=ax.transAxes, fontsize=7.5,
                color=GREY, va="bottom", ha="right")  # fmt: skip
    ax.set_xlabel(f"{name}  (one value per image)" if per_image else name)
    ax.set_ylabel("images" if per_image else "samples")
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=4, integer=True))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    return _save(fig, dpi=110)


def funnel(names: list[str], remaining: list[int], dropped: list[int], start: int) -> bytes:
    """Samples left after each operator (bars), what each dropped (red tail)."""
    k = len(names)
    height, width = 0.3 * (k + 1) + 0.7, 7.6
    label_inches = 0.35 + 0.072 * max(len(n) for n in ["input", *names])  # 9 pt DejaVu Sans
    fig, ax = plt.subplots(figsize=(width, height))
    fig.subplots_adjust(
        left=min(0.5, label_inches / width), right=0.98, top=1 - 0.15 / height,
        bottom=0.55 / height,
    )  # fmt: skip
    labels = ["input", *names]
    left = [start, *remaining]
    lost = [0, *dropped]
    y = np.arange(k + 1)[::-1]
    ax.barh(y, left, color=KEPT, height=0.62)
    ax.barh(y, lost, left=left, color=DROPPED, height=0.62)
    for yi, n, d in zip(y, left, lost):
        text = f" {n:,}" + (f"  (−{d:,})" if d else "")
        ax.text(n + d, yi, text, va="center", fontsize=8, color=INK)
    ax.set_yticks(y, labels)
    ax.set_xlim(0, max(start, 1) * 1.22)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_xlabel("samples")
    return _save(fig, dpi=110)
