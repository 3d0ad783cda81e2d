"""Recipes: YAML in, a fully validated `Recipe` out, before any work starts.

Keys and operator arguments follow Data-Juicer, so its recipes load unchanged.
Data-Juicer keys we do not act on are accepted with a warning; anything else
unknown is an error that names the closest known key. Every `process` entry is
checked against its operator's signature and type hints, then instantiated.
Every problem of a recipe is reported at once (porting a recipe should not be a
loop of reruns).
"""

from __future__ import annotations

import difflib
import inspect
import logging
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from dj_synth.operators import Deduplicator, Filter, Op, get_operator, load_custom_operators
from dj_synth.operators.base import IGNORED_OP_ARGS

log = logging.getLogger("dj_synth")


# PyYAML's safe loader, in C where libyaml is there (the pure-Python one is slow).
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Numbers YAML 1.1 (PyYAML) reads as strings but Data-Juicer's parser reads as numbers.
_YAML11_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class RecipeError(ValueError):
    """A mistake in the recipe; the message says what to fix."""


# Data-Juicer global keys accepted but not acted on (a warning names them).
DJ_IGNORED_KEYS = frozenset(
    {
        "ds_cache_dir", "cache_compress", "op_fusion", "fusion_strategy", "adaptive_batch_size", "turbo",
        "skip_op_error", "open_monitor", "temp_dir", "open_insight_mining",
        "op_list_to_mine", "percentiles", "export_original_dataset", "save_stats_in_one_file",
        "export_in_parallel", "export_extra_args", "keep_hashes_in_res_ds", "suffixes",
        "audio_key", "video_key", "image_bytes_key", "audio_special_token",
        "video_special_token", "debug", "auto", "auto_num", "checkpoint", "checkpoint_dir",
        "job_id", "resume", "partition", "use_dag", "strict_preflight", "load_jsonl_lenient",
        "mapper_fusion", "trace_keys", "auto_op_parallelism", "validators", "export_type",
        "hpo_config", "data_probe_algo", "data_probe_ratio", "executor_config",
    }
)  # fmt: skip


class RecipeSettings(BaseModel):
    """Global recipe keys. Names and defaults follow Data-Juicer unless marked ours."""

    model_config = ConfigDict(extra="forbid")

    project_name: str = "dj-synth"
    dataset_path: str | list[str]
    export_path: str = "./outputs/dj-synth/result.jsonl"
    work_dir: str | None = None
    np: int = 4
    executor_type: Literal["default", "local", "ray"] = "default"
    ray_address: str | None = None
    use_checkpoint: bool = False  # commit per shard under work_dir/checkpoint: `--resume` works
    text_keys: str | list[str] = "text"
    image_key: str = "images"
    image_special_token: str = "<__dj__image>"
    eoc_special_token: str = "<|__dj__eoc|>"
    export_shard_size: int = 0
    keep_stats_in_res_ds: bool = False
    custom_operator_paths: list[str] = []
    use_cache: bool = True  # ours: the model-output cache (captions, scores, embeddings)
    cache_dir: str | None = None  # default $DJ_SYNTH_CACHE_DIR or ~/.cache/dj_synth/model_outputs
    cache_size_gb: float = 4.0
    open_tracer: bool = False  # work_dir/trace/: changed, dropped and duplicate samples
    op_list_to_trace: list[str] = []  # empty: every operator
    trace_num: int = 10
    process: list[Any] = []
    # ours
    io_batch_size: int = 512
    image_check: Literal["none", "exists", "header", "decode"] = "header"
    op_timeout_s: float | None = 60.0  # CPU operators: per batch, then per sample
    max_quarantine_ratio: float = 0.5  # operator errors over this share stop the run
    export_format: Literal["jsonl", "llava"] = "jsonl"
    llava_export_path: str | None = None
    llava_options: dict[str, Any] = {}
    report: bool = False  # write work_dir/analysis/report.html at the end (dj-analyze's report)


@dataclass
class OpSpec:
    """One validated `process` entry: the name and the arguments as written (plus globals)."""

    name: str
    args: dict[str, Any]


