"""`dj-pack`: check a finished challenge run and zip it into `submit.zip`.

The organisers get no official zip spec (see the MGM notes, section 4), so the package mirrors
what the toolkit's `train_mgm_2b_stage_1.sh` leaves behind: the participant's recipes/code under
`solution/`, the copied `train.sh`, both training logs and the eval results under `output/`, and
a `MANIFEST.json` with the size and sha256 of every other file. Checkpoints are never packaged.

Everything is validated before a byte is written, and all problems are reported at once (one
line each), so a participant fixes them in one round instead of rerunning the packer N times.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from dj_synth.tools.eval.mmbench import DEFAULT_SPLIT

from .fingerprint import chain_problems

__all__ = [
    "DATA_JUICER_SYNTHESIS_OPS",
    "DEFAULT_CAP",
    "DEFAULT_SPLIT",
    "ManifestEntry",
    "PackError",
    "PackagePlan",
    "format_manifest",
    "pack_submission",
    "plan_package",
    "write_package",
]

DEFAULT_CAP = 200_000  # the toolkit's check_sample_number.py samples down to this many
MANIFEST_NAME = "MANIFEST.json"

# Data-Juicer operators that generate content. We may not implement all of them, but a
# participant's recipe that uses one (run with upstream Data-Juicer) does contain synthesis.
DATA_JUICER_SYNTHESIS_OPS: frozenset[str] = frozenset(
    {
        "image_captioning_mapper",
        "image_captioning_from_gpt4v_mapper",
        "image_diffusion_mapper",
        "video_captioning_from_audio_mapper",
        "video_captioning_from_frames_mapper",
        "video_captioning_from_summarizer_mapper",
        "video_captioning_from_video_mapper",
        "video_captioning_from_vlm_mapper",
        "generate_qa_from_text_mapper",
        "generate_qa_from_examples_mapper",
        "optimize_qa_mapper",
        "optimize_query_mapper",
        "optimize_response_mapper",
        "sentence_augmentation_mapper",
        "nlpaug_en_mapper",
        "nlpcda_zh_mapper",
        "mllm_mapper",
    }
)

# Junk that must not leak into solution/ (caches, the participant's git history).
_SKIP_DIRS = frozenset({"__pycache__", ".git"})
_SKIP_SUFFIXES = (".pyc",)

# Fixed timestamp (the zip epoch) so identical inputs give byte-identical archives.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_CHUNK = 1 << 20

# The HF Trainer logs `{'train_runtime': ..., 'train_loss': ..., 'epoch': ...}` once, at the end.
_SUMMARY_RE = re.compile(r"""['"]train_runtime['"]\s*:""")
_TRACEBACK = "Traceback (most recent call last)"
_NUM_EXAMPLES_RE = re.compile(r"Num examples\s*=\s*([\d,]+)")


class PackError(Exception):
    """The run cannot be packaged; the message says what is wrong and how to fix it (one line each)."""

    @property
    def problems(self) -> list[str]:
        return str(self).splitlines()


@dataclass(frozen=True)
class ManifestEntry:
    """One packaged file: its zip path, size in bytes and sha256 of its content."""

    path: str
    size: int
    sha256: str


class PackagePlan(list):
    """`[(source on disk, arcname), ...]` plus the directories added recursively.

    `write_package` needs the roots to refuse a zip path inside one of them (the archive
    would otherwise be packaged into a later run's zip, or into itself).
    """

    def __init__(self, items: Iterable[tuple[Path, str]] = (), roots: Iterable[Path] = ()):
        super().__init__(items)
        self.roots: list[Path] = list(roots)


# ---------------------------------------------------------------------------- helpers


