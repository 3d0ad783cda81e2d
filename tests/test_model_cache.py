"""The model-output cache: a rerun after a threshold change computes nothing again and gives
the same output; a change that matters misses; a damaged entry is recomputed; concurrent
writers are safe."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_recipe
from PIL import Image

from dj_synth.operators.model_cache import _DAMAGED, ModelCache, _decode, _encode
from dj_synth.pipelines.recipe import load_recipe
from dj_synth.pipelines.run import run_recipe

pytest.importorskip("torch")
DJ_RUN = str(Path(sys.executable).parent / "dj-run")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    rows = []
    for i in range(12):
        Image.new("RGB", (40 + 8 * i, 48), (20 * i, 120, 255 - 20 * i)).save(root / f"{i}.jpg")
        rows.append({"id": i, "text": f"<__dj__image>\na photo number {i} <|__dj__eoc|>",
                     "images": [f"{i}.jpg"]})  # fmt: skip
    (root / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "d.jsonl"


def _recipe(tmp_path: Path, data: Path, tiny_models: dict, cache: Path, **overrides) -> Path:
    process = [
        {"image_captioning_mapper": {"hf_img2seq": tiny_models["blip2"], "max_new_tokens": 5,
                                     "do_sample": False, "accelerator": "cpu",
                                     "keep_original_sample": False}},
        {"image_text_similarity_filter": {"hf_clip": tiny_models["clip"], "min_score": -1.0,
                                          "accelerator": "cpu"}},
    ]  # fmt: skip
    settings = dict(dataset_path=str(data), export_path=str(tmp_path / "o" / "r.jsonl"), np=1,
                    cache_dir=str(cache), process=process)  # fmt: skip
    return write_recipe(tmp_path / "r.yaml", **{**settings, **overrides})


def _run(recipe: Path, *overrides: str) -> tuple[dict, bytes, list[dict]]:
    s = run_recipe(load_recipe(recipe, list(overrides)), progress=False)
    export = Path(s["export_files"][0]).read_bytes()
    stats = Path(s["stats_files"][0]).read_bytes()
    return s, export + stats, s["ops"]


def _cache(ops: list[dict]) -> list[tuple[int, int]]:
    return [(o.get("cache_hits", 0), o.get("cache_misses", 0)) for o in ops]


def test_rerun_after_a_threshold_change_computes_nothing(tmp_path, data, tiny_models):
    cache = tmp_path / "cache"
    recipe = _recipe(tmp_path, data, tiny_models, cache)
    first, out1, ops1 = _run(recipe)
    (_, captions), (_, scored) = _cache(ops1)
    assert captions == 12 and scored > 12  # 12 images, then the images and distinct captions
    everything_found = [(captions, 0), (scored, 0)]
    lower = "image_text_similarity_filter.min_score=0.0"
    second, out2, ops2 = _run(recipe, lower)
    assert _cache(ops2) == everything_found
    assert out2 == _run(recipe, lower, "use_cache=false")[1]
    again, out3, ops3 = _run(recipe)
    assert out3 == out1 and _cache(ops3) == everything_found
    # computed without the cache: the same bytes
    fresh, out4, ops4 = _run(recipe, "use_cache=false")
    assert out4 == out1 and _cache(ops4) == [(0, 0), (0, 0)]


def test_a_fully_cached_rerun_never_imports_torch(tmp_path, data, tiny_models):
    """Cached captions and CLIP embeddings come back as plain values: a rerun that finds
    everything loads no model and does not even import torch (seconds per worker)."""
    cache = tmp_path / "cache"
    recipe = _recipe(tmp_path, data, tiny_models, cache)
    _run(recipe)
    probe = (
        "import sys\nfrom dj_synth.pipelines.cli import entry\n"
        f"sys.argv = ['dj-run', {str(recipe)!r}, '-q', '--set', "
        "'image_text_similarity_filter.min_score=0.0']\n"
        "try:\n    entry()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "torch imported: False" in done.stdout


def test_what_changes_the_output_misses(tmp_path, data, tiny_models):
    cache = tmp_path / "cache"
    recipe = _recipe(tmp_path, data, tiny_models, cache)
    _run(recipe)
    _, _, ops = _run(recipe, "image_captioning_mapper.max_new_tokens=4")  # an output argument
    assert _cache(ops)[0] == (0, 12)
    copy = tmp_path / "data2"  # one image's bytes change, the rest are found by content
    shutil.copytree(data.parent, copy)
    Image.new("RGB", (64, 64), (1, 2, 3)).save(copy / "3.jpg")
    _, _, ops = _run(recipe, f"dataset_path={copy / 'd.jsonl'}")
    assert _cache(ops)[0] == (11, 1)


def test_a_damaged_entry_is_recomputed_never_returned(tmp_path, data, tiny_models):
    cache = tmp_path / "cache"
    recipe = _recipe(tmp_path, data, tiny_models, cache)
    _, out1, _ = _run(recipe)
    store = ModelCache(str(cache))
    keys = list(store.store.iterkeys())
    for key in keys[:5]:
        raw = bytearray(store.store[key])
        raw[-2] ^= 0xFF  # flip bits inside the payload: the checksum no longer matches
        store.store[key] = bytes(raw)
    store.close()
    s2, out2, ops = _run(recipe)
    assert sum(m for _, m in _cache(ops)) == 5  # exactly the damaged ones recomputed
    # the same samples and captions; a recomputed score may differ in its last float bits,
    # since the model now sees a smaller batch, never by a damaged value
    export1, export2 = out1.split(b"\n", 12), out2.split(b"\n", 12)
    assert export1[:12] == export2[:12]
    stats = [
        [
            v
            for line in out.splitlines()[12:]
            for v in json.loads(line)["__dj__stats__"]["image_text_similarity"]
        ]
        for out in (out1, out2)
    ]
    assert stats[1] == pytest.approx(stats[0], abs=1e-5)  # fmt: skip


def test_values_round_trip_and_damage_is_detected():
    import numpy as np
    import torch

    value = [("a caption", 0.25), {"k": np.arange(6, dtype=np.float32).reshape(2, 3)},
             torch.tensor([1.5, -2.0], dtype=torch.bfloat16)]  # fmt: skip
    back = _decode(_encode(value))
    assert back[0] == ("a caption", 0.25)
    assert np.array_equal(back[1]["k"], value[1]["k"]) and back[1]["k"].dtype == np.float32
    assert back[2].dtype == torch.bfloat16 and torch.equal(back[2], value[2])
    raw = bytearray(_encode(value))
    raw[12] ^= 1
    assert _decode(bytes(raw)) is _DAMAGED


def _hammer(args: tuple[str, int]) -> list[str]:
    """One process writing and reading its own and the others' entries."""
    folder, me = args
    store = ModelCache(folder)
    keys = [f"k{i}" for i in range(120)]
    order = keys[me * 30 :] + keys[: me * 30]  # each process starts at another place
    for i in range(0, 120, 4):
        store.set_many(
            {k: {"caption": f"c{k[1:]}", "score": int(k[1:]) / 7} for k in order[i : i + 4]}
        )
        store.get_many(order[max(0, i - 8) : i + 4])
    found = store.get_many(keys)
    store.close()
    return [k for k in keys if found.get(k) != {"caption": f"c{k[1:]}", "score": int(k[1:]) / 7}]


def test_concurrent_writers_share_one_cache(tmp_path):
    """Four processes write and read one cache at once: every value reads back intact."""
    import multiprocessing as mp

    with mp.get_context("fork").Pool(4) as pool:  # each opens the cache after the fork
        bad = pool.map(_hammer, [(str(tmp_path / "cache"), i) for i in range(4)])
    assert bad == [[], [], [], []]
    assert len(ModelCache(str(tmp_path / "cache")).store) == 120


def test_no_cache_flag(tmp_path, data, tiny_models):
    from typer.testing import CliRunner

    from dj_synth.pipelines.cli import app

    cache = tmp_path / "cache"
    recipe = _recipe(tmp_path, data, tiny_models, cache)
    done = CliRunner().invoke(app, [str(recipe), "-q", "--no-cache"])
    assert done.exit_code == 0, done.output
    assert not cache.exists()
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["exported_samples"] == 12
