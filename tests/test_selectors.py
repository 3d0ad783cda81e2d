"""Selectors: Data-Juicer's four field/random selectors and our cluster_balanced_selector.

The decisions are checked on hand-made entries against hand-derived expectations (Data-Juicer
1.6.1's rules, worked out in the comments); one recipe runs in streaming, sharded and Ray
modes and must keep the same samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import read_jsonl, run_recipe, write_recipe

from dj_synth.operators import Batch, SampleRef, get_operator
from dj_synth.operators.cluster_balanced_selector import quota


def _entries(keys: list) -> list[tuple]:
    return [(None, (i, 0), SampleRef(i, "d.jsonl", i + 1), f"s{i}", k) for i, k in enumerate(keys)]


def _kept(op_name: str, keys: list, **args) -> list[int]:
    """Input indices the selector keeps, given each sample's key."""
    op = get_operator(op_name)(**args)
    drops = op.decide(_entries(keys))
    return [i for i in range(len(keys)) if (i, 0) not in drops]


def test_topk_keeps_the_highest_ties_earlier_missing_last():
    values = [3.0, 7.0, None, 7.0, 1.0, 5.0]
    # descending: 7 (#1), 7 (#3), 5 (#5), 3 (#0), 1 (#4), missing (#2)
    top = "topk_specified_field_selector"
    assert _kept(top, values, field_key="x", topk=3) == [1, 3, 5]
    assert _kept(top, values, field_key="x", top_ratio=0.5) == [1, 3, 5]  # int(0.5 * 6)
    assert _kept(top, values, field_key="x", top_ratio=0.5, topk=2) == [1, 3]  # the fewer
    # ascending: 1 (#4), 3 (#0), ...; the missing value is still last
    assert _kept(top, values, field_key="x", topk=2, reverse=False) == [0, 4]
    assert _kept(top, values, field_key="x", topk=6, reverse=False) == list(range(6))
    assert _kept(top, values, field_key="x", top_ratio=0.1) == []  # int(0.6) = 0, as DJ
    assert _kept(top, values, field_key="x", topk=10) == list(range(6))
    assert _kept(top, ["inf", 2.0, "-inf"], field_key="x", topk=1) == [0]  # stored infinities


def test_field_keys_are_dotted_and_values_read_as_data_juicer_reads_them():
    rows = [
        {"text": "a", "__dj__stats__": {"score": [0.2, 0.4]}, "meta": {"q": {"v": "2.5"}}},
        {"text": "b", "__dj__stats__": {"score": 0.9}, "meta": {"q": {"v": {"no": 1}}}},
        {"text": "c", "__dj__stats__": {}, "meta": "flat"},
        {"text": "d"},
    ]
    batch = Batch.from_rows(rows, [SampleRef(i, "d", i) for i in range(4)])
    op = get_operator("topk_specified_field_selector")(field_key="__dj__stats__.score", topk=1)
    assert op.compute_key(batch) == [pytest.approx(0.3), 0.9, None, None]  # a list: its mean
    op = get_operator("topk_specified_field_selector")(field_key="meta.q.v", topk=1)
    assert op.compute_key(batch) == [2.5, None, None, None]  # a numeric string; a dict: none
    freq = get_operator("frequency_specified_field_selector")(field_key="meta.q.v", topk=1)
    assert freq.compute_key(batch) == ["2.5", '{"no": 1}', None, None]


