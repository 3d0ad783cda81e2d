"""Model operators on tiny random models of the real architectures, through the real loading code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import read_jsonl, run_op, run_recipe, write_recipe
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("transformers")

from dj_synth.operators import get_operator  # noqa: E402
from dj_synth.operators.models import ModelNotFoundError  # noqa: E402
from dj_synth.pipelines.recipe import RecipeError, load_recipe  # noqa: E402

TOK, EOC = "<__dj__image>", "<|__dj__eoc|>"


@pytest.fixture
def photos(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        arr = rng.integers(0, 255, (40 + 8 * i, 48, 3), dtype=np.uint8)
        path = tmp_path / f"p{i}.jpg"
        Image.fromarray(arr).save(path, quality=90)
        paths.append(str(path))
    broken = tmp_path / "broken.jpg"
    data = open(paths[0], "rb").read()
    broken.write_bytes(data[: len(data) // 2])
    return paths, str(broken)


def _caption(out):
    return [r["text"] for r in out.rows()]


# -- captioning -------------------------------------------------------------


def test_batched_captions_equal_one_at_a_time(tiny_models, photos):
    paths, _ = photos
    rows = [
        {"id": str(i), "text": f"{TOK} old caption {EOC}", "images": [p]}
        for i, p in enumerate(paths)
    ]
    args = dict(hf_img2seq=tiny_models["blip2"], keep_original_sample=False, do_sample=False,
                max_new_tokens=6, accelerator="cpu")  # fmt: skip
    batched, _ = run_op("image_captioning_mapper", rows, gpu_batch_size=8, **args)
    single, _ = run_op("image_captioning_mapper", rows, gpu_batch_size=1, **args)
    assert _caption(batched) == _caption(single)
    for text in _caption(batched):
        assert text.startswith(f"{TOK} ") and text.endswith(f" {EOC}") and "old caption" not in text
    assert [r["id"] for r in batched.rows()] == [str(i) for i in range(5)]  # ids kept


def test_prompts_batched_with_left_padding(tiny_models, photos):
    """Per-sample prompts of different lengths: batched = one at a time; prompt not echoed."""
    paths, _ = photos
    prompts = ["a photo of", "describe this picture in a few simple words:", "an image"]
    rows = [{"id": str(i), "text": f"{TOK} x {EOC}", "images": [paths[i]], "q": q}
            for i, q in enumerate(prompts)]  # fmt: skip
    args = dict(hf_img2seq=tiny_models["blip2"], prompt_key="q", keep_original_sample=False,
                do_sample=False, max_new_tokens=5, accelerator="cpu")  # fmt: skip
    batched, _ = run_op("image_captioning_mapper", rows, gpu_batch_size=8, **args)
    single, _ = run_op("image_captioning_mapper", rows, gpu_batch_size=1, **args)
    assert _caption(batched) == _caption(single)
    for text, q in zip(_caption(batched), prompts):
        assert not text.startswith(f"{TOK} {q}")
    missing, ledger = run_op(
        "image_captioning_mapper", [{"text": f"{TOK} x", "images": [paths[0]]}], **args
    )
    assert len(missing) == 0 and "prompt_key 'q'" in ledger.quarantined[0].error


def test_sampling_is_seeded(tiny_models, photos):
    paths, _ = photos
    rows = [{"id": "a", "text": f"{TOK} x {EOC}", "images": [paths[0]]}]
    args = dict(hf_img2seq=tiny_models["blip2"], keep_original_sample=False, do_sample=True,
                caption_num=3, keep_candidate_mode="all", max_new_tokens=8, accelerator="cpu")  # fmt: skip
    one, _ = run_op("image_captioning_mapper", rows, seed=1, **args)
    two, _ = run_op("image_captioning_mapper", rows, seed=1, **args)
    other, _ = run_op("image_captioning_mapper", rows, seed=2, **args)
    assert _caption(one) == _caption(two)
    assert _caption(one) != _caption(other)


@pytest.mark.parametrize("mode", ["random_any", "similar_one_simhash", "all"])
@pytest.mark.parametrize("keep_original", [True, False])
def test_candidate_modes_and_order(tiny_models, photos, mode, keep_original):
    paths, _ = photos
    rows = [
        {"id": "a", "text": f"{TOK} first {EOC}", "images": [paths[0]], "extra": 1},
        {"id": "b", "text": "no image here"},
        {"id": "c", "text": f"{TOK} third {EOC}", "images": [paths[1]], "__dj__stats__": {"x": 1}},
    ]
    out, ledger = run_op(
        "image_captioning_mapper", rows, hf_img2seq=tiny_models["blip2"], caption_num=2,
        keep_candidate_mode=mode, keep_original_sample=keep_original, max_new_tokens=5,
        accelerator="cpu",
    )  # fmt: skip
    got = out.rows()
    per_input = 2 if mode == "all" else 1
    expected_ids = []
    for row in rows:
        if "images" not in row:
            expected_ids.append(row["id"])  # nothing to caption: passed through
            continue
        expected_ids += [row["id"]] * ((1 if keep_original else 0) + per_input)
    assert [r["id"] for r in got] == expected_ids
    generated = [r for r in got if "__dj__meta__" in r]
    assert len(generated) == 2 * per_input
    assert all(r["__dj__meta__"]["generated_by"] == "image_captioning_mapper" for r in generated)
    assert all("__dj__stats__" not in r and r["images"] for r in generated)
    if keep_original:
        assert got[0] == rows[0]  # the original first, untouched
    if mode == "all":
        assert [r["__dj__meta__"]["candidates"] for r in generated[:2]] == [[0], [1]]
    assert ledger.op(0).generated == len(got) - len(rows)


def test_multi_image_chunks_get_one_caption_each(tiny_models, photos):
    paths, _ = photos
    text = f"{TOK} {TOK} two images {EOC} {TOK} one more {EOC}"
    out, _ = run_op(
        "image_captioning_mapper", [{"id": "m", "text": text, "images": paths[:3]}],
        hf_img2seq=tiny_models["blip2"], keep_original_sample=False, do_sample=False,
        max_new_tokens=4, accelerator="cpu",
    )  # fmt: skip
    (new,) = _caption(out)
    chunks = new.split(EOC)
    assert len(chunks) == 3 and chunks[-1] == ""
    assert chunks[0].count(TOK) == 2 and chunks[1].count(TOK) == 1
    assert not chunks[0].strip().endswith(TOK)  # a caption follows each token


def test_bad_image_quarantines_only_its_sample(tiny_models, photos):
    paths, broken = photos
    rows = [
        {"id": str(i), "text": f"{TOK} c {EOC}", "images": [p]} for i, p in enumerate(paths[:3])
    ]
    rows.insert(1, {"id": "bad", "text": f"{TOK} c {EOC}", "images": [broken]})
    out, ledger = run_op(
        "image_captioning_mapper", rows, hf_img2seq=tiny_models["blip2"], keep_original_sample=False,
        max_new_tokens=3, accelerator="cpu",
    )  # fmt: skip
    assert [r["id"] for r in out.rows()] == ["0", "1", "2"]
    (q,) = ledger.quarantined
    assert (
        q.row["id"] == "bad"
        and "undecodable image" in q.error
        and q.stage == "image_captioning_mapper"
    )


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError) as err:
        get_operator("image_captioning_mapper")(hf_img2seq=str(tmp_path / "blip2-opt-2.7b"))
    msg = str(err.value)
    assert "blip2-opt-2.7b" in msg and "tried" in msg and "nothing is downloaded" in msg
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(
        ModelNotFoundError,
        match="incomplete: missing preprocessor_config.json or processor_config.json, model weights",
    ):
        get_operator("image_text_similarity_filter")(hf_clip=str(tmp_path / "half"))


def test_folder_saved_by_current_transformers_is_accepted(tiny_models, photos, tmp_path):
    """transformers >= 5.24 save_pretrained writes processor_config.json and no
    preprocessor_config.json (hub snapshots have the latter): both layouts load."""
    from transformers import CLIPModel, CLIPProcessor

    saved = tmp_path / "clip-saved"
    CLIPModel.from_pretrained(tiny_models["clip"]).save_pretrained(saved)
    CLIPProcessor.from_pretrained(tiny_models["clip"]).save_pretrained(saved)
    files = {p.name for p in saved.iterdir()}
    assert "processor_config.json" in files and "preprocessor_config.json" not in files
    paths, _ = photos
    rows = [{"id": "a", "text": f"{TOK} a cat {EOC}", "images": [paths[0]]}]
    args = dict(min_score=-1.0, accelerator="cpu")
    new, _ = run_op("image_text_similarity_filter", rows, hf_clip=str(saved), **args)
    old, _ = run_op("image_text_similarity_filter", rows, hf_clip=tiny_models["clip"], **args)
    assert new.rows() == old.rows()  # same weights, same scores


def test_model_of_the_wrong_kind_fails_the_recipe_before_work(tiny_models, tmp_path):
    """A CLIP folder given as hf_img2seq: exit 2 naming what was expected and what was found."""
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "x"}\n')
    recipe = write_recipe(tmp_path / "r.yaml", dataset_path=str(data), export_path=str(tmp_path / "o.jsonl"),
                          process=[{"image_captioning_mapper": {"hf_img2seq": tiny_models["clip"]}}])  # fmt: skip
    with pytest.raises(RecipeError) as err:
        load_recipe(recipe)
    msg = str(err.value)
    assert "process[0] image_captioning_mapper: hf_img2seq" in msg
    assert "is a CLIPModel" in msg and "expected an image-to-text generation model" in msg
    for op, arg, folder in [("image_text_similarity_filter", "hf_clip", "blip2"),
                            ("image_text_matching_filter", "hf_blip", "clip")]:  # fmt: skip
        with pytest.raises(ValueError, match=f"{arg} .* is a .*; expected"):
            get_operator(op)(**{arg: tiny_models[folder]})
    cli = subprocess.run([str(Path(sys.executable).parent / "dj-run"), str(recipe), "-q"],
                         capture_output=True, text=True)  # fmt: skip
    assert cli.returncode == 2 and "is a CLIPModel" in cli.stderr, cli.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_missing_model_fails_the_recipe_before_work(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "x"}\n')
    recipe = write_recipe(tmp_path / "r.yaml", dataset_path=str(data), export_path=str(tmp_path / "o.jsonl"),
                          process=[{"image_captioning_mapper": {"hf_img2seq": "/nowhere/blip2"}}])  # fmt: skip
    with pytest.raises(
        RecipeError,
        match="process\\[0\\] image_captioning_mapper: model '/nowhere/blip2' not found",
    ):
        load_recipe(recipe)


# -- CLIP / BLIP filters ---------------------------------------------------


def test_clip_similarity_stats_and_keep_rule(tiny_models, photos):
    paths, _ = photos
    rows = [
        {
            "id": "two-chunks",
            "text": f"{TOK} a cat {EOC} {TOK} {TOK} a dog {EOC}",
            "images": paths[:3],
        },
        {"id": "no-images", "text": "plain text"},
        {"id": "one", "text": f"{TOK} a bird {EOC}", "images": [paths[3]]},
    ]
    out, ledger = run_op("image_text_similarity_filter", rows, hf_clip=tiny_models["clip"],
                         min_score=-1.0, max_score=1.0, accelerator="cpu")  # fmt: skip
    stats = {r["id"]: r["__dj__stats__"]["image_text_similarity"] for r in out.rows()}
    assert len(stats["two-chunks"]) == 2 and stats["no-images"] == [] and len(stats["one"]) == 1
    assert all(-1.0 <= v <= 1.0 for vs in stats.values() for v in vs)
    # the second chunk's score is the average over its two images (reduce_mode avg)
    mx, _ = run_op("image_text_similarity_filter", rows[:1], hf_clip=tiny_models["clip"],
                   min_score=-1.0, reduce_mode="max", accelerator="cpu")  # fmt: skip
    mn, _ = run_op("image_text_similarity_filter", rows[:1], hf_clip=tiny_models["clip"],
                   min_score=-1.0, reduce_mode="min", accelerator="cpu")  # fmt: skip
    hi = mx.rows()[0]["__dj__stats__"]["image_text_similarity"][1]
    lo = mn.rows()[0]["__dj__stats__"]["image_text_similarity"][1]
    assert lo <= stats["two-chunks"][1] <= hi and lo < hi
    # a threshold between the scores drops exactly the samples below it (images-free kept)
    cut = sorted(v for vs in stats.values() for v in vs)[1]
    out2, ledger2 = run_op("image_text_similarity_filter", rows, hf_clip=tiny_models["clip"],
                           min_score=cut + 1e-6, any_or_all="all", accelerator="cpu")  # fmt: skip
    kept = {r["id"] for r in out2.rows()}
    assert "no-images" in kept
    for rid, vs in stats.items():
        assert (rid in kept) == all(v >= cut + 1e-6 for v in vs)


def test_clip_scores_are_the_cosine_of_embeddings(tiny_models, photos):
    import torch
    from transformers import CLIPModel, CLIPProcessor

    paths, _ = photos
    out, _ = run_op("image_text_similarity_filter",
                    [{"text": f"{TOK} a red square {EOC}", "images": [paths[0]]}],
                    hf_clip=tiny_models["clip"], min_score=-1, accelerator="cpu")  # fmt: skip
    (score,) = out.rows()[0]["__dj__stats__"]["image_text_similarity"]
    model = CLIPModel.from_pretrained(tiny_models["clip"]).eval()
    proc = CLIPProcessor.from_pretrained(tiny_models["clip"])
    inputs = proc(text=["a red square"], images=[Image.open(paths[0]).convert("RGB")],
                  return_tensors="pt", padding=True)  # fmt: skip
    with torch.no_grad():
        logits = model(**inputs).logits_per_text
        expected = float(logits[0, 0] / model.logit_scale.exp())
    assert score == pytest.approx(expected, abs=1e-4)


def test_open_clip_backend(tiny_models, photos):
    paths, _ = photos
    out, _ = run_op("image_text_similarity_filter",
                    [{"text": f"{TOK} a thing {EOC}", "images": [paths[0]]}],
                    open_clip_model="local-dir:" + tiny_models["open_clip"],
                    min_score=-1, accelerator="cpu")  # fmt: skip
    (score,) = out.rows()[0]["__dj__stats__"]["image_text_similarity"]
    assert -1.0 <= score <= 1.0


def test_blip_itm_scores(tiny_models, photos):
    paths, broken = photos
    rows = [
        {"id": "a", "text": f"{TOK} a cat {EOC}", "images": [paths[0]]},
        {"id": "bad", "text": f"{TOK} a cat {EOC}", "images": [broken]},
        {"id": "b", "text": f"{TOK} {TOK} a dog {EOC}", "images": paths[1:3]},
    ]
    out, ledger = run_op("image_text_matching_filter", rows, hf_blip=tiny_models["blip_itm"],
                         min_score=0.0, accelerator="cpu")  # fmt: skip
    got = {r["id"]: r["__dj__stats__"]["image_text_matching_score"] for r in out.rows()}
    assert set(got) == {"a", "b"} and len(ledger.quarantined) == 1
    assert all(len(v) == 1 and 0.0 <= v[0] <= 1.0 for v in got.values())


# -- end to end --------------------------------------------------------------


def test_dj_run_recaption_and_clip_filter(tiny_models, photos, tmp_path):
    paths, broken = photos
    data = tmp_path / "d.jsonl"
    lines = [
        {"id": str(i), "text": f"{TOK}\noriginal caption {i} {EOC}", "images": [p]}
        for i, p in enumerate(paths)
    ]
    lines.append({"id": "bad", "text": f"{TOK} x {EOC}", "images": [broken]})
    data.write_text("".join(json.dumps(r) + "\n" for r in lines))
    recipe = write_recipe(
        tmp_path / "r.yaml", dataset_path=str(data), export_path=str(tmp_path / "out" / "res.jsonl"),
        np=2, image_check="exists",
        process=[
            {"image_captioning_mapper": {"hf_img2seq": tiny_models["blip2"], "keep_original_sample": True,
                                         "max_new_tokens": 5, "accelerator": "cpu"}},
            {"image_text_similarity_filter": {"hf_clip": tiny_models["clip"], "min_score": -1.0,
                                              "accelerator": "cpu"}},
        ],
    )  # fmt: skip
    s = run_recipe(recipe)
    assert s["input_samples"] == 6 and s["generated_samples"] == 5 and s["quarantined_samples"] == 1
    assert s["exported_samples"] == 10
    rows = read_jsonl(s["export_files"][0])
    assert [r["id"] for r in rows] == [str(i) for i in range(5) for _ in range(2)]
    stats = read_jsonl(s["stats_files"][0])
    assert all(len(st["__dj__stats__"]["image_text_similarity"]) == 1 for st in stats)


def test_workers_spread_over_gpus(monkeypatch):
    import torch

    from dj_synth.operators.models import pick_device, pick_dtype

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("cuda", 3) == "cuda:1"
    assert pick_device("cuda", 2) == "cuda:0"
    assert pick_device("cpu") == "cpu"
    assert pick_dtype("auto", "cuda:1") == torch.bfloat16
    assert pick_dtype("auto", "cpu") == torch.float32
    assert pick_dtype("fp16", "cuda:0") == torch.float16
    with pytest.raises(ValueError, match="dtype must be one of"):
        pick_dtype("int3", "cpu")


def test_oom_halves_the_batch(monkeypatch):
    import torch

    from dj_synth.operators.models import run_in_batches

    sizes = []

    def fn(chunk):
        sizes.append(len(chunk))
        if len(chunk) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return [x * 2 for x in chunk]

    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    assert run_in_batches(fn, list(range(10)), 16) == [x * 2 for x in range(10)]
    assert sizes[:3] == [10, 5, 2] and max(sizes[3:]) <= 2


def test_model_ops_decode_jpegs_at_reduced_scale(tiny_models, tmp_path):
    """A 2000x1500 JPEG is decoded by DCT scaling to >= 448 px, not at full size."""
    path = str(tmp_path / "big.jpg")
    Image.new("RGB", (2000, 1500), (200, 30, 30)).save(path, quality=90)
    out, _ = run_op("image_text_similarity_filter", [{"text": f"{TOK} red {EOC}", "images": [path]}],
                    hf_clip=tiny_models["clip"], min_score=-1, accelerator="cpu")  # fmt: skip
    media = out.ctx.media
    assert not media._rgb  # no full-resolution decode
    (img,) = media._small.values()
    assert 448 <= min(img.size) < 1500
