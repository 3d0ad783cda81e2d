"""Dedup keep policy: first in input order, or the best value of a stats key (two passes)."""

from __future__ import annotations

import json
import os

import pytest
from helpers import read_jsonl, run_recipe, write_recipe
from PIL import Image
from skimage import data as skdata

from dj_synth.operators import SampleRef, get_operator
from dj_synth.operators.dedup_decision import decide
from dj_synth.pipelines.recipe import RecipeError, load_recipe
from dj_synth.pipelines.spool import Spool
from dj_synth.pipelines.stages import Survivor

IMG, EOC = "<__dj__image>", "<|__dj__eoc|>"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three distinct real photos, each also re-encoded as a smaller JPEG (a near copy)."""
    root = tmp_path_factory.mktemp("photos")
    paths = {}
    for name in ("astronaut", "coffee", "chelsea"):
        img = Image.fromarray(getattr(skdata, name)()).convert("RGB")
        img.save(root / f"{name}.png")
        img.resize((img.width // 2, img.height // 2)).save(root / f"{name}.jpg", quality=70)
        paths[name] = str(root / f"{name}.png")
        paths[name + "_small"] = str(root / f"{name}.jpg")
    return paths


def _corpus(photos):
    """Groups of one image with captions of different lengths; the longest is not first."""
    caption = {
        "a1": "an astronaut",
        "a2": "an astronaut in a white suit smiling in front of a flag",
        "a3": "astronaut portrait",
        "c1": "a cup of coffee on a saucer",
        "c2": "coffee",
        "k1": "a cat",  # chelsea: two captions of equal length, the first wins the tie
        "k2": "a cat",
        "t1": "text only sample without any image",
        "t2": "text only sample",
    }
    image = {
        "a1": "astronaut", "a2": "astronaut_small", "a3": "astronaut",
        "c1": "coffee_small", "c2": "coffee", "k1": "chelsea", "k2": "chelsea_small",
    }  # fmt: skip
    rows = []
    for sid, text in caption.items():
        imgs = [photos[image[sid]]] if sid in image else []
        rows.append({"id": sid, "text": f"{IMG * len(imgs)} {text} {EOC}", "images": imgs})
    return rows


def _run(tmp_path, photos, name="run", np_=1, **dedup_args):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _corpus(photos)))
    out = tmp_path / name / "out.jsonl"
    recipe = write_recipe(
        tmp_path / f"{name}.yaml",
        dataset_path=str(data),
        export_path=str(out),
        np=np_,
        io_batch_size=2,  # several batches, so the spool is written and read in chunks
        process=[
            {"text_length_filter": {"min_len": 0}},
            {"image_deduplicator": {"method": "phash", "hamming_threshold": 6, **dedup_args}},
        ],
    )
    summary = run_recipe(recipe)
    filtered = read_jsonl(tmp_path / name / "filtered" / "01_image_deduplicator.jsonl")
    return (
        [r["id"] for r in read_jsonl(out)],
        {r["sample"]["id"]: r["reason"] for r in filtered},
        summary,
    )


def test_first_policy_keeps_input_order_winner(tmp_path, photos):
    kept, reasons, _ = _run(tmp_path, photos)
    assert kept == ["a1", "c1", "k1", "t1", "t2"]
    assert reasons["a2"].startswith("near-duplicate of id='a1'")


def test_max_keeps_longest_caption_of_each_group(tmp_path, photos):
    kept, reasons, summary = _run(tmp_path, photos, keep_policy="max", keep_stats_key="text_len")
    # the export keeps input order; image-less samples are never image duplicates
    assert kept == ["a2", "c1", "k1", "t1", "t2"]
    assert set(reasons) == {"a1", "a3", "c2", "k2"}
    assert reasons["a1"].startswith("near-duplicate of id='a2'")
    assert reasons["a3"].startswith("near-duplicate of id='a2'")
    assert reasons["c2"].startswith("near-duplicate of id='c1'")
    assert reasons["k2"].startswith("near-duplicate of id='k1'")  # tie: input order
    # text_len counts the special tokens too, as in Data-Juicer: 13 + 14 + 13
    assert "kept by max text_len (this sample: 40)" in reasons["a1"]
    assert summary["filtered"]["image_deduplicator"] == 4
    assert summary["exported_samples"] == 5
    assert not [f for f in os.listdir(tmp_path / "run") if f.startswith(".spool")]


def test_min_keeps_shortest(tmp_path, photos):
    kept, reasons, _ = _run(tmp_path, photos, keep_policy="min", keep_stats_key="text_len")
    assert kept == ["a1", "c2", "k1", "t1", "t2"]
    assert reasons["a2"].startswith("near-duplicate of id='a1'")
    assert reasons["a3"].startswith("near-duplicate of id='a1'")


def test_ranked_policy_same_output_for_any_np(tmp_path, photos):
    args = dict(keep_policy="max", keep_stats_key="text_len")
    one = _run(tmp_path, photos, "np1", 1, **args)
    two = _run(tmp_path, photos, "np2", 2, **args)
    assert one[:2] == two[:2]
    assert (tmp_path / "np1" / "out.jsonl").read_bytes() == (
        tmp_path / "np2" / "out.jsonl"
    ).read_bytes()


def test_ranked_greedy_does_not_chain():
    """Best first: B is within 2 bits of A (dropped), C is 2 bits from B but 4 from A (kept)."""
    op = get_operator("image_deduplicator")(
        hamming_threshold=2, max_thumbnail_distance=None, keep_policy="max", keep_stats_key="s"
    )  # hash keys alone (the thumbnail check has its own tests)
    a, b, c = 0b0000, 0b0011, 0b1111
    entries = [
        (0.1, (0, 0), SampleRef(0, "t", 1), "C", (f"{c:016x}",)),
        (0.5, (1, 0), SampleRef(1, "t", 2), "B", (f"{b:016x}",)),
        (0.9, (2, 0), SampleRef(2, "t", 3), "A", (f"{a:016x}",)),
        (None, (3, 0), SampleRef(3, "t", 4), "A2", (f"{a:016x}",)),  # no value: ranks last
    ]
    drops = decide(op, entries)
    assert set(drops) == {(1, 0), (3, 0)}
    assert drops[(1, 0)].startswith("near-duplicate of id='A'") and "distance 2" in drops[(1, 0)]
    assert "(this sample: missing)" in drops[(3, 0)]


def test_rank_value_of_lists_and_missing():
    op = get_operator("document_deduplicator")(keep_policy="max", keep_stats_key="s")
    assert op.rank_value({"s": [0.2, 0.4]}) == pytest.approx(0.3)
    assert op.rank_value({"s": 3}) == 3.0
    for stats in ({}, {"s": None}, {"s": []}, {"s": "x"}, {"s": float("nan")}, None):
        assert op.rank_value(stats) is None


@pytest.mark.parametrize(
    "args, message",
    [
        ({"keep_policy": "max"}, "needs keep_stats_key"),
        ({"keep_stats_key": "text_len"}, "needs keep_policy: max or min"),
        ({"keep_policy": "best", "keep_stats_key": "text_len"}, "keep_policy"),
        (
            {"keep_policy": "max", "keep_stats_key": "lang_score"},
            "stats computed before it: text_len",
        ),
    ],
)
def test_config_mistakes_fail_before_any_work(tmp_path, args, message):
    recipe = write_recipe(
        tmp_path / "r.yaml",
        dataset_path=str(tmp_path / "nothing.jsonl"),
        export_path=str(tmp_path / "out.jsonl"),
        process=[{"text_length_filter": {}}, {"document_deduplicator": args}],
    )
    with pytest.raises(RecipeError, match=message):
        load_recipe(recipe)


def test_spool_round_trip(tmp_path):
    survivors = [
        Survivor(SampleRef(0, "a.jsonl", 1), b'{"id":1}', 1),
        Survivor(SampleRef(5, "b\u00e9.jsonl", 9), b'{"t":"x\\ny"}', 2**70),  # id beyond int64
        Survivor(SampleRef(6, "b.jsonl", 10), b"", None),
    ]
    survivors[0].export, survivors[0].stats = b'{"e":1}', b""
    spool = Spool(str(tmp_path / "s.bin"))
    spool.write(survivors[:2])
    spool.write(survivors[2:])
    back = [sv for chunk in spool.read(2) for sv in chunk]
    spool.close()
    assert [(s.ref, s.sample, s.sample_id, s.export, s.stats) for s in back] == [
        (s.ref, s.sample, s.sample_id, s.export, s.stats) for s in survivors
    ]
    assert not (tmp_path / "s.bin").exists()


def test_keep_highest_image_text_similarity(tmp_path, photos, tiny_models):
    """The issue's example: of the captions of one image, keep the best-matching one (CLIP)."""
    rows = _corpus(photos)
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out" / "o.jsonl"
    recipe = write_recipe(
        tmp_path / "r.yaml",
        dataset_path=str(data),
        export_path=str(out),
        keep_stats_in_res_ds=True,
        process=[
            {
                "image_text_similarity_filter": {
                    "hf_clip": tiny_models["clip"], "min_score": -1.0, "max_score": 1.0,
                    "accelerator": "cpu",
                }
            },
            {
                "image_deduplicator": {
                    "hamming_threshold": 6, "keep_policy": "max",
                    "keep_stats_key": "image_text_similarity",
                }
            },
        ],
    )  # fmt: skip
    run_recipe(recipe)
    kept = {r["id"]: r["__dj__stats__"]["image_text_similarity"] for r in read_jsonl(out)}
    dropped = {
        r["sample"]["id"]: r["sample"]["__dj__stats__"]["image_text_similarity"]
        for r in read_jsonl(tmp_path / "out" / "filtered" / "01_image_deduplicator.jsonl")
    }
    groups = {"a": ["a1", "a2", "a3"], "c": ["c1", "c2"], "k": ["k1", "k2"]}
    for members in groups.values():
        (winner,) = [m for m in members if m in kept]
        for m in members:
            if m != winner:
                assert m in dropped and dropped[m][0] <= kept[winner][0]
    assert {"t1", "t2"} <= set(kept)


def test_samples_sharing_a_ref_are_still_compared():
    """A mapper's generated samples share their parent's ref; equal keys are still duplicates."""
    from dj_synth.operators.base import ExactIndex

    index, ref = ExactIndex(), SampleRef(7, "t", 8)
    assert index.admit("k", ref, "parent") is None
    assert index.admit("k", ref, "child") == "duplicate of id='parent' (input sample #7)"
