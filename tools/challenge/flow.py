"""The one-command challenge flow: recipe -> cap -> LLaVA JSON -> pretrain -> finetune -> eval.

Every stage is a list of shell commands; the flow runs them and writes the same commands to
``output/train.sh``, so the script is exactly what was done (and reruns it by hand). Progress is
kept in ``output/dj_train_state.json``, with the fingerprints of what each stage consumed and
wrote (``fingerprint.py``): a rerun with ``--resume`` skips the stages that are still current and
reruns from the first that is not, ``--from-stage`` redoes a stage and everything after it, and
a failed stage is named with its exit code and log. Training output follows the toolkit's tree
(``output/training_dirs/MGM-2B-{Pretrain,Finetune}-<EXP>/{pretrain,finetuning}.log``,
``output/eval_results/MGM-2B-Finetune-<EXP>/...``) so ``dj-pack`` and the organisers find it.
With several ``seeds`` the data stages run once and the training and evaluation stages once per
seed (``plan_units``): the first seed in that tree, the others in the same tree under
``output/seeds/seed-<S>/``, then a ``summary`` stage writes each score's mean +- std.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ResolvedConfig
from .fingerprint import Fingerprints, text_digest

STATE_FILE = "dj_train_state.json"
SEED_SCORES = "seed_scores.json"  # with several seeds: each score's mean +- std over them
PY = "$PYTHON"  # rendered in train.sh; replaced by sys.executable when run
# Library noise kept out of the stage logs (exported in train.sh too; the caller's environment
# wins): transformers' warnings and load reports (e.g. a CLIP checkpoint's unused text tower,
# 23 lines per load), and its weight-loading / shard-writing progress bars.
STAGE_ENV = {"TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")  # colour and cursor codes: not in logs


class FlowError(RuntimeError):
    """A stage failed or a rerun cannot go on; the message says which and why."""


@dataclass
class Command:
    argv: list[str]
    log: Path | None = None  # tee stdout+stderr here (overwritten), as the toolkit's `| tee`

    def render(self) -> str:
        line = " ".join(a if a == PY else shlex.quote(a) for a in self.argv)
        if self.log is not None:
            line += f" 2>&1 | tee {shlex.quote(str(self.log))}"
        return line


@dataclass
class Stage:
    name: str
    describe: str
    commands: Callable[[ResolvedConfig], list[Command]]
    outputs: Callable[[ResolvedConfig], list[Path]]  # must exist for the stage to count as done
    # Files and folders the stage reads (upstream outputs, data, models): with its command
    # lines, their fingerprints decide whether a finished stage is still current.
    inputs: Callable[[ResolvedConfig], list[Path | None]] = lambda rc: []
    code: Callable[[ResolvedConfig], list[Path]] = lambda rc: []  # fingerprinted recursively
    # What later stages and dj-pack take from it (default: `outputs`), fingerprinted when done.
    products: Callable[[ResolvedConfig], list[Path]] | None = None
    # Folders a rerun must clear first: HF resumes from `checkpoint-*`, which after a new
    # pretrain would silently continue the old finetune. Kept only when resuming the same
    # stage, with the same inputs, after it was interrupted or failed.
    stale: Callable[[ResolvedConfig], list[Path]] = lambda rc: []


# ----------------------------------------------------------------------------- commands


def _module(name: str, *args: Any) -> list[str]:
    return [PY, "-m", name, *[str(a) for a in args]]


def _recipe(rc: ResolvedConfig) -> list[Command]:
    return [
        Command(
            _module("dj_synth.pipelines.cli", rc.path(rc.cfg.recipe)),
            log=rc.output_dir / "logs" / "recipe.log",
        )
    ]


def _cap(rc: ResolvedConfig) -> list[Command]:
    p = rc.cfg.pretrain
    argv = _module(
        "dj_synth.tools.convert_cli", "cap", rc.dataset, rc.capped, "--max-samples", p.cap
    )
    if p.select == "top":
        argv += ["--by", p.select_by]
        if p.stats_file:
            argv += ["--stats-file", str(rc.path(p.stats_file))]
    if p.fill:
        argv.append("--fill")
    return [Command(argv, log=rc.output_dir / "logs" / "cap.log")]


def _convert(rc: ResolvedConfig) -> list[Command]:
    argv = _module(
        "dj_synth.tools.convert_cli",
        "dj-to-llava",
        rc.capped,
        rc.llava_json,
        "--image_special_token",
        "<__dj__image>",
        "--restore_questions",
        "True",
        "--original_llava_ds_path",
        rc.path(rc.cfg.pretrain.original_llava),
    )
    return [Command(argv, log=rc.output_dir / "logs" / "convert.log")]


def _launcher(rc: ResolvedConfig) -> list[str]:
    if rc.launcher() == "deepspeed":
        return [
            "deepspeed",
            "--num_gpus",
            str(rc.train_gpus()),
            "--module",
            "dj_synth.tools.mgm.train",
            "--deepspeed",
            str(rc.deepspeed_config_path()),
        ]
    return _module("dj_synth.tools.mgm.train")


def _train_args(rc: ResolvedConfig, stage: str) -> list[str]:
    """The toolkit's ``train_mem.py`` arguments for one stage (train_mgm_2b_stage_1.sh)."""
    cfg, zoo = rc.cfg, rc.cfg.model_zoo
    s = getattr(cfg, stage)
    pre = stage == "pretrain"
    args = [
        "--model_name_or_path", rc.path(zoo.llm), "--version", "gemma",
        "--data_path", rc.llava_json if pre else rc.path(s.data_path),
        "--image_folder", rc.path(s.image_folder),
        "--vision_tower", rc.path(zoo.vision_tower),
        "--vision_tower_aux", rc.path(zoo.vision_tower_aux),
    ]  # fmt: skip
    if pre:
        args += ["--mm_projector_type", "mlp2x_gelu", "--tune_mm_mlp_adapter", "True"]
    else:
        args += [
            "--pretrain_mm_mlp_adapter", rc.pretrain_dir / "mm_projector.bin",
            "--mm_projector_type", "mlp2x_gelu",
        ]  # fmt: skip
    args += [
        "--mm_vision_select_layer", "-2", "--mm_use_im_start_end", "False",
        "--mm_use_im_patch_token", "False",
    ]  # fmt: skip
    if not pre:
        args += ["--image_aspect_ratio", "pad", "--group_by_modality_length", "True"]
    smoke = cfg.smoke
    args += [
        "--image_size_aux", zoo.image_size_aux,
        "--bf16", cfg.bf16,
        "--output_dir", rc.pretrain_dir if pre else rc.finetune_dir,
        "--num_train_epochs", 1,
        "--per_device_train_batch_size", s.per_device_train_batch_size,
        "--per_device_eval_batch_size", 4,
        "--gradient_accumulation_steps", s.gradient_accumulation_steps,
        "--evaluation_strategy", "no",
        "--save_strategy", "steps",
        "--save_steps", cfg.save_steps,
        "--save_total_limit", cfg.save_total_limit,
        "--learning_rate", "1e-3" if pre else "2e-5",
        "--weight_decay", "0.",
        "--warmup_ratio", 0.03,
        "--lr_scheduler_type", "cosine",
        "--logging_steps", cfg.logging_steps,
        "--tf32", cfg.tf32,
        "--model_max_length", smoke.model_max_length or 2048,
        "--gradient_checkpointing", True,
        "--dataloader_num_workers", s.dataloader_num_workers,
        "--lazy_preprocess", True,
        "--report_to", "none",
        "--fidelity", cfg.fidelity,
        "--seed", rc.seed,  # the Trainer's: data order, stochastic depth (init stays 1024)
    ]  # fmt: skip
    if smoke.max_steps:
        args += ["--max_steps", smoke.max_steps]
    if smoke.attn_implementation:
        args += ["--attn_implementation", smoke.attn_implementation]
    return [str(a) for a in args]


