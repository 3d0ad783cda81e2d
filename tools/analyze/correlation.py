"""Pearson correlation of the numeric stats, streamed batch by batch (Chan's pairwise merge).

As Data-Juicer's `CorrelationAnalysis`, a per-image stat enters as each sample's mean over
its images. Unlike it, a sample with no images is missing for that stat (Data-Juicer counts
it as 0, which pulls every correlation towards the text-only samples); pairs are judged on
the samples that have both values, as pandas' `DataFrame.corr` does.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyarrow as pa

from .stats_table import StatsTable, row_means


class StreamingCorrelation:
    def __init__(self, table: StatsTable) -> None:
        self.names = table.numeric()
        self.kinds = table.kinds
        k = len(self.names)
        self.n = np.zeros((k, k))
        self.mean_x = np.zeros((k, k))  # mean of column i over the rows where i and j exist
        self.mean_y = np.zeros((k, k))  # mean of column j over the same rows
        self.m2_x = np.zeros((k, k))
        self.m2_y = np.zeros((k, k))
        self.cxy = np.zeros((k, k))
        self.shift: np.ndarray | None = None  # fixed per column: sums of small numbers

    def add(self, batch: pa.RecordBatch) -> None:
        if not self.names:
            return
        cols = np.stack(
            [row_means(batch.column(name), self.kinds[name]) for name in self.names], axis=1
        )
        present = ~np.isnan(cols)
        if self.shift is None:
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                self.shift = np.nan_to_num(np.nanmean(cols, axis=0))
        x = np.where(present, cols - self.shift, 0.0)
        w = present.astype(np.float64)
        nb = w.T @ w  # rows where both i and j are present
        with np.errstate(invalid="ignore", divide="ignore"):
            sx = (x * w).T @ w  # sum of i over rows with j present
            mx = np.where(nb > 0, sx / nb, 0.0)
            my = mx.T.copy()
            # second moments about the batch's pair means
            sxx = (x * x).T @ w
            m2x = sxx - nb * mx * mx
            sxy = x.T @ x  # only rows with both present contribute (x is 0 where missing)
            cxy = sxy - nb * mx * my
        m2y = m2x.T
        n = self.n + nb
        with np.errstate(invalid="ignore", divide="ignore"):
            dx, dy = mx - self.mean_x, my - self.mean_y
            f = np.where(n > 0, self.n * nb / n, 0.0)
            self.cxy = self.cxy + cxy + f * dx * dy
            self.m2_x = self.m2_x + m2x + f * dx * dx
            self.m2_y = self.m2_y + m2y + f * dy * dy
            self.mean_x = np.where(n > 0, self.mean_x + dx * np.where(n > 0, nb / n, 0.0), 0.0)
            self.mean_y = np.where(n > 0, self.mean_y + dy * np.where(n > 0, nb / n, 0.0), 0.0)
        self.n = n

    def result(self) -> pd.DataFrame:
        with np.errstate(invalid="ignore", divide="ignore"):
            r = self.cxy / np.sqrt(self.m2_x * self.m2_y)
        r = np.where(self.n >= 2, np.clip(r, -1.0, 1.0), np.nan)
        return pd.DataFrame(r, index=self.names, columns=self.names)
