"""Benchmark `dj-analyze`: what the analysis costs next to computing the stats; update
bench/RESULTS.md.

    python bench/analyze_bench.py                          # 20k image-text, 1M text-only
    python bench/analyze_bench.py --sizes 20000 --text-sizes   # no text-only case
    python bench/analyze_bench.py --no-write               # print only

Cases (corpora from bench/make_corpus.py, cached under bench/data/ as run_bench.py does):
- image-text: bench/recipes/cpu_clean.yaml's filters (text length, words, image shape,
  aspect ratio, file size; its deduplicators are not analysed, as in Data-Juicer).
- text-only: four text filters with `image_check: none` (no image is opened).

Each case runs `analyze_recipe` (what `dj-analyze` calls) in a fresh child process and reports
its phases: the stats run (the engine's stats-only run: reading, workers, the stats side file),
then the analysis proper (stats JSONL -> Parquet, describe/quantiles/plots per column, the
threshold what-ifs and correlation, the report). The ratio analysis / stats is measured in
the same run. Peak RSS is the main process's (reading, writing and the whole analysis run
there; the stats workers are separate processes, reported apart).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DATA = BENCH / "data"
OUT = BENCH / "out" / "analyze"
RESULTS = BENCH / "RESULTS.md"
BEGIN, END = "<!-- analyze_bench:begin -->", "<!-- analyze_bench:end -->"

TEXT_ONLY = {
    "project_name": "analyze-text-only",
    "dataset_path": "",
    "export_path": "",
    "np": 2,
    "image_check": "none",
    "process": [
        {"text_length_filter": {"min_len": 40, "max_len": 4000}},
        {"words_num_filter": {"min_num": 5, "max_num": 200}},
        {"character_repetition_filter": {"rep_len": 10, "max_ratio": 0.5}},
        {"special_characters_filter": {"max_ratio": 0.25}},
    ],
}


def corpus(n: int) -> Path:
    path = DATA / f"n{n}" / "corpus.jsonl"
    if not path.exists():
        subprocess.run(
            [sys.executable, str(BENCH / "make_corpus.py"), str(n), str(path.parent),
             "--pool-dir", str(DATA / "pool")],
            check=True,
        )  # fmt: skip
    return path


def child(recipe: str, overrides: list[str]) -> None:
    """One analysis, in this process; prints its figures as JSON on the last line."""
    from dj_synth.pipelines.recipe import load_recipe
    from dj_synth.tools.analyze import analyze_recipe, analyzer_options

    opts = analyzer_options(recipe, overrides)
    opts.progress = False
    rec = load_recipe(recipe, overrides)
    t0 = time.perf_counter()
    result = analyze_recipe(rec, opts)
    wall = time.perf_counter() - t0
    a = result.analysis
    assert a is not None
    print(
        json.dumps(
            {
                "wall_s": wall,
                "seconds": result.seconds,
                "rows": a.table.rows,
                "stats": len(a.table.kinds),
                "filters": len(a.whatif.filters),
                "judged": a.whatif.sampled,
                "figures": sum(f.endswith(".png") for f in result.files),
                "report_kib": os.path.getsize(result.report) / 1024,
                "parquet_mib": os.path.getsize(a.table.path) / 2**20,
                "main_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "workers_peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                "report": result.report,
            }
        )
    )


def child_analysis(recipe: str, stats_file: str, folder: str) -> None:
    """The analysis alone, in a fresh process, on a stats file already written: its peak RSS
    against the RSS of the imports (what memory the analysis itself adds)."""
    import matplotlib.pyplot  # noqa: F401  (part of the baseline, as in dj-analyze)

    from dj_synth.pipelines.recipe import load_recipe
    from dj_synth.tools.analyze.analysis import analyse
    from dj_synth.tools.analyze.stats_table import stats_table_from_files

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rec = load_recipe(recipe, [f"dataset_path={stats_file}"])
    table = stats_table_from_files([stats_file], os.path.join(folder, "stats.parquet"))
    analyse(table, rec.build_ops(), folder)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"imports_mib": base, "analysis_peak_mib": peak}))


def measure(case: str, recipe: Path, n: int, np_: int) -> dict:
    data = corpus(n)
    work = OUT / f"{case}-{n}"
    overrides = [f"dataset_path={data}", f"export_path={work}/result.jsonl",
                 f"work_dir={work}", f"np={np_}"]  # fmt: skip
    cmd = [sys.executable, __file__, "--child", str(recipe)] + [
        a for o in overrides for a in ("--set", o)
    ]
    load = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"{case} {n}: dj-analyze failed")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row.update(case=case, n=n, np=np_, load_before=load, load_after=os.getloadavg()[0])
    stats_file = str(work / "analysis" / "result_stats.jsonl")
    alone = subprocess.run(
        [sys.executable, __file__, "--child-analysis", str(recipe), stats_file,
         str(OUT / f"{case}-{n}-alone")],
        capture_output=True, text=True, cwd=REPO, check=True,
    )  # fmt: skip
    row.update(json.loads(alone.stdout.strip().splitlines()[-1]))
    s = row["seconds"]
    row["analysis_s"] = s["table"] + s["analysis"] + s["report"]
    row["ratio"] = row["analysis_s"] / s["stats"]
    print(
        f"{case} {n:,}: stats {s['stats']:.1f}s, analysis {row['analysis_s']:.1f}s "
        f"(table {s['table']:.1f}, describe+plots+what-ifs {s['analysis']:.1f}, report "
        f"{s['report']:.1f}) = {row['ratio']:.2f}x the stats; main peak "
        f"{row['main_peak_mib']:.0f} MiB; the analysis alone {row['analysis_peak_mib']:.0f} "
        f"MiB ({row['imports_mib']:.0f} MiB of imports); load {load:.1f} -> "
        f"{row['load_after']:.1f}",
        flush=True,
    )
    return row


def render(rows: list[dict], command: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        BEGIN,
        "### dj-analyze: analysis cost next to the stats (bench/analyze_bench.py)",
        "",
        f"`{command}`. Measured {when} on {os.cpu_count()} CPUs ({cpu}), Python "
        f"{platform.python_version()}. The machine is shared: load average (1 min) before "
        "and after each case is in the table, so compare the ratio (same run) rather than "
        "absolute seconds.",
        "",
        "| case | samples | filters / stats | stats run s | analysis s (Parquet + describe, "
        "plots, what-ifs + report) | analysis / stats | what-if rows | main process peak MiB "
        "| analysis alone: peak MiB (imports) | report KiB | load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        s = r["seconds"]
        lines.append(
            f"| {r['case']} | {r['n']:,} | {r['filters']} / {r['stats']} | {s['stats']:.1f} "
            f"| {r['analysis_s']:.1f} ({s['table']:.1f} + {s['analysis']:.1f} + "
            f"{s['report']:.1f}) | {r['ratio']:.2f}x | {r['judged']:,} "
            f"| {r['main_peak_mib']:.0f} | {r['analysis_peak_mib']:.0f} "
            f"({r['imports_mib']:.0f}) | {r['report_kib']:.0f} "
            f"| {r['load_before']:.1f} / {r['load_after']:.1f} |"
        )
    lines += [
        "",
        "Each case writes overall.csv, overall.md, a histogram and box plot per numeric stat, "
        "stats-corr-pearson.png and report.html under `bench/out/analyze/<case>-<n>/analysis/`. "
        "The main process peak covers reading and writing during the stats run as well; "
        "'analysis alone' re-runs only the analysis (stats JSONL -> Parquet, describe, plots, "
        "what-ifs, correlation) on the same stats file in a fresh process, next to what its "
        "imports alone take. The analysis reads the Parquet stats one column at a time "
        "(describe, quantiles, plots) and in 65,536-row batches (correlation, what-ifs on at "
        "most 100,000 evenly spaced rows): its memory grows by one column (8 bytes a value) "
        "with the number of samples, not with the number of stats.",
        END,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child-analysis":
        child_analysis(*argv[1:4])
        return 0
    if argv and argv[0] == "--child":
        overrides = [argv[i + 1] for i in range(2, len(argv) - 1, 2) if argv[i] == "--set"]
        child(argv[1], overrides)
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="*", default=[20000], help="image-text sizes")
    ap.add_argument("--text-sizes", type=int, nargs="*", default=[1000000],
                    help="text-only sizes")  # fmt: skip
    ap.add_argument("--np", type=int, default=2, dest="np_")
    ap.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(BENCH))
    OUT.mkdir(parents=True, exist_ok=True)
    text_recipe = OUT / "text_only.yaml"
    import yaml

    text_recipe.write_text(yaml.safe_dump(TEXT_ONLY, sort_keys=False))
    rows = [measure("image-text", BENCH / "recipes" / "cpu_clean.yaml", n, args.np_)
            for n in args.sizes]  # fmt: skip
    rows += [measure("text-only", text_recipe, n, args.np_) for n in args.text_sizes]
    if rows and not args.no_write:
        from results_block import write_marked_block

        command = "python bench/analyze_bench.py " + " ".join(argv)
        write_marked_block(RESULTS, BEGIN, END, render(rows, command.strip()))
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