def _pretrain(rc: ResolvedConfig) -> list[Command]:
    return [
        Command(_launcher(rc) + _train_args(rc, "pretrain"), log=rc.pretrain_dir / "pretrain.log")
    ]


def _finetune(rc: ResolvedConfig) -> list[Command]:
    return [
        Command(_launcher(rc) + _train_args(rc, "finetune"), log=rc.finetune_dir / "finetuning.log")
    ]


def _infer_common(rc: ResolvedConfig) -> list[str]:
    args = ["--model-path", str(rc.finetune_dir), "--temperature", "0", "--conv-mode", "gemma"]
    args += ["--fidelity", rc.cfg.fidelity, "--no-progress"]
    if rc.cfg.fidelity == "fast":
        args += ["--batch-size", str(rc.cfg.eval.batch_size or 8)]
    if rc.cfg.smoke.max_new_tokens:
        args += ["--max-new-tokens", str(rc.cfg.smoke.max_new_tokens)]
    return args


def _textvqa(rc: ResolvedConfig) -> list[Command]:
    t = rc.cfg.eval.textvqa
    assert t is not None
    out = rc.eval_dir / "textvqa"
    argv = _module("dj_synth.tools.mgm.infer", "textvqa")
    argv += ["--question-file", str(rc.path(t.question_file))]
    argv += ["--image-folder", str(rc.path(t.image_folder))]
    argv += _infer_common(rc)
    argv += ["--gpus", ",".join(rc.inference_gpus()), "--out-dir", str(out)]
    argv += ["--answers-file", str(out / "bm1.jsonl")]
    return [Command(argv, log=rc.output_dir / "logs" / "textvqa.log")]