def _rel(path: Path) -> str:
    """A short display path for messages: relative when under the cwd, else as absolute."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # different drive on Windows
        return str(path)
    return str(Path(path).absolute()) if rel.startswith("..") else rel


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def arcname_problem(arcname: str) -> str | None:
    """Why `arcname` is unsafe inside a zip (zip-slip, absolute, drive letter), or None if fine."""
    if not arcname or "\\" in arcname or "\x00" in arcname:
        return f"unsafe archive path {arcname!r}: empty, or contains a backslash/NUL"
    pure = PurePosixPath(arcname)
    if pure.is_absolute() or arcname.startswith("/"):
        return f"unsafe archive path {arcname!r}: absolute"
    if re.match(r"^[A-Za-z]:", arcname):
        return f"unsafe archive path {arcname!r}: has a drive letter"
    if any(part in ("..", ".", "") for part in arcname.split("/")):
        return f"unsafe archive path {arcname!r}: contains '..', '.' or an empty part"
    return None


def _check_arcname(arcname: str) -> None:
    problem = arcname_problem(arcname)
    if problem:
        raise PackError(problem)


def _walk(
    directory: Path,
    root_real: Path,
    arc_prefix: str,
    problems: list[str],
    *,
    skip_junk: bool,
    top_real: Path | None = None,
    seen: set[Path] | None = None,
) -> list[tuple[Path, str]]:
    """Files under `directory` as (real path, arcname), refusing symlinks that leave `root_real`.

    File symlinks inside the root are read as files. A directory symlink is followed only when
    its target lies outside the walked top directory (else those files are packaged under their
    real path anyway), and each target once, so link loops end.
    """
    top_real = top_real if top_real is not None else _real(directory)
    seen = seen if seen is not None else set()
    found: list[tuple[Path, str]] = []
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:
        problems.append(f"{_rel(directory)}: cannot list ({exc.strerror or exc})")
        return found
    for entry in entries:
        name = entry.name
        if skip_junk and (name in _SKIP_DIRS or name.endswith(_SKIP_SUFFIXES)):
            continue
        path = Path(entry.path)
        real = _real(path)
        if not _is_within(real, root_real):
            problems.append(
                f"{_rel(path)}: symlink resolves outside {_rel(root_real)} (to {real}); "
                "replace it with a copy of the file or remove it"
            )
            continue
        if real.is_dir():
            if entry.is_symlink() and (_is_within(real, top_real) or real in seen):
                continue
            seen.add(real)
            found += _walk(
                path,
                root_real,
                f"{arc_prefix}/{name}",
                problems,
                skip_junk=skip_junk,
                top_real=top_real,
                seen=seen,
            )
        elif real.is_file():
            found.append((real, f"{arc_prefix}/{name}"))
        elif entry.is_symlink():
            problems.append(f"{_rel(path)}: broken symlink; remove it or point it at a file")
    return found


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _check_training_log(path: Path) -> str | None:
    """Why the log does not show a finished HF Trainer run, or None if it does."""
    text = _read_text(path)
    summaries = list(_SUMMARY_RE.finditer(text))
    if not summaries:
        return (
            f"{_rel(path)}: no Trainer final summary ('train_runtime' ... 'train_loss'): "
            "the run did not finish; rerun training to completion before packaging"
        )
    if text.find(_TRACEBACK, summaries[-1].end()) != -1:
        return (
            f"{_rel(path)}: a Python traceback follows the last final summary (a failed rerun "
            "appended to the log); rerun training to completion before packaging"
        )
    return None


def count_records(path: Path) -> int:
    """Samples in a LLaVA JSON list (`[...]`) or in a JSONL file (one per non-blank line)."""
    with open(path, "rb") as fh:
        head = fh.read(4096).lstrip()
        if head.startswith(b"\xef\xbb\xbf"):
            head = head[3:].lstrip()
        if head.startswith(b"["):  # streamed: a 200k-sample LLaVA JSON is never held whole
            import ijson

            fh.seek(0)
            if fh.read(3) != b"\xef\xbb\xbf":
                fh.seek(0)
            return sum(1 for _ in ijson.items(fh, "item"))
        fh.seek(0)
        return sum(1 for line in fh if line.strip())


def _log_num_examples(log: Path) -> int | None:
    """`Num examples = 200,000` of the run that finished (the last one before the summary)."""
    text = _read_text(log)
    summaries = list(_SUMMARY_RE.finditer(text))
    end = summaries[-1].start() if summaries else len(text)
    matches = [m for m in _NUM_EXAMPLES_RE.finditer(text) if m.start() < end]
    if not matches:
        return None
    return int(matches[-1].group(1).replace(",", ""))


def _pretrain_count(
    output_dir: Path, pretrain_data: Path | None, pretrain_log: Path, problems: list[str]
) -> tuple[int, str] | None:
    """(number of pretraining samples, where it came from); None after appending a problem."""
    source: Path | None = None
    if pretrain_data is not None:
        source = Path(pretrain_data)
        if not source.is_file():
            problems.append(f"pretrain data {_rel(source)} (--pretrain-data) does not exist")
            return None
    else:
        state_path = output_dir / "dj_train_state.json"
        if state_path.is_file():
            try:
                state = json.loads(_read_text(state_path))
            except ValueError as exc:
                problems.append(f"{_rel(state_path)}: not valid JSON ({exc}); fix or remove it")
                return None
            value = state.get("pretrain_data") if isinstance(state, dict) else None
            if value:
                candidates = [Path(value)]
                if not Path(value).is_absolute():
                    candidates.append(output_dir / value)
                source = next((c for c in candidates if c.is_file()), None)
                if source is None:
                    problems.append(
                        f"{_rel(state_path)}: pretrain_data {value} does not exist; "
                        "pass --pretrain-data with the LLaVA JSON used for pretraining"
                    )
                    return None
    if source is not None:
        try:
            return count_records(source), _rel(source)
        except (OSError, ValueError, TypeError) as exc:
            problems.append(
                f"pretrain data {_rel(source)}: cannot count records ({exc}); "
                "expected a LLaVA JSON list or JSONL"
            )
            return None
    if pretrain_log.is_file():
        count = _log_num_examples(pretrain_log)
        if count is not None:
            return count, f"{_rel(pretrain_log)} (Num examples)"
    problems.append(
        "cannot tell how many pretraining samples were used (no dj_train_state.json, no "
        "'Num examples' in pretrain.log); pass --pretrain-data with the LLaVA JSON used"
    )
    return None


def _stage_problems(state_path: Path) -> list[str]:
    """A run made by dj-train: the eval results must come from the checkpoint, and the
    checkpoint from the data, that the state file says each stage consumed (an interrupted
    or partial rerun leaves later stages stale)."""
    try:
        state = json.loads(_read_text(state_path))
    except ValueError:
        return []  # reported where the pretrain data is read
    if not isinstance(state, dict) or not state.get("stages"):
        return []
    return [f"{_rel(state_path)}: {p}" for p in chain_problems(state)]


def _recipe_ops(process: Any) -> list[str]:
    """Operator names of a recipe's `process` list (`{op: {args}}` items or bare names)."""
    names: list[str] = []
    for item in process if isinstance(process, list) else []:
        if isinstance(item, str):
            names.append(item)
        elif isinstance(item, dict):
            names += [str(key) for key in item]
    return names


