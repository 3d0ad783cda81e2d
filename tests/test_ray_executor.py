"""The Ray executor gives the local executor's output, survives dead workers, and resumes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import write_recipe

ray = pytest.importorskip("ray")

from dj_synth.pipelines.ray_backend import RayConnectionError  # noqa: E402
from dj_synth.pipelines.recipe import load_recipe  # noqa: E402
from dj_synth.pipelines.run import run_recipe  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DJ_RUN = str(Path(sys.executable).parent / "dj-run")
SLOW_OP = '''
import time
from dj_synth.operators import Mapper, register

@register("sleepy_mapper")
class SleepyMapper(Mapper):
    """Sleeps per batch: gives a test time to kill something mid-run."""
    def __init__(self, seconds: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.seconds = seconds
    def process(self, batch):
        time.sleep(self.seconds)
        return batch
'''


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    """One local Ray instance for the in-process tests (the executor joins it)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _outputs(summary: dict) -> dict:
    """What must match across modes: the export files (names and bytes), stats files, LLaVA
    export, records and counts."""
    work = Path(summary["work_dir"])

    def files(key: str) -> dict[str, bytes]:
        return {Path(p).name: Path(p).read_bytes() for p in summary.get(key) or []}

    keys = ("input_samples", "exported_samples", "filtered", "quarantined_samples",
            "quarantine_reasons", "generated_samples", "skipped_blank_lines")  # fmt: skip
    counts = {k: summary[k] for k in keys}
    counts["ops"] = [
        (o["name"], o["in"], o["out"], o["filtered"], o["quarantined"]) for o in summary["ops"]
    ]
    llava = summary.get("llava_export_file")
    return {"export": files("export_files"), "stats": files("stats_files"),
            "trace": files("trace_files"),
            "filtered": {Path(p).name: Path(p).read_bytes() for p in summary["filtered_files"]},
            "llava": Path(llava).read_bytes() if llava else None, "counts": counts,
            "quarantine": (work / "quarantine.jsonl").read_bytes()}  # fmt: skip


MODES = {
    "streaming": [],
    "sharded-local": ["use_checkpoint=true"],
    "ray": ["executor_type=ray"],
}


def _modes(recipe_path: Path, tmp_path: Path, *overrides: str, shard: int = 8) -> list[dict]:
    """The recipe run streaming, sharded on the local pool and on Ray (shards of 4 x `shard`
    samples; the default 8 makes several); each mode's outputs."""
    results = []
    for mode, extra in MODES.items():
        out = tmp_path / mode
        args = [f"export_path={out}/out.jsonl", f"io_batch_size={shard}", "use_cache=false",
                *extra, *overrides]  # fmt: skip
        summary = run_recipe(load_recipe(recipe_path, args), progress=False)
        assert summary["mode"] == ("streaming" if mode == "streaming" else "sharded")
        if mode != "streaming":
            assert (summary["shards"] > 1) == (shard == 8)
        results.append(_outputs(summary))
    return results


