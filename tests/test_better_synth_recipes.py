"""The published Better Synth recipes (recipes/better_synth/) on tiny RANDOM models, in the tiny
challenge: each through dj-train's recipe, cap and convert stages with the overrides and flow
settings its header documents (read from the header, so the header is what is tested); one of
them on through training, evaluation and dj-pack.

Outputs of random models are meaningless; what is checked is the plumbing each recipe relies on:
counts worked out by hand from the recipe's selectors and the cap fill, the synthesis step's
samples reaching the LLaVA JSON with their seed ids, generated images on disk."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("open_clip")
pytest.importorskip("diffusers")
pytest.importorskip("sklearn")
pytest.importorskip("timm")
pytest.importorskip("accelerate")
pytest.importorskip("openpyxl")

from dj_synth.pipelines.recipe import load_recipe  # noqa: E402
from dj_synth.pipelines.run import run_recipe  # noqa: E402
from dj_synth.tools.challenge.cli import train_main  # noqa: E402
from dj_synth.tools.challenge.published import (  # noqa: E402
    PUBLISHED,
    RECIPES,
    TINY_CAP,
    header_flow,
    header_runs,
    write_tiny_flow,
)
from dj_synth.tools.challenge.tiny import make_challenge  # noqa: E402

SEEDS = 5  # the tiny challenge's seed samples


@pytest.fixture(scope="module")
def challenge(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("better_synth")
    make_challenge(root, blip2=tiny_models["blip2"])
    return root


def _read(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_every_published_recipe_documents_its_flow_and_tiny_run():
    flows = {recipe: header_flow(RECIPES / recipe) for recipe in PUBLISHED}
    assert all(f["recipe"] == f"solution/{r}" and f["pretrain"]["cap"] == 200000
               for r, f in flows.items())  # fmt: skip
    # the cap is filled by the flow (a), (c), (d); (b) keeps its own count
    assert {r for r, f in flows.items() if f["pretrain"].get("fill")} == set(TINY_CAP)
    assert flows["bronze.yaml"]["pretrain"]["select_by"] == "image_text_matching_score"


def run_published(recipe: str, root: Path, models, monkeypatch, until: str = "convert") -> dict:
    """The header's steps in the tiny challenge: earlier recipes by dj-run (in this process),
    then dj-train with the header's flow settings (a tiny cap where it fills)."""
    earlier, config = write_tiny_flow(root, recipe, models)
    monkeypatch.chdir(root)  # recipes resolve their relative paths from the challenge root
    for path in earlier:
        run_recipe(load_recipe(path), progress=False)
    assert train_main([str(config), "--until", until, "--quiet"]) == 0
    export = root / yaml.safe_load((RECIPES / recipe).read_text())["export_path"]
    capped = Path(f"{export}-200k.jsonl")
    return {"config": config, "export": export, "capped": _read(capped),
            "llava": json.loads(Path(f"{capped}.json").read_text()), "root": root}  # fmt: skip


def _seed_ids() -> set[str]:
    return {f"{i:09d}" for i in range(SEEDS)}


def test_bronze(challenge, tiny_models, monkeypatch):
    """main: 5 seeds, CLIP >= -1 keeps 5, ITM above the median keeps ranks (int(0.5 x 5), 5]:
    3. recaption: all 5 in [-1, 1), recaptioned, kept. Union 8; the cap fills 12: the 8 once,
    then the 4 best by ITM once more."""
    out = run_published("bronze.yaml", challenge, tiny_models, monkeypatch)
    root = out["root"]
    assert len(_read(root / "output/better_synth/bronze_main/res.jsonl")) == 3
    recaptioned = _read(root / "output/better_synth/bronze_recaption/res.jsonl")
    assert len(recaptioned) == SEEDS
    assert all(r["__dj__meta__"]["generated_by"] == "image_captioning_mapper" for r in recaptioned)
    union = _read(out["export"])
    assert len(union) == 8
    capped = out["capped"]
    assert len(capped) == 12 and capped[:8] == union
    score = {json.dumps(r, sort_keys=True): r["__dj__stats__"]["image_text_matching_score"][0]
             for r in union}  # fmt: skip
    best = sorted(score.values(), reverse=True)[:4]
    assert sorted(score[json.dumps(r, sort_keys=True)] for r in capped[8:]) == sorted(best)
    assert len(out["llava"]) == 12 and {s["id"] for s in out["llava"]} <= _seed_ids()


