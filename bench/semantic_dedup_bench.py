"""Semantic dedup (`image_embedding_deduplicator`) at scale: the decision and a whole run.

    python bench/semantic_dedup_bench.py --replay 100000            # the decision alone
    python bench/semantic_dedup_bench.py --run 100000               # dj-run, tiny CLIP, np 2
    python bench/semantic_dedup_bench.py --replay 100000 --run 100000   # both, one block

`--replay N`: N synthetic unit embeddings of CLIP ViT-B/32's width (512), 10% of them planted
near copies of an earlier one (cosine ~0.995-0.999), the rest in 1,000 loose topics, keyed as
the workers key them (float16 bytes); the operator's own decision (`op.decide`: k-means fit on
the seeded sample, then one admission per sample) in this process. Reports fit and decision
seconds, CPU seconds, peak RSS, and planted copies caught / originals dropped.

`--run N`: `dj-run` of a recipe with only `image_embedding_deduplicator` (tiny RANDOM CLIP,
CPU, `np: 2`) over the first N originals of `dedup_bench.py`'s image corpus (64 px originals
plus planted JPEG / resize / PNG copies; generated if missing): wall, samples/s, memory of the
largest process and of the tree. Random weights: the drops say nothing about quality, the
times say what the pipeline costs around the model (decode, embed, cache, decide).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import dedup_bench  # noqa: E402
import run_bench  # noqa: E402
from results_block import write_marked_block  # noqa: E402

BEGIN, END = "<!-- semantic_dedup:begin -->", "<!-- semantic_dedup:end -->"
DIM = 512
NOTE = (
    "With random weights the tiny CLIP gives nearly the same direction to every image, so the r"
    "un keeps few samples and its decision is cheap: the run measures the pipeline around the m"
    "odel (decode, embed, cache writes, k-means fit); the replay above is the decision at scale."
)


def planted_embeddings(n: int, seed: int) -> tuple[list[bytes], list[int | None]]:
    """Keys (unit float16 bytes) and, per sample, the index of the original it copies."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((1000, DIM)).astype(np.float32)
    keys: list[bytes] = []
    copy_of: list[int | None] = []
    originals: list[int] = []
    vectors = np.empty((n, DIM), dtype=np.float32)
    for i in range(n):
        if originals and rng.random() < 0.1:
            src = originals[int(rng.integers(len(originals)))]
            v = vectors[src] + rng.standard_normal(DIM).astype(np.float32) * rng.uniform(0.001, 0.002)
            copy_of.append(src)
        else:
            v = topics[int(rng.integers(1000))] + rng.standard_normal(DIM).astype(np.float32)
            originals.append(i)
            copy_of.append(None)
        v /= np.linalg.norm(v)
        vectors[i] = v
        keys.append(v.astype(np.float16).tobytes())
    return keys, copy_of


def replay(n: int, seed: int, n_clusters: int, eps: float) -> dict:
    from dj_synth.operators.batch import SampleRef
    from dj_synth.operators.image_embedding_deduplicator import EmbeddingDeduplicator

    keys, copy_of = planted_embeddings(n, seed)
    entries = [(None, (i, 0), SampleRef(i, "r", i), i, k) for i, k in enumerate(keys)]
    op = EmbeddingDeduplicator(n_clusters=n_clusters, eps=eps)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cpu0, t0 = time.process_time(), time.perf_counter()
    from dj_synth.operators.dedup_decision import decide, fitted_for

    fitted = fitted_for(op, entries)
    fit_s = time.perf_counter() - t0
    drops = decide(fitted, entries)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    dropped = {p[0] for p in drops}
    planted = [i for i, c in enumerate(copy_of) if c is not None]
    caught = sum(i in dropped for i in planted)
    originals_dropped = sum(c is None and i in dropped for i, c in enumerate(copy_of))
    return dict(n=n, fit_s=fit_s, decide_s=wall - fit_s, wall_s=wall, cpu_s=cpu,
                peak_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                rss_before_mib=rss0, planted=len(planted), caught=caught,
                originals_dropped=originals_dropped, clusters=len(fitted.centroids))  # fmt: skip


