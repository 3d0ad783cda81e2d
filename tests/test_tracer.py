"""Data-Juicer's tracer: what a mapper changed, what a filter dropped, which samples were
duplicates, in `work_dir/trace/` under Data-Juicer's names and layout (the same under Ray:
tests/test_ray_executor.py compares the trace files of every mode)."""

from __future__ import annotations

import json

import pytest
from helpers import read_jsonl, run_recipe, write_recipe

from dj_synth.pipelines.recipe import RecipeError, load_recipe

SPLIT_OP = '''
from dj_synth.operators import Batch, Mapper, register

@register("shout_copy_mapper")
class ShoutCopyMapper(Mapper):
    """Adds an upper-case copy after every sample (a mapper that adds samples)."""
    def process(self, batch):
        rows = []
        for i in range(len(batch)):
            rows += [i, i]
        out = batch.take(rows)
        out.texts = [t.upper() if j % 2 else t for j, t in enumerate(out.texts)]
        return out
'''


@pytest.fixture(scope="module")
def ops(tmp_path_factory):
    path = tmp_path_factory.mktemp("ops") / "ops.py"
    path.write_text(SPLIT_OP)
    return path


@pytest.fixture
def run(tmp_path, ops):
    rows = [
        {"id": "a", "text": "visit https://x.io\tnow please"},
        {"id": "b", "text": "tiny"},
        {"id": "c", "text": "no links here at all"},
        {"id": "d", "text": "visit https://y.io\tnow please"},
        {"id": "e", "text": "no links here at all"},
        {"id": "f", "text": "ok"},
    ]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def go(**settings):
        recipe = write_recipe(
            tmp_path / "r.yaml", dataset_path=str(data), export_path=str(tmp_path / "o" / "r.jsonl"),
            np=1, custom_operator_paths=[str(ops)],
            process=[{"clean_links_mapper": {}}, {"whitespace_normalization_mapper": {}},
                     {"text_length_filter": {"min_len": 5}}, {"document_deduplicator": {}},
                     {"shout_copy_mapper": {}}],
            **settings,
        )  # fmt: skip
        return run_recipe(recipe)

    return go


def _trace(summary, name):
    (path,) = [p for p in summary["trace_files"] if p.endswith(name)]
    return read_jsonl(path)


def test_mapper_filter_and_dedup_traces(run, tmp_path):
    s = run(open_tracer=True, trace_num=10)
    names = sorted(p.rsplit("/", 1)[1] for p in s["trace_files"])
    assert names == ["duplicate-document_deduplicator.jsonl", "filter-text_length_filter.jsonl",
                     "mapper-clean_links_mapper.jsonl", "mapper-shout_copy_mapper.jsonl",
                     "mapper-whitespace_normalization_mapper.jsonl"]  # fmt: skip
    assert _trace(s, "mapper-clean_links_mapper.jsonl") == [
        {"original text": "visit https://x.io\tnow please", "processed_text": "visit \tnow please"},
        {"original text": "visit https://y.io\tnow please", "processed_text": "visit \tnow please"},
    ]
    assert _trace(s, "mapper-whitespace_normalization_mapper.jsonl")[0] == {
        "original text": "visit \tnow please",
        "processed_text": "visit  now please",
    }
    dropped = _trace(s, "filter-text_length_filter.jsonl")
    assert [d["id"] for d in dropped] == ["b", "f"]
    assert dropped[0]["__dj__stats__"] == {"text_len": 4}
    pairs = _trace(s, "duplicate-document_deduplicator.jsonl")
    assert [(p["dup1"]["id"], p["dup2"]["id"]) for p in pairs] == [("a", "d"), ("c", "e")]
    assert pairs[1]["dup1"]["text"] == "no links here at all"  # the kept one, as read
    shout = _trace(s, "mapper-shout_copy_mapper.jsonl")  # generated copies against their source
    assert shout == [{"original text": "visit  now please", "processed_text": "VISIT  NOW PLEASE"},
                     {"original text": "no links here at all",
                      "processed_text": "NO LINKS HERE AT ALL"}]  # fmt: skip


def test_trace_num_and_op_list(run, tmp_path):
    s = run(open_tracer=True, trace_num=1, op_list_to_trace=["text_length_filter"])
    assert [p.rsplit("/", 1)[1] for p in s["trace_files"]] == ["filter-text_length_filter.jsonl"]
    assert [d["id"] for d in _trace(s, "filter-text_length_filter.jsonl")] == ["b"]
    s = run()  # tracer off: no trace files, the previous run's removed
    assert "trace_files" not in s and not list((tmp_path / "o" / "trace").glob("*"))


def test_op_list_naming_a_missing_op_is_an_error(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "x"}\n')
    recipe = write_recipe(tmp_path / "r.yaml", dataset_path=str(data), open_tracer=True,
                          op_list_to_trace=["text_lenght_filter"],
                          process=[{"text_length_filter": {}}])  # fmt: skip
    with pytest.raises(RecipeError, match="op_list_to_trace names \\['text_lenght_filter'\\]"):
        load_recipe(recipe)
