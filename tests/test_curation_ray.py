"""The curation filters and OCR operators give the same output under Ray as locally."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_recipe, write_recipe
from PIL import Image

ray = pytest.importorskip("ray")
pytest.importorskip("torch")
pytest.importorskip("rapidocr_onnxruntime")
pytest.importorskip("nudenet")

from dj_synth.tools.ocr_samples import render_samples, save_samples  # noqa: E402

TOK, EOC = "<__dj__image>", "<|__dj__eoc|>"


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    # Each model operator holds an actor of one logical CPU (ray_backend): six of them in
    # one recipe need six, whatever the machine has (logical CPUs are only a count to Ray).
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _files(summary: dict, key: str) -> dict[str, bytes]:
    return {Path(p).name: Path(p).read_bytes() for p in summary.get(key) or []}


def test_all_new_operators_local_equals_ray(tiny_models, tmp_path):
    import numpy as np

    rng = np.random.default_rng(3)
    text_images = save_samples(render_samples(3, seed=11), tmp_path / "text")
    plain = []
    for i in range(3):
        path = tmp_path / f"plain{i}.png"
        Image.fromarray(rng.integers(0, 256, (48 + 8 * i, 56, 3), dtype=np.uint8)).save(path)
        plain.append(str(path))
    broken = tmp_path / "broken.png"
    broken.write_bytes(Path(plain[0]).read_bytes()[:200])
    images = text_images + plain
    rows = [{"id": f"s{i}", "text": f"{TOK} caption {i} {EOC}", "images": [p]}
            for i, p in enumerate(images)]  # fmt: skip
    rows.append({"id": "multi", "text": f"{TOK} {TOK} two {EOC}", "images": [plain[1], text_images[0]]})
    rows.append({"id": "bad", "text": f"{TOK} x {EOC}", "images": [str(broken)]})
    rows.append({"id": "none", "text": "no image at all"})
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # One image per forward pass: a model's float sums depend on which images share its
    # batch, and the local and Ray runs group samples differently (the thread count, the
    # other source, is fixed by ModelOp.setup on CPU).
    cpu = {"accelerator": "cpu", "gpu_batch_size": 1}
    recipe = write_recipe(
        tmp_path / "all.yaml", dataset_path=str(data), export_path=str(tmp_path / "x.jsonl"), np=1,
        process=[
            {"image_ocr_mapper": {"mode": "append"}},
            {"image_aesthetics_filter": {"hf_scorer_model": tiny_models["aesthetics"], "min_score": -100, **cpu}},
            {"image_nsfw_filter": {"hf_nsfw_model": tiny_models["nsfw"], "max_score": 1.0, **cpu}},
            {"image_nsfw_filter": {"backend": "nudenet"}},
            {"image_watermark_filter": {"hf_watermark_model": tiny_models["watermark"], "prob_threshold": 1.0, **cpu}},
            {"image_ocr_area_ratio_filter": {"max_ratio": 0.02, "any_or_all": "all"}},
        ],
    )  # fmt: skip
    results = []
    # the same shards in both runs: a model's float sums depend on the batch it sees
    for name, extra in (("local", []), ("ray", ["executor_type=ray"])):
        summary = run_recipe(
            recipe, f"export_path={tmp_path / name}/out.jsonl", "io_batch_size=4", "use_cache=false",
            *extra,
        )  # fmt: skip
        results.append({
            "export": _files(summary, "export_files"), "stats": _files(summary, "stats_files"),
            "filtered": _files(summary, "filtered_files"),
            "quarantine": (Path(summary["work_dir"]) / "quarantine.jsonl").read_bytes(),
            "ops": [(o["name"], o["in"], o["out"], o["filtered"], o["quarantined"]) for o in summary["ops"]],
        })  # fmt: skip
    local, remote = results
    for key in local:  # a readable failure: the first line that differs
        if key in ("ops", "quarantine"):
            assert local[key] == remote[key], key
            continue
        assert local[key].keys() == remote[key].keys(), key
        for name, data in local[key].items():
            for a, b in zip(data.splitlines(), remote[key][name].splitlines()):
                assert a == b, f"{key}/{name}:\nlocal {a[:2000]!r}\nray   {b[:2000]!r}"
            assert data == remote[key][name], f"{key}/{name}"
    ops = local["ops"]
    assert local["quarantine"].count(b"\n") == 1 and b"broken.png" in local["quarantine"]
    assert ops[-1][3] >= 3  # the text images (and "multi", by all) dropped by the area filter
    assert len(local["export"]) == 1 and b'"id":"none"' in b"".join(local["export"].values())
    exported = b"".join(local["export"].values()).decode()
    assert "Text in the image" not in exported  # every sample with text was dropped ...
    filtered = b"".join(local["filtered"].values()).decode()
    assert "Text in the image" in filtered  # ... after the mapper wrote it into the caption
