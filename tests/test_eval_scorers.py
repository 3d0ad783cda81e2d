"""Known-answer tests for the local TextVQA / MMBench scorers (`dj-eval`)."""

from __future__ import annotations

import base64
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from dj_synth.tools.eval import mmbench as mmb
from dj_synth.tools.eval import textvqa as tvqa
from dj_synth.tools.eval.cli import app

SUFFIX = "Answer the question using a single word or phrase."
MMB_SUFFIX = "Answer with the option's letter from the given choices directly."


# --------------------------------------------------------------------------- TextVQA


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("The Dog", "dog"),
        ("a cat", "cat"),
        ("an apple", "apple"),
        ("Two", "2"),
        ("ten dollars", "10 dollars"),
        ("none", "0"),
        ("hello, world!", "hello world"),
        ("1,000", "1000"),
        ("it's", "it 's"),
        ("dont", "don't"),
        ("Thats right", "that's right"),
        ("the end.", "end"),
        ("3.5", "3.5"),
        ("version 2.", "version 2"),
        ("coca-cola", "coca cola"),
        ("x - ray", "x ray"),
        ("What?", "what"),
        ("  New\nYork\t", "new york"),
        ('"quoted"', "quoted"),
        ("(c) 2019", "c 2019"),
    ],
)
def test_normalize_answer_corner_cases(raw: str, expected: str) -> None:
    assert tvqa.normalize_answer(raw) == expected


@pytest.mark.parametrize(
    ("matches", "expected"),
    [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)],
)
def test_soft_score_leave_one_out(matches: int, expected: float) -> None:
    # k matches: dropping a match leaves k-1, dropping another leaves k (each /3, capped at 1).
    answers = ["Nike"] * matches + ["adidas"] * (10 - matches)
    assert tvqa.soft_score("nike.", answers) == pytest.approx(expected)


def test_soft_score_normalises_both_sides_and_needs_ten() -> None:
    answers = ["the two"] * 3 + ["three"] * 7
    assert tvqa.soft_score("2", answers) == pytest.approx(0.9)
    assert tvqa.soft_score("3", answers) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="exactly 10"):
        tvqa.soft_score("x", ["x"] * 9)


def test_prompt_processor_forms() -> None:
    q = "What Brand is THIS?"
    assert tvqa.prompt_processor(f"{q}\nReference OCR token: a, b\n{SUFFIX}") == q.lower()
    assert tvqa.prompt_processor(f"Reference OCR token: a, b\n{q}\n{SUFFIX}") == q.lower()
    assert tvqa.prompt_processor(f"{q}\n{SUFFIX}") == q.lower()
    ocr_form = f"OCR tokens: a b c Question: {q} Short answer:"
    assert tvqa.prompt_processor(ocr_form) == q.lower()
    with pytest.raises(ValueError):
        tvqa.prompt_processor("one line only")


def test_question_text_layout() -> None:
    text = tvqa.question_text("what is it?", ["nike", "air"])
    assert text == f"what is it?\nReference OCR token: nike, air\n{SUFFIX}"
    assert tvqa.question_text("what is it?", []) == f"what is it?\n{SUFFIX}"
    # Both layouts round-trip through the scorer's key extraction.
    assert tvqa.prompt_processor(text) == "what is it?"
    assert tvqa.prompt_processor(tvqa.question_text("What is it?", [])) == "what is it?"


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _textvqa_fixture(tmp_path: Path) -> tuple[Path, Path]:
    ann = {
        "dataset_name": "textvqa",
        "data": [
            {
                "image_id": "img1",
                "question_id": 1,
                "question": "What BRAND is this?",
                "answers": ["nike"] * 3 + ["adidas"] * 7,
            },
            {
                "image_id": "img2",
                "question_id": 2,
                "question": "how many?",
                "answers": ["two"] * 4 + ["3"] * 6,
            },
        ],
    }
    ann_path = tmp_path / "TextVQA_0.5.1_val.json"
    ann_path.write_text(json.dumps(ann), encoding="utf-8")
    results = [
        {"question_id": "img1", "prompt": tvqa.question_text("What BRAND is this?", ["nike"])},
        {"question_id": "img2", "prompt": tvqa.question_text("how many?", [])},
        {"question_id": "img9", "prompt": tvqa.question_text("not annotated?", ["x"])},
    ]
    for rec, text in zip(results, ["Nike", "2", "x"]):
        rec.update(text=text, answer_id="a", model_id="m", metadata={})
    return ann_path, _write_jsonl(tmp_path / "bm1.jsonl", results)


