"""What a new user hits with `dj-run` (issue 13): input formats, damaged files, a run on a
folder in use, pathological samples, the dry run, operator docs. Each test runs the CLI
as a user does."""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import read_jsonl, write_recipe
from typer.testing import CliRunner

from dj_synth.pipelines.cli import app

DJ_RUN = str(Path(sys.executable).parent / "dj-run")
SLOW_OP = '''
import time
from dj_synth.operators import Mapper, register

@register("stuck_on_marker_mapper")
class StuckOnMarkerMapper(Mapper):
    """Hangs (a pathological regex would) on texts containing STUCK; waits for `release`."""
    def __init__(self, release: str = "", **kwargs):
        super().__init__(**kwargs)
        self.release = release
    def process(self, batch):
        import os
        while self.release and not os.path.exists(self.release):
            time.sleep(0.05)
        for text in batch.texts:
            while "STUCK" in text:
                time.sleep(0.01)
        return batch
'''


def dj_run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def _samples(n: int, prefix: str = "a caption that is long enough") -> list[dict]:
    return [{"id": i, "text": f"{prefix} {i}"} for i in range(n)]


def _recipe(tmp: Path, data: Path | str, name: str = "r", **settings) -> Path:
    base = {"dataset_path": str(data), "export_path": str(tmp / "out" / f"{name}.jsonl"), "np": 1,
            "process": [{"text_length_filter": {"min_len": 5}}]}  # fmt: skip
    return write_recipe(tmp / f"{name}.yaml", **{**base, **settings})


# -- 3. a JSON array dataset; a run whose every sample is quarantined ----------------


@pytest.mark.parametrize("suffix", [".json", ".json.gz"])
def test_json_array_dataset_is_read_as_samples(tmp_path, suffix):
    rows = _samples(352)
    body = json.dumps(rows, indent=2).encode()
    data = tmp_path / f"d{suffix}"
    data.write_bytes(gzip.compress(body) if suffix.endswith(".gz") else body)
    code, out = dj_run(_recipe(tmp_path, data), "-q")
    assert code == 0, out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["input_samples"] == 352 and summary["exported_samples"] == 352
    assert [r["id"] for r in read_jsonl(tmp_path / "out" / "r.jsonl")] == list(range(352))
    code, out = dj_run(_recipe(tmp_path, data), "-q", "--set", "use_checkpoint=true")
    assert code == 0, out
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["exported_samples"] == 352


def test_every_sample_quarantined_exits_non_zero(tmp_path):
    data = tmp_path / "d.jsonl"  # the wrong field name: every sample lacks `text`
    data.write_text("".join(json.dumps({"id": i, "caption": "x"}) + "\n" for i in range(20)))
    code, out = dj_run(_recipe(tmp_path, data), "-q")
    assert code == 1
    assert "every input sample (20) was quarantined" in out and "missing field 'text'" in out


# -- 5. one run per work dir; stale shards; our side files are not data -------------


