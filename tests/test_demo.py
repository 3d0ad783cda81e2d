"""The shipped demo: `dj-run recipes/demo.yaml` on demo/demo.jsonl, run from the repo root.

Every line of the demo has a known fate (demo/README.md); this checks each one, and
the account in summary.json.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml
from helpers import read_jsonl
from typer.testing import CliRunner

from dj_synth.pipelines.cli import app

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "demo.yaml"
DATA = REPO / "demo" / "demo.jsonl"


def _recipe_ops() -> list[str]:
    process = yaml.safe_load(RECIPE.read_text())["process"]
    return [next(iter(e)) if isinstance(e, dict) else e for e in process]


def _line_numbers() -> dict[str, int]:
    """id -> line number, read from the raw file (one line is deliberately not JSON)."""
    out = {}
    for n, line in enumerate(DATA.read_text(encoding="utf-8").splitlines(), start=1):
        m = re.match(r'\{"id": "([^"]+)"', line)
        assert m, f"demo line {n} has no leading id"
        out[m.group(1)] = n
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    old = os.getcwd()
    os.chdir(REPO)  # recipe paths are relative to the working directory (Data-Juicer)
    try:
        result = CliRunner().invoke(
            app,
            ["recipes/demo.yaml", "--set", f"export_path={tmp}/x.jsonl",
             "--set", f"work_dir={tmp}", "-q"],
        )  # fmt: skip
    finally:
        os.chdir(old)
    assert result.exit_code == 0, (result.output, result.exception)
    summary = json.loads((tmp / "summary.json").read_text())
    return tmp, summary


def _fates(summary: dict) -> dict[int, tuple[str, str, str]]:
    """line -> (where, op or stage, reason or error), for everything not exported."""
    fate = {}
    for path in summary["filtered_files"]:
        for rec in read_jsonl(path):
            assert rec["line"] not in fate, rec
            fate[rec["line"]] = ("filtered", rec["op"], rec["reason"])
    for rec in read_jsonl(summary["quarantine_file"]):
        assert rec["line"] not in fate, rec
        fate[rec["line"]] = ("quarantine", rec["stage"], rec["error"])
    return fate


def test_demo_runs_and_accounts_for_every_line(run):
    tmp, summary = run
    lines = _line_numbers()
    assert summary["input_samples"] == len(lines) == 36
    assert summary["input_samples"] == (
        summary["exported_samples"]
        + sum(summary["filtered"].values())
        + summary["quarantined_samples"]
    )
    exported = read_jsonl(tmp / "x.jsonl")
    assert len(exported) == summary["exported_samples"]
    fates = _fates(summary)
    assert len(fates) + len(exported) == len(lines)
    assert {row["id"] for row in exported}.isdisjoint({i for i, n in lines.items() if n in fates})


def test_broken_lines_are_quarantined_with_the_right_reason(run):
    _, summary = run
    lines, fates = _line_numbers(), _fates(summary)
    expected = {
        "broken-json": ("read", "malformed JSON"),
        "missing-image": ("read", "missing image: "),
        "not-an-image": ("read", "not a readable image: "),
        "text-not-string": ("read", "field 'text' must be a string, got int"),
        # the header is intact; the entry check sees the missing end of the file
        "truncated-jpeg": ("read", "truncated"),
    }
    for sample_id, (stage, text) in expected.items():
        where, got_stage, error = fates[lines[sample_id]]
        assert (where, got_stage) == ("quarantine", stage), (sample_id, fates[lines[sample_id]])
        assert text in error, (sample_id, error)
    assert "lighthouse_missing.jpg" in fates[lines["missing-image"]][2]
    assert summary["quarantined_samples"] == len(expected)
    q = {rec["line"]: rec for rec in read_jsonl(summary["quarantine_file"])}
    assert q[lines["broken-json"]]["raw"].startswith('{"id": "broken-json"')


def test_filters_and_deduplicators_drop_the_right_samples(run):
    _, summary = run
    lines, fates = _line_numbers(), _fates(summary)
    ops = _recipe_ops()
    expected = {
        "short-caption": "text_length_filter",
        "few-words": "words_num_filter" if "words_num_filter" in ops else "image_deduplicator",
        "repetitive": "character_repetition_filter",
        "coffee-french": "language_id_score_filter",
        "tiny-image": "image_shape_filter",
        "brick-strip": "image_aspect_ratio_filter",
        "hubble": "image_size_filter",
        "coffee-repeat": "document_deduplicator",
        "astronaut-lowercase": "document_deduplicator",
        "chelsea-small": "image_deduplicator",
    }
    for sample_id, op in expected.items():
        assert fates.get(lines[sample_id], ("export",))[:2] == ("filtered", op), (
            sample_id,
            fates.get(lines[sample_id]),
        )
    assert "duplicate of id='coffee'" in fates[lines["coffee-repeat"]][2]
    assert "duplicate of id='astronaut'" in fates[lines["astronaut-lowercase"]][2]
    assert "duplicate of id='chelsea'" in fates[lines["chelsea-small"]][2]
    assert "image_width=[40], image_height=[30]" in fates[lines["tiny-image"]][2]
    assert sum(summary["filtered"].values()) == len(expected)
    for op in ops:  # every op of the demo recipe has something to do
        if not op.endswith("_mapper"):
            assert summary["filtered"][op] >= 1, op


def test_exported_samples(run):
    tmp, _ = run
    rows = {row["id"]: row for row in read_jsonl(tmp / "x.jsonl")}
    assert set(rows) == {
        "astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "page", "text",
        "horse", "retina", "ihc", "brick", "grass", "gravel", "cell", "clock", "color",
        "motorcycle-left", "motorcycle-right", "text-only",
    }  # fmt: skip
    order = [row["id"] for row in read_jsonl(tmp / "x.jsonl")]
    assert order == sorted(order, key=_line_numbers().__getitem__)  # input order kept
    for row in rows.values():
        assert "__dj__stats__" not in row  # stats go to the side file
        for path in row.get("images", []):
            assert os.path.isabs(path) and os.path.isfile(path), path
            assert Path(path).parent == REPO / "demo" / "images"
    assert "images" not in rows["text-only"]
    ops = _recipe_ops()
    if "whitespace_normalization_mapper" in ops:
        text = rows["moon"]["text"]
        assert "\t" not in text and "\u00a0" not in text and "\u2009" not in text, text
    if "clean_links_mapper" in ops:
        assert "http" not in rows["motorcycle-left"]["text"]
    if "fix_unicode_mapper" in ops:
        assert "film camera's viewfinder" in rows["camera"]["text"]
    if "punctuation_normalization_mapper" in ops:
        assert rows["rocket"]["text"].endswith("floodlights... <|__dj__eoc|>")
    stats = read_jsonl(tmp / "x_stats.jsonl")
    assert len(stats) == len(rows)
    assert all("__dj__stats__" in s for s in stats)