def test_score_textvqa_end_to_end(tmp_path: Path) -> None:
    ann_path, res_path = _textvqa_fixture(tmp_path)
    assert tvqa.load_annotations(ann_path)[("img1", "what brand is this?")][0] == "nike"
    score = tvqa.score_textvqa(ann_path, [res_path])
    assert score["samples"] == 2
    assert score["unmatched"] == 1
    assert score["accuracy"] == pytest.approx(95.0)  # (0.9 + 1.0) / 2


def test_score_textvqa_nothing_matched(tmp_path: Path) -> None:
    ann_path, _ = _textvqa_fixture(tmp_path)
    bad = _write_jsonl(
        tmp_path / "bad.jsonl",
        [{"question_id": 1, "prompt": f"What BRAND is this?\n{SUFFIX}", "text": "nike"}],
    )
    with pytest.raises(ValueError, match="image_id"):
        tvqa.score_textvqa(ann_path, [bad])


def test_merge_answer_chunks(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "2_0.jsonl", [{"question_id": "a"}, {"question_id": "b"}])
    (tmp_path / "2_1.jsonl").write_text('{"question_id": "c"}', encoding="utf-8")  # no newline
    out = tvqa.merge_answer_chunks(tmp_path, 2)
    assert out == tmp_path / "bm1.jsonl"
    assert [r["question_id"] for r in tvqa.read_jsonl(out)] == ["a", "b", "c"]
    with pytest.raises(FileNotFoundError, match="3_2.jsonl"):
        _write_jsonl(tmp_path / "3_0.jsonl", [])
        _write_jsonl(tmp_path / "3_1.jsonl", [])
        tvqa.merge_answer_chunks(tmp_path, 3)


# --------------------------------------------------------------------------- MMBench

NAN = float("nan")


def _png_b64() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (4, 3), (255, 0, 0)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _mmbench_tsv(tmp_path: Path) -> Path:
    img = _png_b64()
    rows = [
        # index, question, hint, A, B, C, D, answer, category
        (0, "q0", NAN, "cat", "dog", NAN, "stray", "A", "attr"),
        (1, "q1", "Look closely.", "w", "x", "y", "z", "C", "attr"),
        (2, "q2", NAN, "1", "2", "3", NAN, "B", "count"),
        (1_000_000, "q0", NAN, "dog", "cat", NAN, NAN, "B", "attr"),
        (1_000_001, "q1", "Look closely.", "x", "y", "z", "w", "D", "attr"),
    ]
    df = pd.DataFrame(
        rows, columns=["index", "question", "hint", "A", "B", "C", "D", "answer", "category"]
    )
    df["image"] = img
    df["source"] = "src"
    df["l2-category"] = "l2"
    df["comment"] = NAN
    df["split"] = "dev"
    path = tmp_path / "mmbench_dev.tsv"
    df.to_csv(path, sep="\t", index=False)
    return path


PREDS = {0: "A", 1: "C", 2: "B", 1_000_000: "A", 1_000_001: "D"}


