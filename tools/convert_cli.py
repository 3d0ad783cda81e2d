"""`dj-convert`: format conversion and training-data preparation.

Data-Juicer's own spelling works too, so the challenge's call ports by swapping
the program name:

    dj-convert dj-to-llava IN.jsonl OUT.json --image_special_token "<__dj__image>" \\
        --restore_questions True --original_llava_ds_path input/pretrain_stage_1/stage_1.json
"""

from __future__ import annotations

import sys
from typing import Annotated, NoReturn

import typer

from .cli_common import make_app
from .llava import (
    DJ_EOC,
    LLAVA_IMAGE,
    ConversionError,
    DjToLlavaOptions,
    LlavaToDjOptions,
    dj_to_llava,
    llava_to_dj,
)
from .prepare import CHALLENGE_CAP, UnknownStatError, cap_samples, check_global_batch, top_samples

app = make_app(
    "Format conversion (Data-Juicer <-> LLaVA, byte-identical to Data-Juicer 1.6.1) and the "
    "challenge's training-data preparation (the 200k cap, the global-batch rule). Exit 0 done, "
    "2 a usage mistake, 1 bad data. Data-Juicer's spellings work too: --snake_case options "
    "and --flag True/False.",
    no_args_is_help=True,
)

_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


def _opt(name: str, help: str, flag: bool = False):  # noqa: A002
    """An option named in --dash-case; Data-Juicer's --snake_case reaches it through
    `normalize_args` (declaring both spellings would double every help line)."""
    dash = name.replace("_", "-")
    if flag:
        return typer.Option(f"--{dash}/--no-{dash}", help=help)
    return typer.Option(f"--{dash}", help=help)


def normalize_bool_args(argv: list[str], flags: set[str]) -> list[str]:
    """Data-Juicer's (Fire's) spellings -> ours: `--snake_case` -> `--snake-case`, and
    `--restore_questions True` / `--flag=False` -> `--restore-questions` / `--no-flag`."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and arg != "--":
            name, eq, value = arg.partition("=")
            arg = "--" + name[2:].replace("_", "-") + eq + value
        name, eq, value = arg.partition("=")
        key = name.lstrip("-").replace("-", "_")
        if arg.startswith("--") and key in flags:
            if not eq and i + 1 < len(argv) and argv[i + 1].lower() in _TRUE | _FALSE:
                value, eq = argv[i + 1], "="
                i += 1
            if eq:
                if value.lower() not in _TRUE | _FALSE:
                    raise typer.BadParameter(f"{name} expects True or False, got {value!r}")
                arg = (
                    f"--{key.replace('_', '-')}"
                    if value.lower() in _TRUE
                    else f"--no-{key.replace('_', '-')}"
                )
        out.append(arg)
        i += 1
    return out


def _fail(exc: Exception, code: int = 1) -> NoReturn:
    """One line on stderr; exit 1 for bad data, 2 for a usage mistake."""
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code)


def _write(convert, *args, out: str) -> None:
    """Run a converter; report its count, or its error (ConversionError is a ValueError)."""
    try:
        n = convert(*args)
    except ValueError as exc:
        _fail(exc)
    typer.echo(f"wrote {n} samples to {out}", err=True)


@app.command("dj-to-llava")
def cmd_dj_to_llava(
    dj_ds_path: Annotated[str, typer.Argument(help="Data-Juicer JSONL (file, folder or glob)")],
    target_llava_ds_path: Annotated[str, typer.Argument(help="LLaVA JSON to write (.json)")],
    keep_only_first_image: Annotated[bool, _opt("keep_only_first_image", "Strip image tokens after the first sentence", True)] = True,
    eoc_special_token: Annotated[str, _opt("eoc_special_token", "End-of-chunk token")] = DJ_EOC,
    image_special_token: Annotated[str, _opt("image_special_token", "Image token in the data")] = LLAVA_IMAGE,
    sent_separator: Annotated[str, _opt("sent_separator", "Sentence separator")] = "\n",
    restore_questions: Annotated[bool, _opt("restore_questions", "Restore questions from the original LLaVA file by id", True)] = False,
    original_llava_ds_path: Annotated[str | None, _opt("original_llava_ds_path", "Original LLaVA JSON")] = None,
) -> None:  # fmt: skip
    """Data-Juicer JSONL -> LLaVA JSON, byte-identical to Data-Juicer 1.6.1's dj_to_llava."""
    opts = DjToLlavaOptions(
        keep_only_first_image, eoc_special_token, image_special_token, sent_separator,
        restore_questions, original_llava_ds_path,
    )  # fmt: skip
    _write(dj_to_llava, dj_ds_path, target_llava_ds_path, opts, out=target_llava_ds_path)


