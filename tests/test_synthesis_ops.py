"""The synthesis mappers (mllm_mapper, sentence_augmentation_mapper, image_diffusion_mapper) on
tiny random models of the real architectures, through the real loading code."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from helpers import read_jsonl, run_op, run_recipe, write_recipe
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from dj_synth.operators import get_operator  # noqa: E402
from dj_synth.operators.models import ModelNotFoundError  # noqa: E402

TOK, EOC = "<__dj__image>", "<|__dj__eoc|>"
META = "__dj__meta__"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[str]:
    import numpy as np

    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(4):
        path = folder / f"p{i}.png"
        Image.fromarray(rng.integers(0, 256, (32 + 8 * i, 40, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def _rows(photos: list[str]) -> list[dict]:
    """Single-image samples, a sample of two chunks holding three images, one without images."""
    rows = [{"id": f"s{i}", "text": f"{TOK} describe picture {i} {EOC}", "images": [p]}
            for i, p in enumerate(photos[:2])]  # fmt: skip
    rows.append({"id": "multi", "text": f"{TOK} {TOK} two dogs {EOC} {TOK} a third {EOC}",
                 "images": photos[1:4]})  # fmt: skip
    rows.append({"id": "plain", "text": "no image here"})
    return rows


def _texts(batch) -> list[str]:
    return [r["text"] for r in batch.rows()]


def _well_formed(text: str, chunks: list[int]) -> bool:
    """`text` is Data-Juicer's format for chunks of these image counts: each image token
    followed by its own (non-token) answer, each chunk closed by the eoc token."""
    parts = text.split(f" {EOC}")
    if parts[-1] != "" or len(parts) - 1 != len(chunks):
        return False
    for part, n in zip(parts, chunks):
        answers = part.strip().split(TOK)
        if answers[0] != "" or len(answers) - 1 != n:
            return False
        if any(EOC in a for a in answers):
            return False
    return True


# -- mllm_mapper -------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["llava", "qwen2_vl"])
def test_mllm_format_and_batched_equals_one_at_a_time(tiny_models, photos, model):
    rows = _rows(photos)
    args = dict(hf_model=tiny_models[model], temperature=0.0, max_new_tokens=6, accelerator="cpu")
    batched, ledger = run_op("mllm_mapper", rows, gpu_batch_size=8, **args)
    single, _ = run_op("mllm_mapper", rows, gpu_batch_size=1, **args)
    assert not ledger.quarantined
    assert _texts(batched) == _texts(single)
    out = batched.rows()
    assert [r["id"] for r in out] == ["s0", "s1", "multi", "plain"]  # replaced in place
    assert out[3] == rows[3]  # no image: passed through unchanged
    assert _well_formed(out[0]["text"], [1]) and _well_formed(out[2]["text"], [2, 1])
    for row, before in zip(out[:3], rows[:3]):
        assert row["images"] == before["images"]
        assert row[META]["generated_by"] == "mllm_mapper" and row[META]["candidate"] == 0
        assert row[META]["source_text"] == before["text"] and row[META]["model"] == args["hf_model"]
        assert "describe picture" not in row["text"] and "ASSISTANT" not in row["text"]


def test_mllm_answer_is_the_models_continuation(tiny_models, photos):
    """Independent derivation: the chat template, the processor and generate() called
    directly; the operator's answer is the decoded continuation after the prompt."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = tiny_models["qwen2_vl"]
    model = AutoModelForImageTextToText.from_pretrained(path, local_files_only=True).eval()
    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is it"}]}]
    prompt = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    image = Image.open(photos[2]).convert("RGB")
    inputs = processor(images=[image], text=[prompt], return_tensors="pt")
    with torch.inference_mode():
        ids = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    expected = processor.batch_decode(ids[:, inputs["input_ids"].shape[1] :],
                                      skip_special_tokens=True)[0].strip()  # fmt: skip
    rows = [{"id": "a", "text": f"{TOK} ignored {EOC}", "images": [photos[2]]}]
    out, _ = run_op("mllm_mapper", rows, hf_model=path, prompt="what is it", temperature=0.0,
                    max_new_tokens=6, accelerator="cpu")  # fmt: skip
    assert _texts(out) == [f"{TOK} {expected} {EOC}"]