def mmbench_paths(rc: ResolvedConfig) -> tuple[Path, Path]:
    """``answers/<split>/<CKPT>.jsonl`` and ``answers_upload/<split>/<CKPT>.xlsx``."""
    m = rc.cfg.eval.mmbench
    assert m is not None
    base = rc.eval_dir / "mmbench"
    return (
        base / "answers" / m.split / f"{rc.finetune_name}.jsonl",
        base / "answers_upload" / m.split / f"{rc.finetune_name}.xlsx",
    )


def _mmbench(rc: ResolvedConfig) -> list[Command]:
    m = rc.cfg.eval.mmbench
    assert m is not None
    answers, upload = mmbench_paths(rc)
    tsv = str(rc.path(m.question_file))
    infer = _module("dj_synth.tools.mgm.infer", "mmbench", "--question-file", tsv)
    infer += _infer_common(rc) + ["--lang", m.lang, "--single-pred-prompt"]
    # chunks go beside, not into, answers/<split>/ (the upload step reads every file there)
    infer += ["--gpus", ",".join(rc.inference_gpus())]
    infer += ["--out-dir", str(rc.eval_dir / "mmbench" / "chunks"), "--answers-file", str(answers)]
    convert = _module(
        "dj_synth.tools.eval.cli", "mmbench", "--annotation-file", tsv,
        "--result-file", answers, "--upload-xlsx", upload, "--match", rc.cfg.eval.match,
    )  # fmt: skip
    log = rc.output_dir / "logs" / "mmbench.log"
    return [
        Command(infer, log=log),
        Command(convert, log=rc.output_dir / "logs" / "mmbench_upload.log"),
    ]


def _scores(rc: ResolvedConfig) -> list[Command]:
    argv = _module("dj_synth.tools.eval.cli", "scores", "--out", rc.eval_dir / "scores.json")
    argv += ["--fidelity", rc.cfg.fidelity, "--seed", str(rc.seed)]
    t, m = rc.cfg.eval.textvqa, rc.cfg.eval.mmbench
    if t is not None and t.annotation_file:
        argv += ["--textvqa-annotation", str(rc.path(t.annotation_file))]
        argv += ["--textvqa-result", str(rc.eval_dir / "textvqa" / "bm1.jsonl")]
    if m is not None:
        argv += ["--mmbench-annotation", str(rc.path(m.question_file))]
        argv += ["--mmbench-result", str(mmbench_paths(rc)[0]), "--match", rc.cfg.eval.match]
    return [Command(argv, log=rc.output_dir / "logs" / "scores.log")]


