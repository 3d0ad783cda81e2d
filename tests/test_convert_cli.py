"""dj-convert's preparation commands refuse a mistake with a message, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dj_synth.tools.convert_cli import app
from dj_synth.tools.llava import ConversionError
from dj_synth.tools.prepare import check_global_batch

runner = CliRunner()


def test_check_batch_without_gpus_asks_for_num_gpus(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)  # a CPU machine
    result = runner.invoke(
        app, ["check-batch", "--per-device-batch-size", "8", "--grad-accum", "4"]
    )
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # no ZeroDivisionError
    assert "pass --num-gpus" in result.output
    ok = ["check-batch", "--per-device-batch-size", "8", "--grad-accum", "4", "--num-gpus", "8"]
    result = runner.invoke(app, ok)
    assert result.exit_code == 0, result.output
    assert "x 8 (GPUs) = 256" in result.output  # 8 x 4 x 8 = 256, worked by hand


def test_global_batch_rule_refuses_zero_gpus():
    with pytest.raises(ConversionError, match=r"GPUs \(0\) must all be at least 1"):
        check_global_batch(8, 4, 0, "pretrain")


def _stats_file(tmp_path: Path) -> Path:
    rows = [
        {"id": "a", "text": "x", "__dj__stats__": {"text_len": 3, "lang_score": 0.9}},
        {"id": "b", "text": "y", "__dj__stats__": {"text_len": 9}},
        {"id": "c", "text": "z", "__dj__stats__": {"text_len": 5}},
    ]
    path = tmp_path / "res.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_cap_by_unknown_key_refused_with_the_known_keys(tmp_path):
    src, out = _stats_file(tmp_path), tmp_path / "top.jsonl"
    result = runner.invoke(app, ["cap", str(src), str(out), "--by", "nope", "--max-samples", "2"])
    assert result.exit_code == 2
    assert "--by 'nope': no sample has this stats key" in result.output
    assert "lang_score, text_len" in result.output  # the keys the data has, sorted
    assert not out.exists()  # nothing written in input order
    result = runner.invoke(
        app, ["cap", str(src), str(out), "--by", "text_len", "--max-samples", "2"]
    )
    assert result.exit_code == 0, result.output
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["b", "c"]  # 9, 5


def test_cap_by_without_any_stats_says_how_to_get_them(tmp_path):
    src = tmp_path / "plain.jsonl"
    src.write_text(json.dumps({"id": "a", "text": "x"}) + "\n")
    result = runner.invoke(app, ["cap", str(src), str(tmp_path / "o.jsonl"), "--by", "text_len"])
    assert result.exit_code == 2 and "keep_stats_in_res_ds: true" in result.output


def _ids(path: Path) -> list[str]:
    return [json.loads(x)["id"] for x in path.read_text().splitlines()]


def test_cap_fill_repeats_the_best_first(tmp_path):
    """text_len a=3, b=9, c=5. Cap 7 from 3: two whole passes (6) + the best, b. Cap 8: + b, c."""
    src, out = _stats_file(tmp_path), tmp_path / "filled.jsonl"
    args = ["cap", str(src), str(out), "--by", "text_len", "--fill", "--max-samples"]
    result = runner.invoke(app, [*args, "7"])
    assert result.exit_code == 0, result.output
    assert _ids(out) == ["a", "b", "c", "a", "b", "c", "b"]
    assert runner.invoke(app, [*args, "8"]).exit_code == 0
    assert _ids(out) == ["a", "b", "c", "a", "b", "c", "b", "c"]
    assert runner.invoke(app, [*args, "2"]).exit_code == 0  # more than the cap: no repeats
    assert _ids(out) == ["b", "c"]
    # whole lines repeated unchanged (stats included)
    assert out.read_text().splitlines()[0] == src.read_text().splitlines()[1]


def test_cap_fill_without_a_stat_follows_the_toolkits_seeded_order(tmp_path):
    import random

    rows = [{"id": f"s{i}", "text": "x"} for i in range(5)]
    src, out = tmp_path / "d.jsonl", tmp_path / "filled.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = runner.invoke(app, ["cap", str(src), str(out), "--fill", "--max-samples", "13"])
    assert result.exit_code == 0, result.output
    # the toolkit's sampler: random.seed(1024); random.sample(ds, n): its first 13 % 5 = 3
    random.seed(1024)
    drawn = random.sample([r["id"] for r in rows], 5)[:3]
    ids = _ids(out)
    assert ids[:10] == [r["id"] for r in rows] * 2
    assert ids[10:] == sorted(drawn, key=lambda i: int(i[1:]))  # in input order
    without = tmp_path / "plain.jsonl"
    assert runner.invoke(app, ["cap", str(src), str(without), "--max-samples", "13"]).exit_code == 0
    assert _ids(without) == [r["id"] for r in rows]  # no --fill: all of them, once
    again = tmp_path / "again.jsonl"
    runner.invoke(app, ["cap", str(src), str(again), "--fill", "--max-samples", "13"])
    assert again.read_bytes() == out.read_bytes()  # deterministic


def test_cap_fill_of_nothing_is_bad_data(tmp_path):
    src = tmp_path / "empty.jsonl"
    src.write_text("")
    result = runner.invoke(app, ["cap", str(src), str(tmp_path / "o.jsonl"), "--fill"])
    assert result.exit_code == 1 and "no samples to fill the cap with" in result.output
