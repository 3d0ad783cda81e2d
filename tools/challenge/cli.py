"""Console entries: ``dj-train config.yaml`` (the whole challenge flow) and ``dj-pack``.

Exit codes: 0 done, 2 a config mistake or a refused package (nothing ran / nothing written),
1 a stage that failed (its name, exit code and log are printed).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import typer

from dj_synth.tools.cli_common import VersionOpt, make_app, run_app
from dj_synth.tools.eval.mmbench import DEFAULT_SPLIT

from .config import DEFAULT_SEED, ConfigError, load_flow_config
from .flow import STAGE_NAMES, FlowError, FlowInterrupted, run_flow
from .pack import DEFAULT_CAP

EXIT_CONFIG = 2  # a config mistake or a refused package: nothing ran, nothing written
EXIT_FAILED = 1  # a stage failed

train_app = make_app(commands=False)
StageName = Literal[tuple(STAGE_NAMES)]  # type: ignore[valid-type]  # --from-stage choices


@train_app.command()
def _train(
    config: Annotated[Path, typer.Argument(metavar="CONFIG", help="The flow config (YAML).")],
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Skip the stages that finished and whose inputs are unchanged; "
            "rerun from the first one that is out of date.",
        ),
    ] = False,
    from_stage: Annotated[
        StageName | None,
        typer.Option(
            "--from-stage",
            metavar="STAGE",
            help=f"Redo STAGE and every later one ({', '.join(STAGE_NAMES)}).",
        ),
    ] = None,
    until: Annotated[
        StageName | None,
        typer.Option("--until", metavar="STAGE", help="Stop after STAGE."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and print train.sh; run nothing.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="Stage output only in the logs.")] = False,
    seeds: Annotated[
        int | None,
        typer.Option(
            "--seeds",
            min=1,
            metavar="N",
            help=f"Train and evaluate with N seeds ({DEFAULT_SEED}, {DEFAULT_SEED + 1}, ...; "
            "overrides the config's seeds) and report each score as mean +- std.",
        ),
    ] = None,
    version: VersionOpt = False,
) -> None:
    """recipe -> cap -> LLaVA JSON -> pretrain -> finetune -> TextVQA + MMBench -> scores, from
    one config file (see recipes/challenge_flow.yaml). Exit 0 done, 2 config error, 1 a stage
    failed, 130 interrupted."""
    raise typer.Exit(train(config, resume, from_stage, until, dry_run, quiet, seeds))


def train(
    config: str | Path,
    resume: bool = False,
    from_stage: str | None = None,
    until: str | None = None,
    dry_run: bool = False,
    quiet: bool = False,
    seeds: int | None = None,
) -> int:
    """``dj-train``'s work; returns the exit code."""
    try:
        rc = load_flow_config(config)
        if seeds is not None:
            rc.cfg = rc.cfg.model_copy(update={"seeds": [DEFAULT_SEED + i for i in range(seeds)]})
        if dry_run:
            from .flow import active_stages, render_script

            print(render_script(rc, active_stages(rc)))
            return 0
        state = run_flow(rc, resume=resume, from_stage=from_stage, until=until, echo=not quiet)
    except ConfigError as exc:
        print(f"dj-train: config error:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    except FlowInterrupted as exc:
        print(f"dj-train: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # before any stage started
        print("dj-train: interrupted", file=sys.stderr)
        return 130
    except FlowError as exc:
        print(f"dj-train: {exc}", file=sys.stderr)
        return EXIT_FAILED
    from .flow import SEED_SCORES, plan_units

    dirs = {
        u.key: u.rc.pretrain_dir if u.stage.name == "pretrain" else u.rc.finetune_dir
        for u in plan_units(rc)
        if u.stage.name in ("pretrain", "finetune")
    }
    summary = rc.output_dir / SEED_SCORES if len(rc.seeds) > 1 else None
    print_summary(state, rc.eval_dir / "scores.json", dirs, summary)
    return 0


def train_main(argv: Sequence[str] | None = None) -> int:
    """``dj-train`` console entry: ``train_main(["flow.yaml", "--resume"])`` returns the code."""
    return run_app(train_app, "dj-train", argv)


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


def print_summary(
    state: dict, scores_path: Path, train_dirs: dict[str, Path], seed_scores: Path | None = None
) -> None:
    """Stage times, training losses and the local scores as small tables; with several seeds
    also each score's mean +- std over them (``seed_scores``, the summary stage's file)."""
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
        first = f" (first seed, {scores.get('seed')})" if seed_scores is not None else ""
        t = Table(title=f"local scores{first}")
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
        console.print(f"scores: {scores_path}", soft_wrap=True)  # one line, never wrapped
    if seed_scores is not None and seed_scores.is_file():
        summary = json.loads(seed_scores.read_text())
        seeds = summary.get("seeds", [])
        t = Table(title=f"over {len(seeds)} seeds (mean +- std; sample std)")
        t.add_column("score")
        t.add_column("mean +- std", justify="right")
        t.add_column(f"seeds {', '.join(str(s) for s in seeds)}", justify="right")
        for bench, label in (("textvqa", "TextVQA"), ("mmbench", "MMBench")):
            for key, value in summary.get(bench, {}).items():
                name = label + (" circular" if key == "circular_accuracy" else "")
                t.add_row(
                    name, f"{value['mean']:.2f} +- {value['std']:.2f}",
                    ", ".join(f"{v:.2f}" for v in value["values"]),
                )  # fmt: skip
        console.print(t)
        console.print(f"over seeds: {seed_scores}", soft_wrap=True)


pack_app = make_app(commands=False)


@pack_app.command()
def _pack(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="FLOW.yaml",
            help="The dj-train config: takes --output-dir, --exp, --solution, --split and -o "
            "from it (zip: the flow's folder/submit.zip).",
        ),
    ] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", help="The toolkit's output/ folder.  [default: output]"),
    ] = None,
    exp: Annotated[
        str | None, typer.Option("--exp", help="EXP_NAME used in train.sh.  [default: default]")
    ] = None,
    solution: Annotated[
        list[Path] | None,
        typer.Option(
            "--solution",
            metavar="PATH",
            help="Recipes/code to include under solution/ (repeatable; a folder recursively; "
            "a folder named solution/ becomes the package's solution/).",
        ),
    ] = None,
    pretrain_data: Annotated[
        Path | None,
        typer.Option(
            "--pretrain-data",
            help="The LLaVA JSON/JSONL used for pretraining (default: from dj_train_state.json).",
        ),
    ] = None,
    split: Annotated[
        str | None, typer.Option("--split", help=f"MMBench split.  [default: {DEFAULT_SPLIT}]")
    ] = None,
    cap: Annotated[int, typer.Option("--cap", help="Max pretraining samples.")] = DEFAULT_CAP,
    zip_path: Annotated[
        Path | None, typer.Option("-o", "--zip", help="Zip to write.  [default: submit.zip]")
    ] = None,
    version: VersionOpt = False,
) -> None:
    """Check a finished challenge run and package it as submit.zip (solution/ + output/ logs
    and eval results + MANIFEST.json). With --config the output folder, experiment, solution
    and split come from the dj-train config; explicit flags win. Exit 0 written, 2 refused
    (every reason on stderr), 1 an I/O error."""
    from . import pack

    if config is not None:
        try:
            rc = load_flow_config(config, check_inputs=False)
        except ConfigError as exc:
            print(f"dj-pack: config error:\n{exc}", file=sys.stderr)
            raise typer.Exit(EXIT_CONFIG) from None
        output_dir = output_dir or rc.output_dir
        exp = exp or rc.cfg.exp_name
        if not solution:
            items = rc.cfg.solution or ([rc.cfg.recipe] if rc.cfg.recipe else [])
            solution = [rc.path(item) for item in items]
        if rc.cfg.eval.mmbench and split is None:
            split = rc.cfg.eval.mmbench.split
        zip_path = zip_path or rc.root / "submit.zip"
    zip_path = zip_path or Path("submit.zip")
    try:
        entries = pack.pack_submission(
            output_dir or Path("output"), exp or "default", solution or [], zip_path,
            split=split or DEFAULT_SPLIT, pretrain_data=pretrain_data, cap=cap,
        )  # fmt: skip
    except pack.PackError as exc:
        for line in exc.problems:
            print(f"dj-pack: refused: {line}", file=sys.stderr)
        raise typer.Exit(EXIT_CONFIG) from None
    except OSError as exc:
        print(f"dj-pack: error: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_FAILED) from None
    print(pack.format_manifest(entries))
    print(f"wrote {zip_path}")


def pack_main(argv: Sequence[str] | None = None) -> int:
    """``dj-pack`` console entry; returns the exit code."""
    return run_app(pack_app, "dj-pack", argv)


if __name__ == "__main__":
    sys.exit(train_main())