@dataclass
class Recipe:
    settings: RecipeSettings
    ops: list[OpSpec]
    path: str | None = None
    warnings: list[str] = field(default_factory=list)
    stats_only: bool = False  # filters compute their stats and drop nothing (analysis)

    @property
    def text_key(self) -> str:
        keys = self.settings.text_keys
        return keys if isinstance(keys, str) else keys[0]

    @property
    def work_dir(self) -> str:
        return self.settings.work_dir or os.path.dirname(os.path.abspath(self.settings.export_path))

    @property
    def llava_export_path(self) -> str:
        """Where `export_format: llava` writes the LLaVA JSON (default `<export base>_llava.json`)."""
        s = self.settings
        if s.llava_export_path:
            return s.llava_export_path
        base = (
            s.export_path.rsplit(".", 1)[0]
            if s.export_path.endswith((".jsonl", ".json"))
            else s.export_path
        )
        return f"{base}_llava.json"

    def llava_options(self):
        """dj_to_llava options; the dataset's own tokens unless the recipe says otherwise."""
        from dj_synth.tools.llava import DjToLlavaOptions

        args = {
            "image_special_token": self.settings.image_special_token,
            "eoc_special_token": self.settings.eoc_special_token,
            **self.settings.llava_options,
        }
        return DjToLlavaOptions(**args)

    @property
    def np(self) -> int:
        return max(1, min(self.settings.np, os.cpu_count() or 1))

    def traces(self, op_name: str) -> bool:
        """Whether Data-Juicer's tracer records this operator."""
        s = self.settings
        return s.open_tracer and (not s.op_list_to_trace or op_name in s.op_list_to_trace)

    def build_ops(self) -> list[Op]:
        """Fresh operator objects (each worker builds its own)."""
        ops = []
        for index, spec in enumerate(self.ops):
            op = get_operator(spec.name)(**spec.args)
            op.index = index
            if self.stats_only and isinstance(op, Filter):
                op.stats_only = True
            if self.traces(op.name):
                op.trace_num = self.settings.trace_num
            ops.append(op)
        return ops


