"""Is run B better than run A, or is the difference noise? A paired bootstrap over questions and
seeds, and the mean +- std of a run's scores over its seeds.

Identical training settings scored anywhere from 0.8 to 1.5 in the Better Synth challenge, so
one number per run says little. A run here is one ``scores.json`` per seed with the
``per_question.jsonl`` that ``dj-eval scores`` writes beside it. For each score, the difference
B - A of the two runs' seed means gets a percentile confidence interval from a bootstrap in
which every resample

* draws the questions with replacement -- the *same* draw for both runs (paired: both answered
  the same questions, so how hard the drawn questions are cancels out of the difference), and
* where a run has several seeds, draws that run's seeds with replacement (each run its own), so
  seed-to-seed variation widens the interval.

MMBench is resampled by circular group (a question and its shifted copies, ``index % 1e6``):
circular accuracy is decided per group, and the copies of one question are not independent.
Resamples are drawn as numpy arrays in blocks (no Python loop per resample), from a seeded
generator: the same inputs and ``seed`` give the same interval.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .mmbench import CIRCULAR_BASE

STATE_FILE = "dj_train_state.json"  # dj-train's record; lists each seed's scores.json
BLOCK_CELLS = 4_000_000  # resample weights held at once (rows x units): bounds memory


class CompareError(ValueError):
    """Results that cannot be compared; the message says what to fix."""


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str  # what is resampled
    source: tuple[str, str]  # where scores.json holds it: (benchmark, field)


METRICS = (
    Metric("textvqa", "TextVQA", "question", ("textvqa", "accuracy")),
    Metric("mmbench", "MMBench", "circular group", ("mmbench", "accuracy")),
    Metric(
        "mmbench_circular", "MMBench circular", "circular group", ("mmbench", "circular_accuracy")
    ),
)
UnitTable = dict[Hashable, tuple[float, float]]  # unit -> (numerator, denominator)


@dataclass
class SeedResult:
    """One seed's results: per metric, each unit's share of the score."""

    path: Path  # its scores.json
    seed: int | None
    units: dict[str, UnitTable]


@dataclass
class Run:
    path: Path
    seeds: list[SeedResult] = field(default_factory=list)


# ----------------------------------------------------------------------------- loading


def find_scores(path: str | Path) -> list[tuple[int | None, Path]]:
    """The ``scores.json`` of every seed of a run, first seed first.

    ``path`` is a ``scores.json``, an ``eval_results/<CKPT>`` folder, a dj-train ``output``
    folder (its state file lists the seeds; an older one: ``eval_results/*/scores.json`` and
    ``seeds/seed-*/eval_results/*/scores.json``) or the flow's folder holding ``output/``.
    """
    p = Path(path)
    if p.is_file():
        return [(None, p)]
    if (p / "scores.json").is_file():
        return [(None, p / "scores.json")]
    if not (p / STATE_FILE).is_file() and (p / "output").is_dir():
        p = p / "output"
    state = p / STATE_FILE
    if state.is_file():
        try:
            listed = json.loads(state.read_text(encoding="utf-8")).get("seeds")
        except (OSError, ValueError, AttributeError) as exc:
            raise CompareError(f"{state}: unreadable ({exc})") from None
        if isinstance(listed, list) and listed:
            found = [(entry.get("seed"), p / entry["scores"]) for entry in listed]
            missing = [str(f) for _, f in found if not f.is_file()]
            if missing:
                raise CompareError(
                    f"{p}: no scores yet for {', '.join(missing)}; finish the run "
                    "(dj-train CONFIG --resume, with the same --seeds)"
                )
            return found
    found = sorted(p.glob("eval_results/*/scores.json"))
    if not found:
        raise CompareError(
            f"{p}: no scores.json (give a dj-train output folder, an eval_results/<CKPT> "
            "folder or a scores.json)"
        )
    if len(found) > 1:
        raise CompareError(
            f"{p}: {len(found)} experiments ({', '.join(f.parent.name for f in found)}); "
            "give the eval_results/<CKPT> folder of one"
        )
    others = p.glob(f"seeds/seed-*/eval_results/{found[0].parent.name}/scores.json")
    by_seed = {int(f.parents[2].name[5:]): f for f in others if f.parents[2].name[5:].isdigit()}
    return [(None, found[0]), *((s, by_seed[s]) for s in sorted(by_seed))]


def load_run(path: str | Path) -> Run:
    run = Run(Path(path))
    for seed, scores_path in find_scores(path):
        run.seeds.append(load_seed(scores_path, seed))
    return run


def load_seed(scores_path: Path, seed: int | None = None) -> SeedResult:
    """A ``scores.json`` and its per-question file, checked against each other."""
    try:
        scores = json.loads(scores_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CompareError(f"{scores_path}: unreadable ({exc})") from None
    name = scores.get("per_question") if isinstance(scores, dict) else None
    if not name:
        raise CompareError(
            f"{scores_path}: no per-question results (an older dj-eval wrote it); rescore "
            "with `dj-eval scores` or `dj-train CONFIG --from-stage scores`"
        )
    detail = scores_path.parent / name
    try:
        with open(detail, encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
    except (OSError, ValueError) as exc:
        raise CompareError(f"{detail}: unreadable ({exc})") from None
    units = unit_tables(rows)
    for metric in METRICS:
        if metric.key not in units:
            continue
        bench, key = metric.source
        recorded = (scores.get(bench) or {}).get(key)
        got = score_of(units[metric.key])
        if recorded is None or not math.isclose(got, recorded, rel_tol=1e-9, abs_tol=1e-9):
            raise CompareError(
                f"{detail}: its {metric.label} ({got:.4f}) is not scores.json's ({recorded}); "
                "the two files come from different scorings: rerun `dj-eval scores`"
            )
    if seed is None:
        seed = scores.get("seed")
    return SeedResult(scores_path, seed, units)


def unit_tables(rows: Sequence[dict[str, Any]]) -> dict[str, UnitTable]:
    """Per metric, each resampling unit's (numerator, denominator) of the score.

    TextVQA: a question (its lookup key; a repeated key counts once per occurrence) with its
    soft score over 1. MMBench accuracy: a circular group with its right answers over its
    answered rows. MMBench circular: a group with a main question, 1 when every row is right
    (an unanswered row is wrong, as in the scorer)."""
    textvqa: UnitTable = {}
    seen: Counter[tuple[str, str]] = Counter()
    acc: dict[int, list[float]] = {}
    hit: dict[int, bool] = {}
    main: set[int] = set()
    for row in rows:
        bench = row.get("benchmark")
        if bench == "textvqa":
            key = (str(row["question_id"]), str(row["question"]))
            textvqa[(*key, seen[key])] = (float(row["score"]), 1.0)
            seen[key] += 1
        elif bench == "mmbench":
            group, index = int(row["group"]), int(row["index"])
            cell = acc.setdefault(group, [0.0, 0.0])
            cell[0] += float(bool(row["answered"]) and bool(row["correct"]))
            cell[1] += float(bool(row["answered"]))
            hit[group] = hit.get(group, True) and bool(row["correct"])
            if index < CIRCULAR_BASE:
                main.add(group)
    out: dict[str, UnitTable] = {}
    if textvqa:
        out["textvqa"] = textvqa
    if acc:
        out["mmbench"] = {g: (n, d) for g, (n, d) in acc.items()}
        out["mmbench_circular"] = {g: (float(hit[g]), 1.0) for g in sorted(main)}
    return out


def score_of(table: UnitTable) -> float:
    """The score (percent) of a unit table: all numerators over all denominators."""
    num = sum(v[0] for v in table.values())
    den = sum(v[1] for v in table.values())
    return 100.0 * num / den if den else 0.0


# ----------------------------------------------------------------------------- statistics


@dataclass
class Bootstrap:
    """B - A of the seed means, and its bootstrap distribution's interval and spread."""

    diff: float
    low: float
    high: float
    se: float
    draws: int  # resamples with a defined score on both sides


def run_values(weights: np.ndarray, num: np.ndarray, den: np.ndarray, rng: np.random.Generator):
    """Per resample (row of ``weights``: how often each unit was drawn) the run's score: each
    seed's score on the drawn units, averaged over the run's seeds drawn with replacement."""
    with np.errstate(invalid="ignore", divide="ignore"):
        per_seed = 100.0 * (weights @ num.T) / (weights @ den.T)  # (resamples, seeds)
    n_seeds = num.shape[0]
    if n_seeds > 1:
        picks = rng.integers(0, n_seeds, size=per_seed.shape)
        per_seed = np.take_along_axis(per_seed, picks, axis=1)
    return per_seed.mean(axis=1)


def paired_bootstrap(
    a_num: np.ndarray,
    a_den: np.ndarray,
    b_num: np.ndarray,
    b_den: np.ndarray,
    n_boot: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Bootstrap:
    """Percentile interval of B - A. Arrays are (seeds, units), the same units (columns) in A
    and B; each resample draws units with replacement once for both runs, and each run's seeds
    with replacement on its own."""
    if a_num.shape[1] != b_num.shape[1] or a_num.shape[1] == 0:
        raise CompareError("the runs share no question to compare")
    if not 0 < confidence < 1:
        raise CompareError(f"confidence must be between 0 and 1, not {confidence}")
    rng = np.random.default_rng(seed)
    n = a_num.shape[1]
    diffs = np.empty(n_boot)
    block = max(1, min(n_boot, BLOCK_CELLS // n))
    for start in range(0, n_boot, block):  # blocks of resamples, each block one array
        m = min(block, n_boot - start)
        picks = rng.integers(0, n, size=(m, n)) + (np.arange(m) * n)[:, None]
        weights = np.bincount(picks.ravel(), minlength=m * n).reshape(m, n).astype(np.float64)
        a = run_values(weights, a_num, a_den, rng)
        b = run_values(weights, b_num, b_den, rng)
        diffs[start : start + m] = b - a
    diffs = diffs[np.isfinite(diffs)]
    if diffs.size == 0:
        raise CompareError("no resample had answered questions on both sides")
    tail = (1 - confidence) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    diff = _seed_mean(b_num, b_den) - _seed_mean(a_num, a_den)
    se = float(diffs.std(ddof=1)) if diffs.size > 1 else 0.0
    return Bootstrap(float(diff), float(low), float(high), se, int(diffs.size))


def _seed_mean(num: np.ndarray, den: np.ndarray) -> float:
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.mean(100.0 * num.sum(axis=1) / den.sum(axis=1)))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for one value)."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


# ----------------------------------------------------------------------------- comparing


def _matrices(run: Run, metric: str, units: list[Hashable]) -> tuple[np.ndarray, np.ndarray]:
    num = np.array([[s.units[metric][u][0] for u in units] for s in run.seeds], dtype=np.float64)
    den = np.array([[s.units[metric][u][1] for u in units] for s in run.seeds], dtype=np.float64)
    return num, den


def compare_runs(
    a: Run, b: Run, n_boot: int = 10_000, seed: int = 0, confidence: float = 0.95
) -> dict[str, Any]:
    """Every score both runs have: each run's mean +- std over seeds, B - A, the interval and
    a verdict in words; notes on questions not shared and runs with one seed."""
    if n_boot < 100:
        raise CompareError(f"--n-boot {n_boot}: use at least 100 resamples (default 10000)")
    metrics: dict[str, Any] = {}
    notes: list[str] = []
    for i, metric in enumerate(METRICS):
        tables = [s.units.get(metric.key) for s in (*a.seeds, *b.seeds)]
        if any(t is None for t in tables):
            if any(t is not None for t in tables):
                notes.append(f"{metric.label}: not in every seed of both runs; not compared")
            continue
        a_keys = set.intersection(*(set(s.units[metric.key]) for s in a.seeds))
        b_keys = set.intersection(*(set(s.units[metric.key]) for s in b.seeds))
        shared = sorted(a_keys & b_keys)
        if len(shared) < len(a_keys | b_keys):
            notes.append(
                f"{metric.label}: compared on the {len(shared)} {metric.unit}s both runs have "
                f"({len(a_keys - b_keys)} only in A, {len(b_keys - a_keys)} only in B)"
            )
        if not shared:
            continue
        a_num, a_den = _matrices(a, metric.key, shared)
        b_num, b_den = _matrices(b, metric.key, shared)
        boot = paired_bootstrap(a_num, a_den, b_num, b_den, n_boot, seed + i, confidence)
        a_seeds = [score_of({u: s.units[metric.key][u] for u in shared}) for s in a.seeds]
        b_seeds = [score_of({u: s.units[metric.key][u] for u in shared}) for s in b.seeds]
        rows = np.concatenate([np.stack([a_num, a_den], 1), np.stack([b_num, b_den], 1)])
        identical = bool((rows == rows[0]).all())  # every seed of A and B scored alike
        distinguishable = boot.low > 0 or boot.high < 0
        a_mean, a_std = mean_std(a_seeds)
        b_mean, b_std = mean_std(b_seeds)
        metrics[metric.key] = {
            "label": metric.label,
            "unit": metric.unit,
            "units": len(shared),
            "a": {"mean": a_mean, "std": a_std, "per_seed": a_seeds},
            "b": {"mean": b_mean, "std": b_std, "per_seed": b_seeds},
            "diff": boot.diff,
            "ci": [boot.low, boot.high],
            "se": boot.se,
            "distinguishable": distinguishable,
            "direction": ("higher" if boot.low > 0 else "lower") if distinguishable else None,
            "verdict": verdict(metric.label, boot, a_mean, confidence, identical),
        }
    if not metrics:
        raise CompareError("the runs have no score in common to compare (TextVQA, MMBench)")
    for name, run in (("A", a), ("B", b)):
        other = b if run is a else a
        if len(run.seeds) == 1 and len(other.seeds) > 1:
            notes.append(
                f"{name} has one seed: its seed-to-seed variation is not measured, so the "
                "interval is too narrow by that much; train it with more seeds"
            )
        elif len(run.seeds) == 2:
            notes.append(
                f"{name} has 2 seeds: a bootstrap over 2 seeds understates their spread; "
                "3 or more give a better interval"
            )
    return {
        "a": {"path": str(a.path), "seeds": [s.seed for s in a.seeds],
              "scores": [str(s.path) for s in a.seeds]},
        "b": {"path": str(b.path), "seeds": [s.seed for s in b.seeds],
              "scores": [str(s.path) for s in b.seeds]},
        "n_boot": n_boot,
        "seed": seed,
        "confidence": confidence,
        "metrics": metrics,
        "notes": notes,
    }  # fmt: skip


def verdict(
    label: str, boot: Bootstrap, a_mean: float, confidence: float, identical: bool = False
) -> str:
    """One sentence: which way, by how much, and whether the interval excludes 0."""
    pct = f"{confidence * 100:g}%"
    interval = f"the {pct} interval [{boot.low:+.2f}, {boot.high:+.2f}]"
    if identical:
        return (
            f"{label}: A and B scored every question alike: B - A = 0, not distinguishable "
            "from noise (no difference at all)."
        )
    rel = f" ({boot.diff / a_mean * 100:+.1f}% of A's {a_mean:.2f})" if a_mean else ""
    if boot.low > 0 or boot.high < 0:
        word = "higher" if boot.low > 0 else "lower"
        return (
            f"{label}: B is {word} by {abs(boot.diff):.2f} points{rel}; {interval} "
            "excludes 0: distinguishable from noise."
        )
    half = (boot.high - boot.low) / 2
    return (
        f"{label}: B - A = {boot.diff:+.2f} points{rel}; {interval} includes 0: not "
        f"distinguishable from noise (changes under about {half:.2f} points are within the "
        "noise of these questions and seeds)."
    )


# ----------------------------------------------------------------------------- seed summary


def seed_summary(seeds: Sequence[SeedResult | tuple[int | None, Path]]) -> dict[str, Any]:
    """Each score's mean +- std (sample, n - 1) over a run's seeds, with the per-seed values:
    what ``dj-train`` writes to ``output/seed_scores.json``."""
    loaded: list[tuple[int | None, Path, dict[str, Any]]] = []
    for item in seeds:
        seed, path = (item.seed, item.path) if isinstance(item, SeedResult) else item
        try:
            scores = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CompareError(f"{path}: unreadable ({exc})") from None
        loaded.append((scores.get("seed", seed) if seed is None else seed, Path(path), scores))
    out: dict[str, Any] = {
        "seeds": [s for s, _, _ in loaded],
        "scores": [str(p) for _, p, _ in loaded],
    }
    for metric in METRICS:
        bench, key = metric.source
        values = [(sc.get(bench) or {}).get(key) for _, _, sc in loaded]
        if any(v is None for v in values):
            continue
        mean, std = mean_std(values)
        out.setdefault(bench, {})[key] = {"mean": mean, "std": std, "values": values}
    return out
