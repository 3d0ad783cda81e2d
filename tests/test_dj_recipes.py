"""Data-Juicer's own recipes run unchanged (issue 18).

`tests/data/dj_recipes/` holds unmodified copies of Data-Juicer's image/text recipes
(Apache 2.0, see its README). Offline, each must validate as `dj-run --dry-run` does,
or fail only on model files it cannot find, each named with where to put it; with the
model files in Data-Juicer's cache and tiny Hugging Face models given by `--set`, each
must validate completely. `llava-pretrain-refine.yaml` also runs end to end.

Each check loops over every recipe inside one test and reports all failing recipes at
once (one test case per recipe cost more in pytest's overhead than the checks do).
"""

from __future__ import annotations

import functools
import json
import re
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
DJ_TOKENIZER = "EleutherAI/pythia-6.9b-deduped"
HF_MODEL_ARGS = {  # operator -> (argument, Data-Juicer's default)
    "image_text_similarity_filter": ("hf_clip", "openai/clip-vit-base-patch32"),
    "image_text_matching_filter": ("hf_blip", "Salesforce/blip-itm-base-coco"),
    "token_num_filter": ("hf_tokenizer", DJ_TOKENIZER),
    # Data-Juicer's tokenizer is fixed; `hf_tokenizer` is ours. Only with tokenization.
    "alphanumeric_filter": ("hf_tokenizer", DJ_TOKENIZER),
}


@functools.cache
def recipe_data(path: Path) -> dict:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)


def entries(recipe: dict) -> list[tuple[str, dict]]:
    out = []
    for entry in recipe.get("process") or []:
        name = entry if isinstance(entry, str) else next(iter(entry))
        args = (entry[name] if isinstance(entry, dict) else None) or {}
        out.append((name, args))
    return out


def hf_model_arg(name: str, args: dict) -> tuple[str, str] | None:
    """(argument, default) of the Hugging Face model or tokenizer this entry needs, if any."""
    if name == "alphanumeric_filter" and not args.get("tokenization"):
        return None
    return HF_MODEL_ARGS.get(name)


def models_needed(recipe: dict) -> set[str]:
    """The model files and folders the recipe needs, read from its operators' arguments."""
    need = set()
    for name, args in entries(recipe):
        lang = args.get("lang", "en")
        if name == "perplexity_filter":
            need |= {f"{lang}.arpa.bin", f"{lang}.sp.model"}
        elif name in WORD_FILTERS | {"words_num_filter"} and args.get("tokenization"):
            need.add(f"{lang}.sp.model")
        elif hf := hf_model_arg(name, args):
            need.add(args.get(hf[0], hf[1]))
    return need


def check_each(check, *args) -> None:
    """Run `check(path, *args)` on every recipe; fail with every failing recipe's error."""
    failures = {}
    for path in RECIPE_FILES:
        try:
            check(path, *args)
        except (AssertionError, RecipeError) as exc:
            failures[str(path.relative_to(RECIPES))] = f"{type(exc).__name__}: {exc}"
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())


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
    # the recipes exercise the tokenization modes (SentencePiece words, HF tokens)
    tokenized = {
        name for path in RECIPE_FILES for name, args in entries(recipe_data(path))
        if args.get("tokenization")
    }  # fmt: skip
    assert {"words_num_filter", "alphanumeric_filter"} <= tokenized


def _validates_offline_but_for_missing_models(path: Path, cache: Path) -> None:
    need = models_needed(recipe_data(path))
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
            where = f"Put {name} in {cache}" if name.endswith((".bin", ".model")) else "--local-dir"
            assert where in line, line
        named.update(found)
    assert named == need


def test_every_recipe_validates_offline_but_for_missing_models(offline):
    check_each(_validates_offline_but_for_missing_models, offline)


# -- with the model files ------------------------------------------------------------


@pytest.fixture(scope="module")
def dj_models_dir(tmp_path_factory):
    pytest.importorskip("sentencepiece")
    pytest.importorskip("kenlm")
    from test_dj_text_ops import make_dj_models

    return make_dj_models(tmp_path_factory.mktemp("dj_models"), langs=("en", "zh"))


@pytest.fixture(scope="module")
def recipe_models(tmp_path_factory):
    """Only the tiny models these recipes use (the session's `tiny_models` builds all)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from dj_synth.tools.tiny_models import make_tiny_causal_lm, make_tiny_models

    folder = tmp_path_factory.mktemp("recipe_models")
    models = make_tiny_models(folder, seed=0, names=("clip", "blip_itm"))
    # a causal LM for perplexity_filter; its byte-level BPE tokenizer stands in for pythia's
    models["lm"] = make_tiny_causal_lm(folder / "lm", seed=0)
    return models


def _validates_with_local_models(path: Path, models: dict[str, str]) -> None:
    folders = {
        "hf_clip": models["clip"],
        "hf_blip": models["blip_itm"],
        "hf_tokenizer": models["lm"],
    }
    ops = entries(recipe_data(path))
    overrides = sorted({
        f"{name}.{hf[0]}={folders[hf[0]]}" for name, args in ops if (hf := hf_model_arg(name, args))
    })  # fmt: skip
    recipe = load_recipe(path, overrides)
    assert [spec.name for spec in recipe.ops] == [name for name, _ in ops]


def test_every_recipe_validates_with_local_models(
    offline, monkeypatch, dj_models_dir, recipe_models
):
    monkeypatch.setenv("DATA_JUICER_MODELS_CACHE", dj_models_dir)
    check_each(_validates_with_local_models, recipe_models)


def test_dry_run_lists_each_missing_model_with_where_to_put_it(offline):
    from typer.testing import CliRunner

    from dj_synth.pipelines.cli import app

    cli = CliRunner().invoke(app, [str(RECIPES / "llava-pretrain-refine.yaml"), "--dry-run"])
    assert cli.exit_code == 2, cli.output
    for name in ("en.arpa.bin", "en.sp.model"):
        assert f"Put {name} in {offline}" in cli.stderr
    for name in ("openai/clip-vit-base-patch32", "Salesforce/blip-itm-base-coco"):
        assert f"model '{name}' not found" in cli.stderr
    assert "flagged_words_filter" not in cli.stderr  # its lists ship with dj-synth


# -- llava-pretrain-refine.yaml end to end ---------------------------------------------


def _image(path: Path, width: int, height: int) -> str:
    pixels = [((x * 7) % 256, (y * 5) % 256, 128) for y in range(height) for x in range(width)]
    image = Image.new("RGB", (width, height))
    image.putdata(pixels)
    image.save(path, quality=85)
    return str(path)


def test_llava_pretrain_refine_end_to_end(tmp_path, recipe_models):
    from dj_synth.operators.word_lists import load_word_lists
    from dj_synth.operators.words import refine_words

    flagged = next(
        w for w in load_word_lists(None, "flagged_words")["en"]
        if w.isalpha() and w.isascii() and len(w) > 3 and refine_words([w]) == [w]
    )  # fmt: skip
    ok = _image(tmp_path / "ok.jpg", 64, 48)
    samples: dict[str, Any] = {
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
        f"perplexity_filter.hf_model={recipe_models['lm']}",
        f"image_text_similarity_filter.hf_clip={recipe_models['clip']}",
        f"image_text_matching_filter.hf_blip={recipe_models['blip_itm']}",
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
