"""One run driver: streaming and sharded (checkpointed) runs behave the same, and an
operator bug stops the run instead of quarantining every sample.

Every test here runs `dj-run` as a user does (the CLI), so it holds whatever the
engine looks like inside.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_recipe
from PIL import Image
from typer.testing import CliRunner

from dj_synth.pipelines.cli import app

OPS = '''
from pathlib import Path
from dj_synth.operators import Filter, Mapper, RangeFilter, Selector, register

@register("rank_recorder_mapper")
class RankRecorderMapper(Mapper):
    """Writes the rank and device each worker's setup() was given into `folder`."""
    def __init__(self, folder: str = "", **kwargs):
        super().__init__(**kwargs)
        self.folder = folder
    def setup(self, device="cpu", rank=0):
        import os
        Path(self.folder, f"{os.getpid()}").write_text(f"{rank} {device}")
    def process(self, batch):
        return batch

@register("broken_setup_mapper")
class BrokenSetupMapper(Mapper):
    """Its model cannot load."""
    def setup(self, device="cpu", rank=0):
        raise RuntimeError("weights file is corrupt")
    def process(self, batch):
        return batch

@register("buggy_mapper")
class BuggyMapper(Mapper):
    """A bug: fails on every row."""
    def process(self, batch):
        return batch.texts[0].no_such_method()

@register("longest_k_selector")
class LongestKSelector(Selector):
    """Keeps the k longest texts (ties: the earlier one), in input order."""
    def __init__(self, k: int = 5, **kwargs):
        super().__init__(**kwargs)
        self.k = k
    def compute_key(self, batch):
        return [len(t) for t in batch.texts]
    def select(self, entries):
        best = sorted(entries, key=lambda e: (-e[4], e[1]))[: self.k]
        keep = {e[1] for e in best}
        return {e[1]: f"not among the {self.k} longest" for e in entries if e[1] not in keep}

@register("flaky_mapper")
class FlakyMapper(Mapper):
    """Fails on two thirds of the samples (ids not divisible by 3): never a whole batch."""
    def process(self, batch):
        for i in batch.columns["id"]:
            if i % 3:
                raise ValueError(f"cannot handle {i}")
        return batch

@register("typo_range_filter")
class TypoRangeFilter(RangeFilter):
    """max_arg names an attribute that does not exist."""
    stats_key = "text_len"
    min_arg, max_arg = "min_len", "max_lne"
    def __init__(self, min_len: int = 0, max_len: int = 10, **kwargs):
        super().__init__(**kwargs)
        self.min_len, self.max_len = min_len, max_len
    def compute(self, batch):
        return [len(t) for t in batch.texts]

