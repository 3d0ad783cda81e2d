"""Dedup on Ray at scale: the same recipe on the local and the Ray executor, same export?

    python bench/ray_dedup_bench.py                        # MinHash, 1M captions of dedup_bench
    python bench/ray_dedup_bench.py --captions 100000 --no-write

Runs `document_minhash_deduplicator` (the recipe of `bench/dedup_bench.py`) over the first N
captions of its caption corpus (generated if missing), once with the local executor and once
with `--executor ray` (a local Ray instance the run starts: its start-up is included), and
compares the exports (the Ray shards concatenated) and the filtered records byte for byte.
On Ray the decision is distributed: bucket rows hash-partitioned to reduce tasks, components
joined on the driver from the edges only, components decided in tasks; no process holds every
signature. Reports wall, samples/s, the largest process and the process tree.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import dedup_bench  # noqa: E402
import run_bench  # noqa: E402
from results_block import write_marked_block  # noqa: E402

BEGIN, END = "<!-- ray_dedup:begin -->", "<!-- ray_dedup:end -->"


def concatenated(out_dir: Path, pattern: str) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(out_dir.glob(pattern)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--captions", type=int, default=1_000_000)
    ap.add_argument("--corpus", type=int, default=10_000_000,
                    help="captions of the dedup_bench corpus the run takes the head of")
    ap.add_argument("--np", type=int, default=2, dest="np_")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true")
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)

    full = dedup_bench.caption_corpus(max(args.corpus, args.captions), args.seed)
    data = full if args.captions >= args.corpus else dedup_bench.head_subset(full, args.captions)
    recipe = dedup_bench.write_recipe("caption_minhash_w1", "document_minhash_deduplicator",
                                      dedup_bench.MINHASH_ARGS)  # fmt: skip
    rows, dirs = {}, {}
    for engine in ("dj-synth", "dj-synth-ray"):
        dirs[engine] = BENCH / "out" / "ray_dedup" / f"{engine}-{args.captions}"
        rows[engine] = run_bench.run_one(args.captions, args.np_, recipe, engine=engine,
                                         data=data, out_dir=dirs[engine])  # fmt: skip
    local, ray = dirs["dj-synth"], dirs["dj-synth-ray"]
    same_export = concatenated(local, "result*.jsonl") == concatenated(ray, "result*.jsonl")
    same_records = concatenated(local, "filtered/*.jsonl") == concatenated(ray, "filtered/*.jsonl")
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()
    info = run_bench.machine_info()
    lines = [BEGIN, "### MinHash dedup on Ray vs the local executor (`bench/ray_dedup_bench.py`)", "",
             f"Measured {when} on {info['nproc']} CPUs ({info['cpu']}), {info['ram']} RAM; load average "
             f"{load[0]:.1f} / {load[1]:.1f} (1 / 5 min) at the end. Command: "
             f"`python bench/ray_dedup_bench.py {' '.join(argv)}`; `np: {args.np_}`; "
             f"{args.captions:,} captions (`{data.relative_to(run_bench.REPO)}`).", "",
             "| executor | wall s | samples/s | largest process MiB | process tree MiB | exported | dropped |",
             "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for engine, r in rows.items():
        name = "local" if engine == "dj-synth" else "Ray (local instance, start-up included)"
        lines.append(f"| {name} | {r['wall_s']:.1f} | {args.captions / r['wall_s']:,.0f} | "
                     f"{r['peak_single_mib']:.0f} | {r['peak_tree_mib']:.0f} | {r['exported']:,} | "
                     f"{sum(r['filtered'].values()):,} |")  # fmt: skip
    lines += ["", f"Exports (Ray shards concatenated) {'byte-identical' if same_export else 'DIFFERENT'}; "
              f"filtered records {'byte-identical' if same_records else 'DIFFERENT'}.", END]  # fmt: skip
    block = "\n".join(lines)
    print(block)
    if not args.no_write:
        write_marked_block(BENCH / "RESULTS.md", BEGIN, END, block)
    return 0 if same_export and same_records else 1


if __name__ == "__main__":
    raise SystemExit(main())