def test_is_none_and_options_stop_at_first_empty(tmp_path: Path) -> None:
    for v in (None, NAN, "nan", "NaN", "None", "", "  "):
        assert mmb.is_none(v)
    for v in ("0", 0, "no", "A"):
        assert not mmb.is_none(v)
    df = mmb.load_mmbench(_mmbench_tsv(tmp_path))
    rows = {int(r["index"]): r for _, r in df.iterrows()}
    assert mmb.options_of(rows[0]) == ["cat", "dog"]  # C empty -> D "stray" ignored
    assert mmb.options_of(rows[1]) == ["w", "x", "y", "z"]
    assert mmb.options_of({"A": "only"}) == ["only"]  # hand-made row without B..D columns


def test_build_prompt_exact_text(tmp_path: Path) -> None:
    df = mmb.load_mmbench(_mmbench_tsv(tmp_path))
    rows = {int(r["index"]): r for _, r in df.iterrows()}
    text, options, chars = mmb.build_prompt(rows[0])
    assert text == f"q0\nA. cat\nB. dog\n{MMB_SUFFIX}"
    assert options == ["cat", "dog"]
    assert chars == ["A", "B"]
    text, _, chars = mmb.build_prompt(rows[1])
    assert text == f"Look closely.\nq1\nA. w\nB. x\nC. y\nD. z\n{MMB_SUFFIX}"
    assert chars == ["A", "B", "C", "D"]
    text, _, _ = mmb.build_prompt(rows[2], lang="cn")
    assert text == "q2\nA. 1\nB. 2\nC. 3\n请直接回答选项字母。"
    bare, _, _ = mmb.build_prompt(rows[2], with_instruction=False)
    assert bare == "q2\nA. 1\nB. 2\nC. 3"
    image = mmb.decode_image(rows[0])
    assert image.size == (4, 3)


def test_answer_record_layout(tmp_path: Path) -> None:
    df = mmb.load_mmbench(_mmbench_tsv(tmp_path))
    row = df.iloc[0]
    text, options, chars = mmb.build_prompt(row)
    rec = mmb.answer_record(row, text, "A", "mgm-2b", options=options, option_chars=chars)
    assert list(rec) == [
        "question_id",
        "round_id",
        "prompt",
        "text",
        "options",
        "option_char",
        "answer_id",
        "model_id",
        "metadata",
    ]
    assert rec["question_id"] == 0 and isinstance(rec["question_id"], int)
    assert rec["option_char"] == ["A", "B"] and rec["metadata"] == {}
    json.dumps(rec)  # serialisable as a jsonl line


def test_circular_accuracy_and_categories(tmp_path: Path) -> None:
    tsv = _mmbench_tsv(tmp_path)
    res = mmb.score_mmbench(tsv, PREDS)
    assert res["questions"] == 5
    assert res["missing"] == 0
    assert res["main_questions"] == 3
    assert res["accuracy"] == pytest.approx(80.0)  # only the shifted copy of q0 is wrong
    assert res["circular_accuracy"] == pytest.approx(200 / 3)  # q0 fails, q1 and q2 pass
    assert res["per_category"]["attr"] == pytest.approx(
        {"accuracy": 75.0, "circular_accuracy": 50.0, "questions": 4}
    )
    assert res["per_category"]["count"] == pytest.approx(
        {"accuracy": 100.0, "circular_accuracy": 100.0, "questions": 1}
    )


def test_missing_prediction_counts_wrong_for_circular_only(tmp_path: Path) -> None:
    tsv = _mmbench_tsv(tmp_path)
    preds = {k: v for k, v in PREDS.items() if k != 1_000_001}
    preds[1_000_000] = "B"
    res = mmb.score_mmbench(tsv, preds)
    assert res["missing"] == 1
    assert res["questions"] == 4
    assert res["accuracy"] == pytest.approx(100.0)
    assert res["circular_accuracy"] == pytest.approx(200 / 3)  # q1's copy unanswered
    with pytest.raises(ValueError, match="no MMBench row"):
        mmb.score_mmbench(tsv, {})