def test_short_captions(challenge, tiny_models, monkeypatch):
    """5 seeds, open filters, three answers per image replacing the caption: 15; no fill."""
    out = run_published("short_captions.yaml", challenge, tiny_models, monkeypatch)
    capped = out["capped"]
    assert len(capped) == 3 * SEEDS
    assert all(r["__dj__meta__"]["generated_by"] == "mllm_mapper" for r in capped)
    for r in capped:
        caption = r["text"].replace("<__dj__image>", "").replace("<|__dj__eoc|>", "")
        assert len(caption.split()) <= 10
    assert Counter(s["id"] for s in out["llava"]) == dict.fromkeys(_seed_ids(), 3)


def test_text_to_image(challenge, tiny_models, monkeypatch):
    """5 generated images, the top 2 by CLIP kept, each written 4 times to fill a cap of 8."""
    out = run_published("text_to_image.yaml", challenge, tiny_models, monkeypatch)
    export = _read(out["export"])
    assert len(export) == 2
    images = [Path(r["images"][0]) for r in export]
    folder = out["root"] / "output/better_synth/text_to_image/images"
    assert all(p.parent == folder and p.suffix == ".png" and p.is_file() for p in images)
    assert len(list(folder.glob("*.png"))) == SEEDS  # one image drawn per seed caption
    assert out["capped"] == export * 4
    kept = [json.loads(x)["__dj__stats__"]["image_text_similarity"][0]
            for x in Path(str(out["export"]).replace(".jsonl", "_stats.jsonl")).read_text().splitlines()]  # fmt: skip
    dropped = _read(out["export"].parent / "filtered" / "02_topk_specified_field_selector.jsonl")
    assert len(dropped) == 3
    assert max(d["sample"]["__dj__stats__"]["image_text_similarity"][0] for d in dropped) <= min(kept)
    assert [s["image"] for s in out["llava"]] == [str(p) for p in images] * 4


def test_kmeans_balanced(challenge, tiny_models, monkeypatch):
    """5 seeds: above the 25th CLIP percentile (int(1.25) = 1 dropped) 4, above the 25th ITM
    percentile 3, 2 kept over 2 clusters, rewritten: 2; the cap fills 4: each twice."""
    out = run_published("kmeans_balanced.yaml", challenge, tiny_models, monkeypatch)
    export = _read(out["export"])
    assert len(export) == 2
    assert all(r["__dj__meta__"]["generated_by"] == "mllm_mapper" for r in export)
    assert out["capped"] == export * 2
    filtered = out["export"].parent / "filtered"
    assert [len(_read(filtered / f)) for f in (
        "01_range_specified_field_selector.jsonl", "03_range_specified_field_selector.jsonl",
        "04_cluster_balanced_selector.jsonl")] == [1, 1, 1]  # fmt: skip


def test_every_published_solution_passes_dj_packs_synthesis_check(tmp_path):
    """dj-pack's recipe check (a synthesis step in solution/) accepts each solution as
    packed: the recipe and the earlier recipes its header runs. The whole flow through
    training into submit.zip, for all four, is bench/better_synth_flows.py (bench/RESULTS.md);
    tests/test_challenge_flow.py trains and packs the tiny challenge once."""
    from dj_synth.tools.challenge.pack import _check_recipes

    for recipe in PUBLISHED:
        names = {name for name, _ in header_runs(RECIPES / recipe)} | {recipe}
        files = [(RECIPES / name, f"solution/{name}") for name in sorted(names)]
        problems: list[str] = []
        _check_recipes(files, problems)
        assert problems == [], (recipe, problems)
    plain = tmp_path / "clean_only.yaml"  # and the check has teeth: cleaning alone is refused
    plain.write_text((RECIPES / "clean.yaml").read_text())
    problems = []
    _check_recipes([(plain, "solution/clean_only.yaml")], problems)
    assert problems and "no synthesis operator" in problems[0]