def test_second_run_on_the_same_export_is_refused_naming_the_first(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _samples(8)))
    recipe = _recipe(tmp_path, data)
    lock = tmp_path / "out" / ".dj-synth.lock"
    lock.parent.mkdir()
    holder = subprocess.Popen(  # another process holding the work dir's lock
        [sys.executable, "-c", "import fcntl,sys,time,json,os; f=open(sys.argv[1],'a+');"
         "fcntl.flock(f, fcntl.LOCK_EX); f.write(json.dumps({'pid': os.getpid(), "
         "'host': 'h1', 'recipe': 'first.yaml'})); f.flush(); print('ok', flush=True); "
         "time.sleep(60)", str(lock)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "ok"
        code, out = dj_run(recipe, "-q")
        assert code == 2 and "held by another dj-synth run" in out and "first.yaml" in out
        code, out = dj_run(recipe, "--dry-run")
        assert code == 2 and "first.yaml" in out
    finally:
        holder.kill()
        holder.wait()
    code, out = dj_run(recipe, "-q")
    assert code == 0, out
    with open(lock) as fh:  # released when the run ended
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_two_runs_at_once_one_wins(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _samples(40)))
    ops = tmp_path / "slow.py"
    ops.write_text(SLOW_OP)
    release = tmp_path / "release"
    recipe = _recipe(tmp_path, data, custom_operator_paths=[str(ops)],
                     process=[{"stuck_on_marker_mapper": {"release": str(release)}}])  # fmt: skip
    first = subprocess.Popen([DJ_RUN, str(recipe), "-q"], stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "out" / ".dj-synth.lock"
    deadline = time.monotonic() + 120
    while not _held(lock):  # the first run holds the work dir, waiting in its operator
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    second = subprocess.run([DJ_RUN, str(recipe), "-q"], capture_output=True, text=True)
    release.touch()
    assert first.wait(timeout=120) == 0, first.stderr.read()
    assert second.returncode == 2 and f"pid {first.pid}" in second.stderr, second.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["exported_samples"] == 40


def _held(lock: Path) -> bool:
    """Whether another process holds `lock` (an flock)."""
    if not lock.exists():
        return False
    with open(lock) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def test_rerun_removes_stale_shards_and_output_folder_reads_as_its_export(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _samples(60)))
    recipe = _recipe(tmp_path, data, export_shard_size=500)
    assert dj_run(recipe, "-q")[0] == 0
    many = sorted(p.name for p in (tmp_path / "out").glob("r-*-of-*.jsonl"))
    assert len(many) > 2
    assert dj_run(recipe, "-q", "--set", "export_shard_size=0")[0] == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith("."))
    assert names == ["quarantine.jsonl", "r.jsonl", "r_stats.jsonl", "summary.json"]
    # the output folder as the next dataset: only the export is data
    (tmp_path / "out" / "filtered").mkdir()
    (tmp_path / "out" / "filtered" / "00_x.jsonl").write_text('{"text": "not data"}\n')
    again = _recipe(tmp_path, tmp_path / "out", name="again")
    code, out = dj_run(again, "-q")
    assert code == 0, out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["input_samples"] == 60 and summary["dataset_files"] == [
        str(tmp_path / "out" / "r.jsonl")
    ]


# -- 6. damaged compressed input ------------------------------------------------------


def test_damaged_compressed_files_quarantine_the_rest_and_the_run_goes_on(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    lines = "".join(json.dumps(r) + "\n" for r in _samples(200)).encode()
    whole = gzip.compress(lines)
    (folder / "a_truncated.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    (folder / "b_not_gzip.jsonl.gz").write_bytes(lines[:300])
    (folder / "c_good.jsonl.gz").write_bytes(whole)
    code, out = dj_run(_recipe(tmp_path, folder), "-q")
    assert code == 0, out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    quarantine = read_jsonl(summary["quarantine_file"])
    by_file = {Path(q["source"]).name: q for q in quarantine}
    truncated = by_file["a_truncated.jsonl.gz"]
    assert re.match(r"damaged compressed file after line \d+", truncated["error"])
    assert by_file["b_not_gzip.jsonl.gz"]["error"].startswith(
        "damaged compressed file at its start"
    )
    read_before_damage = truncated["line"] - 1
    assert 0 < read_before_damage < 200
    assert summary["exported_samples"] == 200 + read_before_damage
    assert summary["quarantined_samples"] == 2


# -- 7. a pathological sample never stalls a run --------------------------------------


def test_op_timeout_quarantines_the_slow_sample_only(tmp_path):
    data = tmp_path / "d.jsonl"
    rows = _samples(12)
    rows[5]["text"] = "this one is STUCK"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ops = tmp_path / "slow.py"
    ops.write_text(SLOW_OP)
    recipe = _recipe(tmp_path, data, custom_operator_paths=[str(ops)], op_timeout_s=0.5,
                     process=[{"stuck_on_marker_mapper": {}}])  # fmt: skip
    start = time.monotonic()
    code, out = dj_run(recipe, "-q")
    assert code == 0, out
    assert time.monotonic() - start < 30
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["exported_samples"] == 11
    (rec,) = read_jsonl(summary["quarantine_file"])
    assert rec["sample"]["id"] == 5 and "op_timeout_s=0.5" in rec["error"]
    assert rec["stage"] == "stuck_on_marker_mapper"


# -- 9-12. one CLI, an honest dry run, operator docs, empty input ------------------------


def test_help_version_and_config_flag(tmp_path):
    for flag in ("-h", "--help"):
        code, out = dj_run(flag)
        assert code == 0 and "--config" in out and "--dry-run" in out
        assert max(len(line) for line in out.splitlines()) <= 80
    code, out = dj_run("--version")
    assert code == 0 and re.fullmatch(r"dj-synth \S+\n", out)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _samples(3)))
    code, out = dj_run("--config", _recipe(tmp_path, data), "-q")
    assert code == 0, out
    assert len(read_jsonl(tmp_path / "out" / "r.jsonl")) == 3


