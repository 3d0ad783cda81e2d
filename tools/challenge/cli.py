"""Console entries: ``dj-train config.yaml`` (the whole challenge flow) and ``dj-pack``.

Exit codes: 0 done, 2 a config mistake or a refused package (nothing ran / nothing written),
1 a stage that failed (its name, exit code and log are printed).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import ConfigError, load_flow_config
from .flow import STAGE_NAMES, FlowError, run_flow


def train_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dj-train",
        description="recipe -> cap -> LLaVA JSON -> pretrain -> finetune -> TextVQA + MMBench "
        "-> scores, from one config file (see recipes/challenge_flow.yaml)",
    )
    parser.add_argument("config", help="the flow config (YAML)")
    parser.add_argument(
        "--resume", action="store_true", help="skip the stages that finished earlier"
    )
    parser.add_argument(
        "--from-stage", choices=STAGE_NAMES, help="redo this stage and every later one"
    )
    parser.add_argument("--until", choices=STAGE_NAMES, help="stop after this stage")
    parser.add_argument(
        "--dry-run", action="store_true", help="validate and print train.sh, run nothing"
    )
    parser.add_argument("--quiet", action="store_true", help="stage output only in the logs")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        rc = load_flow_config(args.config)
        if args.dry_run:
            from .flow import active_stages, render_script

            print(render_script(rc, active_stages(rc)))
            return 0
        state = run_flow(
            rc, resume=args.resume, from_stage=args.from_stage, until=args.until,
            echo=not args.quiet,
        )  # fmt: skip
    except ConfigError as exc:
        print(f"dj-train: config error:\n{exc}", file=sys.stderr)
        return 2
    except FlowError as exc:
        print(f"dj-train: {exc}", file=sys.stderr)
        return 1
    dirs = {"pretrain": rc.pretrain_dir, "finetune": rc.finetune_dir}
    print_summary(state, rc.eval_dir / "scores.json", dirs)
    return 0


def loss_summary(output_dir: Path) -> str:
    """``first -> last (steps)`` training loss from the Trainer's ``trainer_state.json``:
    participants compare runs by their pretrain loss (the final scores are seed-noisy)."""
    import json

    path = output_dir / "trainer_state.json"
    if not path.is_file():
        return ""
    history = json.loads(path.read_text()).get("log_history", [])
    losses = [(h["step"], h["loss"]) for h in history if "loss" in h]
    if not losses:
        return ""
    return f"{losses[0][1]:.3f} -> {losses[-1][1]:.3f} ({losses[-1][0]} steps)"


def print_summary(state: dict, scores_path: Path, train_dirs: dict[str, Path]) -> None:
    """Stage times, training losses and the local scores as small tables."""
    import json

    from rich.console import Console
    from rich.table import Table

    table = Table(title="dj-train", show_header=True)
    table.add_column("stage")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    table.add_column("loss")
    for name, info in state["stages"].items():
        loss = loss_summary(train_dirs[name]) if name in train_dirs else ""
        table.add_row(name, info.get("status", ""), str(info.get("seconds", "")), loss)
    console = Console()
    console.print(table)
    if scores_path.is_file():
        scores = json.loads(scores_path.read_text())
        t = Table(title="local scores")
        t.add_column("benchmark")
        t.add_column("accuracy %", justify="right")
        t.add_column("circular %", justify="right")
        t.add_column("questions", justify="right")
        if "textvqa" in scores:
            tv = scores["textvqa"]
            t.add_row("TextVQA", f"{tv['accuracy']:.2f}", "", str(tv["samples"]))
        if "mmbench" in scores:
            mm = scores["mmbench"]
            t.add_row(
                "MMBench", f"{mm['accuracy']:.2f}", f"{mm['circular_accuracy']:.2f}",
                str(mm["questions"]),
            )  # fmt: skip
            for cat, c in mm.get("per_category", {}).items():
                t.add_row(
                    f"  {cat}", f"{c['accuracy']:.2f}", f"{c['circular_accuracy']:.2f}",
                    str(c["questions"]),
                )  # fmt: skip
        console.print(t)
        console.print(f"scores: {scores_path}")


def pack_main(argv: Sequence[str] | None = None) -> int:
    """``dj-pack``; with ``--config`` the output folder, experiment and solution come from the
    flow config (explicit flags still win)."""
    from . import pack

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            print("dj-pack: --config needs a file", file=sys.stderr)
            return 2
        path = argv[i + 1]
        argv = argv[:i] + argv[i + 2 :]
        try:
            rc = load_flow_config(path, check_inputs=False)
        except ConfigError as exc:
            print(f"dj-pack: config error:\n{exc}", file=sys.stderr)
            return 2
        given = {a.split("=")[0] for a in argv}
        extra: list[str] = []
        if "--output-dir" not in given:
            extra += ["--output-dir", str(rc.output_dir)]
        if "--exp" not in given:
            extra += ["--exp", rc.cfg.exp_name]
        if "--solution" not in given:
            items = rc.cfg.solution or ([rc.cfg.recipe] if rc.cfg.recipe else [])
            for item in items:
                extra += ["--solution", str(rc.path(item))]
        if rc.cfg.eval.mmbench and "--split" not in given:
            extra += ["--split", rc.cfg.eval.mmbench.split]
        if "-o" not in given and "--zip" not in given:
            extra += ["-o", str(rc.root / "submit.zip")]
        argv = extra + argv
    return pack.pack_main(argv)


if __name__ == "__main__":
    sys.exit(train_main())