def test_range_keeps_ranks_between_the_bounds():
    values = [5.0, 1.0, 4.0, 1.0, 9.0, None, 3.0, 8.0]
    # ascending (missing = -maxsize first, ties by index): #5, #1, #3, #6, #2, #0, #7, #4
    rng = "range_specified_field_selector"
    # lower int(0.25 * 8) = 2, upper int(0.75 * 8) = 6: the 6 smallest #5 #1 #3 #6 #2 #0, then
    # the 4 largest of those: 5 (#0), 4 (#2), 3 (#6) and one of the two 1s: Data-Juicer's
    # second heapq pass prefers the earlier in the ascending list, #1 (not #3 as a slice would)
    assert _kept(rng, values, field_key="x", lower_percentile=0.25, upper_percentile=0.75) == [
        0, 1, 2, 6,
    ]  # fmt: skip
    # lower max(2, 3) = 3, upper min(6, 5) = 5: of #5 #1 #3 #6 #2, the largest 2: #2, #6
    kept = _kept(rng, values, field_key="x", lower_percentile=0.25, lower_rank=3,
                 upper_percentile=0.75, upper_rank=5)  # fmt: skip
    assert kept == [2, 6]
    # one side only (Data-Juicer would keep everything): the lowest 4 ranks
    assert _kept(rng, values, field_key="x", upper_percentile=0.5) == [1, 3, 5, 6]
    assert _kept(rng, values, field_key="x", lower_rank=6) == [4, 7]


def test_frequency_keeps_the_samples_of_the_most_frequent_values():
    values = ["a", "b", "a", "c", "b", "a", None, "c"]
    # groups in first-seen order: a {0,2,5}, b {1,4}, c {3,7}, None {6}
    freq = "frequency_specified_field_selector"
    assert _kept(freq, values, field_key="x", topk=1) == [0, 2, 5]
    assert _kept(freq, values, field_key="x", topk=2) == [0, 1, 2, 4, 5]  # b before c (tie)
    assert _kept(freq, values, field_key="x", top_ratio=0.5) == [0, 1, 2, 4, 5]  # 0.5 x 4
    assert _kept(freq, values, field_key="x", top_ratio=0.5, topk=1) == [0, 2, 5]
    assert _kept(freq, values, field_key="x", topk=1, reverse=False) == [6]  # the rarest


def test_random_draws_data_juicers_permutation_in_input_order():
    n = 10
    # Data-Juicer: Dataset.shuffle(seed=42) = np.random.default_rng(42).permutation(n), first k
    expected = sorted(np.random.default_rng(42).permutation(n)[:3].tolist())
    assert _kept("random_selector", [None] * n, select_num=3) == expected
    assert len(_kept("random_selector", [None] * n, select_ratio=0.5)) == 5
    assert len(_kept("random_selector", [None] * n, select_ratio=0.5, select_num=2)) == 2
    assert _kept("random_selector", [None] * n, select_ratio=0.05) == []  # int(0.5) = 0
    assert _kept("random_selector", [None] * n, select_num=20) == list(range(n))
    other = _kept("random_selector", [None] * n, select_num=3, seed=7)
    assert other == sorted(np.random.default_rng(7).permutation(n)[:3].tolist())


@pytest.mark.parametrize(
    "name,args,message",
    [
        ("topk_specified_field_selector", {"topk": 3}, "field_key is required"),
        ("topk_specified_field_selector", {"field_key": "x"}, "set topk"),
        ("topk_specified_field_selector", {"field_key": "x", "top_ratio": 1.5}, "0 to 1"),
        ("frequency_specified_field_selector", {"field_key": "x", "topk": 0}, "positive"),
        ("range_specified_field_selector", {"field_key": "x"}, "set a bound"),
        ("random_selector", {}, "set select_num"),
        ("cluster_balanced_selector", {"select_num": 5, "balance": "even"}, "balance"),
    ],
)
def test_selector_mistakes_fail_when_built(name, args, message):
    with pytest.raises(ValueError, match=message):
        get_operator(name)(**args)


def test_quota_proportional_and_flat():
    # proportional, sizes 6/3/1, 5 kept: exact 3, 1.5, 0.5 -> 3, 1, 0 + one unit to the
    # largest remainder (0.5 twice: the earlier group)
    assert quota([6, 3, 1], 5, "proportional") == [3, 2, 0]
    # flat: shares of 5 // 3 = 1 each, then 2 // 2 = 1 for the groups with samples left
    assert quota([6, 3, 1], 5, "flat") == [2, 2, 1]
    assert quota([10, 1, 1], 6, "proportional") == [5, 1, 0]  # 5, 0.5, 0.5
    assert quota([10, 1, 1], 6, "flat") == [4, 1, 1]  # the small groups' unused share
    assert quota([2, 2], 9, "flat") == [2, 2]


