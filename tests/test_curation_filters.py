"""Aesthetics, NSFW and watermark filters on tiny random models of the real architectures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import run_op, write_recipe
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from dj_synth.operators import get_operator  # noqa: E402
from dj_synth.operators.image_nsfw_filter import nudenet_score  # noqa: E402
from dj_synth.pipelines.recipe import RecipeError, load_recipe  # noqa: E402

TOK, EOC = "<__dj__image>", "<|__dj__eoc|>"
CPU = {"accelerator": "cpu"}


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """Five small PNGs (decoded the same by every path) and a truncated JPEG."""
    import numpy as np

    folder = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(1)
    paths = []
    for i in range(5):
        arr = rng.integers(0, 256, (36 + 6 * i, 44, 3), dtype=np.uint8)
        path = folder / f"p{i}.png"
        Image.fromarray(arr).save(path)
        paths.append(str(path))
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / "x.jpg")
    data = (folder / "x.jpg").read_bytes()
    (folder / "broken.jpg").write_bytes(data[: len(data) // 2])
    return paths, str(folder / "broken.jpg")


def _rows(paths):
    return [
        {"id": "one", "text": f"{TOK} a {EOC}", "images": [paths[0]]},
        {"id": "none", "text": "no image"},
        {"id": "three", "text": f"{TOK} {TOK} b {EOC} {TOK} c", "images": [paths[1], paths[2], paths[1]]},
        {"id": "two", "text": "plain", "images": [paths[3], paths[4]]},
    ]  # fmt: skip


def _stats(out, key):
    return {r["id"]: r["__dj__stats__"][key] for r in out.rows()}


def _pixels(folder, path):
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(folder)
    return processor(images=[Image.open(path).convert("RGB")], return_tensors="pt")["pixel_values"]


# -- aesthetics --------------------------------------------------------------------


def test_aesthetics_is_the_laion_head_on_the_normalised_clip_embedding(tiny_models, pictures):
    """Expected score computed independently: transformers' CLIP tower, then the head's
    five linear layers applied by hand from the checkpoint tensors, divided by 10."""
    from safetensors.torch import load_file
    from transformers import CLIPVisionModelWithProjection

    paths, _ = pictures
    folder = tiny_models["aesthetics"]
    out, _ = run_op("image_aesthetics_filter", _rows(paths), hf_scorer_model=folder,
                    min_score=-100, max_score=100, **CPU)  # fmt: skip
    got = _stats(out, "image_aesthetics_scores")
    assert got["none"] == [] and len(got["three"]) == 3 and got["three"][0] == got["three"][2]

    tower = CLIPVisionModelWithProjection.from_pretrained(folder).eval()
    weights = load_file(str(Path(folder) / "model.safetensors"))
    with torch.no_grad():
        emb = tower(pixel_values=_pixels(folder, paths[3])).image_embeds
        x = emb / emb.norm(dim=-1, keepdim=True)
        for i in (0, 2, 4, 6, 7):  # Linear layers of the V2 "linear" head; dropouts between
            x = x @ weights[f"layers.{i}.weight"].T + weights[f"layers.{i}.bias"]
    assert got["two"][0] == pytest.approx(float(x[0, 0]) / 10, abs=1e-5)


def test_aesthetics_reads_the_new_processor_layout_and_refuses_other_models(tiny_models, pictures, tmp_path):
    paths, _ = pictures
    copy = tmp_path / "aesthetics"
    shutil.copytree(tiny_models["aesthetics"], copy)
    (copy / "preprocessor_config.json").unlink()  # as transformers >= 5.24 saves it
    rows = _rows(paths)[:1]
    new, _ = run_op("image_aesthetics_filter", rows, hf_scorer_model=str(copy), min_score=-9, **CPU)
    old, _ = run_op("image_aesthetics_filter", rows, hf_scorer_model=tiny_models["aesthetics"],
                    min_score=-9, **CPU)  # fmt: skip
    assert new.rows() == old.rows()
    with pytest.raises(ValueError, match="hf_scorer_model .* is a ViTForImageClassification.*"
                                         "expected a LAION aesthetics predictor"):  # fmt: skip
        get_operator("image_aesthetics_filter")(hf_scorer_model=tiny_models["nsfw"])


# -- NSFW --------------------------------------------------------------------------


def test_nsfw_score_is_the_probability_of_the_nsfw_label(tiny_models, pictures, tmp_path):
    from transformers import ViTForImageClassification

    paths, _ = pictures
    folder = tiny_models["nsfw"]
    rows = _rows(paths)
    out, _ = run_op("image_nsfw_filter", rows, hf_nsfw_model=folder, max_score=1.0, **CPU)
    got = _stats(out, "image_nsfw_score")
    model = ViTForImageClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        probs = torch.softmax(model(pixel_values=_pixels(folder, paths[0])).logits, -1)[0]
    assert model.config.id2label[1] == "nsfw"
    assert got["one"] == [pytest.approx(float(probs[1]), abs=1e-5)]
    # the same weights with the labels swapped: the score follows the label, not index 1
    swapped = tmp_path / "swapped"
    shutil.copytree(folder, swapped)
    config = json.loads((swapped / "config.json").read_text())
    config["id2label"] = {"0": "nsfw", "1": "normal"}
    config["label2id"] = {"nsfw": 0, "normal": 1}
    (swapped / "config.json").write_text(json.dumps(config))
    out2, _ = run_op("image_nsfw_filter", rows[:1], hf_nsfw_model=str(swapped), max_score=1.0, **CPU)
    assert _stats(out2, "image_nsfw_score")["one"] == [pytest.approx(float(probs[0]), abs=1e-5)]


def test_nudenet_backend_needs_no_model_files(pictures):
    pytest.importorskip("nudenet")
    import skimage.data

    paths, _ = pictures
    photo = str(Path(paths[0]).parent / "astronaut.png")
    Image.fromarray(skimage.data.astronaut()).save(photo)
    rows = [{"id": "photo", "text": "x", "images": [photo, paths[0]]}]
    out, ledger = run_op("image_nsfw_filter", rows, backend="nudenet", hf_nsfw_model="/nowhere")
    assert _stats(out, "image_nsfw_score") == {"photo": [0.0, 0.0]} and not ledger.filtered


def test_nudenet_detections_map_to_one_score():
    """The highest confidence of an exposed-explicit class; faces and covered parts don't count."""
    assert nudenet_score([]) == 0.0
    assert nudenet_score([{"class": "FACE_FEMALE", "score": 0.9},
                          {"class": "FEMALE_BREAST_COVERED", "score": 0.8}]) == 0.0  # fmt: skip
    assert nudenet_score([{"class": "FACE_MALE", "score": 0.95},
                          {"class": "BUTTOCKS_EXPOSED", "score": 0.31},
                          {"class": "MALE_GENITALIA_EXPOSED", "score": 0.62}]) == 0.62  # fmt: skip