def test_exact_vs_letter_matching(tmp_path: Path) -> None:
    tsv = _mmbench_tsv(tmp_path)
    verbose = {
        0: "The answer is A.",
        1: "(C)",
        2: "2",  # option text of B
        1_000_000: "B. cat",
        1_000_001: "A dog",  # not a letter -> wrong
    }
    exact = mmb.score_mmbench(tsv, verbose, match="exact")
    assert exact["accuracy"] == 0.0
    letter = mmb.score_mmbench(tsv, verbose, match="letter")
    assert letter["accuracy"] == pytest.approx(80.0)
    assert mmb.extract_letter("the answer is a cat", ["x", "y"]) is None
    assert mmb.extract_letter("D", ["x", "y"], ["A", "B"]) is None
    with pytest.raises(ValueError):
        mmb.score_mmbench(tsv, PREDS, match="fuzzy")


def test_upload_xlsx_columns_and_values(tmp_path: Path) -> None:
    tsv = _mmbench_tsv(tmp_path)
    answers = _write_jsonl(
        tmp_path / "ckpt.jsonl",
        [{"question_id": k, "text": v} for k, v in PREDS.items() if k != 2],
    )
    xlsx = mmb.write_upload_xlsx(tsv, [answers], tmp_path / "upload" / "dev" / "ckpt.xlsx")
    assert xlsx.is_file()
    back = pd.read_excel(xlsx, engine="openpyxl")
    assert list(back.columns) == [
        "index",
        "question",
        "A",
        "B",
        "C",
        "D",
        "prediction",
        "answer",
        "split",
    ]
    by_index = dict(zip(back["index"], back["prediction"]))
    assert by_index[0] == "A" and by_index[1_000_000] == "A" and by_index[1_000_001] == "D"
    assert math.isnan(by_index[2])  # no answer line -> empty cell
    assert mmb.load_predictions([answers]) == {k: v for k, v in PREDS.items() if k != 2}


def test_upload_xlsx_narrow_tsv_appends_prediction(tmp_path: Path) -> None:
    tsv = tmp_path / "tiny.tsv"
    tsv.write_text("index\tquestion\tanswer\n7\tq\tA\n", encoding="utf-8")
    answers = _write_jsonl(tmp_path / "a.jsonl", [{"question_id": 7, "text": "A"}])
    back = pd.read_excel(mmb.write_upload_xlsx(tsv, [answers], tmp_path / "t.xlsx"))
    assert list(back.columns) == ["index", "question", "answer", "prediction"]
    assert mmb.score_mmbench(tsv, {7: "A"})["per_category"] == {}
    bad = tmp_path / "bad.tsv"
    bad.write_text("index\tquestion\n1\tq\n", encoding="utf-8")
    with pytest.raises(ValueError, match="answer"):
        mmb.load_mmbench(bad)


# --------------------------------------------------------------------------- CLI

runner = CliRunner()


