"""The synthesis mappers give the same output under Ray as locally."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import read_jsonl, run_recipe
from PIL import Image

ray = pytest.importorskip("ray")
pytest.importorskip("torch")
pytest.importorskip("diffusers")

from test_synthesis_ops import synthesis_recipe  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_synthesis_recipe_local_equals_ray(tiny_models, tmp_path):
    import numpy as np

    rng = np.random.default_rng(5)
    photos = []
    for i in range(4):
        path = tmp_path / f"p{i}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32 + 8 * i, 3), dtype=np.uint8)).save(path)
        photos.append(str(path))
    recipe = synthesis_recipe(tmp_path, tiny_models, photos, np=1)
    results = []
    for name, extra in (("local", []), ("ray", ["executor_type=ray"])):
        s = run_recipe(recipe, f"export_path={tmp_path / name}/out.jsonl", "io_batch_size=2",
                       "use_cache=false", f"image_diffusion_mapper.save_dir={tmp_path}/gen_{name}",
                       *extra)  # fmt: skip
        rows = read_jsonl(s["export_files"][0])
        made = sorted(Path(tmp_path / f"gen_{name}").iterdir())
        results.append({
            "rows": json.dumps(rows).replace(f"/gen_{name}/", "/gen/"),
            "files": {p.name: np.asarray(Image.open(p).convert("RGB"), dtype=np.int16) for p in made},
            "ops": [(o["name"], o["in"], o["out"], o["generated"], o["quarantined"]) for o in s["ops"]],
            "generated": s["generated_samples"],
        })  # fmt: skip
    local, remote = results
    assert local["ops"] == remote["ops"] and local["generated"] == remote["generated"] == 20
    assert local["rows"] == remote["rows"]  # captions, rewrites, image names, meta
    assert local["files"].keys() == remote["files"].keys() and len(local["files"]) == 12
    for name, pixels in local["files"].items():
        assert abs(pixels - remote["files"][name]).max() <= 2, name