# ---------------------------------------------------------------------------
def load_recipe(path: str | os.PathLike[str], overrides: list[str] | None = None) -> Recipe:
    """Read, override, validate. Raises `RecipeError` with a fix-it message."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc}") from None
    try:
        data = yaml.load(text, Loader=SAFE_LOADER)
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {path} must be a mapping of keys (dataset_path, process, ...)")
    for item in overrides or []:
        apply_override(data, item)
    base = Path(path).resolve().parent
    return validate_recipe(data, source=str(path), base_dir=base)


def apply_override(data: dict[str, Any], item: str) -> None:
    """`key=value`, `op_name.arg=value` (every entry of that op) or `process.N.op.arg=value`."""
    if "=" not in item:
        raise RecipeError(f"--set {item!r}: expected KEY=VALUE, e.g. --set np=2")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    parts = key.strip().split(".")
    if len(parts) == 1:
        data[parts[0]] = value
        return
    process = data.setdefault("process", []) or []
    if parts[0] == "process" and len(parts) == 4 and parts[1].isdigit():
        index, op_name, arg = int(parts[1]), parts[2], parts[3]
        if index >= len(process) or _entry_name(process[index]) != op_name:
            raise RecipeError(f"--set {key}: process[{index}] is not {op_name!r}")
        targets = [index]
    elif len(parts) == 2:
        op_name, arg = parts
        targets = [i for i, e in enumerate(process) if _entry_name(e) == op_name]
        if not targets:
            raise RecipeError(f"--set {key}: the recipe has no {op_name!r} in process")
    else:
        raise RecipeError(f"--set {key}: use KEY, OP.ARG or process.N.OP.ARG")
    for i in targets:
        entry = process[i]
        if isinstance(entry, str):
            entry = process[i] = {entry: {}}
        args = entry[op_name] or {}
        args[arg] = value
        entry[op_name] = args


def _entry_name(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and len(entry) == 1:
        return next(iter(entry))
    return None


def validate_recipe(
    data: dict[str, Any], source: str = "<recipe>", base_dir: Path | None = None
) -> Recipe:
    """A fully checked `Recipe`, or one `RecipeError` that lists every problem found."""
    warnings: list[str] = []
    errors: list[str] = []
    known = set(RecipeSettings.model_fields)
    clean: dict[str, Any] = {}
    for key, value in data.items():
        if key in known:
            clean[key] = value
        elif key in DJ_IGNORED_KEYS:
            warnings.append(f"recipe key {key!r} is a Data-Juicer option dj-synth ignores")
        else:
            close = difflib.get_close_matches(str(key), known | DJ_IGNORED_KEYS, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            errors.append(f"{source}: unknown recipe key {key!r}{hint}")
    if "dataset_path" not in clean:
        errors.append(
            f"{source}: 'dataset_path' is required (the input JSONL file, folder or glob)"
        )
    settings = _settings(clean, source, errors)
    _check_settings(settings, source, base_dir, errors)
    recipe = Recipe(settings=settings, ops=[], path=source, warnings=warnings)
    process = settings.process if isinstance(settings.process, list) else []
    specs = [_validate_entry(i, e, recipe, source, warnings, errors) for i, e in enumerate(process)]
    recipe.ops = [spec for spec in specs if spec is not None]
    untraceable = set(settings.op_list_to_trace) - {_entry_name(e) for e in process}
    if untraceable:
        errors.append(
            f"{source}: op_list_to_trace names {sorted(untraceable)}, not in process "
            "(leave it empty to trace every operator)"
        )
    if len(recipe.ops) == len(process):  # every entry built: check what spans entries
        try:
            _check_keep_stats_keys(recipe.build_ops(), source)
        except RecipeError as exc:
            errors.append(str(exc))
    if errors:
        head = f"{source}: {len(errors)} problems:\n" if len(errors) > 1 else ""
        raise RecipeError(head + "\n".join(errors))
    for w in warnings:
        log.warning(w)
    return recipe


def _settings(clean: dict[str, Any], source: str, errors: list[str]) -> RecipeSettings:
    """The validated global keys; with errors, the valid ones (so entries are still checked)."""
    try:
        return RecipeSettings(**{"dataset_path": "", **clean})
    except ValidationError as exc:
        errors.extend(_pydantic_message(source, "recipe key", exc).splitlines())
        bad = {str(err["loc"][0]) for err in exc.errors() if err["loc"]}
        good = {k: v for k, v in clean.items() if k not in bad}
        try:
            return RecipeSettings(**{"dataset_path": "", **good})
        except ValidationError:
            return RecipeSettings(dataset_path="")


def _check_settings(
    settings: RecipeSettings, source: str, base_dir: Path | None, errors: list[str]
) -> None:
    if settings.np < 1:
        errors.append(f"{source}: 'np' must be >= 1, got {settings.np}")
    if settings.export_shard_size < 0:
        errors.append(f"{source}: 'export_shard_size' must be >= 0 bytes")
    if settings.io_batch_size < 1:
        errors.append(f"{source}: 'io_batch_size' must be >= 1, got {settings.io_batch_size}")
    if settings.op_timeout_s is not None and settings.op_timeout_s <= 0:
        errors.append(f"{source}: 'op_timeout_s' must be > 0 seconds (or null for no limit)")
    if settings.cache_size_gb <= 0:
        errors.append(f"{source}: 'cache_size_gb' must be > 0")
    if settings.trace_num < 1:
        errors.append(f"{source}: 'trace_num' must be >= 1, got {settings.trace_num}")
    if not 0 < settings.max_quarantine_ratio <= 1:
        errors.append(f"{source}: 'max_quarantine_ratio' must be in (0, 1]")
    if settings.custom_operator_paths:
        paths = [str(_resolve(p, base_dir)) for p in settings.custom_operator_paths]
        try:
            load_custom_operators(paths)
            settings.custom_operator_paths = paths
        except Exception as exc:
            errors.append(f"{source}: cannot load custom operators: {exc}")
    if settings.export_format == "llava":
        try:
            _check_llava(settings, source)
        except RecipeError as exc:
            errors.append(str(exc))
    if not isinstance(settings.process, list):
        errors.append(f"{source}: 'process' must be a list of operators")


def _check_llava(settings: RecipeSettings, source: str) -> None:
    from dj_synth.tools.llava import DjToLlavaOptions

    known = set(DjToLlavaOptions.__dataclass_fields__)
    for key in settings.llava_options:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RecipeError(f"{source}: unknown llava_options key {key!r}{hint}")
    recipe = Recipe(settings=settings, ops=[])
    try:
        opts = recipe.llava_options()
        opts.check()
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"{source}: llava_options: {exc}") from None
    if not recipe.llava_export_path.endswith(".json"):
        raise RecipeError(f"{source}: llava_export_path must end with .json")
    if opts.restore_questions and not os.path.isfile(str(opts.original_llava_ds_path)):
        raise RecipeError(
            f"{source}: llava_options.original_llava_ds_path {opts.original_llava_ds_path!r} "
            "does not exist"
        )


def _check_keep_stats_keys(ops: list[Op], source: str) -> None:
    """A ranked dedup needs its stats key computed by an earlier filter."""
    available: list[str] = []
    undeclared = False  # a custom filter that does not list its stats keys
    for op in ops:
        ranks = isinstance(op, Deduplicator) and op.keep_policy != "first"
        if ranks and op.keep_stats_key not in available:
            if undeclared:
                continue
            known = ", ".join(available) or "none"
            raise RecipeError(
                f"{source}: process[{op.index}] {op.name}: keep_stats_key "
                f"{op.keep_stats_key!r} is not computed by any filter before it (stats "
                f"computed before it: {known}); put the filter that computes it earlier"
            )
        if isinstance(op, Filter):
            available.extend(op.stats_keys)
            undeclared = undeclared or not op.stats_keys


def _resolve(p: str, base_dir: Path | None) -> Path:
    path = Path(p)
    return path if path.is_absolute() or base_dir is None else base_dir / path


def _validate_entry(
    index: int, entry: Any, recipe: Recipe, source: str, warnings: list[str], errors: list[str]
) -> OpSpec | None:
    """The entry's checked arguments; its problems go to `errors` (then None)."""
    where = f"{source}: process[{index}]"
    name = _entry_name(entry)
    if name is None:
        errors.append(f"{where}: each entry must be `- op_name:` followed by its arguments")
        return None
    args = entry[name] if isinstance(entry, dict) else None
    if args is None:
        args = {}
    if not isinstance(args, dict):
        errors.append(f"{where} {name}: arguments must be a mapping, got {type(args).__name__}")
        return None
    try:
        cls = get_operator(name)
    except KeyError as exc:
        errors.append(f"{where}: {exc.args[0]}")
        return None
    params = operator_parameters(cls)
    checked: dict[str, Any] = {}
    n_errors = len(errors)
    for arg, value in args.items():
        if arg in IGNORED_OP_ARGS:
            warnings.append(f"{name}: argument {arg!r} is a Data-Juicer option dj-synth ignores")
            continue
        if arg not in params:
            close = difflib.get_close_matches(arg, params, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            errors.append(
                f"{where} {name}: unknown argument {arg!r}{hint}. "
                f"Known arguments: {', '.join(sorted(params))}"
            )
            continue
        annotation = params[arg]
        if isinstance(value, str) and _YAML11_NUMBER.fullmatch(value):
            value = float(value)  # `2e5`: a string to YAML 1.1, a number to Data-Juicer
        try:
            checked[arg] = TypeAdapter(annotation).validate_python(value)
        except ValidationError:
            errors.append(
                f"{where} {name}: argument {arg!r} expects {_type_name(annotation)}, "
                f"got {type(value).__name__} {value!r}"
            )
    if len(errors) > n_errors:
        return None
    # Data-Juicer injects the dataset's keys and tokens into every op that leaves them unset.
    s = recipe.settings
    defaults = {
        "text_key": recipe.text_key,
        "image_key": s.image_key,
        "image_special_token": s.image_special_token,
        "eoc_special_token": s.eoc_special_token,
    }
    for key, value in defaults.items():
        if checked.get(key) is None:
            checked[key] = value
    try:
        cls(**checked).check()
    except Exception as exc:
        errors.append(f"{where} {name}: {exc}")
        return None
    return OpSpec(name, checked)


NO_DEFAULT = inspect.Parameter.empty


def operator_signature(cls: type[Op]) -> dict[str, tuple[Any, Any]]:
    """Argument name -> (type hint, default or NO_DEFAULT), over the class and its bases
    (as `**kwargs` forwards them); the most derived definition wins."""
    params: dict[str, tuple[Any, Any]] = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        hints = typing.get_type_hints(init)
        for p in inspect.signature(init).parameters.values():
            if p.name == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            params[p.name] = (hints.get(p.name, Any), p.default)
    return params


def operator_parameters(cls: type[Op]) -> dict[str, Any]:
    """Argument name -> type hint (what the loader checks values against)."""
    return {name: hint for name, (hint, _) in operator_signature(cls).items()}


def _type_name(annotation: Any) -> str:
    if annotation is Any:
        return "any value"
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _pydantic_message(source: str, what: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        lines.append(f"{source}: {what} {loc!r}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)