def test_cli_textvqa_json_and_text(tmp_path: Path) -> None:
    ann_path, res_path = _textvqa_fixture(tmp_path)
    args = ["textvqa", "--annotation-file", str(ann_path), "--result-file", str(res_path)]
    out = runner.invoke(app, [*args, "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == {"accuracy": pytest.approx(95.0), "samples": 2, "unmatched": 1}
    out = runner.invoke(app, args)
    assert "Samples: 2" in out.stdout and "Accuracy: 95.00%" in out.stdout
    out = runner.invoke(
        app,
        ["textvqa", "--annotation-file", str(ann_path), "--result-dir", str(tmp_path), "--json"],
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["bm1"]["samples"] == 2


def test_cli_mmbench_json_and_xlsx(tmp_path: Path) -> None:
    tsv = _mmbench_tsv(tmp_path)
    answers = _write_jsonl(
        tmp_path / "ckpt.jsonl", [{"question_id": k, "text": v} for k, v in PREDS.items()]
    )
    xlsx = tmp_path / "up" / "ckpt.xlsx"
    base = ["mmbench", "--annotation-file", str(tsv), "--result-file", str(answers)]
    out = runner.invoke(app, [*base, "--upload-xlsx", str(xlsx), "--json"])
    assert out.exit_code == 0, out.output
    res = json.loads(out.stdout)
    assert res["accuracy"] == pytest.approx(80.0)
    assert res["circular_accuracy"] == pytest.approx(200 / 3)
    assert xlsx.is_file()
    out = runner.invoke(app, base)
    assert out.exit_code == 0, out.output
    assert "80.00%" in out.stdout and "66.67%" in out.stdout


def test_cli_errors_exit_2_without_traceback(tmp_path: Path) -> None:
    out = runner.invoke(
        app,
        ["textvqa", "--annotation-file", str(tmp_path / "nope.json"), "--result-file", "x.jsonl"],
    )
    assert out.exit_code == 2
    assert out.stdout == ""
    assert "annotation file not found" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    ann_path, _ = _textvqa_fixture(tmp_path)
    bad = _write_jsonl(
        tmp_path / "bad.jsonl", [{"question_id": "zz", "prompt": "q\nx", "text": "a"}]
    )
    out = runner.invoke(
        app, ["textvqa", "--annotation-file", str(ann_path), "--result-file", str(bad)]
    )
    assert out.exit_code == 2 and "no result matched" in out.stderr


def test_module_entry_point_subprocess(tmp_path: Path) -> None:
    ann_path, res_path = _textvqa_fixture(tmp_path)
    cmd = [sys.executable, "-m", "dj_synth.tools.eval.cli", "textvqa"]
    ok = subprocess.run(
        [*cmd, "--annotation-file", str(ann_path), "--result-file", str(res_path), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["samples"] == 2
    missing = subprocess.run(
        [*cmd, "--annotation-file", str(ann_path), "--result-file", str(tmp_path / "no.jsonl")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr and "result file not found" in missing.stderr


def test_cli_scores_keeps_each_question(tmp_path: Path) -> None:
    """scores.json names per_question.jsonl beside it: TextVQA's lookup key and soft score per
    question (img1: "Nike" matches 3 of 10 -> 0.9; img2: "2" matches "two" x4 -> 1.0), MMBench's
    index, circular group, answered and correct per row (row 2 left unanswered)."""
    from dj_synth.tools.eval.compare import load_run

    ann_path, res_path = _textvqa_fixture(tmp_path)
    tsv = _mmbench_tsv(tmp_path)
    answers = _write_jsonl(
        tmp_path / "ckpt.jsonl",
        [{"question_id": k, "text": v} for k, v in PREDS.items() if k != 2],
    )
    out = tmp_path / "ev" / "scores.json"
    result = runner.invoke(
        app,
        ["scores", "--out", str(out), "--seed", "7",
         "--textvqa-annotation", str(ann_path), "--textvqa-result", str(res_path),
         "--mmbench-annotation", str(tsv), "--mmbench-result", str(answers)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())
    assert scores["seed"] == 7 and scores["per_question"] == "per_question.jsonl"
    assert scores["mmbench"]["accuracy"] == pytest.approx(75.0)  # 3 of 4 answered
    assert scores["mmbench"]["circular_accuracy"] == pytest.approx(100 / 3)  # only q1's group
    rows = [json.loads(x) for x in (out.parent / "per_question.jsonl").read_text().splitlines()]
    assert [r for r in rows if r["benchmark"] == "textvqa"] == [
        {"benchmark": "textvqa", "question_id": "img1", "question": "what brand is this?",
         "score": pytest.approx(0.9)},
        {"benchmark": "textvqa", "question_id": "img2", "question": "how many?", "score": 1.0},
    ]  # fmt: skip
    mm = {r["index"]: (r["group"], r["answered"], r["correct"]) for r in rows[2:]}
    assert mm == {
        0: (0, True, True), 1: (1, True, True), 2: (2, False, False),
        1_000_000: (0, True, False), 1_000_001: (1, True, True),
    }  # fmt: skip
    assert [s.seed for s in load_run(out.parent).seeds] == [7]  # compare reads it back
