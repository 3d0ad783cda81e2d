"""Small helpers shared by the tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from dj_synth.operators import Batch, SampleRef, get_operator
from dj_synth.operators.ledger import Ledger
from dj_synth.pipelines.recipe import load_recipe
from dj_synth.pipelines.run import run_recipe as run_loaded


def run_op(name: str, rows: list[dict[str, Any]], **args: Any) -> tuple[Batch, Ledger]:
    """Run one operator over rows; returns the surviving batch and the ledger."""
    op = get_operator(name)(**args)
    batch = Batch.from_rows(rows, [SampleRef(i, "t.jsonl", i + 1) for i in range(len(rows))])
    ledger = Ledger()
    return op.run(batch, ledger), ledger


def dedup_drops(name: str, rows: list[dict[str, Any]], **args: Any) -> dict[Any, str]:
    """{id: reason} of the samples a deduplicator drops: keys from `run`, decision by the
    operator's own `decide` (what every engine calls), never a copy of its loop."""
    out, _ = run_op(name, rows, **args)
    return decide_drops(get_operator(name)(**args), out)


def decide_drops(op: Any, out: Batch) -> dict[Any, str]:
    """{id: reason} that `op.decide` gives for a batch the operator keyed (`op.run`)."""
    from dj_synth.operators.base import DEDUP_KEY
    from dj_synth.operators.batch import STATS

    ids = [row.get("id") for row in out.rows()]
    stats = out.columns.get(STATS) or [None] * len(out)
    entries = [
        (op.rank_value(st), (ref.ordinal, 0), ref, sid, key)
        for ref, sid, key, st in zip(out.refs, ids, out.columns[DEDUP_KEY], stats)
    ]
    drops = op.decide(entries)
    return {
        sid: drops[(ref.ordinal, 0)] for ref, sid in zip(out.refs, ids) if (ref.ordinal, 0) in drops
    }


def write_recipe(path: Path, **settings: Any) -> Path:
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return path


def run_recipe(path: Path, *overrides: str) -> dict[str, Any]:
    return run_loaded(load_recipe(path, list(overrides)), progress=False)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def dct_phash(rgb: Any) -> str:
    """pHash of an RGB array from scipy's DCT of the whole image's luma: what
    image_deduplicator gives an image decoded in full, computed independently."""
    import numpy as np
    from scipy.fft import dctn

    luma = rgb.astype(np.float64) @ [0.299, 0.587, 0.114]
    low = dctn(luma, type=2)[:8, :8] / (4 * luma.size)  # scipy's scale -> grey levels
    low[np.abs(low) < 1e-6] = 0.0
    bits = (low > np.median(low)).reshape(64)
    return np.packbits(bits).tobytes().hex()