def test_mllm_sampling_is_seeded_per_image(tiny_models, photos):
    rows = _rows(photos)
    args = dict(hf_model=tiny_models["llava"], temperature=0.9, max_new_tokens=6, caption_num=2,
                keep_original_sample=True, max_words=3, accelerator="cpu")  # fmt: skip
    one, _ = run_op("mllm_mapper", rows, seed=1, gpu_batch_size=8, **args)
    again, _ = run_op("mllm_mapper", rows, seed=1, gpu_batch_size=1, **args)
    other, _ = run_op("mllm_mapper", rows, seed=2, gpu_batch_size=8, **args)
    assert _texts(one) == _texts(again)  # rerun, and batched == one at a time when sampling
    assert _texts(one) != _texts(other)
    out = one.rows()
    # each input first, then its two candidates; the image-less sample once
    assert [r["id"] for r in out] == ["s0"] * 3 + ["s1"] * 3 + ["multi"] * 3 + ["plain"]
    assert [r.get(META, {}).get("candidate") for r in out[:3]] == [None, 0, 1]
    assert out[0] == rows[0]
    generated = [r for r in out if META in r]
    assert len(generated) == 6
    assert any(a["text"] != b["text"] for a, b in zip(generated[::2], generated[1::2]))
    for row in generated:  # max_words: every answer cut to three words
        for answer in re.split(f"{re.escape(TOK)}|{re.escape(EOC)}", row["text"]):
            assert len(answer.split()) <= 3


def test_sampled_outputs_follow_the_image_not_its_folder(tiny_models, photos, tmp_path):
    """The same images copied elsewhere get the same sampled answers and captions (seeds
    come from the image's bytes, as the model-output cache keys do); other bytes do not."""
    moved = []
    for p in photos:
        moved.append(str(tmp_path / "elsewhere" / Path(p).name))
        Path(moved[-1]).parent.mkdir(exist_ok=True)
        shutil.copyfile(p, moved[-1])
    mllm = dict(hf_model=tiny_models["llava"], temperature=0.9, max_new_tokens=6, caption_num=2,
                keep_original_sample=False, accelerator="cpu")  # fmt: skip
    blip = dict(hf_img2seq=tiny_models["blip2"], do_sample=True, temperature=0.9, caption_num=2,
                max_new_tokens=6, keep_original_sample=False, accelerator="cpu")  # fmt: skip
    for name, args in (("mllm_mapper", mllm), ("image_captioning_mapper", blip)):
        here, _ = run_op(name, _rows(photos), **args)
        there, _ = run_op(name, _rows(moved), **args)
        assert _texts(here) == _texts(there), name
        swapped, _ = run_op(name, _rows(moved[1:] + moved[:1]), **args)  # other image per row
        assert _texts(swapped) != _texts(here), name


def test_mllm_refuses_bad_settings(tiny_models, tmp_path):
    with pytest.raises(ValueError, match="chat template"):
        get_operator("mllm_mapper")(hf_model=tiny_models["blip2"])
    with pytest.raises(ValueError, match="caption_num"):
        get_operator("mllm_mapper")(hf_model=tiny_models["qwen2_vl"], caption_num=0)
    with pytest.raises(ModelNotFoundError):
        get_operator("mllm_mapper")(hf_model=str(tmp_path / "nothing"))


# -- sentence_augmentation_mapper ------------------------------------------------------


def test_sentence_augmentation_prompt_fields_and_format(tiny_models):
    """The user turns the operator builds, and where each rewrite goes (the model is
    replaced by a function that echoes the turn, so the expected text is written here)."""
    op = get_operator("sentence_augmentation_mapper")(
        hf_model=tiny_models["causal_lm"], prompt_template="[{original}|{caption}|{ocr}]",
        accelerator="cpu",
    )  # fmt: skip
    op.rewrite = lambda turns: {t: t.upper() for t in turns}
    rows = [
        {"id": "gen", "text": f"{TOK} a blip caption {EOC}", "images": ["a.png"],
         META: {"source_text": f"{TOK} alt text {EOC}",
                "ocr": [[{"text": "STOP", "box": [], "confidence": 0.9}]]}},
        {"id": "two", "text": f"{TOK} {TOK} first chunk {EOC} second {TOK}", "images": ["b", "c", "d"],
         META: {"ocr": [[{"text": "x1"}], [], [{"text": "y2"}, {"text": "z3"}]]}},
        {"id": "bare", "text": "plain caption", "images": ["e"], "alt": "the alt"},
    ]  # fmt: skip
    out = op.process(_batch(rows)).rows()
    # per chunk: the words rewritten, the chunk's tokens kept in place, the OCR of its images
    assert out[0]["text"] == f"{TOK} [ALT TEXT|A BLIP CAPTION|STOP] {EOC}"
    assert out[1]["text"] == (f"{TOK} {TOK} [FIRST CHUNK SECOND|FIRST CHUNK|X1] {EOC}"
                              f" [FIRST CHUNK SECOND|SECOND|Y2 Z3] {TOK}")  # fmt: skip
    assert out[2]["text"] == "[PLAIN CAPTION|PLAIN CAPTION|]"  # no tokens: stays plain
    assert out[0][META]["source_text"] == f"{TOK} alt text {EOC}"  # the first text of the chain
    assert out[1][META]["source_text"] == rows[1]["text"]
    assert out[0][META]["generated_by"] == "sentence_augmentation_mapper"

    op.original_key, op.text_key_second = "alt", "rewritten"
    out = op.process(_batch(rows[2:])).rows()
    assert out[0]["text"] == "plain caption" and out[0]["rewritten"] == "[THE ALT|PLAIN CAPTION|]"


