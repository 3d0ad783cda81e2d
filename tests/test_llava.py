"""LLaVA conversion: byte-identical to Data-Juicer's tools (golden files), clear errors, prep steps."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from helpers import read_jsonl, run_recipe, write_recipe
from typer.testing import CliRunner

from dj_synth.tools.convert_cli import _BOOL_FLAGS, app, normalize_bool_args
from dj_synth.tools.llava import (
    ConversionError,
    DjToLlavaOptions,
    LlavaToDjOptions,
    dj_to_llava,
    llava_to_dj,
)
from dj_synth.tools.prepare import cap_samples, check_global_batch, top_samples

GOLDEN = Path(__file__).parent / "golden" / "llava"
# Where we deliberately stop instead of reproducing Data-Juicer's silent damage.
REFUSED = {
    "d2l_empty_sent_separator": "an empty sent_separator makes Data-Juicer write every value as ''",
}
CASES = sorted(p.parent for p in GOLDEN.glob("*/case.json"))


def _opts(cls, args: dict, case_dir: Path):
    args = dict(args)
    if args.get("original_llava_ds_path"):
        args["original_llava_ds_path"] = str(case_dir / args["original_llava_ds_path"])
    return cls(**args)


def _run_tool(tool: str, args: dict, case_dir: Path, src: Path, dst: Path) -> None:
    if tool == "dj_to_llava":
        dj_to_llava(str(src), str(dst), _opts(DjToLlavaOptions, args, case_dir))
    else:
        llava_to_dj(str(src), str(dst), _opts(LlavaToDjOptions, args, case_dir))


@pytest.mark.parametrize("case_dir", CASES, ids=[c.name for c in CASES])
def test_golden_case(case_dir: Path, tmp_path: Path):
    """Our output is byte-identical to what Data-Juicer 1.6.1 wrote, or we stop where it crashed."""
    case = json.loads((case_dir / "case.json").read_text())
    tool, args = case["tool"], case.get("args", {})
    if tool == "roundtrip":
        mid, out = tmp_path / "mid.jsonl", tmp_path / "out.json"
        _run_tool("llava_to_dj", args, case_dir, case_dir / "input.json", mid)
        assert mid.read_bytes() == (case_dir / "expected_dj.jsonl").read_bytes()
        _run_tool("dj_to_llava", case.get("args2", {}), case_dir, mid, out)
        assert out.read_bytes() == (case_dir / "expected.json").read_bytes()
        return
    src = case_dir / ("input.jsonl" if tool == "dj_to_llava" else "input.json")
    dst = tmp_path / case.get("output_name", "out.json" if tool == "dj_to_llava" else "out.jsonl")
    error_file = case_dir / "expected_error.txt"
    if error_file.exists() or case_dir.name in REFUSED:
        with pytest.raises(ConversionError):
            _run_tool(tool, args, case_dir, src, dst)
        assert not dst.exists()  # nothing half-written
        return
    _run_tool(tool, args, case_dir, src, dst)
    expected = case_dir / ("expected.json" if tool == "dj_to_llava" else "expected.jsonl")
    if case.get("nondeterministic"):  # Data-Juicer's unseeded random broadcast: compare shape
        ours, theirs = read_jsonl(dst), read_jsonl(expected)
        assert [(r["id"], r["images"]) for r in ours] == [(r["id"], r["images"]) for r in theirs]
        return
    assert dst.read_bytes() == expected.read_bytes()


def test_golden_corpus_is_present():
    assert len(CASES) >= 30, "tests/golden/llava holds the Data-Juicer golden cases"


# -- errors name the file, line and id, and say what to do ------------------


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_error_messages_are_specific(tmp_path):
    out = str(tmp_path / "o.json")
    src = _jsonl(
        tmp_path / "a.jsonl", [{"id": "1", "text": "[[human]]: q\n[[gpt]]: a"}, {"text": "x"}]
    )
    with pytest.raises(ConversionError, match=r"a\.jsonl:2: the sample has no 'id'.*add the id"):
        dj_to_llava(str(src), out)

    src = _jsonl(tmp_path / "b.jsonl", [{"id": "7", "text": "t", "images": ["x.jpg", "y.jpg"]}])
    with pytest.raises(ConversionError, match=r"b\.jsonl:1 \(id '7'\): 2 distinct images"):
        dj_to_llava(str(src), out)

    src = _jsonl(tmp_path / "c.jsonl", [{"id": "8", "text": "<image> just a caption"}])
    with pytest.raises(ConversionError, match=r"c\.jsonl:1 \(id '8'\).*restore_questions"):
        dj_to_llava(str(src), out)

    src = _jsonl(
        tmp_path / "d.jsonl", [{"id": "1", "text": "[[human]]: q\n[[gpt]]: a"}, "", {"id": "2"}]
    )
    with pytest.raises(ConversionError, match=r"d\.jsonl:2: blank line"):
        dj_to_llava(str(src), out)

    original = tmp_path / "orig.json"
    original.write_text(
        json.dumps(
            [
                {
                    "id": 1,
                    "conversations": [
                        {"from": "human", "value": "<image>\nq"},
                        {"from": "gpt", "value": "a"},
                    ],
                }
            ]
        )
    )
    src = _jsonl(
        tmp_path / "e.jsonl",
        [{"id": "1", "text": "<image> a"}, {"id": "1-syn", "text": "<image> b"}],
    )
    opts = DjToLlavaOptions(restore_questions=True, original_llava_ds_path=str(original))
    with pytest.raises(
        ConversionError,
        match=r"e\.jsonl:2: id '1-syn' is not in the original dataset .*orig\.json.*the id of the sample it was made from",
    ):
        dj_to_llava(str(src), out, opts)
    assert not Path(out).exists()

    with pytest.raises(ConversionError, match="needs original_llava_ds_path"):
        dj_to_llava(str(src), out, DjToLlavaOptions(restore_questions=True))
    with pytest.raises(ConversionError, match="needs split_chunk"):
        llava_to_dj(
            str(original), str(tmp_path / "x.jsonl"), LlavaToDjOptions(image_broadcast=True)
        )


def test_restore_keeps_original_id_type_and_question(tmp_path):
    original = tmp_path / "orig.json"
    first = {"value": "<image>\nWhat is this?", "from": "human", "extra": [1, 2.5]}
    original.write_text(
        json.dumps(
            [
                {
                    "id": 5,
                    "image": "a.jpg",
                    "conversations": [first, {"from": "assistant", "value": "old"}],
                }
            ]
        )
    )
    src = _jsonl(tmp_path / "c.jsonl", [
        {"id": "5", "text": "<__dj__image>\nA new caption. <|__dj__eoc|>", "images": ["/abs/a.jpg"]},
        {"id": "5", "text": "<__dj__image> Another caption <|__dj__eoc|>", "images": ["/abs/a.jpg", "/abs/a.jpg"]},
    ])  # fmt: skip
    out = tmp_path / "o.json"
    opts = DjToLlavaOptions(image_special_token="<__dj__image>", restore_questions=True,
                            original_llava_ds_path=str(original))  # fmt: skip
    assert dj_to_llava(str(src), str(out), opts) == 2
    text = out.read_text()
    assert not text.endswith("\n")
    rows = json.loads(text)
    assert [r["id"] for r in rows] == [5, 5]
    assert rows[0]["conversations"] == [first, {"from": "assistant", "value": "A new caption."}]
    assert list(rows[0]["conversations"][0]) == ["value", "from", "extra"]  # verbatim
    assert rows[1]["conversations"][1]["value"] == "Another caption"
    assert list(rows[1]) == ["id", "conversations", "image"] and rows[1]["image"] == "/abs/a.jpg"


# -- training-data preparation -------------------------------------------


def test_cap_matches_the_toolkits_selection(tmp_path):
    rows = [{"id": f"{i:05d}", "text": f"caption {i} é", "x": i / 3} for i in range(1000)]
    src = _jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "capped.jsonl"
    assert cap_samples(str(src), str(out), 300) == 300
    # the toolkit: module-level random.seed(1024), then random.sample(all_lines, N)
    random.seed(1024)
    reference = random.sample(rows, 300)
    expected = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in reference)
    assert out.read_text(encoding="utf-8") == expected
    # fewer lines than the cap: all of them, in order
    assert cap_samples(str(src), str(out), 5000) == 1000
    assert [r["id"] for r in read_jsonl(out)] == [r["id"] for r in rows]


def test_top_samples_by_stat(tmp_path):
    scores = [0.2, 0.9, None, 0.5, 0.9, 0.1]
    rows = []
    for i, s in enumerate(scores):
        stats = {} if s is None else {"image_text_similarity": [s, s]}
        rows.append({"id": str(i), "text": "t", "__dj__stats__": stats})
    src = _jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "top.jsonl"
    assert top_samples(str(src), str(out), "image_text_similarity", 3) == 3
    assert [r["id"] for r in read_jsonl(out)] == ["1", "3", "4"]  # input order
    # from a stats side file instead
    plain = _jsonl(tmp_path / "plain.jsonl", [{"id": r["id"], "text": "t"} for r in rows])
    stats = _jsonl(
        tmp_path / "plain_stats.jsonl", [{"__dj__stats__": r["__dj__stats__"]} for r in rows]
    )
    assert top_samples(str(plain), str(out), "image_text_similarity", 2, str(stats)) == 2
    assert [r["id"] for r in read_jsonl(out)] == ["1", "4"]


def test_global_batch_check():
    assert "OK" in check_global_batch(8, 4, 8, "pretrain")
    assert "OK" in check_global_batch(4, 32, 1, "finetune")
    with pytest.raises(ConversionError) as err:
        check_global_batch(8, 4, 4, "pretrain")
    msg = str(err.value)
    assert (
        "must be 256" in msg
        and "8 (per-device batch) x 4 (gradient accumulation) x 4 (GPUs) = 128" in msg
    )
    assert "use gradient accumulation 8" in msg


# -- command lines -------------------------------------------------------


def test_data_juicer_spelling_ports_unchanged(tmp_path):
    original = tmp_path / "stage_1.json"
    original.write_text(
        json.dumps(
            [
                {
                    "id": "001",
                    "image": "i.jpg",
                    "conversations": [
                        {"from": "human", "value": "<image>\nDescribe."},
                        {"from": "gpt", "value": "old"},
                    ],
                }
            ]
        )
    )
    src = _jsonl(
        tmp_path / "res.jsonl",
        [{"id": "001", "text": "<__dj__image>\nnew caption <|__dj__eoc|>", "images": ["i.jpg"]}],
    )
    out = tmp_path / "res.jsonl.json"
    argv = [
        "dj-to-llava", str(src), str(out), "--image_special_token", "<__dj__image>",
        "--restore_questions", "True", "--original_llava_ds_path", str(original),
    ]  # fmt: skip
    result = CliRunner().invoke(app, normalize_bool_args(argv, _BOOL_FLAGS))
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())[0]["conversations"][1] == {
        "from": "gpt",
        "value": "new caption",
    }
    assert normalize_bool_args(["--split_chunk=False", "--str-id", "false", "x"], _BOOL_FLAGS) == [
        "--no-split-chunk", "--no-str-id", "x",
    ]  # fmt: skip
    bad = CliRunner().invoke(app, ["dj-to-llava", str(tmp_path / "nope.jsonl"), str(out)])
    assert bad.exit_code == 1 and "does not exist" in bad.output


def test_dj_run_exports_llava(tmp_path):
    original = tmp_path / "orig.json"
    original.write_text(json.dumps([
        {"id": i, "image": f"{i}.jpg", "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]}
        for i in range(3)
    ]))  # fmt: skip
    data = _jsonl(tmp_path / "d.jsonl", [
        {"id": str(i), "text": f"<__dj__image>\ncaption number {i} is long <|__dj__eoc|>"} for i in range(3)
    ] + [{"id": "2", "text": "<__dj__image>\nshort <|__dj__eoc|>"}])  # fmt: skip
    recipe = write_recipe(
        tmp_path / "r.yaml", dataset_path=str(data), export_path=str(tmp_path / "o" / "res.jsonl"),
        export_format="llava",
        llava_options={"restore_questions": True, "original_llava_ds_path": str(original)},
        process=[{"text_length_filter": {"min_len": 40}}],
    )  # fmt: skip
    summary = run_recipe(recipe)
    assert summary["llava_export_file"] == str(tmp_path / "o" / "res_llava.json")
    rows = json.loads(Path(summary["llava_export_file"]).read_text())
    assert [r["id"] for r in rows] == [0, 1, 2] and summary["llava_samples"] == 3
    assert rows[2]["conversations"][1]["value"] == "caption number 2 is long"

    from dj_synth.pipelines.recipe import RecipeError, load_recipe

    bad = write_recipe(
        tmp_path / "bad.yaml", dataset_path=str(data), export_path=str(tmp_path / "x.jsonl"),
        export_format="llava", llava_options={"restore_question": True},
    )  # fmt: skip
    with pytest.raises(RecipeError, match="'restore_question'.*'restore_questions'"):
        load_recipe(bad)