def test_dry_run_makes_the_real_checks_and_prints_resolved_arguments(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "x"}\n')
    code, out = dj_run(_recipe(tmp_path, tmp_path / "missing.jsonl"), "--dry-run")
    assert code == 2 and "does not exist" in out
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
        code, out = dj_run(_recipe(tmp_path, data, export_path=str(ro / "x.jsonl")), "--dry-run")
        assert code == 2 and "not writable" in out
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, out = dj_run(_recipe(tmp_path, data, export_path=str(blocker / "x.jsonl")), "--dry-run")
    assert code == 2 and "cannot create export directory" in out
    recipe = _recipe(tmp_path, data, process=[{"text_length_filter": {"min_len": 7}},
                                              {"words_num_filter": {}}])  # fmt: skip
    code, out = dj_run(recipe, "--dry-run", "--set", "text_length_filter.max_len=99")
    assert code == 0, out
    assert "min_len: 7" in out and "max_len: 99" in out and "min_num: 10" in out
    assert not (tmp_path / "out").exists()  # a dry run creates nothing


def test_every_recipe_problem_is_reported_at_once(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "x"}\n')
    recipe = _recipe(
        tmp_path, data, np="two", nonsense_key=1,
        process=[{"no_such_op": {}}, {"text_length_filter": {"min_lne": 3, "max_len": "x"}},
                 {"words_num_filter": {"min_num": 2}}, {"another_missing_op": None}],
    )  # fmt: skip
    code, out = dj_run(recipe, "--dry-run")
    assert code == 2
    for expected in ("6 problems", "'nonsense_key'", "'np'", "'no_such_op'", "'min_lne'",
                     "'max_len' expects int", "'another_missing_op'"):  # fmt: skip
        assert expected in out, (expected, out)


def test_list_ops_shows_defaults_and_documents_one_operator():
    code, out = dj_run("--list-ops")
    assert code == 0 and "text_length_filter  [filter]" in out and "min_len=10" in out
    code, out = dj_run("--list-ops", "image_deduplicator")
    assert code == 0
    assert "hamming_threshold: int = 0" in out and "keep_policy:" in out
    code, out = dj_run("--list-ops", "text_length_filter")
    assert "Stats keys: text_len" in out
    code, out = dj_run("--list-ops", "text_lenght_filter")
    assert "Did you mean: text_length_filter" in out


@pytest.mark.parametrize("content", ["", "\n\n  \n"], ids=["empty", "blank-lines"])
def test_empty_input_warns(tmp_path, content):
    data = tmp_path / "d.jsonl"
    data.write_text(content)
    code, out = dj_run(_recipe(tmp_path, data), "-q")
    assert code == 0 and "warning: the input holds no samples" in out
