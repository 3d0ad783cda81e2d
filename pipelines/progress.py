"""Progress: a live bar with samples/s and ETA on a terminal, plain log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("dj_synth")


class Progress:
    """Driven by input bytes (known up front, so ETA needs no counting pass) and samples."""

    def __init__(self, total_bytes: int, interactive: bool | None = None, every: float = 10.0):
        self.total = max(total_bytes, 1)
        self.start = time.monotonic()
        self.every = every
        self._last_log = self.start
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self._bar = None
        if self.interactive:
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total, unit="B", unit_scale=True, dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]",
            )  # fmt: skip

    def update(self, samples: int, bytes_done: int) -> None:
        now = time.monotonic()
        rate = samples / max(now - self.start, 1e-9)
        if self._bar is not None:
            self._bar.n = min(bytes_done, self.total)
            self._bar.set_postfix_str(f"{samples:,} samples, {rate:,.0f} samples/s", refresh=False)
            self._bar.refresh()
        elif now - self._last_log >= self.every:
            self._last_log = now
            frac = min(bytes_done / self.total, 1.0)
            eta = (now - self.start) * (1 - frac) / frac if frac > 0 else float("nan")
            log.info(
                "%s samples done (%.0f samples/s), %.0f%% of input read, ETA %s",
                f"{samples:,}",
                rate,
                100 * frac,
                _fmt(eta),
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _fmt(seconds: float) -> str:
    if seconds != seconds:  # NaN
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