# -- watermark: keep rule, batching, bad images -------------------------------------


def test_watermark_keep_rule_any_or_all(tiny_models, pictures):
    paths, _ = pictures
    args = dict(hf_watermark_model=tiny_models["watermark"], **CPU)
    everything, _ = run_op("image_watermark_filter", _rows(paths), prob_threshold=1.0, **args)
    probs = _stats(everything, "image_watermark_prob")
    assert probs["none"] == [] and len(probs["two"]) == 2 and len(probs["three"]) == 3
    lo, hi = sorted(probs["two"])
    assert lo < hi
    cut = (lo + hi) / 2  # one image of "two" is below it, one above
    for mode in ("any", "all"):
        out, ledger = run_op("image_watermark_filter", _rows(paths), prob_threshold=cut,
                             any_or_all=mode, **args)  # fmt: skip
        kept = {r["id"] for r in out.rows()}
        expected = {rid for rid, ps in probs.items()
                    if not ps or (any if mode == "any" else all)(p <= cut for p in ps)}  # fmt: skip
        assert kept == expected and ("two" in kept) == (mode == "any")
        assert all("image_watermark_prob=" in f.reason for f in ledger.filtered)


@pytest.mark.parametrize(
    "op, arg, model",
    [("image_watermark_filter", "hf_watermark_model", "watermark"),
     ("image_nsfw_filter", "hf_nsfw_model", "nsfw"),
     ("image_aesthetics_filter", "hf_scorer_model", "aesthetics")],
)  # fmt: skip
def test_batched_equals_one_at_a_time_and_bad_image_quarantines_only_its_sample(
    tiny_models, pictures, op, arg, model
):
    paths, broken = pictures
    rows = _rows(paths)
    rows.insert(1, {"id": "bad", "text": "x", "images": [paths[0], broken]})
    keep_all = ({"prob_threshold": 1.0} if op == "image_watermark_filter"
                else {"min_score": -1e9, "max_score": 1e9})  # fmt: skip
    args = {arg: tiny_models[model], **keep_all}
    batched, ledger = run_op(op, rows, gpu_batch_size=8, **args, **CPU)
    single, _ = run_op(op, rows, gpu_batch_size=1, **args, **CPU)
    key = get_operator(op).stats_key
    a, b = _stats(batched, key), _stats(single, key)
    assert list(a) == ["one", "none", "three", "two"] and a.keys() == b.keys()
    for rid in a:
        assert a[rid] == pytest.approx(b[rid], abs=1e-5)
    (q,) = ledger.quarantined
    assert q.row["id"] == "bad" and "undecodable image" in q.error and q.stage == op