def _synthesizes(op_name: str) -> bool:
    """True for our operators marked `synthesizes`, and Data-Juicer's content generators."""
    import dj_synth.operators  # noqa: F401  (populates the registry)
    from dj_synth.operators.registry import OPERATORS

    cls = OPERATORS.get(op_name)
    return bool(getattr(cls, "synthesizes", False)) or op_name in DATA_JUICER_SYNTHESIS_OPS


def custom_synthesis_ops(source: str) -> set[str]:
    """Names of operators a participant's Python file registers with ``synthesizes = True``.

    Read from the syntax tree (``@register("name")`` on a class whose body sets
    ``synthesizes = True``): packaging never runs the participant's code."""
    names: set[str] = set()
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return names
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        marked = any(
            isinstance(stmt, (ast.Assign, ast.AnnAssign))
            and any(
                isinstance(t, ast.Name) and t.id == "synthesizes"
                for t in (stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target])
            )
            and isinstance(stmt.value, ast.Constant)
            and stmt.value.value is True
            for stmt in node.body
        )
        if not marked:
            continue
        for deco in node.decorator_list:
            if (
                isinstance(deco, ast.Call)
                and getattr(deco.func, "id", getattr(deco.func, "attr", None)) == "register"
                and deco.args
                and isinstance(deco.args[0], ast.Constant)
                and isinstance(deco.args[0].value, str)
            ):
                names.add(deco.args[0].value)
    return names


