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
