"""The ``dj-train`` config: what the toolkit's "editable part" of ``train_mgm_2b_stage_1.sh`` holds.

One YAML file replaces editing the shell script by hand. It is validated completely before any
work starts: unknown keys, wrong types, global batches that break the challenge rule
(256 pretrain / 128 finetune), inputs that do not exist -- every problem is listed at once, each
with the key to fix.

Paths resolve one way: a relative path in the config is relative to ``root`` (default: the
config file's folder), the challenge folder the toolkit's script runs in -- never to the folder
dj-train was started from. Every stage runs in ``root``, so the recipe's own relative paths
(``dataset_path``, ``export_path``, model folders) resolve from ``root`` too, as Data-Juicer
resolves them from the folder it runs in.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import os
import shutil
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dj_synth.tools.eval.mmbench import DEFAULT_SPLIT
from dj_synth.tools.llava import ConversionError
from dj_synth.tools.prepare import CHALLENGE_CAP, check_global_batch

DEFAULT_SEED = 42  # transformers' default --seed, which the toolkit's training runs with


class ConfigError(ValueError):
    """A config mistake, found before any work; one line per problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StageBatch(_Strict):
    """Per-device batch, gradient accumulation and loader workers (the toolkit's editable knobs)."""

    per_device_train_batch_size: int = Field(ge=1)
    gradient_accumulation_steps: int = Field(ge=1)
    dataloader_num_workers: int = Field(default=4, ge=0)


class PretrainConfig(StageBatch):
    dataset: str | None = None  # Data-Juicer JSONL; omit when `recipe` produces it
    image_folder: str
    original_llava: str  # stage_1.json: the questions restored by id
    cap: int = Field(default=CHALLENGE_CAP, ge=1, le=CHALLENGE_CAP)
    select: Literal["toolkit", "top"] = "toolkit"  # toolkit-identical sample, or top-N by a stat
    select_by: str | None = None
    stats_file: str | None = None
    fill: bool = False  # fewer than `cap` samples: repeat them up to exactly `cap`


class FinetuneConfig(StageBatch):
    data_path: str  # the fixed instruction set (LLaVA JSON)
    image_folder: str


class ModelZoo(_Strict):
    llm: str  # gemma-2b-it
    vision_tower: str  # clip-vit-large-patch14-336 (the folder name must contain "openai")
    vision_tower_aux: str  # openclip-convnext-large-d-320-...
    image_size_aux: int = Field(default=768, ge=1)


class TextVQAConfig(_Strict):
    question_file: str
    image_folder: str
    annotation_file: str | None = None  # TextVQA_0.5.1_val.json: local score when given


class MMBenchConfig(_Strict):
    question_file: str  # mmbench_dev_20230712.tsv
    split: str = DEFAULT_SPLIT
    lang: Literal["en", "cn"] = "en"


class EvalConfig(_Strict):
    textvqa: TextVQAConfig | None = None
    mmbench: MMBenchConfig | None = None
    batch_size: int | None = Field(default=None, ge=1)  # fidelity fast only (default 8)
    match: Literal["exact", "letter"] = "exact"  # MMBench local scoring


class SmokeConfig(_Strict):
    """For trial runs only (tiny models, CPU): the challenge fixes the training schedule."""

    max_steps: int | None = Field(default=None, ge=1)
    attn_implementation: str | None = None
    model_max_length: int | None = Field(default=None, ge=16)
    max_new_tokens: int | None = Field(default=None, ge=1)