def _check_recipes(files: list[tuple[Path, str]], problems: list[str]) -> None:
    """The challenge requires a synthesis step: some recipe in solution/ must run one
    (a built-in synthesis operator, a Data-Juicer generator, or a custom operator in
    solution/ that declares ``synthesizes = True``)."""
    custom: set[str] = set()
    for source, arcname in files:
        if arcname.endswith(".py"):
            custom |= custom_synthesis_ops(_read_text(source))
    recipes: dict[str, list[str]] = {}
    for source, arcname in files:
        if not arcname.lower().endswith((".yaml", ".yml")):
            continue
        try:
            data = yaml.safe_load(_read_text(source))
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            problems.append(f"{arcname}: not valid YAML ({first}); fix or remove it")
            continue
        if isinstance(data, dict) and isinstance(data.get("process"), list):
            recipes[arcname] = _recipe_ops(data["process"])
    if not recipes:
        problems.append(
            "no Data-Juicer recipe (a YAML with a `process` list) under the --solution paths: "
            "the challenge requires the data recipe in solution/"
        )
        return
    if not any(op in custom or _synthesizes(op) for ops in recipes.values() for op in ops):
        found = "; ".join(f"{name}: {', '.join(ops) or 'no ops'}" for name, ops in recipes.items())
        problems.append(
            f"no synthesis operator in the recipes ({found}): the challenge requires a synthesis "
            "step in the data pipeline (e.g. image_captioning_mapper)"
        )


# ---------------------------------------------------------------------------- API


