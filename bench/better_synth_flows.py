"""Run the four published Better Synth recipes through the whole challenge flow (CPU, tiny models).

    python bench/better_synth_flows.py [--only text_to_image.yaml ...]

In a fresh temporary tiny challenge (`dj-synth make-tiny-challenge`) with the tiny random
models, each recipe of recipes/better_synth/ is set up as its header documents
(tools/challenge/published.py: the tiny-model overrides, the flow settings, the cap fill),
its earlier steps run with `dj-run`, then `dj-train` runs every stage (recipe, cap, convert,
pretrain, finetune, TextVQA, MMBench, scores) and `dj-pack` packages it. The wall time of
each command, dj-train's per-stage seconds, the pretraining sample count and dj-pack's
verdict go to the ``better_synth_flows`` block of bench/RESULTS.md, with the machine and
the load average (the figures depend on what else runs). The CI tests take these recipes to
the LLaVA JSON only and one of them through training; this runs all four to the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

MODELS = ("blip2", "clip", "blip_itm", "nsfw", "aesthetics", "qwen2_vl", "llava",
          "stable_diffusion")  # fmt: skip


def _run(argv: list[str], cwd: Path, log: Path) -> float:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    began = time.perf_counter()
    with log.open("wb") as fh:
        proc = subprocess.run(argv, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}; log: {log}")
    return round(time.perf_counter() - began, 1)


def run_recipe(root: Path, recipe: str, models: dict[str, str]) -> dict:
    from dj_synth.tools.challenge.published import write_tiny_flow

    earlier, config = write_tiny_flow(root, recipe, models)
    stem = recipe.removesuffix(".yaml")
    logs = root / f"logs_{stem}"
    logs.mkdir()
    load_before = os.getloadavg()[0]
    times = {}
    for path in earlier:
        times[f"dj-run {path.name}"] = _run(["dj-run", "-q", str(path)], root, logs / path.name)
    times["dj-train"] = _run(["dj-train", str(config), "--quiet"], root, logs / "train.log")
    zip_path = root / f"submit_{stem}.zip"
    times["dj-pack"] = _run(
        ["dj-pack", "--config", str(config), "-o", str(zip_path)], root, logs / "pack.log"
    )
    state = json.loads((root / f"output_{stem}/dj_train_state.json").read_text())
    llava = json.loads(Path(state["pretrain_data"]).read_text())
    return {
        "recipe": recipe, "times": times,
        "stages": {k: v.get("seconds") for k, v in state["stages"].items()},
        "pretrain_samples": len(llava), "packed": zip_path.is_file(),
        "load": (load_before, os.getloadavg()[0]),
    }  # fmt: skip


def render(results: list[dict]) -> str:
    from tiny_challenge_bench import cpu_name

    now = dt.datetime.now(dt.timezone.utc)
    stages = list(results[0]["stages"])
    lines = [
        "### Published Better Synth recipes, whole flow (tiny challenge, CPU, tiny models)",
        "",
        f"Measured {now:%Y-%m-%d %H:%M} UTC on {cpu_name()}, {os.cpu_count()} cores, no GPU, "
        "shared with other work (1-minute load average before / after each flow given). "
        "Command: `python bench/better_synth_flows.py`. Each recipe set up as its header "
        "documents (tiny-model overrides, flow settings, cap fill), its earlier steps run with "
        "dj-run, then dj-train through every stage and dj-pack. Wall seconds, process starts "
        "and model loading included; random weights, so no score means anything. A busy "
        "machine stretches every figure: compare the flows of one run with each other.",
        "",
        "| | " + " | ".join(f"`{r['recipe']}`" for r in results) + " |",
        "|---|" + "---:|" * len(results),
    ]

    def row(name: str, cells: list[object]) -> None:
        lines.append(f"| {name} | " + " | ".join(str(c) for c in cells) + " |")

    row("earlier steps (dj-run), s", [
        sum(v for k, v in r["times"].items() if k.startswith("dj-run")) or "-" for r in results
    ])  # fmt: skip
    row("dj-train, s", [r["times"]["dj-train"] for r in results])
    for stage in stages:
        row(f"&nbsp;&nbsp;stage {stage}, s", [r["stages"].get(stage) for r in results])
    row("dj-pack, s", [r["times"]["dj-pack"] for r in results])
    row("pretraining samples (after the cap)", [r["pretrain_samples"] for r in results])
    row("submit.zip accepted (synthesis step found)", ["yes" if r["packed"] else "no"
                                                       for r in results])  # fmt: skip
    row("load average before / after", [f"{r['load'][0]:.1f} / {r['load'][1]:.1f}"
                                        for r in results])  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    from dj_synth.tools.challenge.published import PUBLISHED
    from dj_synth.tools.challenge.tiny import make_challenge
    from dj_synth.tools.tiny_models import make_tiny_models

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=list(PUBLISHED), help="recipe file names")
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    ap.add_argument("--keep", action="store_true", help="keep the challenge folder")
    args = ap.parse_args()
    from results_block import write_marked_block

    tmp = Path(tempfile.mkdtemp(prefix="better_synth_flows-"))
    models = make_tiny_models(tmp / "tiny_models", seed=0, names=MODELS)
    root = tmp / "challenge"
    make_challenge(root, blip2=models["blip2"])
    results = []
    for recipe in args.only:
        print(f"[bench] {recipe} ...", flush=True)
        results.append(run_recipe(root, recipe, models))
        print(json.dumps(results[-1]), flush=True)
    block = render(results)
    print(block)
    begin, end = "<!-- better_synth_flows:begin -->", "<!-- better_synth_flows:end -->"
    write_marked_block(args.out, begin, end, f"{begin}\n{block}\n{end}")
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"[bench] kept {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