@pytest.mark.parametrize(
    "op, arg",
    [("image_aesthetics_filter", "hf_scorer_model"), ("image_nsfw_filter", "hf_nsfw_model"),
     ("image_watermark_filter", "hf_watermark_model")],
)  # fmt: skip
def test_missing_model_fails_the_recipe_before_work(tmp_path, op, arg):
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "x"}\n')
    recipe = write_recipe(tmp_path / "r.yaml", dataset_path=str(data), export_path=str(tmp_path / "o.jsonl"),
                          process=[{op: {arg: "/nowhere/model"}}])  # fmt: skip
    with pytest.raises(RecipeError, match=f"process\\[0\\] {op}: model '/nowhere/model' not found"):
        load_recipe(recipe)


def test_defaults_and_names_match_data_juicer():
    """Data-Juicer 1.x's argument names, defaults and stats keys."""
    import inspect

    expected = {
        "image_aesthetics_filter": ("image_aesthetics_scores", {
            "hf_scorer_model": "shunk031/aesthetics-predictor-v2-sac-logos-ava1-l14-linearMSE",
            "trust_remote_code": False, "min_score": 0.5, "max_score": 1.0, "any_or_all": "any"}),
        "image_nsfw_filter": ("image_nsfw_score", {
            "hf_nsfw_model": "Falconsai/nsfw_image_detection", "trust_remote_code": False,
            "min_score": 0.0, "max_score": 0.5, "any_or_all": "any"}),
        "image_watermark_filter": ("image_watermark_prob", {
            "hf_watermark_model": "amrul-hzz/watermark_detector", "trust_remote_code": False,
            "prob_threshold": 0.8, "any_or_all": "any"}),
    }  # fmt: skip
    for name, (stats_key, defaults) in expected.items():
        cls = get_operator(name)
        params = inspect.signature(cls.__init__).parameters
        assert cls.stats_key == stats_key
        assert {k: params[k].default for k in defaults} == defaults


def test_dj_run_lists_the_new_operators():
    import subprocess
    import sys

    dj_run = Path(sys.executable).parent / "dj-run"
    listed = subprocess.run([str(dj_run), "--list-ops"], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    for name in ("image_aesthetics_filter", "image_nsfw_filter", "image_watermark_filter",
                 "image_ocr_mapper", "image_ocr_area_ratio_filter"):  # fmt: skip
        assert f"\n{name}  [" in "\n" + listed.stdout, name


def test_better_synth_recipe_runs_on_tiny_models_as_its_header_says(tiny_models, tmp_path, monkeypatch):
    """The header's `dj-run ... --set ...` command, with the tiny models built here."""
    import shlex

    from helpers import run_recipe

    repo = Path(__file__).resolve().parent.parent
    recipe = repo / "recipes" / "better_synth" / "clean.yaml"
    header = recipe.read_text().split("dj-run recipes/better_synth/clean.yaml", 1)[1]
    first, *rest = header.splitlines()
    lines = [first] + [line.lstrip("#") for line in rest[: next(
        i for i, line in enumerate(rest) if not line.startswith("#"))]]  # fmt: skip
    command = " ".join(line.strip().rstrip("\\") for line in lines)
    words = shlex.split(command)
    sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    assert len(sets) == 12
    for i, item in enumerate(sets):
        key, value = item.split("=", 1)
        if value.startswith("outputs/tiny_models/"):
            sets[i] = f"{key}={tiny_models[value.rsplit('/', 1)[1]]}"
        elif key == "export_path":
            sets[i] = f"export_path={tmp_path}/out.jsonl"
    monkeypatch.chdir(repo)
    summary = run_recipe(recipe, *sets)
    names = [o["name"] for o in summary["ops"]]
    assert names[1:] == ["image_watermark_filter", "image_nsfw_filter", "image_aesthetics_filter",
                         "image_text_similarity_filter", "image_text_matching_filter"]  # fmt: skip
    assert summary["filtered"]["image_shape_filter"] > 0  # the 336-768 px window
    assert summary["exported_samples"] > 0
    assert all(o["filtered"] == 0 for o in summary["ops"][1:])  # thresholds opened up