class FlowConfig(_Strict):
    exp_name: str = "default"
    root: str | None = None
    output_dir: str = "output"
    recipe: str | None = None  # optional dj-run recipe; its export becomes the pretrain dataset
    pretrain: PretrainConfig
    finetune: FinetuneConfig
    model_zoo: ModelZoo
    eval: EvalConfig = EvalConfig()
    logging_steps: int = Field(default=1, ge=1)
    save_steps: int = Field(default=100, ge=1)
    save_total_limit: int = Field(default=1, ge=1)
    num_gpus: int | Literal["auto"] = "auto"  # training processes (deepspeed --num_gpus)
    inference_gpus: list[int | str] | Literal["auto"] = "auto"  # the toolkit's INFER_CUDA_IDX
    launcher: Literal["auto", "deepspeed", "python"] = "auto"
    deepspeed_config: str = "zero2_offload"  # a bundled name (zero2_offload, zero3) or a path
    bf16: bool = True
    tf32: bool = True
    check_global_batch: bool = True  # the toolkit aborts otherwise; off only for trial runs
    # toolkit: MGM's loss weighting and batch-1 float16 eval; fast: token-weighted loss, batched
    # bfloat16 eval (tools/mgm/fidelity.py); recorded in train.sh and scores.json
    fidelity: Literal["toolkit", "fast"] = "toolkit"
    # Train and evaluate once per seed (the Trainer's --seed: data order, stochastic depth);
    # the first keeps the toolkit's output layout. Unset: [42], the toolkit's (HF's default).
    seeds: list[int] | None = None
    solution: list[str] = []  # what dj-pack puts in solution/ (default: the recipe)
    smoke: SmokeConfig = SmokeConfig()

    @field_validator("exp_name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not value or not all(c.isalnum() or c in "._-" for c in value) or value[0] == ".":
            raise ValueError("use letters, digits, '.', '_' or '-' (it names output folders)")
        return value

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("give at least one seed, or leave seeds out (the toolkit's 42)")
        if any(s < 0 for s in value) or len(set(value)) != len(value):
            raise ValueError("seeds must be distinct integers >= 0 (each names a folder)")
        return value


# ----------------------------------------------------------------------------- resolution


class ResolvedConfig:
    """A validated config with absolute paths and the derived names the toolkit uses."""

    def __init__(self, cfg: FlowConfig, source: Path) -> None:
        self.cfg = cfg
        self.source = source
        self.root = (source.parent / (cfg.root or ".")).resolve()
        self.seed_index = 0  # 0: the toolkit's output layout; others: output/seeds/seed-<S>/

    @property
    def seeds(self) -> list[int]:
        return list(self.cfg.seeds or [DEFAULT_SEED])

    @property
    def seed(self) -> int:
        """The seed this view trains with (``for_seed``)."""
        return self.seeds[self.seed_index]

    def for_seed(self, index: int) -> ResolvedConfig:
        """This config as the ``index``-th seed runs it: the first seed writes the toolkit's
        tree (``output/training_dirs``, ``output/eval_results``, ``output/logs``), every other
        seed the same tree under ``output/seeds/seed-<S>/``."""
        view = copy.copy(self)
        view.seed_index = index
        return view

    def seed_views(self) -> list[ResolvedConfig]:
        return [self.for_seed(i) for i in range(len(self.seeds))]

    @property
    def base_output_dir(self) -> Path:
        """``output_dir`` itself, whichever seed this view is (state file, train.sh)."""
        return self.path(self.cfg.output_dir)  # type: ignore[return-value]

    @contextlib.contextmanager
    def in_root(self) -> Iterator[None]:
        """Work in ``root``, as the flow's stages do: the recipe (run by dj-run in ``root``)
        resolves its relative paths -- dataset, export, model folders -- from there, as
        Data-Juicer resolves them from the folder it runs in; validation checks them the same
        way, whatever folder dj-train was started from."""
        old = os.getcwd()
        os.chdir(self.root)
        try:
            yield
        finally:
            os.chdir(old)

    def path(self, value: str | None) -> Path | None:
        if value is None:
            return None
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else self.root / p

    @property
    def output_dir(self) -> Path:
        if self.seed_index:
            return self.base_output_dir / "seeds" / f"seed-{self.seed}"
        return self.base_output_dir

    @property
    def pretrain_name(self) -> str:
        return f"MGM-2B-Pretrain-{self.cfg.exp_name}"

    @property
    def finetune_name(self) -> str:
        return f"MGM-2B-Finetune-{self.cfg.exp_name}"

    @property
    def pretrain_dir(self) -> Path:
        return self.output_dir / "training_dirs" / self.pretrain_name

    @property
    def finetune_dir(self) -> Path:
        return self.output_dir / "training_dirs" / self.finetune_name

    @property
    def eval_dir(self) -> Path:
        return self.output_dir / "eval_results" / self.finetune_name

    @cached_property
    def dataset(self) -> Path:
        """The Data-Juicer JSONL to cap: the recipe's export, or ``pretrain.dataset``."""
        if self.cfg.recipe:
            from dj_synth.pipelines.recipe import load_recipe

            with self.in_root():
                export = load_recipe(self.path(self.cfg.recipe)).settings.export_path
            return self.path(export)  # type: ignore[return-value]
        return self.path(self.cfg.pretrain.dataset)  # type: ignore[return-value]

    @property
    def capped(self) -> Path:
        """The toolkit's names: ``<dataset>-200k.jsonl`` (any cap) and its LLaVA JSON."""
        return Path(f"{self.dataset}-200k.jsonl")

    @property
    def llava_json(self) -> Path:
        return Path(f"{self.capped}.json")

    def train_gpus(self) -> int:
        """Training processes: 1 with the python launcher; the CUDA devices with deepspeed."""
        if self.launcher() == "python":
            return 1
        if self.cfg.num_gpus != "auto":
            return int(self.cfg.num_gpus)
        return max(1, _cuda_count())

    def launcher(self) -> str:
        if self.cfg.launcher != "auto":
            return self.cfg.launcher
        if _cuda_count() == 0:
            return "python"
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            return "python"
        return "deepspeed"

    def inference_gpus(self) -> list[str]:
        """GPU ids for evaluation chunks; ``["cpu"]`` where there is no GPU."""
        gpus = self.cfg.inference_gpus
        if gpus == "auto":
            n = _cuda_count()
            return [str(i) for i in range(n)] if n else ["cpu"]
        return [str(g) for g in gpus] or ["cpu"]

    def deepspeed_config_path(self) -> Path:
        name = self.cfg.deepspeed_config
        bundled = Path(__file__).resolve().parent.parent / "mgm" / "configs" / f"{name}.json"
        if "/" not in name and not name.endswith(".json") and bundled.is_file():
            return bundled
        return self.path(name)  # type: ignore[return-value]

    def as_yaml(self) -> str:
        data = self.cfg.model_dump(mode="json")
        data["root"] = str(self.root)
        return yaml.safe_dump(data, sort_keys=False)


def _cuda_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


# ----------------------------------------------------------------------------- loading


def load_flow_config(path: str | Path, check_inputs: bool = True) -> ResolvedConfig:
    """Read and validate; raise ``ConfigError`` listing every problem (nothing has run yet)."""
    source = Path(path)
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {source} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {source}: expected a mapping (exp_name, pretrain, ...)")
    try:
        cfg = FlowConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(_messages(source, exc))) from None
    resolved = ResolvedConfig(cfg, source.resolve())
    problems = check_global_batches(resolved) + check_fidelity(resolved)
    if check_inputs:
        problems += check_paths(resolved)
    if problems:
        raise ConfigError("\n".join(f"{source}: {p}" for p in problems))
    return resolved


