"""Time the README's tiny-challenge commands, verbatim, from an empty folder (CPU, tiny models).

    python bench/tiny_challenge_bench.py [--repeat 2]

Runs the README's ```bash block with `dj-synth make-tiny-challenge` line by line in a fresh
temporary folder (the console scripts of this environment first on PATH) and writes the wall
time of each command, dj-train's per-stage times and the machine (CPU, cores, load average
before and after: the figure depends on what else runs) to the ``tiny_challenge`` block of
bench/RESULTS.md. The README quotes the dj-train figure from there.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    block = next(b for b in blocks if "dj-synth make-tiny-challenge" in b)
    return [line.strip() for line in block.splitlines() if line.strip()]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_once(commands: list[str]) -> dict:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    with tempfile.TemporaryDirectory() as tmp:
        times = {}
        load_before = os.getloadavg()[0]
        cpu = {}
        for line in commands:
            began, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
            proc = subprocess.run(["bash", "-c", line], cwd=tmp, env=env, capture_output=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[line.split("#")[0].strip()] = round(
                after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1
            )
            if proc.returncode != 0:
                raise SystemExit(
                    f"{line!r} exited {proc.returncode}:\n{proc.stderr.decode()[-2000:]}"
                )
            times[line.split("#")[0].strip()] = round(time.perf_counter() - began, 1)
        state = json.loads(
            (Path(tmp) / "outputs/tiny_challenge/output/dj_train_state.json").read_text()
        )
        stages = {k: v.get("seconds") for k, v in state["stages"].items()}
        load = (load_before, os.getloadavg()[0])
        return {"commands": times, "cpu": cpu, "stages": stages, "load": load}


def render(runs: list[dict]) -> str:
    now = dt.datetime.now(dt.timezone.utc)
    lines = [
        "### README tiny challenge (make-tiny-challenge, dj-train, dj-pack; CPU, tiny models)",
        "",
        f"Measured {now:%Y-%m-%d %H:%M} UTC on {cpu_name()}, {os.cpu_count()} cores, no GPU "
        f"(shared: the 1-minute load average before/after each run is given). Command: "
        "`python bench/tiny_challenge_bench.py`. Wall seconds (and CPU seconds of the command's "
        "processes, user + system: less sensitive to the load), process starts and model loading "
        "included.",
        "",
        "| command | " + " | ".join(f"run {i + 1}" for i in range(len(runs))) + " |",
        "|---|" + "---:|" * len(runs),
    ]
    for cmd in runs[0]["commands"]:
        lines.append(
            f"| `{cmd}` (wall / CPU s) | "
            + " | ".join(f"{r['commands'][cmd]} / {r['cpu'][cmd]}" for r in runs)
            + " |"
        )
    for stage in runs[0]["stages"]:
        lines.append(
            f"| dj-train stage {stage} | "
            + " | ".join(str(r["stages"][stage]) for r in runs)
            + " |"
        )
    lines.append(
        "| load average before / after | "
        + " | ".join(f"{r['load'][0]:.1f} / {r['load'][1]:.1f}" for r in runs)
        + " |"
    )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = ap.parse_args()
    from results_block import write_marked_block

    runs = [run_once(readme_commands()) for _ in range(args.repeat)]
    block = render(runs)
    print(block)
    begin, end = "<!-- tiny_challenge:begin -->", "<!-- tiny_challenge:end -->"
    write_marked_block(args.out, begin, end, f"{begin}\n{block}\n{end}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
