"""Data-Juicer's own recipes run unchanged (issue 18).

`tests/data/dj_recipes/` holds unmodified copies of Data-Juicer's image/text recipes
(Apache 2.0, see its README). Offline, each must validate as `dj-run --dry-run` does,
or fail only on model files it cannot find, each named with where to put it; with the
model files in Data-Juicer's cache and tiny Hugging Face models given by `--set`, each
must validate completely. `llava-pretrain-refine.yaml` also runs end to end.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import read_jsonl, run_recipe
from PIL import Image

from dj_synth.pipelines.recipe import RecipeError, load_recipe

RECIPES = Path(__file__).parent / "data" / "dj_recipes"
RECIPE_FILES = sorted(RECIPES.rglob("*.yaml"))
WORD_FILTERS = {"word_repetition_filter", "flagged_words_filter", "stopwords_filter"}
HF_MODEL_ARGS = {  # operator -> (argument, Data-Juicer's default)
    "image_text_similarity_filter": ("hf_clip", "openai/clip-vit-base-patch32"),
    "image_text_matching_filter": ("hf_blip", "Salesforce/blip-itm-base-coco"),
    "token_num_filter": ("hf_tokenizer", "EleutherAI/pythia-6.9b-deduped"),
}


def entries(recipe: dict) -> list[tuple[str, dict]]:
    out = []
    for entry in recipe.get("process") or []:
        name = entry if isinstance(entry, str) else next(iter(entry))
        args = (entry[name] if isinstance(entry, dict) else None) or {}
        out.append((name, args))
    return out


def models_needed(recipe: dict) -> set[str]:
    """The model files and folders the recipe needs, read from its operators' arguments."""
    need = set()
    for name, args in entries(recipe):
        lang = args.get("lang", "en")
        if name == "perplexity_filter":
            need |= {f"{lang}.arpa.bin", f"{lang}.sp.model"}
        elif name in WORD_FILTERS | {"words_num_filter"} and args.get("tokenization"):
            need.add(f"{lang}.sp.model")
        elif name == "alphanumeric_filter" and args.get("tokenization"):
            need.add("EleutherAI/pythia-6.9b-deduped")  # Data-Juicer's fixed tokenizer
        elif name in HF_MODEL_ARGS:
            arg, default = HF_MODEL_ARGS[name]
            need.add(args.get(arg, default))
    return need


# Gaps other operators still have; each recipe they touch is a strict xfail, so the test
# fails (XPASS) the day the gap closes and the entry must go.
def known_gaps(recipe: dict) -> list[str]:
    gaps = []
    for name, args in entries(recipe):
        if name in ("words_num_filter", "alphanumeric_filter") and args.get("tokenization"):
            gaps.append(f"{name} refuses tokenization: true instead of finding its model")
        for value in args.values():
            if isinstance(value, str) and re.fullmatch(r"\d+(\.\d*)?[eE]\d+", value):
                gaps.append(f"the recipe loader reads {value!r} as a string, not a number")
    return sorted(set(gaps))