def plan_package(
    output_dir: str | os.PathLike[str],
    exp: str,
    solution: Sequence[str | os.PathLike[str]],
    split: str = DEFAULT_SPLIT,
    pretrain_data: str | os.PathLike[str] | None = None,
    cap: int = DEFAULT_CAP,
) -> PackagePlan:
    """Validate a finished run and list `(source, arcname)` pairs to zip; raises PackError.

    All problems are collected first so the error lists everything to fix in one go.
    """
    problems: list[str] = []
    out = Path(output_dir)
    out_real = _real(out)
    ckpt = f"MGM-2B-Finetune-{exp}"
    plan: list[tuple[Path, str]] = []
    roots: list[Path] = []

    if not exp or "/" in exp or "\\" in exp or exp in (".", ".."):
        problems.append(f"experiment name {exp!r} is not a plain name (EXP_NAME in train.sh)")
    if not split or "/" in split or "\\" in split or split in (".", ".."):
        problems.append(f"mmbench split {split!r} is not a plain name")

    # --- output/: the files the toolkit script leaves behind
    pretrain_log = out / "training_dirs" / f"MGM-2B-Pretrain-{exp}" / "pretrain.log"
    if not out.is_dir():
        problems.append(f"output dir {_rel(out)} does not exist; pass --output-dir")
    elif not problems:
        eval_dir = out / "eval_results" / ckpt
        required = {
            "train.sh": out / "train.sh",
            "pretrain.log": pretrain_log,
            "finetuning.log": out / "training_dirs" / ckpt / "finetuning.log",
            "textvqa answers": eval_dir / "textvqa" / "bm1.jsonl",
            "mmbench answers": eval_dir / "mmbench" / "answers" / split / f"{ckpt}.jsonl",
            "mmbench upload": eval_dir / "mmbench" / "answers_upload" / split / f"{ckpt}.xlsx",
        }
        usable: dict[str, Path] = {}
        for what, path in required.items():
            real = _real(path)
            if path.is_symlink() or path.exists():
                if not _is_within(real, out_real):
                    problems.append(
                        f"{_rel(path)}: symlink resolves outside {_rel(out)} (to {real}); "
                        "replace it with a copy of the file"
                    )
                    continue
            if not real.is_file():
                problems.append(f"missing {what}: {_rel(path)}")
            elif real.stat().st_size == 0:
                problems.append(f"empty {what}: {_rel(path)}")
            else:
                usable[what] = real
        for what in ("pretrain.log", "finetuning.log"):
            if what in usable:
                problem = _check_training_log(usable[what])
                if problem:
                    problems.append(problem)
        if "train.sh" in usable:
            plan.append((usable["train.sh"], "output/train.sh"))
        for what, stage in (("pretrain.log", "Pretrain"), ("finetuning.log", "Finetune")):
            if what in usable:
                plan.append((usable[what], f"output/training_dirs/MGM-2B-{stage}-{exp}/{what}"))
        if eval_dir.is_dir() and _is_within(_real(eval_dir), out_real):
            plan += _walk(
                eval_dir, out_real, f"output/eval_results/{ckpt}", problems, skip_junk=False
            )
            roots.append(_real(eval_dir))
        elif eval_dir.is_dir():
            problems.append(
                f"{_rel(eval_dir)}: symlink resolves outside {_rel(out)}; copy the results in"
            )

    # --- solution/: recipes and code
    if not solution:
        problems.append("no solution path given; pass --solution with your recipes and code")
    solution_files: list[tuple[Path, str]] = []
    for given in solution:
        path = Path(given)
        name = Path(os.path.abspath(path)).name
        if not path.exists():
            problems.append(f"solution path {_rel(path)} does not exist")
        elif path.is_dir():
            root = _real(path)
            roots.append(root)
            # the toolkit's own solution/ folder is the package's solution/, not solution/solution/
            prefix = "solution" if name == "solution" else f"solution/{name}"
            solution_files += _walk(path, root, prefix, problems, skip_junk=True)
        else:
            solution_files.append((_real(path), f"solution/{name}"))
    plan += solution_files
    if solution and solution_files:
        _check_recipes(solution_files, problems)
    elif solution and not any(p.startswith("solution path") for p in problems):
        problems.append(
            "the --solution paths hold no files: the challenge requires the data recipe in solution/"
        )

    # --- dj-train's record: every stage finished, each on what its upstream stage last produced
    state_path = out / "dj_train_state.json"
    if out.is_dir() and state_path.is_file():
        problems += _stage_problems(state_path)

    # --- the 200k pretraining cap
    if out.is_dir():
        counted = _pretrain_count(
            out, Path(pretrain_data) if pretrain_data is not None else None, pretrain_log, problems
        )
        if counted is not None and counted[0] > cap:
            problems.append(
                f"pretraining used {counted[0]:,} samples (from {counted[1]}), over the cap of "
                f"{cap:,}: sample the pretrain data down to {cap:,} and retrain"
            )

    # --- archive paths: unique and safe
    seen: dict[str, Path] = {}
    for source, arcname in plan:
        problem = arcname_problem(arcname)
        if problem:
            problems.append(f"{_rel(source)}: {problem}")
        elif arcname in seen and seen[arcname] != source:
            problems.append(
                f"{arcname}: two sources map to it ({_rel(seen[arcname])}, {_rel(source)}); "
                "rename one of the --solution paths"
            )
        elif arcname == MANIFEST_NAME:
            problems.append(f"{arcname}: reserved for the manifest")
        seen.setdefault(arcname, source)

    if problems:
        raise PackError("\n".join(dict.fromkeys(problems)))
    unique = {arcname: source for source, arcname in plan}
    return PackagePlan(((unique[a], a) for a in sorted(unique)), roots)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _zip_info(arcname: str, size: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(arcname, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16  # fixed mode: the host's umask must not change the bytes
    info.create_system = 3  # unix, whatever host writes it
    info.file_size = size  # lets zipfile pick ZIP64 up front for >2 GiB files
    return info


def write_package(
    plan: Sequence[tuple[Path, str]], zip_path: str | os.PathLike[str]
) -> list[ManifestEntry]:
    """Write the zip (sorted, fixed timestamps: same inputs, same bytes) plus MANIFEST.json.

    Hashes while streaming, and writes to a temp file in the target directory that is renamed
    into place, so a crash never leaves a half-written `submit.zip` that looks complete.
    """
    for _, arcname in plan:
        _check_arcname(arcname)
        if arcname == MANIFEST_NAME:
            raise PackError(f"{arcname}: reserved for the manifest")
    arcnames = [arcname for _, arcname in plan]
    if len(set(arcnames)) != len(arcnames):
        raise PackError("duplicate archive paths in the plan")

    target = Path(zip_path)
    target_real = Path(os.path.realpath(target))
    for root in getattr(plan, "roots", ()):
        if _is_within(target_real, _real(root)):
            raise PackError(
                f"zip path {_rel(target)} is inside {_rel(root)}, which is being packaged "
                "(the zip would include itself); write it elsewhere with -o"
            )
    if any(_real(source) == target_real for source, _ in plan):
        raise PackError(f"zip path {_rel(target)} is one of the files being packaged; use -o")
    if target.is_dir():
        raise PackError(f"zip path {_rel(target)} is a directory; give a file name with -o")
    target.parent.mkdir(parents=True, exist_ok=True)

    entries: list[ManifestEntry] = []
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as zf:
            for source, arcname in sorted(plan, key=lambda item: item[1]):
                digest = hashlib.sha256()
                size = 0
                with open(source, "rb") as src:
                    info = _zip_info(arcname, os.fstat(src.fileno()).st_size)
                    with zf.open(info, "w", force_zip64=info.file_size > 2**31) as dst:
                        while chunk := src.read(_CHUNK):
                            digest.update(chunk)
                            size += len(chunk)
                            dst.write(chunk)
                entries.append(ManifestEntry(arcname, size, digest.hexdigest()))
            manifest = json.dumps([asdict(e) for e in entries], indent=2) + "\n"
            zf.writestr(_zip_info(MANIFEST_NAME, len(manifest)), manifest.encode("utf-8"))
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return entries


def pack_submission(
    output_dir: str | os.PathLike[str],
    exp: str,
    solution: Sequence[str | os.PathLike[str]],
    zip_path: str | os.PathLike[str],
    split: str = DEFAULT_SPLIT,
    pretrain_data: str | os.PathLike[str] | None = None,
    cap: int = DEFAULT_CAP,
) -> list[ManifestEntry]:
    """Validate the run and write the submission zip; returns the manifest entries."""
    plan = plan_package(output_dir, exp, solution, split, pretrain_data, cap)
    return write_package(plan, zip_path)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def format_manifest(entries: Sequence[ManifestEntry]) -> str:
    """A table (size, sha256 prefix, path) with totals; the full hashes are in MANIFEST.json."""
    width = max([len(f"{e.size:,}") for e in entries] + [len("size")])
    lines = [f"{'size':>{width}}  {'sha256':<15}  path"]
    for e in entries:
        lines.append(f"{e.size:>{width},}  {e.sha256[:12]}...  {e.path}")
    total = sum(e.size for e in entries)
    lines.append(f"{len(entries)} files, {total:,} bytes ({_human(total)}) + {MANIFEST_NAME}")
    return "\n".join(lines)