@app.command("llava-to-dj")
def cmd_llava_to_dj(
    llava_ds_path: Annotated[str, typer.Argument(help="LLaVA JSON")],
    target_ds_path: Annotated[str, typer.Argument(help="Data-Juicer JSONL to write (.jsonl)")],
    str_id: Annotated[bool, _opt("str_id", "Turn ids into strings", True)] = True,
    split_chunk: Annotated[bool, _opt("split_chunk", "One chunk (eoc) per round", True)] = False,
    image_broadcast: Annotated[bool, _opt("image_broadcast", "Repeat the image token in every round", True)] = False,
    image_broadcast_pos: Annotated[str, _opt("image_broadcast_pos", "random|before|after|follow")] = "random",
    eoc_special_token: Annotated[str, _opt("eoc_special_token", "End-of-chunk token")] = DJ_EOC,
    image_special_token: Annotated[str, _opt("image_special_token", "Image token in the data")] = LLAVA_IMAGE,
    add_eoc_at_last: Annotated[bool, _opt("add_eoc_at_last", "End the text with the eoc token", True)] = True,
    sent_separator: Annotated[str, _opt("sent_separator", "Sentence separator")] = "\n",
    only_keep_caption: Annotated[bool, _opt("only_keep_caption", "Keep only the answers (captions)", True)] = False,
    seed: Annotated[int, typer.Option(help="Seed for image_broadcast_pos=random (Data-Juicer: unseeded)")] = 0,
) -> None:  # fmt: skip
    """LLaVA JSON -> Data-Juicer JSONL, byte-identical to Data-Juicer 1.6.1's llava_to_dj."""
    opts = LlavaToDjOptions(
        str_id, split_chunk, image_broadcast, image_broadcast_pos, eoc_special_token,
        image_special_token, add_eoc_at_last, sent_separator, only_keep_caption, seed,
    )  # fmt: skip
    _write(llava_to_dj, llava_ds_path, target_ds_path, opts, out=target_ds_path)


@app.command("cap")
def cmd_cap(
    in_path: Annotated[str, typer.Argument(help="Data-Juicer JSONL")],
    out_path: Annotated[str, typer.Argument(help="JSONL to write")],
    max_samples: Annotated[int, typer.Option(help="The cap (the challenge: 200000)")] = CHALLENGE_CAP,
    by: Annotated[str | None, typer.Option(help="Keep the top N by this stats key instead of the toolkit's random sample")] = None,
    stats_file: Annotated[str | None, typer.Option(help="Stats side file (<export>_stats.jsonl) for --by")] = None,
    fill: Annotated[bool, typer.Option("--fill", help="Fewer than N: repeat samples up to exactly N (with --by the best first, else the toolkit's seeded order)")] = False,
) -> None:  # fmt: skip
    """At most N samples: the toolkit's seeded random sample, or the top N by a stats key;
    with --fill exactly N, fewer samples repeated (whole passes, then the best or the
    toolkit's seeded order for the rest)."""
    if by:
        try:
            n = top_samples(in_path, out_path, by, max_samples, stats_file, fill)
        except UnknownStatError as exc:
            _fail(exc, 2)
        except ValueError as exc:
            _fail(exc)
        typer.echo(f"wrote {n} samples to {out_path}", err=True)
    else:
        _write(cap_samples, in_path, out_path, max_samples, fill, out=out_path)


@app.command("check-batch")
def cmd_check_batch(
    per_device_batch_size: Annotated[int, typer.Option(help="per_device_train_batch_size")],
    grad_accum: Annotated[int, typer.Option(help="gradient_accumulation_steps")],
    stage: Annotated[str, typer.Option(help="pretrain (256) or finetune (128)")] = "pretrain",
    num_gpus: Annotated[int | None, typer.Option(help="GPUs (default: the CUDA devices seen)")] = None,
) -> None:  # fmt: skip
    """The toolkit's global-batch rule: batch x accumulation x GPUs = 256 / 128."""
    if stage not in ("pretrain", "finetune"):
        _fail(ValueError(f"--stage must be pretrain or finetune, got {stage!r}"), 2)
    if num_gpus is None:
        try:
            import torch

            num_gpus = torch.cuda.device_count()
        except ImportError:
            num_gpus = 0
        if num_gpus == 0:
            _fail(ValueError("no CUDA device here: pass --num-gpus N (the GPUs training uses)"), 2)
    elif num_gpus < 1:
        _fail(ValueError(f"--num-gpus must be at least 1, got {num_gpus}"), 2)
    try:
        typer.echo(check_global_batch(per_device_batch_size, grad_accum, num_gpus, stage))
    except ConversionError as exc:
        _fail(exc)


_BOOL_FLAGS = {
    "keep_only_first_image", "restore_questions", "str_id", "split_chunk", "image_broadcast",
    "add_eoc_at_last", "only_keep_caption",
}  # fmt: skip


def main() -> None:
    """Console entry point: accepts Fire-style booleans (`--flag True`) as Data-Juicer's tools do."""
    try:
        sys.argv[1:] = normalize_bool_args(sys.argv[1:], _BOOL_FLAGS)
    except typer.BadParameter as exc:
        _usage_error(exc)
    app(prog_name="dj-convert")


def _usage_error(exc: Exception) -> NoReturn:
    typer.echo(f"error: {exc}", err=True)
    raise SystemExit(2)


if __name__ == "__main__":
    main()
