"""A user's operator file loads from the recipe and runs like a built-in one."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import read_jsonl, run_recipe, write_recipe

EXAMPLE = Path(__file__).resolve().parents[1] / "recipes" / "custom" / "caption_suffix_filter.py"


def test_custom_operator_from_recipe(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(
        json.dumps({"id": "a", "text": "A dog runs. <|__dj__eoc|>"}) + "\n"
        + json.dumps({"id": "b", "text": "no full stop <|__dj__eoc|>"}) + "\n"
    )  # fmt: skip
    recipe = write_recipe(
        tmp_path / "r.yaml",
        dataset_path=str(data),
        export_path=str(tmp_path / "o" / "r.jsonl"),
        np=2,
        custom_operator_paths=[str(EXAMPLE)],
        process=[{"caption_suffix_filter": {"suffixes": ["."]}}],
    )
    s = run_recipe(recipe)
    assert [r["id"] for r in read_jsonl(s["export_files"][0])] == ["a"]
    assert s["filtered"] == {"caption_suffix_filter": 1}
    (rec,) = read_jsonl(next(iter(s["filtered_files"])))
    assert rec["sample"]["id"] == "b" and rec["reason"] == "caption_suffix_ok=False"


def test_readme_operator_example_works():
    """The operator snippet in the README runs as written."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = readme.split("### Writing an operator", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    from helpers import run_op

    rows = [{"text": "<__dj__image> a b"}, {"text": "<__dj__image> one two three four"}]
    out, ledger = run_op("caption_words_filter", rows, min_words=3)
    assert [r["text"] for r in out.rows()] == [rows[1]["text"]]
    assert ledger.filtered[0].reason == "caption_words=2 outside [3, 200]"