def run(n: int, corpus: int, seed: int, jobs: int, np_: int) -> dict:
    from dj_synth.tools.tiny_models import make_tiny_models

    full = dedup_bench.image_corpus(max(n, corpus), seed, jobs, side=64)
    data = full if n >= corpus else dedup_bench.image_subset(full, n)
    models = make_tiny_models(BENCH / "out" / "semantic" / "models", seed=0)
    recipe = dedup_bench.write_recipe("image_semantic", "image_embedding_deduplicator", {
        "hf_clip": models["clip"], "accelerator": "cpu", "n_clusters": 100, "eps": 0.01,
    })  # fmt: skip
    out_dir = BENCH / "out" / "semantic" / f"run-{n}"
    cache = BENCH / "out" / "semantic" / "cache"  # cold: the run embeds every image
    shutil.rmtree(cache, ignore_errors=True)
    os.environ["DJ_SYNTH_CACHE_DIR"] = str(cache)
    row = run_bench.run_one(n, np_, recipe, data=data, out_dir=out_dir)
    row["samples"] = sum(1 for _ in open(data, encoding="utf-8"))
    row["corpus"] = str(data.relative_to(run_bench.REPO))
    return row


def render(replays: list[dict], runs: list[dict], argv: list[str]) -> str:
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()
    lines = [BEGIN, "### Semantic dedup (`image_embedding_deduplicator`, `bench/semantic_dedup_bench.py`)", "",
             f"Measured {when} on {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
             f"Python {platform.python_version()}; load average {load[0]:.1f} / {load[1]:.1f} (1 / 5 min) at the end. "
             f"Command: `python bench/semantic_dedup_bench.py {' '.join(argv)}`.", ""]  # fmt: skip
    if replays:
        lines += ["The decision alone (synthetic 512-d embeddings, 10% planted near copies, "
                  "`n_clusters` 100, `eps` 0.01, fit on the default 50,000-sample seeded sample):", "",
                  "| samples | fit s | decide s | total s | CPU s | peak RSS MiB (before the decision) | planted copies caught | originals dropped |",
                  "|---:|---:|---:|---:|---:|---:|---|---:|"]  # fmt: skip
        for r in replays:
            lines.append(f"| {r['n']:,} | {r['fit_s']:.1f} | {r['decide_s']:.1f} | {r['wall_s']:.1f} | "
                         f"{r['cpu_s']:.1f} | {r['peak_mib']:.0f} ({r['rss_before_mib']:.0f}) | {r['caught']:,}/{r['planted']:,} | "
                         f"{r['originals_dropped']:,} |")  # fmt: skip
        lines.append("")
    if runs:
        lines += ["Whole runs (`dj-run`, tiny RANDOM CLIP on CPU, cold model-output cache, `np: 2`, "
                  "the image corpus of `bench/dedup_bench.py`):", "",
                  "| samples | wall s | samples/s | largest process MiB | process tree MiB | exported | dropped |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in runs:
            lines.append(f"| {r['samples']:,} | {r['wall_s']:.1f} | {r['samples'] / r['wall_s']:,.0f} | "
                         f"{r['peak_single_mib']:.0f} | {r['peak_tree_mib']:.0f} | {r['exported']:,} | "
                         f"{sum(r['filtered'].values()):,} |")  # fmt: skip
        lines += ["", NOTE, ""]
    lines.append(END)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replay", type=int, nargs="*", default=[], metavar="N")
    ap.add_argument("--run", type=int, nargs="*", default=[], metavar="N")
    ap.add_argument("--n-clusters", type=int, default=100)
    ap.add_argument("--eps", type=float, default=0.01)
    ap.add_argument("--corpus", type=int, default=1_000_000,
                    help="originals of the dedup_bench image corpus the runs take a prefix of")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-j", "--jobs", type=int, default=2, help="image generator processes")
    ap.add_argument("--np", type=int, default=2, dest="np_")
    ap.add_argument("--no-write", action="store_true")
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    replays = []
    for n in args.replay:
        replays.append(replay(n, args.seed, args.n_clusters, args.eps))
        print(replays[-1], flush=True)
    runs = []
    for n in args.run:
        runs.append(run(n, args.corpus, args.seed, args.jobs, args.np_))
        print({k: runs[-1].get(k) for k in ("samples", "wall_s", "peak_single_mib",
                                            "peak_tree_mib", "exported", "filtered")}, flush=True)  # fmt: skip
    block = render(replays, runs, argv)
    print(block)
    if not args.no_write:
        write_marked_block(BENCH / "RESULTS.md", BEGIN, END, block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