def _vec(*parts: float) -> bytes:
    return np.array(parts, dtype=np.float16).tobytes()


@pytest.fixture(scope="module")
def clustered():
    """Three far-apart groups of sizes 6, 3, 1 (in that order of first appearance), and two
    samples with nothing to embed. Offsets of the big group along the 4th axis: -3, -1.5,
    -0.25, 0.5, 1, 3.25 (mean 0): nearest its centre -0.25, 0.5 then 1."""
    pytest.importorskip("sklearn")
    big = [_vec(10, 0, 0, d) for d in (-3, -1.5, -0.25, 0.5, 1, 3.25)]
    mid = [_vec(0, 10, 0, d) for d in (-0.5, 0, 0.5)]
    one = [_vec(0, 0, 10, 0)]
    # interleaved: indices 0-5 big except where noted
    keys = [big[0], mid[0], big[1], None, big[2], mid[1], big[3], one[0], big[4], mid[2],
            None, big[5]]  # fmt: skip
    groups = {"big": [0, 2, 4, 6, 8, 11], "mid": [1, 5, 9], "one": [7], "none": [3, 10]}
    return keys, groups


def _per_group(kept: list[int], groups: dict) -> dict[str, int]:
    return {name: len(set(kept) & set(members)) for name, members in groups.items()}


def test_cluster_balanced_keeps_cluster_shares(clustered, tiny_models):
    keys, groups = clustered
    sel = "cluster_balanced_selector"
    common = {"n_clusters": 3, "hf_clip": tiny_models["clip"]}
    # proportional, 6 of 12 over sizes 6/3/1/2: 3, 1.5, 0.5, 1 -> 3, 1, 0, 1 + 1 to `mid`
    kept = _kept(sel, keys, select_num=6, **common)
    assert _per_group(kept, groups) == {"big": 3, "mid": 2, "one": 0, "none": 1}
    assert kept == _kept(sel, keys, select_num=6, **common)  # seeded: the same draw
    # flat: 6 // 4 = 1 each, then 2 more: `big` and `mid`, the earlier groups
    kept = _kept(sel, keys, select_num=6, balance="flat", **common)
    assert _per_group(kept, groups) == {"big": 2, "mid": 2, "one": 1, "none": 1}
    # central: the big group's 3 nearest its centre are offsets -0.25, 0.5, 1 (#4, #6, #8)
    kept = _kept(sel, keys, select_num=6, pick="central", **common)
    assert set(kept) & set(groups["big"]) == {4, 6, 8}
    assert _kept(sel, keys, select_ratio=1.0, **common) == list(range(12))


def test_cluster_balanced_drop_reason_names_the_cluster(clustered, tiny_models):
    keys, groups = clustered
    op = get_operator("cluster_balanced_selector")(
        select_num=6, n_clusters=3, hf_clip=tiny_models["clip"]
    )
    drops = op.decide(_entries(keys))
    # clusters are numbered by first appearance: big (#0) 0, mid (#1) 1, one (#7) 2
    big = [drops[(i, 0)] for i in groups["big"] if (i, 0) in drops]
    assert big == ["cluster 0: 3 of 6 kept (proportional, 6 of 12)"] * 3
    assert drops[(7, 0)] == "cluster 2: 0 of 1 kept (proportional, 6 of 12)"
    none = [drops[(i, 0)] for i in groups["none"] if (i, 0) in drops]
    assert none == ["no embedding: 1 of 2 kept (proportional, 6 of 12)"]


# -- one recipe, every mode ---------------------------------------------------------------


@pytest.fixture(scope="module")
def captioned(tmp_path_factory) -> Path:
    """18 captioned images of three kinds (cats, cars, food), with a score in meta."""
    from PIL import Image

    root = tmp_path_factory.mktemp("selectors")
    kinds = ["a cat sitting on a table", "a red car parked on the road", "a bowl of fresh fruit"]
    rows = []
    for i in range(18):
        path = root / f"{i}.png"
        Image.new("RGB", (40, 32), (14 * i, 200 - 9 * i, (i % 3) * 100)).save(path)
        rows.append({"id": f"s{i}", "images": [str(path)], "meta": {"score": (i * 7) % 11},
                     "text": f"<__dj__image>\n{kinds[i % 3]} {i} <|__dj__eoc|>"})  # fmt: skip
    data = root / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data