def _batch(rows):
    from dj_synth.operators import Batch, SampleRef

    return Batch.from_rows(rows, [SampleRef(i, "t.jsonl", i + 1) for i in range(len(rows))])


def test_sentence_augmentation_generates_like_the_model(tiny_models, tmp_path):
    """Greedy rewrites equal generate() called directly on the chat template; sampling is
    seeded per text (batched == one at a time); a model without a chat template gets
    Data-Juicer's plain layout."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_models["causal_lm"]
    args = dict(hf_model=path, system_prompt="Be brief.", task_sentence="Shorten it.",
                max_new_tokens=5, accelerator="cpu")  # fmt: skip
    rows = [{"id": str(i), "text": t} for i, t in enumerate(["a cat on a mat", "two dogs", "x"])]
    greedy, _ = run_op("sentence_augmentation_mapper", rows, temperature=0.0, **args)

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
    chat = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": 'Here is a sentence: "two dogs". Shorten it.'}]  # fmt: skip
    ids = tok(tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True),
              return_tensors="pt", add_special_tokens=False)  # fmt: skip
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    expected = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert _texts(greedy)[1] == expected.strip().strip('"').strip()

    one, _ = run_op("sentence_augmentation_mapper", rows, temperature=0.8, gpu_batch_size=8, **args)
    two, _ = run_op("sentence_augmentation_mapper", rows, temperature=0.8, gpu_batch_size=1, **args)
    assert _texts(one) == _texts(two) and _texts(one) != _texts(greedy)

    plain = tmp_path / "plain_lm"
    shutil.copytree(path, plain)
    (plain / "chat_template.jinja").unlink()
    op = get_operator("sentence_augmentation_mapper")(**{**args, "hf_model": str(plain)})
    assert not op.chat
    out, ledger = run_op("sentence_augmentation_mapper", rows, **{**args, "hf_model": str(plain)})
    assert len(out) == 3 and not ledger.quarantined


def test_sentence_augmentation_refuses_bad_settings(tiny_models):
    path = tiny_models["causal_lm"]
    with pytest.raises(ValueError, match="task_sentence"):
        get_operator("sentence_augmentation_mapper")(hf_model=path)  # Data-Juicer blanks texts
    with pytest.raises(ValueError, match="unknown field"):
        get_operator("sentence_augmentation_mapper")(hf_model=path, prompt_template="{alt}")
    with pytest.raises(ValueError, match="architectures|expected"):
        get_operator("sentence_augmentation_mapper")(hf_model=tiny_models["clip"],
                                                     task_sentence="x")  # fmt: skip


# -- image_diffusion_mapper ------------------------------------------------------------


@pytest.fixture(scope="module")
def diffusion(tiny_models):
    pytest.importorskip("diffusers")
    return tiny_models["stable_diffusion"]


def _pixels(path: str):
    import numpy as np

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.int16)


def test_text2image_files_names_and_reruns(diffusion, photos, tmp_path):
    rows = _rows(photos)
    args = dict(hf_diffusion=diffusion, mode="text2image", num_inference_steps=2, aug_num=2,
                accelerator="cpu")  # fmt: skip
    first, ledger = run_op("image_diffusion_mapper", rows, save_dir=str(tmp_path / "a"),
                           gpu_batch_size=8, **args)  # fmt: skip
    assert not ledger.quarantined
    out = first.rows()
    # each input first (keep_original_sample), then aug_num generated samples
    assert [r["id"] for r in out] == ["s0"] * 3 + ["s1"] * 3 + ["multi"] * 3 + ["plain"]
    generated = [r for r in out if META in r]
    assert len(generated) == 6
    for row in generated:
        origin = row[META]
        assert origin["generated_by"] == "image_diffusion_mapper" and origin["mode"] == "text2image"
        assert origin["source_images"] == next(r["images"] for r in rows if r["id"] == row["id"])
        assert row["text"] == origin["source_text"]  # the caption describes the new image
        for path in row["images"]:
            assert Path(path).parent == tmp_path / "a" and path.endswith(".png")
            with Image.open(path) as img:
                img.load()
                assert img.size == (32, 32)  # the tiny pipeline's native size
    multi = [r for r in generated if r["id"] == "multi"]
    assert multi[0][META]["prompts"] == ["two dogs", "two dogs", "a third"]
    assert len(set(multi[0]["images"])) == 3  # two images of one caption: two images
    assert multi[0]["images"] != multi[1]["images"]  # aug_num: other images
    assert not list((tmp_path / "a").glob("*.tmp"))

    # the same names and pixels in another folder, one image per forward pass
    again, _ = run_op("image_diffusion_mapper", rows, save_dir=str(tmp_path / "b"),
                      gpu_batch_size=1, **args)  # fmt: skip
    names = [[Path(p).name for p in r["images"]] for r in generated]
    assert names == [[Path(p).name for p in r["images"]] for r in again.rows() if META in r]
    for name in {n for ns in names for n in ns}:
        a, b = _pixels(str(tmp_path / "a" / name)), _pixels(str(tmp_path / "b" / name))
        assert abs(a - b).max() <= 2  # batching changes float sums, not the image
    # a rerun into the same folder reuses the files (a resume draws only what is missing)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").iterdir()}
    victim = sorted(stamps)[0]
    victim.unlink()
    rerun, _ = run_op("image_diffusion_mapper", rows, save_dir=str(tmp_path / "a"), **args)
    assert _texts(rerun) == _texts(first)
    assert [r.get("images") for r in rerun.rows()] == [r.get("images") for r in out]
    for path, stamp in stamps.items():
        if path != victim:
            assert path.stat().st_mtime_ns == stamp
    assert victim.exists()
    other, _ = run_op("image_diffusion_mapper", rows[:1], save_dir=str(tmp_path / "c"), seed=7,
                      **{**args, "aug_num": 1})  # fmt: skip
    assert Path(other.rows()[1]["images"][0]).name not in names[0]  # the seed is in the name


def test_image2image_captions_and_sizes(diffusion, tiny_models, photos, tmp_path):
    rows = [
        {"id": "a", "text": "x", "images": [photos[0], photos[3]], "caps": ["red", "blue"]},
        {"id": "b", "text": "y", "images": [photos[1]], "caps": "one for all"},
        {"id": "bad", "text": "z", "images": [photos[2]], "caps": ["one", "too many"]},
    ]
    args = dict(hf_diffusion=diffusion, num_inference_steps=2, strength=0.6, save_dir=str(tmp_path),
                keep_original_sample=False, accelerator="cpu")  # fmt: skip
    out, ledger = run_op("image_diffusion_mapper", rows, caption_key="caps", **args)
    got = out.rows()
    assert [r["id"] for r in got] == ["a", "b"]  # the mismatched captions: quarantined only
    assert "holds 2 captions for 1 images" in ledger.quarantined[0].error
    assert got[0][META]["prompts"] == ["red", "blue"] and got[1][META]["prompts"] == ["one for all"]
    for row, before in zip(got, rows):
        for new, old in zip(row["images"], before["images"]):
            with Image.open(new) as img, Image.open(old) as src:
                assert img.size == src.size  # resized back, as Data-Juicer
    # no caption_key: Data-Juicer's captions from hf_img2seq, "A photo of a " + caption
    out, _ = run_op("image_diffusion_mapper", rows[1:2], hf_img2seq=tiny_models["blip2"], **args)
    (row,) = out.rows()
    assert row[META]["prompts"][0].startswith("A photo of a ") and row["text"] == "y"


def test_generated_image_written_all_or_nothing(tmp_path, monkeypatch):
    from dj_synth.operators.image_diffusion_mapper import _save_atomically

    image = Image.new("RGB", (8, 8), (1, 2, 3))
    target = tmp_path / "out" / "x.png"

    def crash(self, fh, *args, **kwargs):
        fh.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", crash)
    with pytest.raises(OSError):
        _save_atomically(image, str(target), "png")
    assert list((tmp_path / "out").iterdir()) == []  # neither the image nor a temporary file
    monkeypatch.undo()
    _save_atomically(image, str(target), "png")
    assert _pixels(str(target))[0, 0].tolist() == [1, 2, 3]


def test_diffusion_refuses_bad_models_and_settings(diffusion, tiny_models, tmp_path):
    op = get_operator("image_diffusion_mapper")
    with pytest.raises(ModelNotFoundError, match="model_index.json"):
        op(hf_diffusion=tiny_models["clip"], mode="text2image")
    with pytest.raises(ModelNotFoundError):
        op(hf_diffusion=str(tmp_path / "nothing"), mode="text2image")
    with pytest.raises(ValueError, match="strength"):
        op(hf_diffusion=diffusion, mode="text2image", strength=1.5)
    with pytest.raises(ModelNotFoundError, match="config.json"):  # a diffusers folder: no VLM
        get_operator("mllm_mapper")(hf_model=diffusion)


# -- through the engine ------------------------------------------------------------------


def synthesis_recipe(tmp_path: Path, models, photos: list[str], **settings) -> Path:
    """Caption (2 sampled answers per image, originals kept), rewrite in place, then one
    text-to-image sample per sample: 4 images + 1 broken + 1 without images."""
    broken = tmp_path / "broken.png"
    broken.write_bytes(Path(photos[0]).read_bytes()[:100])
    rows = [{"id": f"s{i}", "text": f"{TOK} photo {i} {EOC}", "images": [p]}
            for i, p in enumerate(photos)]  # fmt: skip
    rows += [{"id": "bad", "text": f"{TOK} x {EOC}", "images": [str(broken)]},
             {"id": "plain", "text": "words only"}]  # fmt: skip
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cpu = {"accelerator": "cpu", "gpu_batch_size": 1}
    process = [
        {"mllm_mapper": {"hf_model": models["qwen2_vl"], "temperature": 0.9, "max_new_tokens": 4,
                         "caption_num": 2, "keep_original_sample": True, **cpu}},
        {"sentence_augmentation_mapper": {"hf_model": models["causal_lm"], "system_prompt": "Hi.",
                                          "task_sentence": "Shorter.", "max_new_tokens": 4,
                                          "temperature": 0.9, **cpu}},
        {"image_diffusion_mapper": {"hf_diffusion": models["stable_diffusion"], "mode": "text2image",
                                    "num_inference_steps": 1, "save_dir": str(tmp_path / "gen"), **cpu}},
    ]  # fmt: skip
    return write_recipe(tmp_path / "synth.yaml", dataset_path=str(data), process=process,
                        export_path=str(tmp_path / "out" / "r.jsonl"), **settings)  # fmt: skip


def test_recipe_accounting_and_np(diffusion, tiny_models, photos, tmp_path):
    recipe = synthesis_recipe(tmp_path, tiny_models, photos, np=1, io_batch_size=2)
    results = []
    for np_ in (1, 2):  # no model-output cache: the second run computes everything again
        s = run_recipe(recipe, f"np={np_}", f"export_path={tmp_path}/out{np_}/r.jsonl",
                       "use_cache=false", f"image_diffusion_mapper.save_dir={tmp_path}/gen{np_}")
        # 6 in, 1 quarantined (broken image); mllm: 4 x 2 answers; diffusion: one per image
        # sample (4 originals + 8 answers)
        assert (s["input_samples"], s["quarantined_samples"]) == (6, 1)
        assert s["generated_samples"] == 8 + 12
        assert s["exported_samples"] == 6 - 1 + 20
        ops = {o["name"]: o["generated"] for o in s["ops"]}
        assert ops == {"mllm_mapper": 8, "sentence_augmentation_mapper": 0,
                       "image_diffusion_mapper": 12}  # fmt: skip
        summary = json.loads((Path(s["work_dir"]) / "summary.json").read_text())
        assert summary["generated_samples"] == 20
        rows = read_jsonl(s["export_files"][0])
        made = [p for r in rows for p in r.get("images", []) if f"/gen{np_}/" in p]
        assert len(made) == 12 and all(Path(p).is_file() for p in made)
        text = json.dumps(rows).replace(f"/gen{np_}/", "/gen/")
        results.append((text, {Path(p).name: _pixels(p) for p in made}))
    (rows1, px1), (rows2, px2) = results
    assert rows1 == rows2  # the same samples, captions, rewrites and image names at np 1 and 2
    assert px1.keys() == px2.keys()
    assert all(abs(px1[name] - px2[name]).max() <= 2 for name in px1)
