"""Progress: plain log lines with rate and ETA when not on a terminal; a live bar otherwise."""

from __future__ import annotations

import io
import logging

from dj_synth.pipelines.progress import Progress


def test_plain_log_lines_with_rate_and_eta(caplog):
    progress = Progress(total_bytes=1000, interactive=False, every=0.0)
    with caplog.at_level(logging.INFO, logger="dj_synth"):
        progress.update(samples=500, bytes_done=250)
    progress.close()
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("500 samples done (") and "samples/s" in line
    assert "25% of input read" in line and "ETA 0:00:" in line


def test_interactive_bar_shows_samples_per_second(monkeypatch):
    stream = io.StringIO()
    import tqdm

    real = tqdm.tqdm
    monkeypatch.setattr(tqdm, "tqdm", lambda *a, **k: real(*a, file=stream, **k))
    progress = Progress(total_bytes=1000, interactive=True)
    progress.update(samples=42, bytes_done=500)
    progress.close()
    out = stream.getvalue()
    assert "42 samples" in out and "samples/s" in out and "50%" in out