def test_selector_recipe_same_in_streaming_sharded_and_ray(tiny_models, captioned, tmp_path):
    ray = pytest.importorskip("ray")
    # one text per forward pass: float sums of a model depend on the batch it sees
    cpu = {"accelerator": "cpu", "gpu_batch_size": 1}
    recipe = write_recipe(
        tmp_path / "r.yaml", dataset_path=str(captioned), export_path=str(tmp_path / "x.jsonl"),
        np=1, io_batch_size=5,
        process=[
            {"cluster_balanced_selector": {"hf_clip": tiny_models["clip"], "select_num": 12,
                                           "n_clusters": 3, **cpu}},
            {"topk_specified_field_selector": {"field_key": "meta.score", "topk": 9}},
            {"random_selector": {"select_num": 6}},
        ],
    )  # fmt: skip
    results = {}
    modes = (("stream", []), ("sharded", ["use_checkpoint=true"]), ("ray", ["executor_type=ray"]))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for mode, extra in modes:
            out = tmp_path / mode
            summary = run_recipe(recipe, f"export_path={out}/r.jsonl", "use_cache=false", *extra)
            filtered = {Path(p).name: Path(p).read_bytes() for p in summary["filtered_files"]}
            results[mode] = ((out / "r.jsonl").read_bytes(), filtered)
    finally:
        ray.shutdown()
    assert results["stream"] == results["sharded"] == results["ray"]
    kept = read_jsonl(tmp_path / "stream" / "r.jsonl")
    assert len(kept) == 6
    ids = [int(r["id"][1:]) for r in kept]
    assert ids == sorted(ids)  # input order
    # the topk step saw 12 samples and dropped the 3 lowest scores: none above an exported one
    dropped = [json.loads(x)["sample"] for x in results["stream"][1][
        "01_topk_specified_field_selector.jsonl"].splitlines()]  # fmt: skip
    assert len(dropped) == 3
    assert max(r["meta"]["score"] for r in dropped) <= min(r["meta"]["score"] for r in kept)


def test_cluster_keys_embed_captions_or_mean_images(tiny_models, tmp_path):
    """Text keys: the caption without special tokens; image keys: the unit mean of the
    sample's image embeddings; no image, no key."""
    from PIL import Image

    paths = []
    for i, colour in enumerate([(250, 10, 10), (10, 10, 250)]):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", (32, 32), colour).save(paths[-1])
    rows = [
        {"text": "<__dj__image>\na red square <|__dj__eoc|>", "images": [paths[0]]},
        {"text": "a red square", "images": []},
        {"text": "<__dj__image> <__dj__image> two <|__dj__eoc|>", "images": paths},
    ]
    batch = Batch.from_rows(rows, [SampleRef(i, "d", i) for i in range(3)])
    make = get_operator("cluster_balanced_selector")
    text = make(select_num=1, hf_clip=tiny_models["clip"], accelerator="cpu")
    keys = text.compute_key(batch)
    assert keys[0] == keys[1] and keys[0] != keys[2]  # same caption, same key
    image = make(select_num=1, hf_clip=tiny_models["clip"], embed="image", accelerator="cpu")
    keys = image.compute_key(batch)
    assert keys[1] is None
    one, both = (np.frombuffer(k, dtype=np.float16).astype(np.float32) for k in (keys[0], keys[2]))
    assert abs(np.linalg.norm(both) - 1) < 1e-2  # a unit vector
    clip = image._model
    e = [np.asarray(x) for x in clip.embed_images(clip.preprocess_images(
        [Image.open(p).convert("RGB") for p in paths]))]  # fmt: skip
    mean = (e[0] + e[1]) / np.linalg.norm(e[0] + e[1])
    assert np.allclose(both, mean, atol=2e-3) and np.allclose(one, e[0], atol=2e-3)