@pytest.mark.parametrize(
    "settings",
    [["open_tracer=true"], ["export_shard_size=3000", "export_format=llava"],
     ["keep_stats_in_res_ds=true"]],
    ids=["tracer", "export-shards+llava", "stats-in-result"],
)
def test_parity_demo_recipe(tmp_path, monkeypatch, settings):
    monkeypatch.chdir(REPO)
    if "export_format=llava" in settings:  # the demo's captions get questions back by id
        ids = re.findall(r'^\{"id": "([^"]+)"', (REPO / "demo" / "demo.jsonl").read_text(), re.M)
        turns = [{"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "x"}]
        original = tmp_path / "orig.json"
        original.write_text(json.dumps([{"id": i, "image": "x.jpg", "conversations": turns}
                                        for i in ids]))  # fmt: skip
        options = {"restore_questions": True, "original_llava_ds_path": str(original)}
        settings = [*settings, f"llava_options={json.dumps(options)}"]
    a, b, c = _modes(REPO / "recipes" / "demo.yaml", tmp_path, *settings)
    assert a == b == c
    assert a["counts"]["quarantined_samples"] > 0 and sum(a["counts"]["filtered"].values()) > 0
    if "export_format=llava" in settings:
        assert len(a["export"]) > 1 and a["llava"]
    if "open_tracer=true" in settings:  # a mapper, a filter and a deduplicator traced
        names = set(a["trace"])
        assert {"mapper-clean_links_mapper.jsonl", "filter-text_length_filter.jsonl",
                "duplicate-image_deduplicator.jsonl"} <= names, names  # fmt: skip
    if "keep_stats_in_res_ds=true" in settings:
        assert not a["stats"] and b"__dj__stats__" in next(iter(a["export"].values()))


@pytest.mark.parametrize("shard", [8, 512], ids=["many-shards", "one-shard"])
def test_parity_dedup_recipe_with_keep_policy(tmp_path, monkeypatch, shard):
    monkeypatch.chdir(REPO)
    recipe = write_recipe(
        tmp_path / "dedup.yaml",
        dataset_path=str(REPO / "demo" / "demo.jsonl"),
        export_path=str(tmp_path / "x.jsonl"),
        np=2,
        process=[
            {"text_length_filter": {"min_len": 1}},
            {"document_minhash_deduplicator": {"tokenization": "punctuation", "window_size": 2}},
            {"image_deduplicator": {"hamming_threshold": 8, "keep_policy": "max", "keep_stats_key": "text_len"}},
            {"document_deduplicator": {"lowercase": True, "ignore_non_character": True}},
        ],
    )  # fmt: skip
    a, b, c = _modes(recipe, tmp_path, shard=shard)
    assert a == b == c
    assert a["counts"]["filtered"]["image_deduplicator"] > 0


def test_parity_tiny_recaption_recipe_on_actor_pools(tmp_path, monkeypatch, tiny_models):
    monkeypatch.chdir(REPO)
    recipe = write_recipe(
        tmp_path / "recap.yaml",
        dataset_path=str(REPO / "demo" / "demo.jsonl"),
        export_path=str(tmp_path / "x.jsonl"),
        np=1,
        process=[
            {"image_shape_filter": {"min_width": 64, "min_height": 64}},
            {"image_captioning_mapper": {"hf_img2seq": tiny_models["blip2"], "keep_original_sample": True,
                                         "max_new_tokens": 6, "do_sample": False, "accelerator": "cpu"}},
            {"image_text_similarity_filter": {"hf_clip": tiny_models["clip"], "min_score": -1.0,
                                              "accelerator": "cpu"}},
        ],
    )  # fmt: skip
    a, b, c = _modes(recipe, tmp_path)
    # Model scores depend in their last float bits on how rows were batched (a shard is one
    # batch, a stream is cut by io_batch_size): the stats files agree to float precision.
    stats = [_stats_values(x.pop("stats")) for x in (a, b, c)]
    assert stats[1] == pytest.approx(stats[0], abs=1e-5)
    assert stats[2] == pytest.approx(stats[0], abs=1e-5)
    assert a == b == c
    assert a["counts"]["generated_samples"] > 0


def _stats_values(files: dict[str, bytes]) -> list[float]:
    values = []
    for data in files.values():
        for line in data.splitlines():
            for v in json.loads(line)["__dj__stats__"].values():
                values.extend(v if isinstance(v, list) else [v])
    return values


def test_unreachable_ray_address_is_a_clear_error(tmp_path):
    ray.shutdown()  # the executor must try to connect, not reuse this test's instance
    try:
        data = tmp_path / "d.jsonl"
        data.write_text('{"text": "x"}\n')
        recipe = write_recipe(tmp_path / "r.yaml", dataset_path=str(data),
                              export_path=str(tmp_path / "o.jsonl"), executor_type="ray",
                              ray_address="127.0.0.1:9")  # fmt: skip
        start = time.monotonic()
        with pytest.raises(
            RayConnectionError, match="cannot reach Ray at ray_address '127.0.0.1:9'"
        ):
            run_recipe(load_recipe(recipe))
        assert time.monotonic() - start < 30
        cli = subprocess.run([DJ_RUN, str(recipe), "-q"], capture_output=True, text=True)
        assert cli.returncode == 2 and "ray start --head" in cli.stderr
    finally:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)


# -- failures: a killed worker, a killed driver -----------------------------------------


@pytest.fixture(scope="module")
def sleepy(tmp_path_factory) -> Path:
    """The slow custom operator, one file for the whole module (registered once)."""
    path = tmp_path_factory.mktemp("ops") / "sleepy.py"
    path.write_text(SLOW_OP)
    return path


def _slow_recipe(tmp_path: Path, name: str, executor: str, sleepy: Path) -> Path:
    rows = [{"id": i, "text": f"caption number {i} " * (1 + i % 3)} for i in range(96)]
    rows[10]["text"] = rows[3]["text"]  # an exact duplicate across shards
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return write_recipe(
        tmp_path / f"{name}.yaml", dataset_path=str(data),
        export_path=str(tmp_path / name / "out.jsonl"), executor_type=executor, np=2,
        io_batch_size=2, custom_operator_paths=[str(sleepy)],
        process=[{"sleepy_mapper": {"seconds": 0.15, "batch_size": 1}}, {"text_length_filter": {"min_len": 18}},
                 {"document_deduplicator": {}}],
    )  # fmt: skip


def _committed(work: Path) -> int:
    return len(list((work / "checkpoint" / "stage0").glob("*.out")))


def _reference(tmp_path: Path, sleepy: Path) -> dict:
    recipe = _slow_recipe(tmp_path, "ref", "default", sleepy)
    return _outputs(
        run_recipe(load_recipe(recipe, ["sleepy_mapper.seconds=0"]), progress=False)
    )


def _wait_for(predicate, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError("the run did not get there in time")
        time.sleep(0.1)


@pytest.mark.parametrize("executor", ["ray", "default"])
def test_killed_driver_then_resume_is_exactly_once(tmp_path, executor, sleepy):
    recipe = _slow_recipe(tmp_path, "run", executor, sleepy)
    work = tmp_path / "run"
    args = [DJ_RUN, str(recipe), "-q", "--set", "use_checkpoint=true"]
    proc = subprocess.Popen(args, start_new_session=True, stderr=subprocess.DEVNULL)
    _wait_for(lambda: _committed(work) >= 4, timeout=120)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started
    proc.wait()
    before = _committed(work)
    assert 0 < before < 12  # killed mid-stage: some of the 12 shards committed, not all
    done = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((work / "summary.json").read_text())
    assert summary["shards_resumed"] >= before
    assert _outputs(summary) == _reference(tmp_path, sleepy)


def test_killed_ray_worker_does_not_change_the_output(tmp_path, sleepy):
    recipe = _slow_recipe(tmp_path, "run", "ray", sleepy)
    work = tmp_path / "run"
    proc = subprocess.Popen(
        [DJ_RUN, str(recipe), "-q"], start_new_session=True, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for(lambda: _committed(work) >= 2, timeout=120)
        victims = _ray_task_workers()
        assert victims, "no Ray worker running our map task"
        os.kill(victims[0], signal.SIGKILL)
        assert proc.wait(timeout=300) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    summary = json.loads((work / "summary.json").read_text())
    assert _outputs(summary) == _reference(tmp_path, sleepy)


def _ray_task_workers() -> list[int]:
    """Pids of Ray worker processes currently running a map_batches task (process title)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            title = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if title.startswith("ray::") and "MapBatches" in title:
            pids.append(int(entry))
    return pids