def recipe_params(with_gaps: bool = True) -> list[Any]:
    params = []
    for path in RECIPE_FILES:
        gaps = known_gaps(yaml.safe_load(path.read_text())) if with_gaps else []
        marks = [pytest.mark.xfail(strict=True, reason="; ".join(gaps))] if gaps else []
        params.append(pytest.param(path, id=str(path.relative_to(RECIPES)), marks=marks))
    return params


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No Data-Juicer models cache and an empty Hugging Face cache."""
    cache = tmp_path / "dj_models"
    monkeypatch.setenv("DATA_JUICER_MODELS_CACHE", str(cache))
    monkeypatch.delenv("DATA_JUICER_EXTERNAL_MODELS_HOME", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # Data-Juicer also tries the bare file name
    return cache


def test_the_vendored_recipes_are_the_image_text_ones():
    names = {p.name for p in RECIPE_FILES}
    assert len(names) == 24 and "llava-pretrain-refine.yaml" in names
    assert not any("video" in n or "sandbox" in n or "img-diff" in n for n in names)
    assert (RECIPES / "LICENSE").read_text().lstrip().startswith("Apache License")


@pytest.mark.parametrize("path", recipe_params())
def test_recipe_validates_offline_but_for_missing_models(path, offline):
    recipe = yaml.safe_load(path.read_text())
    need = models_needed(recipe)
    try:
        load_recipe(path)
    except RecipeError as exc:
        problems = [line for line in str(exc).splitlines() if not line.endswith("problems:")]
    else:
        problems = []
    named = set()
    for line in problems:
        assert re.search(r"not found \(tried: .*nothing is downloaded", line), line
        found = re.findall(r"'([^']+)' not found \(tried", line)
        assert found, line
        for name in found:  # each says where to put it
            where = (
                f"Put {name} in {offline}" if name.endswith((".bin", ".model")) else "--local-dir"
            )
            assert where in line, line
        named.update(found)
    assert named == need


@pytest.fixture(scope="module")
def dj_models_dir(tmp_path_factory):
    pytest.importorskip("sentencepiece")
    pytest.importorskip("kenlm")
    from test_dj_text_ops import make_dj_models

    return make_dj_models(tmp_path_factory.mktemp("dj_models"), langs=("en", "zh"))


@pytest.mark.parametrize("path", recipe_params())
def test_recipe_validates_with_local_models(path, offline, monkeypatch, dj_models_dir, tiny_models):
    monkeypatch.setenv("DATA_JUICER_MODELS_CACHE", dj_models_dir)
    folders = {"hf_clip": tiny_models["clip"], "hf_blip": tiny_models["blip_itm"]}
    overrides = [
        f"{name}.{HF_MODEL_ARGS[name][0]}={folders[HF_MODEL_ARGS[name][0]]}"
        for name, _ in entries(yaml.safe_load(path.read_text()))
        if name in HF_MODEL_ARGS
    ]
    recipe = load_recipe(path, overrides)
    assert [spec.name for spec in recipe.ops] == [
        name for name, _ in entries(yaml.safe_load(path.read_text()))
    ]


def test_dry_run_lists_each_missing_model_with_where_to_put_it(offline):
    path = RECIPES / "llava-pretrain-refine.yaml"
    cli = subprocess.run(
        [str(Path(sys.executable).parent / "dj-run"), str(path), "--dry-run"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert cli.returncode == 2, cli.stderr
    for name in ("en.arpa.bin", "en.sp.model"):
        assert f"Put {name} in {offline}" in cli.stderr
    for name in ("openai/clip-vit-base-patch32", "Salesforce/blip-itm-base-coco"):
        assert f"model '{name}' not found" in cli.stderr
    assert "flagged_words_filter" not in cli.stderr  # its lists ship with dj-synth


# -- llava-pretrain-refine.yaml end to end ---------------------------------------------


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    pytest.importorskip("transformers")
    from dj_synth.tools.tiny_models import make_tiny_causal_lm

    return make_tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"), seed=0)


def _image(path: Path, width: int, height: int) -> str:
    pixels = [((x * 7) % 256, (y * 5) % 256, 128) for y in range(height) for x in range(width)]
    image = Image.new("RGB", (width, height))
    image.putdata(pixels)
    image.save(path, quality=85)
    return str(path)


def test_llava_pretrain_refine_end_to_end(tmp_path, tiny_models, tiny_lm):
    from dj_synth.operators.word_lists import load_word_lists
    from dj_synth.operators.words import refine_words

    flagged = next(
        w for w in load_word_lists(None, "flagged_words")["en"]
        if w.isalpha() and w.isascii() and len(w) > 3 and refine_words([w]) == [w]
    )  # fmt: skip
    ok = _image(tmp_path / "ok.jpg", 64, 48)
    samples = {
        # pass every text filter by hand: alnum 37/48, special 11/48, no repeated 10-gram
        "clean1": ("<image>\na small red car parked on a quiet street", ok),
        "clean2": ("<image>\ntwo dogs running across a green field", ok),
        "alnum": ("<image>\n!!! ??? ... a", ok),  # alnum 6/21 < 0.6
        "repeat": ("<image>\nthe cat sat on the mat the cat sat on the mat", ok),
        "flagged": (f"<image>\na photo of {flagged} on a table", ok),
        "wide": (
            "<image>\na long panorama of a mountain ridge",
            _image(tmp_path / "w.jpg", 200, 40),
        ),
        "big": ("<image>\nan old stone bridge over a river", _image(tmp_path / "b.jpg", 800, 600)),
    }
    data = tmp_path / "blip_laion_cc_sbu_558k_dj_fmt_only_caption.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": k, "text": text, "images": [img]}) + "\n"
            for k, (text, img) in samples.items()
        )
    )
    out = tmp_path / "out" / "refined.jsonl"
    summary = run_recipe(
        RECIPES / "llava-pretrain-refine.yaml",
        f"dataset_path={data}", f"export_path={out}", "np=1",
        f"perplexity_filter.hf_model={tiny_lm}",
        f"image_text_similarity_filter.hf_clip={tiny_models['clip']}",
        f"image_text_matching_filter.hf_blip={tiny_models['blip_itm']}",
        # random tiny models: their scores mean nothing, so their thresholds keep everything
        "image_text_similarity_filter.min_score=-1", "image_text_matching_filter.min_score=0",
    )  # fmt: skip
    assert summary["input_samples"] == 7 and summary["quarantined_samples"] == 0
    assert [r["id"] for r in read_jsonl(summary["export_files"][0])] == ["clean1", "clean2"]
    dropped = {}
    for path in summary["filtered_files"]:
        for rec in read_jsonl(path):
            dropped[rec["sample"]["id"]] = rec["op"]
    assert dropped == {
        "alnum": "alphanumeric_filter",
        "repeat": "character_repetition_filter",
        "flagged": "flagged_words_filter",
        "wide": "image_aspect_ratio_filter",
        "big": "image_shape_filter",
    }
    stats = [row["__dj__stats__"] for row in read_jsonl(summary["stats_files"][0])]
    for st in stats:
        assert st["flagged_words_ratio"] == 0.0 and st["word_rep_ratio"] == 0.0
        assert 1 < st["perplexity"] <= 14435.5806
        assert len(st["image_text_similarity"]) == len(st["image_text_matching_score"]) == 1