def check_fidelity(rc: ResolvedConfig) -> list[str]:
    """``eval.batch_size`` batches prompts, which the toolkit mode (batch 1, as MGM) does not."""
    size = rc.cfg.eval.batch_size
    if rc.cfg.fidelity == "toolkit" and size not in (None, 1):
        return [
            f"eval.batch_size {size}: fidelity toolkit answers one prompt at a time as MGM "
            "does; drop eval.batch_size or set fidelity: fast"
        ]
    return []


def _messages(source: Path, exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            out.append(f"{source}: {loc}: unknown key{_did_you_mean(err['loc'])}")
            continue
        got = f" (got {err['input']!r})" if err["type"] != "missing" else ""
        out.append(f"{source}: {loc}: {err['msg']}{got}")
    return out


def _did_you_mean(loc: tuple[Any, ...]) -> str:
    """Suggest the closest key of the section a misspelt key sits in."""
    model: Any = FlowConfig
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return ""
        model = next(
            (a for a in (field.annotation, *getattr(field.annotation, "__args__", ()))
             if isinstance(a, type) and issubclass(a, BaseModel)),
            None,
        )  # fmt: skip
        if model is None:
            return ""
    keys = list(getattr(model, "model_fields", {}))
    close = difflib.get_close_matches(str(loc[-1]), keys, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(keys)})"


