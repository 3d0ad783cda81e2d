"""Image hashing speed and hash stability across code versions (issue 19, item 2).

Times `image_deduplicator.compute_hash` (decode + pHash, and the verification thumbnails
at t > 0) in ONE process (CPU seconds per image: the cost per core), for the working tree
and for older commits, on the same images, and checks what changed:

    .venv/bin/python bench/hash_speed.py --code 2a71c53 --block hash-speed
    .venv/bin/python bench/hash_speed.py --images 512 --repeat 2 --no-write   # quick look

- speed: the first --images JPEGs of the cpu_clean corpus pool (bench/data/pool, made
  here if missing, as bench/run_bench.py does; 100-1000 px, ~30 KB), batches of --batch, a fresh process and media
  cache per round, the versions in turn, best of --repeat rounds (the least disturbed);
- stability: the share of those images whose pHash is bit-identical to the first version's;
- recall: on the planted near-copies of a small dedup_bench corpus (--planted originals,
  generated once into bench/data/), the share of re-encodes / 0.5-2x resizes / PNG copies
  whose pHash equals their original's (what t=0 catches) and lies within 8 bits (t=8).

Older commits run from a `git archive` copy (dedup_bench.use_commit_snapshot), each in
its own subprocess, so every version is timed in the same conditions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import dedup_bench  # noqa: E402
import make_corpus  # noqa: E402
import run_bench  # noqa: E402
from results_block import write_marked_block  # noqa: E402

POOL = BENCH / "data" / "pool"


def _batches(paths: list[str], size: int):
    from dj_synth.operators.batch import Batch, BatchContext, SampleRef

    ctx = BatchContext()  # one media cache per round: nothing decoded twice, nothing reused
    for i in range(0, len(paths), size):
        chunk = paths[i : i + size]
        rows = [{"text": "", "images": [p]} for p in chunk]
        refs = [SampleRef(i + k, "bench", i + k) for k in range(len(chunk))]
        yield Batch.from_rows(rows, refs, ctx)


def _hashes(op, paths: list[str], size: int) -> tuple[float, list[str]]:
    """CPU seconds of compute_hash over `paths` in batches, and the first hash of each."""
    cpu, out = 0.0, []
    for batch in _batches(paths, size):
        t0 = time.process_time()
        keys = op.compute_hash(batch)
        cpu += time.process_time() - t0
        out += [k[0][0] if isinstance(k[0], tuple) else k[0] for k in keys]
    return cpu, out


def worker(args: argparse.Namespace) -> None:
    """In the subprocess of one code version: one timed round (--worker time) or the
    hashes of the speed and planted images (--worker hashes); prints JSON."""
    from dj_synth.operators.image_deduplicator import ImageDeduplicator

    paths = json.loads(Path(args.paths).read_text())
    if args.worker == "time":
        for t in (0, 8):  # imports and first-call set-up, on other images: not timed
            _hashes(ImageDeduplicator(hamming_threshold=t), paths["warm_up"], args.batch)
        ms = {}
        for t in (0, 8):
            op = ImageDeduplicator(method="phash", hamming_threshold=t)
            ms[str(t)] = 1000 * _hashes(op, paths["speed"], args.batch)[0] / len(paths["speed"])
        print(json.dumps(ms))
        return
    op = ImageDeduplicator(method="phash")
    print(json.dumps({
        "speed_hashes": _hashes(op, paths["speed"], args.batch)[1],
        "planted_hashes": _hashes(op, paths["planted"], args.batch)[1],
    }))  # fmt: skip


def planted_pairs(corpus: Path) -> tuple[list[str], list[tuple[int, int, str]]]:
    """Image paths of the corpus, and (copy index, original index, kind) for each copy."""
    rows = [json.loads(line) for line in corpus.read_text().splitlines()]
    paths = [str(corpus.parent / r["images"][0]) for r in rows]
    original_at = {}
    pairs = []
    for i, r in enumerate(rows):
        tag = r["id"].split("-", 1)[1]  # "o000012" or "d000012-resize"
        if tag.startswith("o"):
            original_at[int(tag[1:])] = i
        else:
            orig, kind = tag[1:].split("-")
            pairs.append((i, original_at[int(orig)], kind))
    return paths, pairs


def recall(hashes: list[str], pairs: list[tuple[int, int, str]]) -> dict[str, tuple[float, float]]:
    """kind -> (share of copies with the original's exact hash, share within 8 bits)."""
    by_kind: dict[str, list[int]] = {}
    for copy, orig, kind in pairs:
        bits = bin(int(hashes[copy], 16) ^ int(hashes[orig], 16)).count("1")
        by_kind.setdefault(kind, []).append(bits)
    return {
        k: (sum(b == 0 for b in v) / len(v), sum(b <= 8 for b in v) / len(v))
        for k, v in sorted(by_kind.items())
    }


def version_env(code: str) -> tuple[dict[str, str], str]:
    """Environment that imports `code`'s dj_synth, and how to name it."""
    if code == "worktree":
        return dict(os.environ), "working tree"
    saved = os.environ.get("PYTHONPATH")
    label = dedup_bench.use_commit_snapshot(code)  # sets PYTHONPATH
    env = dict(os.environ)
    if saved is None:
        os.environ.pop("PYTHONPATH")
    else:
        os.environ["PYTHONPATH"] = saved
    return env, label


def run_worker(mode: str, env: dict[str, str], paths_file: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--paths", str(paths_file),
           "--batch", str(args.batch)]  # fmt: skip
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout.splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=int, default=2048, help="pool JPEGs timed")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=5,
                    help="rounds, each version in turn in each; the best counts")  # fmt: skip
    ap.add_argument("--planted", type=int, default=2000, help="originals of the recall corpus")
    ap.add_argument("--code", nargs="*", default=[], metavar="COMMIT",
                    help="older commits to compare with the working tree")  # fmt: skip
    ap.add_argument("--block", default="hash-speed")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--worker", choices=["time", "hashes"], help=argparse.SUPPRESS)
    ap.add_argument("--paths", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    make_corpus.build_pool(str(POOL), args.images + 64, seed=0, jobs=os.cpu_count() or 1)
    pool = [str(POOL / make_corpus.image_name(i)) for i in range(args.images + 64)]
    speed, warm_up = pool[: args.images], pool[args.images :]
    corpus = dedup_bench.image_corpus(args.planted, seed=0, jobs=os.cpu_count() or 1)
    planted, pairs = planted_pairs(corpus)
    paths_file = BENCH / "out" / "hash_speed_paths.json"
    paths_file.parent.mkdir(parents=True, exist_ok=True)
    paths_file.write_text(json.dumps({"speed": speed, "planted": planted, "warm_up": warm_up}))

    envs = [version_env(code) for code in ["worktree", *args.code]]
    versions = [run_worker("hashes", env, paths_file, args) | {"label": label, "ms": {}}
                for env, label in envs]  # fmt: skip
    for _ in range(args.repeat):  # interleaved: a busy spell of the machine hits every version
        for (env, _), r in zip(envs, versions):
            for t, ms in run_worker("time", env, paths_file, args).items():
                r["ms"][t] = min(r["ms"].get(t, ms), ms)
    base = versions[0]
    head = "| code | ms an image, t=0 | t=8 (with thumbnails) | pHash = working tree's |"
    head += " t=0 recall: JPEG re-encode / PNG copy / resize | t=8 (hash alone): same three |"
    lines = [head, "|" + "---|" * 6]
    for r in versions:
        same = sum(a == b for a, b in zip(r["speed_hashes"], base["speed_hashes"]))
        rec = recall(r["planted_hashes"], pairs)
        exact = " / ".join(f"{v[0]:.0%}" for v in rec.values())
        near = " / ".join(f"{v[1]:.0%}" for v in rec.values())
        lines.append(f"| {r['label']} | {r['ms']['0']:.3f} | {r['ms']['8']:.3f} | "
                     f"{same / len(speed):.1%} | {exact} | {near} |")  # fmt: skip
    kinds = " / ".join(
        f"{k} {sum(p[2] == k for p in pairs)}" for k in sorted({p[2] for p in pairs})
    )
    info = run_bench.machine_info()
    now = dt.datetime.now(dt.timezone.utc)
    load = os.getloadavg()[0]
    cmd = " ".join(["python bench/hash_speed.py", *(argv if argv is not None else sys.argv[1:])])
    block = "\n".join([
        f"<!-- run_bench:{args.block}:begin -->",
        f"### Image hashing per core ({now:%Y-%m-%d %H:%M} UTC)",
        "",
        f"Command: `{cmd}`. Machine: {info.get('cpu', '?')}, {os.cpu_count()} cores; "
        f"load average {load:.1f} at the end. One process, CPU time of "
        f"`image_deduplicator.compute_hash`, {len(speed):,} pool JPEGs in batches of "
        f"{args.batch}, best of {args.repeat} rounds (the versions take turns). Recall corpus: {args.planted:,} "
        f"originals, planted copies {kinds}.",
        "",
        *lines,
        f"<!-- run_bench:{args.block}:end -->",
    ])  # fmt: skip
    print(block)
    if not args.no_write:
        write_marked_block(BENCH / "RESULTS.md", f"<!-- run_bench:{args.block}:begin -->",
                           f"<!-- run_bench:{args.block}:end -->", block)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