def _summary(rc: ResolvedConfig) -> list[Command]:
    argv = _module("dj_synth.tools.eval.cli", "summarize", "--out", rc.output_dir / SEED_SCORES)
    argv += [str(view.eval_dir / "scores.json") for view in rc.seed_views()]
    return [Command(argv, log=rc.output_dir / "logs" / "summary.log")]


def _zoo(rc: ResolvedConfig) -> list[Path | None]:
    z = rc.cfg.model_zoo
    return [rc.path(z.llm), rc.path(z.vision_tower), rc.path(z.vision_tower_aux)]


def _recipe_inputs(rc: ResolvedConfig) -> list[Path | None]:
    """The recipe's dataset and every existing file or folder an operator argument names
    (word lists, model folders), resolved from ``root`` as the recipe runs there."""
    import yaml

    try:
        data = yaml.safe_load(Path(str(rc.path(rc.cfg.recipe))).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []
    if not isinstance(data, dict):
        return []
    named = data.get("dataset_path")
    named = list(named) if isinstance(named, list) else [named]
    process = data.get("process")
    for entry in process if isinstance(process, list) else []:
        for args in entry.values() if isinstance(entry, dict) else []:
            if isinstance(args, dict):
                named += [v for v in args.values() if isinstance(v, str)]
    found = []
    for value in named:
        if not isinstance(value, str) or not value or "\n" in value or len(value) > 4096:
            continue
        p = rc.path(value)
        try:
            exists = p is not None and p.exists()
        except (OSError, ValueError):  # not a path at all (a NUL, a name too long)
            continue
        if exists and not _within(p, rc.output_dir):  # type: ignore[arg-type]
            found.append(p)
    return found


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _recipe_code(rc: ResolvedConfig) -> list[Path]:
    """The recipe file and its custom operators (``custom_operator_paths``)."""
    import yaml

    recipe = rc.path(rc.cfg.recipe)
    assert recipe is not None
    try:
        data = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return [recipe]
    custom = data.get("custom_operator_paths") if isinstance(data, dict) else None
    paths = [recipe]
    for item in custom if isinstance(custom, list) else []:
        p = Path(str(item))
        paths.append(p if p.is_absolute() else recipe.parent / p)  # as the recipe loader does
    return paths


def _textvqa_inputs(rc: ResolvedConfig) -> list[Path | None]:
    t = rc.cfg.eval.textvqa
    assert t is not None
    return [rc.finetune_dir, rc.path(t.question_file), rc.path(t.image_folder), *_zoo(rc)]


def _mmbench_inputs(rc: ResolvedConfig) -> list[Path | None]:
    m = rc.cfg.eval.mmbench
    assert m is not None
    return [rc.finetune_dir, rc.path(m.question_file), *_zoo(rc)]


def _scores_inputs(rc: ResolvedConfig) -> list[Path | None]:
    t, m = rc.cfg.eval.textvqa, rc.cfg.eval.mmbench
    paths: list[Path | None] = []
    if t is not None and t.annotation_file:
        paths += [rc.path(t.annotation_file), rc.eval_dir / "textvqa" / "bm1.jsonl"]
    if m is not None:
        paths += [rc.path(m.question_file), mmbench_paths(rc)[0]]
    return paths


STAGES: list[Stage] = [
    Stage(
        "recipe",
        "dj-run the data recipe",
        _recipe,
        lambda rc: [rc.dataset],
        inputs=_recipe_inputs,
        code=_recipe_code,
    ),
    Stage(
        "cap",
        "cap the pretrain samples",
        _cap,
        lambda rc: [rc.capped],
        inputs=lambda rc: [rc.dataset, rc.path(rc.cfg.pretrain.stats_file)],
    ),
    Stage(
        "convert",
        "Data-Juicer -> LLaVA JSON",
        _convert,
        lambda rc: [rc.llava_json],
        inputs=lambda rc: [rc.capped, rc.path(rc.cfg.pretrain.original_llava)],
    ),
    Stage(
        "pretrain",
        "pretrain (projector)",
        _pretrain,
        outputs=lambda rc: [rc.pretrain_dir / "mm_projector.bin"],
        inputs=lambda rc: [
            rc.llava_json,
            rc.path(rc.cfg.pretrain.image_folder),
            *_zoo(rc),
        ],
        stale=lambda rc: sorted(rc.pretrain_dir.glob("checkpoint-*")),
    ),
    Stage(
        "finetune",
        "finetune",
        _finetune,
        outputs=lambda rc: [
            rc.finetune_dir / "config.json",
            rc.finetune_dir / "model.safetensors.index.json",
        ],
        inputs=lambda rc: [
            rc.pretrain_dir / "mm_projector.bin",
            rc.path(rc.cfg.finetune.data_path),
            rc.path(rc.cfg.finetune.image_folder),
            *_zoo(rc),
        ],  # fmt: skip
        products=lambda rc: [rc.finetune_dir],  # the checkpoint the evaluations load
        stale=lambda rc: sorted(rc.finetune_dir.glob("checkpoint-*")),
    ),
    Stage(
        "textvqa",
        "TextVQA answers",
        _textvqa,
        lambda rc: [rc.eval_dir / "textvqa/bm1.jsonl"],
        inputs=_textvqa_inputs,
    ),
    Stage(
        "mmbench",
        "MMBench answers + upload xlsx",
        _mmbench,
        lambda rc: list(mmbench_paths(rc)),
        inputs=_mmbench_inputs,
    ),
    Stage(
        "scores",
        "local scores",
        _scores,
        lambda rc: [rc.eval_dir / "scores.json"],
        inputs=_scores_inputs,
    ),
    Stage(
        "summary",
        "each score's mean +- std over the seeds",
        _summary,
        lambda rc: [rc.output_dir / SEED_SCORES],
        inputs=lambda rc: [view.eval_dir / "scores.json" for view in rc.seed_views()],
    ),
]
STAGE_NAMES = [s.name for s in STAGES]
RUN_ONCE = ("recipe", "cap", "convert", "summary")  # the others run once per seed


def active_stages(rc: ResolvedConfig) -> list[Stage]:
    skip = set()
    if not rc.cfg.recipe:
        skip.add("recipe")
    if rc.cfg.eval.textvqa is None:
        skip.add("textvqa")
    if rc.cfg.eval.mmbench is None:
        skip.add("mmbench")
    if len(rc.seeds) < 2:
        skip.add("summary")
    return [s for s in STAGES if s.name not in skip]


@dataclass
class Unit:
    """A stage as one seed runs it (the data stages and the summary: once, for all seeds)."""

    stage: Stage
    rc: ResolvedConfig  # the seed's view (``ResolvedConfig.for_seed``)
    key: str  # its name in the state file and messages: ``pretrain``, ``pretrain/seed-43``

    def depends_on(self, earlier: Unit) -> bool:
        """Whether this unit consumes what ``earlier`` (planned before it) produces: the data
        stages feed every seed, the summary reads every seed, a seed only its own stages."""
        once = (earlier.stage.name in RUN_ONCE, self.stage.name in RUN_ONCE)
        return any(once) or earlier.rc.seed_index == self.rc.seed_index


def plan_units(rc: ResolvedConfig, stages: list[Stage] | None = None) -> list[Unit]:
    """The order things run in: the data stages, then every seed's training and evaluation
    (first seed first, under the stages' plain names), then the summary over seeds."""
    stages = active_stages(rc) if stages is None else stages
    units = [Unit(s, rc, s.name) for s in stages if s.name in RUN_ONCE and s.name != "summary"]
    for view in rc.seed_views():
        suffix = f"/seed-{view.seed}" if view.seed_index else ""
        units += [Unit(s, view, s.name + suffix) for s in stages if s.name not in RUN_ONCE]
    return units + [Unit(s, rc, s.name) for s in stages if s.name == "summary"]


# ----------------------------------------------------------------------------- train.sh


def render_script(rc: ResolvedConfig, stages: list[Stage]) -> str:
    """``output/train.sh``: the resolved config (as comments) and every command, in order
    (with several seeds, each seed's training and evaluation in its own folder)."""
    lines = [
        "#!/usr/bin/env bash",
        f"# Written by dj-train on {dt.datetime.now().isoformat(timespec='seconds')} for "
        f"experiment {rc.cfg.exp_name!r} from {rc.source}.",
        "# The commands below are exactly what dj-train runs; rerun this script to repeat them.",
        "#",
        "# Resolved config:",
        *[f"#   {line}" for line in rc.as_yaml().splitlines()],
        *[f"# Seed {v.seed}: --seed {v.seed}, results in {v.output_dir}" for v in rc.seed_views()],
        "",
        "set -euo pipefail",
        f"cd {shlex.quote(str(rc.root))}",
        f"PYTHON=${{PYTHON:-{shlex.quote(sys.executable)}}}",
        *[f"export {key}=${{{key}:-{value}}}" for key, value in STAGE_ENV.items()],
        "",
    ]
    for unit in plan_units(rc, stages):
        lines.append(f"# --- stage {unit.key}: {unit.stage.describe}")
        for cmd in unit.stage.commands(unit.rc):
            if cmd.log is not None:
                lines.append(f"mkdir -p {shlex.quote(str(cmd.log.parent))}")
            lines.append(cmd.render())
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- state


class State:
    """``output/dj_train_state.json``: per stage its status, times, and the fingerprints of
    what it consumed (``inputs``) and produced (``outputs``); written after every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"stages": {}}
        if path.is_file():
            self.data = json.loads(path.read_text())
        self.data.setdefault("stages", {})
        self.fingerprints = Fingerprints(self.data.setdefault("fingerprints", {}))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        os.replace(tmp, self.path)

    def done(self) -> list[str]:
        return [n for n, s in self.data["stages"].items() if s.get("status") == "done"]

    def mark(self, stage: str, **info: Any) -> None:
        self.data["stages"][stage] = info
        self.save()


# ----------------------------------------------------------------------------- fingerprints


def stage_inputs(rc: ResolvedConfig, stage: Stage, fp: Fingerprints) -> dict[str, Any]:
    """What the stage consumes now: its command lines (the config it uses) and its files."""
    commands = "\n".join(cmd.render() for cmd in stage.commands(rc))
    paths = {str(p): fp.of(p) for p in stage.inputs(rc) if p is not None}
    paths.update({str(p): fp.of(p, deep=True) for p in stage.code(rc)})
    return {"commands": text_digest(commands), "paths": paths}


def stage_products(rc: ResolvedConfig, stage: Stage) -> list[Path]:
    """What the stage leaves for later stages and dj-pack: its outputs and its logs."""
    products = (stage.products or stage.outputs)(rc)
    logs = [cmd.log for cmd in stage.commands(rc) if cmd.log is not None]
    return list(dict.fromkeys([*products, *logs]))


def out_of_date(
    rc: ResolvedConfig, stage: Stage, record: dict[str, Any] | None, fp: Fingerprints
) -> str | None:
    """Why a stage must run again, or None when its finished run is still current: done, with
    the same command lines and input fingerprints, and its outputs as it left them."""
    if not record:
        return "not run yet"
    if record.get("status") != "done":
        return f"{record.get('status', 'unknown')} last time"
    if "inputs" not in record or "outputs" not in record:
        return "recorded by an older dj-train, without input fingerprints"
    now = stage_inputs(rc, stage, fp)
    if now["commands"] != record["inputs"].get("commands"):
        return "its command line changed (the config section it uses)"
    before = record["inputs"].get("paths", {})
    changed = [
        p for p in sorted(set(now["paths"]) | set(before)) if now["paths"].get(p) != before.get(p)
    ]
    if changed:
        return f"{', '.join(_short(rc, p) for p in changed[:3])} changed since it ran"
    for path, digest in record["outputs"].items():
        if fp.of(Path(path)) != digest:
            return f"its output {_short(rc, path)} changed or is gone"
    return None


def _short(rc: ResolvedConfig, path: str) -> str:
    try:
        return str(Path(path).relative_to(rc.root))
    except ValueError:
        return path


# ----------------------------------------------------------------------------- running


class FlowInterrupted(FlowError):
    """Ctrl-C during a stage: recorded as interrupted; ``--resume`` goes on from it."""


def _run_command(cmd: Command, cwd: Path, echo: bool) -> int:
    argv = [sys.executable if a == PY else a for a in cmd.argv]
    # the user's environment wins, as in train.sh (`${VAR:-default}`)
    env = {**STAGE_ENV, **os.environ, "PYTHONUNBUFFERED": "1"}  # lines reach the log at once
    log = None
    if cmd.log is not None:
        cmd.log.parent.mkdir(parents=True, exist_ok=True)
        log = cmd.log.open("w", encoding="utf-8")
    proc = None
    try:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            errors="replace",
        )  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            line = ANSI_ESCAPE.sub("", line)
            if line != "\n" and not line.strip():  # progress bars' blanking lines
                continue
            if log is not None:
                log.write(line)
                log.flush()
            if echo:
                sys.stdout.write(line)
        return proc.wait()
    except KeyboardInterrupt:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise
    finally:
        if log is not None:
            log.close()


def run_flow(
    rc: ResolvedConfig,
    resume: bool = False,
    from_stage: str | None = None,
    until: str | None = None,
    echo: bool = True,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the stages in order; returns the state. Raises ``FlowError`` on a failed stage.

    A stage is skipped only while it is current (``out_of_date``); one that is not (or
    ``--from-stage``) runs, and so does every later stage that depends on it -- with several
    seeds, a seed's stages depend on the data stages and on that seed's earlier stages only --;
    all of them are marked stale before anything runs, so an interrupted rerun never leaves a
    later stage counted as done on top of a new one.
    """
    stages = active_stages(rc)
    names = [s.name for s in stages]
    for flag, value in (("--from-stage", from_stage), ("--until", until)):
        if value is not None and value not in names:
            raise FlowError(f"{flag} {value!r}: not a stage of this config ({', '.join(names)})")
    units = plan_units(rc, stages)
    state = State(rc.output_dir / STATE_FILE)
    fp = state.fingerprints
    records: dict[str, dict[str, Any]] = state.data["stages"]
    keys = [u.key for u in units]
    for key in [k for k in records if k not in keys]:  # stages (or seeds) no longer configured
        del records[key]
    done = set(state.done())
    if done and not resume and from_stage is None:
        raise FlowError(
            f"{rc.output_dir} already holds this flow's stages ({', '.join(sorted(done))}): pass "
            "--resume to rerun only what is out of date, or --from-stage STAGE to redo from STAGE"
        )
    cut = names.index(from_stage) if from_stage is not None else None
    rerun: dict[str, str] = {}  # unit key -> why it runs
    first: set[str] = set()  # units that rerun on their own account (no upstream reruns)
    for i, unit in enumerate(units):
        upstream = next((v for v in units[:i] if v.key in rerun and unit.depends_on(v)), None)
        if upstream is not None:
            rerun[unit.key] = f"an earlier stage ({upstream.key}) reruns"
            continue
        if cut is not None and names.index(unit.stage.name) >= cut:
            why: str | None = "redo (--from-stage)"
        else:
            why = out_of_date(unit.rc, unit.stage, records.get(unit.key), fp)
            if why and cut is not None:
                raise FlowError(
                    f"--from-stage {from_stage}: the earlier stage {unit.key} is out of date "
                    f"({why}); start from {unit.stage.name}, or pass --resume to rerun exactly "
                    "what is out of date"
                )
        if why:
            rerun[unit.key] = why
            first.add(unit.key)
    # a stage picks up its own checkpoint only when it stopped early on the same inputs
    resumable = set()
    for unit in units:
        record = records.get(unit.key)
        if (
            from_stage is None
            and unit.key in first
            and record is not None
            and record.get("status") in ("running", "failed", "interrupted")
            and record.get("inputs") == stage_inputs(unit.rc, unit.stage, fp)
        ):
            resumable.add(unit.key)
    for key, why in rerun.items():
        if key in records:
            records[key] = {**records[key], "status": "stale", "reason": why}
    state.data.update(
        {
            "exp_name": rc.cfg.exp_name,
            "pretrain_data": str(rc.llava_json),
            "finetune_dir": str(rc.finetune_dir),
            # each seed's scores, relative to output/ (dj-eval compare reads them)
            "seeds": [
                {
                    "seed": v.seed,
                    "scores": str((v.eval_dir / "scores.json").relative_to(rc.output_dir)),
                }
                for v in rc.seed_views()
            ],
        }
    )
    state.data.pop("config", None)  # the whole-config hash of older versions
    rc.output_dir.mkdir(parents=True, exist_ok=True)
    (rc.output_dir / "train.sh").write_text(render_script(rc, stages))
    os.chmod(rc.output_dir / "train.sh", 0o755)
    state.save()
    last = names.index(until) if until else len(names)
    for unit in units:
        if names.index(unit.stage.name) > last:
            continue
        if unit.key not in rerun:
            say(f"[dj-train] {unit.key}: done earlier, skipped")
            continue
        if unit.key in first and done and from_stage is None:
            say(
                f"[dj-train] {unit.key}: out of date ({rerun[unit.key]}); rerunning it and every "
                "later stage"
            )
        say(f"[dj-train] {unit.key}: {unit.stage.describe}")
        try:
            _run_stage(unit.rc, unit.stage, state, echo, say, unit.key in resumable, key=unit.key)
        except KeyboardInterrupt:
            record = state.data["stages"].get(unit.key, {})
            if record.get("status") == "running":
                state.mark(unit.key, **{**record, "status": "interrupted"})
            raise FlowInterrupted(
                f"interrupted during stage {unit.key}; `dj-train {rc.source} --resume` goes on "
                "from it (the later stages are marked stale and rerun)"
            ) from None
    return state.data


def _run_stage(
    rc: ResolvedConfig,
    stage: Stage,
    state: State,
    echo: bool,
    say: Callable[[str], None],
    keep_checkpoints: bool,
    key: str | None = None,
) -> None:
    """Run one stage's commands; record what it consumed, then (done) what it produced, under
    ``key`` (default: the stage's name; another seed's: ``pretrain/seed-43``)."""
    key = key or stage.name
    if not keep_checkpoints:
        for old in stage.stale(rc):
            say(f"[dj-train] {key}: rerun, removing {old}")
            shutil.rmtree(old)
    fp = state.fingerprints
    began, started = time.time(), _now()
    inputs = stage_inputs(rc, stage, fp)
    state.mark(key, status="running", started=started, inputs=inputs)
    for cmd in stage.commands(rc):
        rc_code = _run_command(cmd, rc.root, echo)
        if rc_code != 0:
            where = f"; log: {cmd.log}" if cmd.log else ""
            state.mark(
                key, status="failed", started=started, inputs=inputs,
                exit_code=rc_code, log=str(cmd.log),
            )  # fmt: skip
            raise FlowError(
                f"stage {key} failed: `{' '.join(cmd.argv[:4])} ...` exited with "
                f"{rc_code}{where}. Fix it and rerun with --resume{_tail(cmd.log)}"
            )
    missing = [p for p in stage.outputs(rc) if not p.exists()]
    if missing:
        state.mark(
            key, status="failed", started=started, inputs=inputs,
            missing=[str(p) for p in missing],
        )  # fmt: skip
        raise FlowError(f"stage {key} finished but did not write {', '.join(map(str, missing))}")
    outputs = {str(p): fp.of(p) for p in stage_products(rc, stage)}
    state.mark(
        key, status="done", started=started, finished=_now(),
        seconds=round(time.time() - began, 1), inputs=inputs, outputs=outputs,
    )  # fmt: skip


def _tail(log: Path | None, lines: int = 6) -> str:
    """The end of a failed stage's log: usually the reason, so the user need not open it."""
    if log is None or not log.is_file():
        return ""
    text = [x for x in log.read_text(errors="replace").splitlines() if x.strip()][-lines:]
    return "\n  | " + "\n  | ".join(text) if text else ""


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
