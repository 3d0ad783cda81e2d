"""`dj-eval`: score TextVQA / MMBench answer files locally.

    dj-eval textvqa --annotation-file TextVQA_0.5.1_val.json --result-file bm1.jsonl
    dj-eval mmbench --annotation-file mmbench_dev_20230712.tsv --result-file CKPT.jsonl \\
        --upload-xlsx answers_upload/CKPT.xlsx

Bad input ends with one line on stderr and exit code 2 (no traceback), so
scripts can tell "could not score" from a low score.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from dj_synth.tools.cli_common import make_app

app = make_app(
    "Local TextVQA / MMBench scorers matching the MGM challenge's upstream scripts. "
    "Exit 0 scored, 2 bad input.",
    no_args_is_help=True,
)

EXIT_BAD_INPUT = 2


def _fail(message: str) -> NoReturn:
    """One-line error on stderr, exit 2."""
    typer.echo(f"dj-eval: error: {message}", err=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def _need_file(path: Path, what: str) -> Path:
    if not path.is_file():
        _fail(f"{what} not found: {path}")
    return path


def _jsonl_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        _fail(f"result directory not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix == ".jsonl" and p.is_file())
    if not files:
        _fail(f"no .jsonl files in {folder}")
    return files


def _emit_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False))


AnnotationOpt = Annotated[Path, typer.Option("--annotation-file", help="Annotation file.")]
ResultFileOpt = Annotated[
    Path | None, typer.Option("--result-file", help="One answers jsonl file.")
]
ResultDirOpt = Annotated[
    Path | None, typer.Option("--result-dir", help="Folder of answers jsonl files.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead.")]


@app.command()
def textvqa(
    annotation_file: AnnotationOpt,
    result_file: ResultFileOpt = None,
    result_dir: ResultDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """TextVQA soft accuracy (percent).

    With --result-dir each *.jsonl is scored on its own, as upstream: one file per
    experiment, and the toolkit's folder also holds the chunk files, so pooling would
    double count.
    """
    from .textvqa import load_annotations, read_jsonl, score_results

    if (result_file is None) == (result_dir is None):
        _fail("give exactly one of --result-file or --result-dir")
    _need_file(annotation_file, "annotation file")
    files = [_need_file(result_file, "result file")] if result_file else _jsonl_in(result_dir)
    try:
        annotations = load_annotations(annotation_file)
        scores = {f.stem: score_results(annotations, read_jsonl(f)) for f in files}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _fail(_one_line(exc))
    if as_json:
        _emit_json(next(iter(scores.values())) if result_file else scores)
        return
    for name, score in scores.items():
        if result_dir is not None:
            typer.echo(name)
        typer.echo(f"Samples: {score['samples']}")
        typer.echo(f"Accuracy: {score['accuracy']:.2f}%")
        if score["unmatched"]:
            typer.echo(f"Unmatched: {score['unmatched']} (no annotation; not scored)")


@app.command()
def mmbench(
    annotation_file: AnnotationOpt,
    result_file: ResultFileOpt = None,
    result_dir: ResultDirOpt = None,
    experiment: Annotated[
        str | None,
        typer.Option("--experiment", help="With --result-dir: score DIR/EXPERIMENT.jsonl."),
    ] = None,
    match: Annotated[
        str, typer.Option("--match", help="exact (upstream) or letter (lenient extraction).")
    ] = "exact",
    upload_xlsx: Annotated[
        Path | None, typer.Option("--upload-xlsx", help="Also write the submission xlsx here.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """MMBench plain + circular accuracy, per category; optionally the upload xlsx."""
    from .mmbench import load_mmbench, load_predictions, score_mmbench, write_upload_xlsx

    if match not in {"exact", "letter"}:
        _fail(f"--match must be 'exact' or 'letter', not {match!r}")
    if (result_file is None) == (result_dir is None):
        _fail("give exactly one of --result-file or --result-dir")
    _need_file(annotation_file, "annotation file")
    if result_file is not None:
        files = [_need_file(result_file, "result file")]
    elif experiment is not None:
        files = [_need_file(result_dir / f"{experiment}.jsonl", "result file")]
    else:
        files = _jsonl_in(result_dir)
        if len(files) > 1:
            _fail(f"{len(files)} jsonl files in {result_dir}; pick one with --experiment")
    try:
        df = load_mmbench(annotation_file)
        preds = load_predictions(files)
        result = score_mmbench(df, preds, match=match)
        if upload_xlsx is not None:
            result["upload_xlsx"] = str(write_upload_xlsx(df, files, upload_xlsx))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _fail(_one_line(exc))
    if as_json:
        _emit_json(result)
        return
    _print_mmbench(result)


@app.command()
def scores(
    out: Annotated[Path, typer.Option("--out", help="scores.json to write")],
    textvqa_annotation: Annotated[Path | None, typer.Option("--textvqa-annotation")] = None,
    textvqa_result: Annotated[Path | None, typer.Option("--textvqa-result")] = None,
    mmbench_annotation: Annotated[Path | None, typer.Option("--mmbench-annotation")] = None,
    mmbench_result: Annotated[Path | None, typer.Option("--mmbench-result")] = None,
    match: Annotated[str, typer.Option("--match")] = "exact",
    fidelity: Annotated[
        str | None,
        typer.Option("--fidelity", help="toolkit / fast: how the answers were produced."),
    ] = None,
) -> None:
    """Every local score in one scores.json (what dj-train writes beside the answers), with
    the fidelity mode that produced them (null when not given)."""
    from dj_synth.tools.mgm.fidelity import describe

    from .mmbench import load_mmbench, load_predictions, score_mmbench
    from .textvqa import score_textvqa

    result: dict[str, Any] = {}
    try:
        result["fidelity"] = describe(fidelity) if fidelity is not None else None
        if (textvqa_annotation is None) != (textvqa_result is None):
            _fail("--textvqa-annotation and --textvqa-result go together")
        if textvqa_annotation is not None and textvqa_result is not None:
            result["textvqa"] = score_textvqa(
                _need_file(textvqa_annotation, "annotation file"),
                [_need_file(textvqa_result, "result file")],
            )
        if (mmbench_annotation is None) != (mmbench_result is None):
            _fail("--mmbench-annotation and --mmbench-result go together")
        if mmbench_annotation is not None and mmbench_result is not None:
            frame = load_mmbench(_need_file(mmbench_annotation, "annotation file"))
            preds = load_predictions([_need_file(mmbench_result, "result file")])
            result["mmbench"] = score_mmbench(frame, preds, match=match)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _fail(_one_line(exc))
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    out.write_text(text, encoding="utf-8")
    typer.echo(text, nl=False)


def _print_mmbench(result: dict[str, Any]) -> None:
    """Human summary: totals, then a per-category table."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"Questions scored: {result['questions']} (missing: {result['missing']})")
    console.print(f"Accuracy: {result['accuracy']:.2f}%")
    console.print(
        f"Circular accuracy: {result['circular_accuracy']:.2f}% "
        f"over {result['main_questions']} main questions"
    )
    if result["per_category"]:
        table = Table("category", "questions", "accuracy", "circular")
        for cat, s in result["per_category"].items():
            table.add_row(
                cat,
                str(s["questions"]),
                f"{s['accuracy']:.2f}%",
                f"{s['circular_accuracy']:.2f}%",
            )
        console.print(table)
    if "upload_xlsx" in result:
        console.print(f"Upload file: {result['upload_xlsx']}", soft_wrap=True)


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, KeyError):
        text = f"missing field {text}"
    return " ".join(text.split())


def main() -> None:
    """Console-script entry point."""
    app(prog_name="dj-eval")


if __name__ == "__main__":
    main()
