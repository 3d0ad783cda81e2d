"""Benchmark `dj-run bench/recipes/cpu_clean.yaml` on synthetic corpora; update bench/RESULTS.md.

    python bench/run_bench.py                    # 2k and 20k (and 200k if 20k took < 60 s)
    python bench/run_bench.py --sizes 2000 20000 200000 --np 2
    python bench/run_bench.py --no-write         # print only
    python bench/run_bench.py --engine dj-synth-ray --sizes 2000 20000   # the Ray executor

Corpora are generated once (bench/make_corpus.py, seeded) and cached under bench/data/
(gitignored): one shared pool of at most 5000 distinct images, one corpus.jsonl per size.
Each run is `dj-run RECIPE --set dataset_path=... --set export_path=... --set np=N -q`
under `/usr/bin/time -v`; meanwhile /proc is polled every 50 ms for the resident memory of
the process tree, so both the LARGEST SINGLE PROCESS and the SUM OVER THE TREE are recorded
(the tree sum double-counts pages shared between forked workers; it is an upper bound).
Throughput = input samples / wall time of the whole command (start-up and import included).

`--engine data-juicer --dj-process PATH/TO/dj-process` runs Data-Juicer on the same corpora
(`dj-process --config RECIPE --dataset_path ... --export_path ... --np N`) for comparison.
Each (engine, recipe) pair has its own block in RESULTS.md, replaced on every run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DATA = BENCH / "data"
OUT = BENCH / "out"
RESULTS = BENCH / "RESULTS.md"
RECIPE = BENCH / "recipes" / "cpu_clean.yaml"


# ---------------------------------------------------------------------------
# memory of a process tree, from /proc (Linux)


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as fh:
                    kids.extend(int(x) for x in fh.read().split())
            except OSError:
                pass
    except OSError:
        pass
    return kids


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


class TreeMonitor(threading.Thread):
    """Polls the RSS of `root` and all its descendants; keeps the peaks."""

    def __init__(self, root: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peak_single_kib = 0
        self.peak_single_cmd = ""
        self.peak_sum_kib = 0
        self.max_procs = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            pids, todo = [], [self.root]
            while todo:
                pid = todo.pop()
                pids.append(pid)
                todo.extend(_children(pid))
            rss = {pid: _rss_kib(pid) for pid in pids}
            rss = {pid: r for pid, r in rss.items() if r > 0}
            if rss:
                total = sum(rss.values())
                big = max(rss, key=rss.__getitem__)
                if rss[big] > self.peak_single_kib:
                    self.peak_single_kib = rss[big]
                    self.peak_single_cmd = _cmdline(big)
                self.peak_sum_kib = max(self.peak_sum_kib, total)
                self.max_procs = max(self.max_procs, len(rss))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


# ---------------------------------------------------------------------------


def corpus(n: int) -> Path:
    path = DATA / f"n{n}" / "corpus.jsonl"
    if not path.exists():
        subprocess.run(
            [sys.executable, str(BENCH / "make_corpus.py"), str(n), str(path.parent),
             "--pool-dir", str(DATA / "pool")],
            check=True,
        )  # fmt: skip
    return path


def dj_run_command() -> list[str]:
    exe = Path(sys.executable).with_name("dj-run")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("dj-run")
    if found:
        return [found]
    return [sys.executable, "-c", "from dj_synth.pipelines.cli import app; app()"]


def run_one(
    n: int,
    np_: int,
    recipe: Path,
    engine: str = "dj-synth",
    dj_process: str = "",
    data: Path | None = None,
    out_dir: Path | None = None,
) -> dict:
    """One measured run over `data` (default: the make_corpus corpus of `n` samples);
    `out_dir` (default bench/out/ENGINE-RECIPE-nN-npNP) is wiped first."""
    data = data or corpus(n)
    out_dir = out_dir or OUT / f"{engine}-{recipe.stem}-n{n}-np{np_}"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    export = out_dir / "result.jsonl"
    time_log = out_dir / "time.txt"
    if engine.startswith("dj-synth"):
        cmd = dj_run_command() + [
            str(recipe), "--set", f"dataset_path={data}", "--set", f"export_path={export}",
            "--set", f"np={np_}", "-q",
        ]  # fmt: skip
        if engine == "dj-synth-ray":  # a local Ray instance started by the run (start-up included)
            cmd += ["--executor", "ray"]
    else:
        cmd = [
            dj_process, "--config", str(recipe), "--dataset_path", str(data),
            "--export_path", str(export), "--np", str(np_),
        ]  # fmt: skip
    timed = ["/usr/bin/time", "-v", "-o", str(time_log)] if os.path.exists("/usr/bin/time") else []
    t0 = time.perf_counter()
    with open(out_dir / "log.txt", "w") as log:
        proc = subprocess.Popen(timed + cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        mon = TreeMonitor(proc.pid)
        mon.start()
        proc.wait()
        wall = time.perf_counter() - t0
        mon.stop()
    if proc.returncode != 0:
        tail = (out_dir / "log.txt").read_text(errors="replace")[-4000:]
        raise SystemExit(f"{engine} failed (exit {proc.returncode}) on {data}:\n{tail}")
    if engine.startswith("dj-synth"):
        summary = json.loads((out_dir / "summary.json").read_text())
    else:  # Data-Juicer writes no account; count the export
        with open(export, "rb") as fh:
            exported = sum(1 for line in fh if line.strip())
        summary = {"elapsed_seconds": None, "exported_samples": exported, "quarantined_samples": 0,
                   "filtered": {"(all)": n - exported}, "ops": []}  # fmt: skip
    time_max_rss = None
    if time_log.exists():
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_log.read_text())
        time_max_rss = int(m.group(1)) if m else None
    row = {
        "engine": engine,
        "recipe": recipe.stem,
        "n": n,
        "np": np_,
        "wall_s": round(wall, 2),
        "run_s": summary["elapsed_seconds"],
        "samples_per_s": round(n / wall, 1),
        "peak_single_mib": round(mon.peak_single_kib / 1024, 1),
        "peak_single_cmd": mon.peak_single_cmd[:120],
        "peak_tree_mib": round(mon.peak_sum_kib / 1024, 1),
        "time_max_rss_mib": round(time_max_rss / 1024, 1) if time_max_rss else None,
        "procs": mon.max_procs,
        "exported": summary["exported_samples"],
        "filtered": summary["filtered"],
        "quarantined": summary["quarantined_samples"],
        "ops": {op["name"]: op["seconds"] for op in summary["ops"]},
    }
    print(json.dumps(row), flush=True)
    return row


# ---------------------------------------------------------------------------


def machine_info() -> dict[str, str]:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": nproc or str(os.cpu_count()),
        "cpu": cpu,
        "ram": mem,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }


def _marks(engine: str, recipe: str) -> tuple[str, str]:
    return (
        f"<!-- run_bench:{engine}:{recipe}:begin -->",
        f"<!-- run_bench:{engine}:{recipe}:end -->",
    )


def render(rows: list[dict], info: dict[str, str]) -> str:
    begin, end = _marks(rows[0]["engine"], rows[0]["recipe"])
    lines = [
        begin,
        f"`{rows[0]['engine']}`, `{rows[0]['recipe']}.yaml`. "
        f"Measured {info['date']} on {info['nproc']} CPUs ({info['cpu']}), {info['ram']} RAM, "
        f"Python {info['python']}, {info['os']}.",
        "",
        "| samples | np | wall s | samples/s | largest process MiB | process tree MiB "
        "| `time -v` max RSS MiB | exported | filtered | quarantined |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']:,} | {r['np']} | {r['wall_s']:.1f} | {r['samples_per_s']:,.0f} "
            f"| {r['peak_single_mib']:.0f} | {r['peak_tree_mib']:.0f} "
            f"| {r['time_max_rss_mib'] if r['time_max_rss_mib'] is not None else '-'} "
            f"| {r['exported']:,} | {sum(r['filtered'].values()):,} | {r['quarantined']:,} |"
        )
    names = list(rows[0]["ops"])
    if names:
        lines += ["", "Seconds inside each operator (summed over workers):", ""]
        lines.append("| samples | " + " | ".join(names) + " |")
        lines.append("|---:|" + "---:|" * len(names))
        for r in rows:
            lines.append(
                f"| {r['n']:,} | " + " | ".join(f"{r['ops'][k]:.2f}" for k in names) + " |"
            )
    lines.append(end)
    return "\n".join(lines)


def write_results(block: str, engine: str, recipe: str) -> None:
    from results_block import write_marked_block

    begin, end = _marks(engine, recipe)
    write_marked_block(RESULTS, begin, end, block)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=None,
                    help="corpus sizes (default: 2000 20000, then 200000 if 20000 ran < 60 s)")  # fmt: skip
    ap.add_argument("--np", type=int, default=2, dest="np_")
    ap.add_argument("--recipe", type=Path, default=RECIPE)
    ap.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    ap.add_argument("--engine", choices=["dj-synth", "dj-synth-ray", "data-juicer"],
                    default="dj-synth", help="dj-synth-ray: dj-synth with --executor ray")  # fmt: skip
    ap.add_argument("--dj-process", default="dj-process",
                    help="Data-Juicer's dj-process (e.g. in a separate venv)")  # fmt: skip
    args = ap.parse_args(argv)
    recipe = args.recipe.resolve()

    def one(n: int) -> dict:
        return run_one(n, args.np_, recipe, args.engine, args.dj_process)

    rows = []
    if args.sizes:
        rows = [one(n) for n in args.sizes]
    else:
        rows = [one(2000), one(20000)]
        if rows[-1]["wall_s"] < 60:
            rows.append(one(200000))
    block = render(rows, machine_info())
    print(block)
    if not args.no_write:
        write_results(block, args.engine, recipe.stem)
    return 0


if __name__ == "__main__":
    sys.exit(main())
