"""`dj-eval`: score TextVQA / MMBench answer files locally, and compare two runs.

    dj-eval textvqa --annotation-file TextVQA_0.5.1_val.json --result-file bm1.jsonl
    dj-eval mmbench --annotation-file mmbench_dev_20230712.tsv --result-file CKPT.jsonl \\
        --upload-xlsx answers_upload/CKPT.xlsx
    dj-eval compare outputs/base/output outputs/clip_filter/output

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
PER_QUESTION = "per_question.jsonl"  # written beside scores.json


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
    seed: Annotated[
        int | None, typer.Option("--seed", help="The training seed of the run (recorded).")
    ] = None,
) -> None:
    """Every local score in one scores.json (what dj-train writes beside the answers), with
    the fidelity mode that produced them (null when not given) and the training seed. Each
    question's result goes to per_question.jsonl beside it (named in scores.json), so
    `dj-eval compare` can pair two runs question by question."""
    from dj_synth.tools.mgm.fidelity import describe

    from .mmbench import load_mmbench, load_predictions, mmbench_outcomes, summarize_outcomes
    from .textvqa import summarize_rows, textvqa_per_question

    result: dict[str, Any] = {}
    per_question: list[dict[str, Any]] = []
    try:
        result["fidelity"] = describe(fidelity) if fidelity is not None else None
        result["seed"] = seed
        if (textvqa_annotation is None) != (textvqa_result is None):
            _fail("--textvqa-annotation and --textvqa-result go together")
        if textvqa_annotation is not None and textvqa_result is not None:
            rows, unmatched = textvqa_per_question(
                _need_file(textvqa_annotation, "annotation file"),
                [_need_file(textvqa_result, "result file")],
            )
            result["textvqa"] = summarize_rows(rows, unmatched)
            per_question += [{"benchmark": "textvqa", **row} for row in rows]
        if (mmbench_annotation is None) != (mmbench_result is None):
            _fail("--mmbench-annotation and --mmbench-result go together")
        if mmbench_annotation is not None and mmbench_result is not None:
            frame = load_mmbench(_need_file(mmbench_annotation, "annotation file"))
            preds = load_predictions([_need_file(mmbench_result, "result file")])
            outcomes = mmbench_outcomes(frame, preds, match=match)
            result["mmbench"] = summarize_outcomes(outcomes)
            per_question += [{"benchmark": "mmbench", **row} for row in outcomes]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _fail(_one_line(exc))
    out.parent.mkdir(parents=True, exist_ok=True)
    detail = out.with_name(
        PER_QUESTION if out.name == "scores.json" else f"{out.stem}.{PER_QUESTION}"
    )
    result["per_question"] = detail.name  # beside scores.json: the folder can move
    _write_atomic(detail, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in per_question))
    text = json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    _write_atomic(out, text)
    typer.echo(text, nl=False)


@app.command()
def summarize(
    scores_files: Annotated[
        list[Path], typer.Argument(metavar="SCORES.json...", help="One scores.json per seed.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Summary JSON to write.")],
) -> None:
    """Each score's mean +- std (sample std) over seeds, with every seed's value: what
    dj-train's summary stage writes to output/seed_scores.json."""
    from .compare import CompareError, seed_summary

    for path in scores_files:
        _need_file(path, "scores file")
    try:
        summary = seed_summary([(None, path) for path in scores_files])
    except CompareError as exc:
        _fail(_one_line(exc))
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(summary, indent=2) + "\n"
    _write_atomic(out, text)
    typer.echo(text, nl=False)


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(metavar="RUN_A", help="The baseline run.")],
    run_b: Annotated[Path, typer.Argument(metavar="RUN_B", help="The run compared with it.")],
    n_boot: Annotated[int, typer.Option("--n-boot", min=100, help="Bootstrap resamples.")] = 10_000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the resampling.")] = 0,
    confidence: Annotated[
        float, typer.Option("--confidence", min=0.5, max=0.999, help="Interval level.")
    ] = 0.95,
    as_json: JsonOpt = False,
) -> None:
    """B - A for every score both runs have, with a paired bootstrap confidence interval over
    questions (MMBench: circular groups) and over each run's seeds, and whether the change is
    distinguishable from noise. A run: a dj-train output folder (all its seeds), an
    eval_results/<CKPT> folder or a scores.json (per_question.jsonl beside it)."""
    from .compare import CompareError, compare_runs, load_run

    try:
        result = compare_runs(
            load_run(run_a), load_run(run_b), n_boot=n_boot, seed=seed, confidence=confidence
        )
    except CompareError as exc:
        _fail(_one_line(exc))
    if as_json:
        _emit_json(result)
        return
    _print_comparison(result)


def _print_comparison(result: dict[str, Any]) -> None:
    """A table (each run's mean +- std over seeds, B - A, the interval), then the verdicts."""
    from rich.console import Console
    from rich.table import Table

    def seeds(side: dict[str, Any]) -> str:
        n = len(side["seeds"])
        named = ", ".join(str(s) for s in side["seeds"] if s is not None)
        return f"{n} seed{'s' if n > 1 else ''}" + (f": {named}" if named else "")

    def score(m: dict[str, Any]) -> str:
        return f"{m['mean']:.2f}" + (f" +- {m['std']:.2f}" if len(m["per_seed"]) > 1 else "")

    console = Console()
    if not console.is_terminal:  # a file or a pipe: no 80-column wrapping
        console = Console(width=120)
    console.print(f"A: {result['a']['path']} ({seeds(result['a'])})", soft_wrap=True)
    console.print(f"B: {result['b']['path']} ({seeds(result['b'])})", soft_wrap=True)
    pct = f"{result['confidence'] * 100:g}%"
    table = Table("score", "A", "B", "B - A", f"{pct} CI", "resampled", "verdict")
    for m in result["metrics"].values():
        lo, hi = m["ci"]
        table.add_row(
            m["label"], score(m["a"]), score(m["b"]), f"{m['diff']:+.2f}",
            f"[{lo:+.2f}, {hi:+.2f}]", f"{m['units']} {m['unit']}s",
            f"B {m['direction']}" if m["distinguishable"] else "noise",
        )  # fmt: skip
    console.print(table)
    for m in result["metrics"].values():
        console.print(m["verdict"], soft_wrap=True)
    for note in result["notes"]:
        console.print(f"note: {note}", soft_wrap=True)
    console.print(
        f"paired bootstrap, {result['n_boot']} resamples (--seed {result['seed']}): the same "
        "questions drawn for A and B, each run's seeds drawn on their own; +- is the sample "
        "std over seeds",
        soft_wrap=True,
    )


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


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