def check_global_batches(rc: ResolvedConfig) -> list[str]:
    """The toolkit's rule (``prepare.check_global_batch``), with the config keys to change."""
    if not rc.cfg.check_global_batch:
        return []
    problems = []
    for stage in ("pretrain", "finetune"):
        s = getattr(rc.cfg, stage)
        try:
            check_global_batch(
                s.per_device_train_batch_size, s.gradient_accumulation_steps, rc.train_gpus(), stage
            )
        except ConversionError as exc:
            problems.append(
                f"{stage}: {exc} (keys {stage}.per_device_train_batch_size, "
                f"{stage}.gradient_accumulation_steps)"
            )
    return problems


def check_paths(rc: ResolvedConfig) -> list[str]:
    """Every input the flow reads must exist before it starts (outputs are made on the way)."""
    cfg = rc.cfg
    problems: list[str] = []

    def need(key: str, value: str | None, kind: str = "file") -> None:
        if value is None:
            return
        p = rc.path(value)
        ok = p.is_file() if kind == "file" else p.is_dir()
        if not ok:
            problems.append(f"{key}: {kind} not found: {p}")

    if cfg.recipe:
        need("recipe", cfg.recipe)
        if cfg.pretrain.dataset:
            problems.append(
                "pretrain.dataset: leave it out when `recipe` is set (its export is used)"
            )
        elif rc.path(cfg.recipe).is_file():
            from dj_synth.pipelines.recipe import load_recipe

            try:
                with rc.in_root():
                    settings = load_recipe(rc.path(cfg.recipe)).settings
                if settings.export_shard_size or settings.export_format != "jsonl":
                    problems.append(
                        "recipe: the flow caps one Data-Juicer JSONL; set export_shard_size: 0 "
                        "and export_format: jsonl in the recipe"
                    )
            except ValueError as exc:
                problems.append(f"recipe: {exc}")
    elif not cfg.pretrain.dataset:
        problems.append("pretrain.dataset: required (the Data-Juicer JSONL), or set `recipe`")
    else:
        need("pretrain.dataset", cfg.pretrain.dataset)
    need("pretrain.image_folder", cfg.pretrain.image_folder, "folder")
    need("pretrain.original_llava", cfg.pretrain.original_llava)
    if cfg.pretrain.select == "top" and not cfg.pretrain.select_by:
        problems.append("pretrain.select_by: required with select: top (a stats key)")
    need("pretrain.stats_file", cfg.pretrain.stats_file)
    need("finetune.data_path", cfg.finetune.data_path)
    need("finetune.image_folder", cfg.finetune.image_folder, "folder")
    need("model_zoo.llm", cfg.model_zoo.llm, "folder")
    need("model_zoo.vision_tower", cfg.model_zoo.vision_tower, "folder")
    need("model_zoo.vision_tower_aux", cfg.model_zoo.vision_tower_aux, "folder")
    for key in ("vision_tower", "vision_tower_aux"):
        name = Path(getattr(cfg.model_zoo, key)).name.lower()
        want = "openai" if key == "vision_tower" else "openclip"
        full = str(rc.path(getattr(cfg.model_zoo, key))).lower()
        if want not in full:
            problems.append(
                f"model_zoo.{key}: MGM picks the tower class by folder name; {name!r} must sit "
                f"under a path containing {want!r} (as model_zoo/OpenAI/...)"
            )
    llm = rc.path(cfg.model_zoo.llm)
    if llm.is_dir() and not (llm / "config.json").is_file():
        problems.append(f"model_zoo.llm: {llm} has no config.json (download gemma-2b-it there)")
    if cfg.eval.textvqa:
        need("eval.textvqa.question_file", cfg.eval.textvqa.question_file)
        need("eval.textvqa.image_folder", cfg.eval.textvqa.image_folder, "folder")
        need("eval.textvqa.annotation_file", cfg.eval.textvqa.annotation_file)
    if cfg.eval.mmbench:
        need("eval.mmbench.question_file", cfg.eval.mmbench.question_file)
    if rc.launcher() == "deepspeed":
        if not rc.deepspeed_config_path().is_file():
            problems.append(f"deepspeed_config: not found: {rc.deepspeed_config_path()}")
        if shutil.which("deepspeed") is None:
            problems.append(
                "launcher: deepspeed, but no `deepspeed` command on PATH; "
                'pip install -e ".[train]" (or set launcher: python for one process)'
            )
    for i, item in enumerate(cfg.solution):
        if not rc.path(item).exists():
            problems.append(f"solution[{i}]: not found: {rc.path(item)}")
    return problems