@register("interrupt_once_mapper")
class InterruptOnceMapper(Mapper):
    """Ctrl-C in the middle of the run, the first time only (a marker file remembers)."""
    def __init__(self, marker: str = "", at_line: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.marker, self.at_line = marker, at_line
    def process(self, batch):
        if not Path(self.marker).exists() and any(r.line >= self.at_line for r in batch.refs):
            Path(self.marker).write_text("interrupted")
            raise KeyboardInterrupt
        return batch
'''


@pytest.fixture(scope="module")
def ops_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ops") / "engine_ops.py"
    path.write_text(OPS)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """60 samples: text-only, with images, two exact duplicates, one broken line."""
    root = tmp_path_factory.mktemp("data")
    (root / "img").mkdir()
    for i in range(6):
        Image.new("RGB", (80 + 20 * i, 60), (40 * i, 90, 200 - 30 * i)).save(
            root / "img" / f"{i}.jpg"
        )
    lines = []
    for i in range(60):
        row = {"id": f"s{i}", "text": f"caption number {i} " * (1 + i % 4)}
        if i % 3 == 0:
            row["text"] = f"<__dj__image>\n{row['text']}<|__dj__eoc|>"
            row["images"] = [f"img/{i % 6}.jpg"]
        lines.append(json.dumps(row))
    lines[20] = lines[7]  # an exact duplicate
    lines[33] = '{"id": "broken", "text": '  # quarantined on entry
    (root / "d.jsonl").write_text("\n".join(lines) + "\n")
    return root / "d.jsonl"


def _recipe(tmp: Path, data: Path, ops_file: Path, process: list, **settings) -> Path:
    base = dict(
        dataset_path=str(data), export_path=str(tmp / "out" / "r.jsonl"),
        custom_operator_paths=[str(ops_file)], np=2, io_batch_size=8, process=process,
    )  # fmt: skip
    return write_recipe(tmp / "r.yaml", **{**base, **settings})


def dj_run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [*map(str, args), "-q"])
    return result.exit_code, result.output


def _files(folder: Path) -> dict[str, bytes]:
    """Every file of a run folder (export, stats, records), hidden temp files excluded."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".") and p.name != "summary.json"
        and "checkpoint" not in p.parts
    }  # fmt: skip


def test_setup_failure_is_the_same_error_in_both_modes(tmp_path, data, ops_file):
    recipe = _recipe(tmp_path, data, ops_file, [{"broken_setup_mapper": {}}])
    for extra in ([], ["--set", "use_checkpoint=true"]):
        code, out = dj_run(recipe, *extra)
        assert code == 1, (extra, out)
        assert "worker setup failed: RuntimeError: weights file is corrupt" in out, (extra, out)
        assert "BrokenProcessPool" not in out and "Traceback" not in out
    assert not (tmp_path / "out" / "r.jsonl").exists()


@pytest.mark.parametrize("shard_size", [0, 700])
def test_checkpointed_export_equals_streaming_export(tmp_path, data, ops_file, shard_size):
    process = [{"text_length_filter": {"min_len": 30}}, {"document_deduplicator": {}}]
    recipe = _recipe(tmp_path, data, ops_file, process, export_shard_size=shard_size)
    results = {}
    for mode, extra in (("stream", []), ("ckpt", ["--set", "use_checkpoint=true"])):
        out = tmp_path / mode
        code, text = dj_run(recipe, "--set", f"export_path={out}/r.jsonl", *extra)
        assert code == 0, text
        results[mode] = _files(out)
    assert results["stream"] == results["ckpt"]
    names = sorted(n for n in results["stream"] if n.startswith("r") and "stats" not in n)
    if shard_size:
        assert len(names) > 1 and names[0] == f"r-0-of-{len(names)}.jsonl"
    else:
        assert names == ["r.jsonl"]


def test_interrupted_checkpoint_run_resumes_and_is_not_silently_discarded(tmp_path, data, ops_file):
    marker = tmp_path / "marker"
    process = [
        {"interrupt_once_mapper": {"marker": str(marker), "at_line": 40}},
        {"text_length_filter": {"min_len": 30}},
    ]
    recipe = _recipe(tmp_path, data, ops_file, process, np=1)
    code, _ = dj_run(recipe, "--set", "use_checkpoint=true")  # Ctrl-C mid-run
    assert code == 130 and marker.exists()  # 128 + SIGINT, as a shell reports Ctrl-C
    # started again without --resume: the checkpoint is not thrown away silently
    code, out = dj_run(recipe, "--set", "use_checkpoint=true")
    assert code == 2 and "--resume" in out and "--fresh" in out, out
    # the README's sequence: --resume alone (use_checkpoint not repeated) finishes the run
    code, out = dj_run(recipe, "--resume")
    assert code == 0, out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["shards_resumed"] > 0
    reference = tmp_path / "ref"
    code, out = dj_run(recipe, "--set", f"export_path={reference}/r.jsonl")
    assert code == 0, out
    assert _files(tmp_path / "out") == _files(reference)


def test_resume_refuses_shards_made_by_other_code(tmp_path, data, ops_file):
    """An operator edited (or dj-synth upgraded) between the interrupt and --resume: the
    shards already made may hash or filter differently, so they are not mixed in."""
    marker = tmp_path / "marker"
    process = [{"interrupt_once_mapper": {"marker": str(marker), "at_line": 40}}]
    recipe = _recipe(tmp_path, data, ops_file, process, np=1, use_checkpoint=True)
    code, _ = dj_run(recipe)
    assert code == 130 and marker.exists()
    source = ops_file.read_text()
    try:
        ops_file.write_text(source + "\n# edited after the interrupt\n")
        code, out = dj_run(recipe, "--resume")
        assert code != 0 and "operators' code" in out and "--fresh" in out, out
    finally:
        ops_file.write_text(source)
    code, out = dj_run(recipe, "--resume")  # the same code again: it resumes
    assert code == 0, out
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["shards_resumed"] > 0


def test_fresh_starts_over(tmp_path, data, ops_file):
    marker = tmp_path / "marker"
    process = [{"interrupt_once_mapper": {"marker": str(marker), "at_line": 40}}]
    recipe = _recipe(tmp_path, data, ops_file, process, np=1, use_checkpoint=True)
    code, _ = dj_run(recipe)
    assert code == 130 and marker.exists()  # 128 + SIGINT, as a shell reports Ctrl-C
    code, out = dj_run(recipe, "--fresh")
    assert code == 0, out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["shards_resumed"] == 0 and summary["input_samples"] == 60


@pytest.mark.parametrize("extra", [[], ["--set", "use_checkpoint=true"]], ids=["stream", "ckpt"])
def test_every_worker_gets_its_own_rank_through_setup(tmp_path, data, ops_file, extra):
    seen = tmp_path / "ranks"
    seen.mkdir()
    recipe = _recipe(tmp_path, data, ops_file, [{"rank_recorder_mapper": {"folder": str(seen)}}])
    code, out = dj_run(recipe, *extra)
    assert code == 0, out
    ranks = sorted(f.read_text() for f in seen.iterdir())
    assert ranks == ["0 cpu", "1 cpu"]


def test_per_op_text_key_is_honoured(tmp_path, ops_file):
    data = tmp_path / "c.jsonl"
    rows = [{"id": 1, "text": "a long enough text here", "caption": "short"},
            {"id": 2, "text": "tiny", "caption": "a caption that is long enough"}]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    process = [{"text_length_filter": {"text_key": "caption", "min_len": 10}}]
    recipe = _recipe(tmp_path, data, ops_file, process)
    code, out = dj_run(recipe)
    assert code == 0, out
    kept = [json.loads(x)["id"] for x in (tmp_path / "out" / "r.jsonl").read_text().splitlines()]
    assert kept == [2]


def test_typo_in_a_custom_range_filter_fails_at_load(tmp_path, data, ops_file):
    recipe = _recipe(tmp_path, data, ops_file, [{"typo_range_filter": {}}])
    code, out = dj_run(recipe)
    assert code == 2 and "max_lne" in out, out


@pytest.mark.parametrize("extra", [[], ["--set", "use_checkpoint=true"]], ids=["stream", "ckpt"])
def test_an_operator_bug_stops_the_run(tmp_path, data, ops_file, extra):
    recipe = _recipe(tmp_path, data, ops_file, [{"buggy_mapper": {}}])
    code, out = dj_run(recipe, *extra)
    assert code == 1, out
    assert "buggy_mapper" in out and "AttributeError" in out and "no_such_method" in out
    assert out.count("Traceback") == 1, out  # the operator's traceback, once
    assert not (tmp_path / "out" / "r.jsonl").exists()  # nothing committed
    assert not (tmp_path / "out" / "summary.json").exists()


def test_too_many_operator_errors_stop_the_run(tmp_path, ops_file):
    data = tmp_path / "many.jsonl"
    data.write_text("".join(json.dumps({"id": i, "text": f"text {i}"}) + "\n" for i in range(2400)))
    recipe = _recipe(tmp_path, data, ops_file, [{"flaky_mapper": {}}], io_batch_size=256)
    code, out = dj_run(recipe)
    assert code == 1 and "max_quarantine_ratio 0.5" in out and "process[0]" in out, out
    assert not (tmp_path / "out" / "r.jsonl").exists()
    code, out = dj_run(recipe, "--set", "max_quarantine_ratio=0.9")
    assert code == 0, out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["quarantined_samples"] == 1600 and summary["exported_samples"] == 800


def test_a_selector_decides_once_over_all_samples_in_every_mode(tmp_path, data, ops_file):
    process = [{"longest_k_selector": {"k": 7}}, {"text_length_filter": {"min_len": 1}}]
    recipe = _recipe(tmp_path, data, ops_file, process)
    results = {}
    for mode, extra in (("stream", []), ("ckpt", ["--set", "use_checkpoint=true"])):
        code, text = dj_run(recipe, "--set", f"export_path={tmp_path / mode}/r.jsonl", *extra)
        assert code == 0, text
        results[mode] = _files(tmp_path / mode)
    assert results["stream"] == results["ckpt"]
    kept = [json.loads(x) for x in results["stream"]["r.jsonl"].splitlines()]
    rows = [json.loads(x) for x in data.read_text().splitlines() if x.endswith("}")]
    longest = sorted(range(len(rows)), key=lambda i: (-len(rows[i]["text"]), i))[:7]
    assert [k["id"] for k in kept] == [rows[i]["id"] for i in sorted(longest)]


def test_checkpoint_frames_keep_infinite_and_nan_keys(tmp_path):
    import io
    import math

    from dj_synth.operators.batch import SampleRef
    from dj_synth.pipelines.frames import read_survivors, write_survivors
    from dj_synth.pipelines.stages import Survivor

    keys = [float("inf"), float("-inf"), (b"\x01", float("nan")), 2.5]
    out = io.BytesIO()
    write_survivors(out, [Survivor(SampleRef(i, "s", i), b"{}", None, k, float("-inf"))
                          for i, k in enumerate(keys)])  # fmt: skip
    back = list(read_survivors(io.BytesIO(out.getvalue()), len(keys)))
    assert [sv.key for sv in back][:2] == [float("inf"), float("-inf")] and back[3].key == 2.5
    assert back[2].key[0] == b"\x01" and math.isnan(back[2].key[1])
    assert all(sv.rank == float("-inf") for sv in back)


def test_model_recipes_fork_unless_this_process_holds_torch(tiny_models):
    """Models load lazily in the workers, so a fresh `dj-run` forks them (no re-import per
    worker); once this process has imported torch, forking could hang a worker: spawn."""
    probe = (
        "import sys\n"
        "from dj_synth.operators import get_operator\n"
        "from dj_synth.pipelines.worker import start_method\n"
        f"op = get_operator('image_text_similarity_filter')(hf_clip={tiny_models['clip']!r}, "
        "accelerator='cpu')\n"
        "before = start_method([op])\n"
        "import torch\n"
        "print(before, start_method([op]), 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["fork", "spawn", "True"]
