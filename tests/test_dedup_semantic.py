"""Semantic dedup (image_embedding_deduplicator): planted embeddings with known cosines are
judged by the SemDeDup rule, every drop names a kept sample and the cosine, the decision
splits cluster by cluster, and the fit sample does not depend on how the input is cut."""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import read_jsonl, run_recipe, write_recipe

from dj_synth.operators.batch import Batch, SampleRef
from dj_synth.operators.dedup_decision import (
    decide,
    decide_by_components,
    fit_sample,
    sample_cutoff,
    sample_orders,
)
from dj_synth.operators.image_embedding_deduplicator import EmbeddingDeduplicator

pytest.importorskip("sklearn")

# A test operator: the embedding each sample carries in `vec` (a custom operator file, so
# sharded workers and Ray tasks load it as users' operators are loaded).
PLANTED_OP = '''
from dj_synth.operators import register
from dj_synth.operators.image_embedding_deduplicator import EmbeddingDeduplicator


@register("planted_embedding_deduplicator")
class PlantedEmbeddingDeduplicator(EmbeddingDeduplicator):
    """Semantic dedup of the vector in each sample's `vec` field (null: nothing to embed)."""

    def embed(self, batch):
        return batch.columns["vec"]
'''


class Planted(EmbeddingDeduplicator):
    name = "planted_in_process"

    def embed(self, batch: Batch) -> list:
        return batch.columns["vec"]


def _plane(axis: int, cosine: float, dim: int = 8) -> list[float]:
    """A unit vector at angle acos(cosine) from basis vector `axis`, towards axis + 4."""
    v = [0.0] * dim
    v[axis], v[axis + 4] = cosine, math.sqrt(1 - cosine * cosine)
    return v


def _entries(op: EmbeddingDeduplicator, rows: list[dict], ranks: list | None = None) -> list:
    refs = [SampleRef(i, "t.jsonl", i + 1) for i in range(len(rows))]
    keys = op.compute_hash(Batch.from_rows(rows, refs))
    ranks = ranks or [None] * len(rows)
    return [(r, (i, 0), ref, row["id"], k)
            for i, (r, ref, row, k) in enumerate(zip(ranks, refs, rows, keys))]  # fmt: skip


def _cosine_in(reason: str) -> float:
    return float(re.search(r"cosine (\d\.\d+)", reason).group(1))


# The hand-made corpus: a at axis 0; a-dup at cos 0.995 from a; a-far at cos 0.985 from a
# (and cos(acos .985 - acos .995) = 0.9973 from a-dup); b and its exact copy; c, d apart.
SMALL = [
    {"id": "a", "vec": _plane(0, 1.0)},
    {"id": "a-dup", "vec": _plane(0, 0.995)},
    {"id": "b", "vec": _plane(1, 1.0)},
    {"id": "a-far", "vec": _plane(0, 0.985)},
    {"id": "b-copy", "vec": _plane(1, 1.0)},
    {"id": "none", "vec": None},
    {"id": "c", "vec": _plane(2, 1.0)},
    {"id": "d", "vec": _plane(3, 1.0)},
]


def test_cosine_rule_names_the_kept_sample_and_does_not_chain():
    op = Planted(n_clusters=1, eps=0.01)
    drops = op.decide(_entries(op, SMALL))
    ids = {pos[0]: row["id"] for pos, row in zip([(i, 0) for i in range(8)], SMALL)}
    by_id = {ids[pos[0]]: reason for pos, reason in drops.items()}
    # a-dup: cos 0.995 >= 0.99 from a; b-copy: cos 1 from b. a-far: 0.985 from the kept a;
    # its 0.9973 to a-dup does not count, a-dup is dropped (SemDeDup would drop a-far too).
    assert set(by_id) == {"a-dup", "b-copy"}
    assert by_id["a-dup"].startswith("near-duplicate of id='a' (input sample #0), cosine ")
    assert by_id["b-copy"].startswith("near-duplicate of id='b' (input sample #2), cosine ")
    assert _cosine_in(by_id["a-dup"]) == pytest.approx(0.995, abs=1e-3)  # float16 keys
    assert _cosine_in(by_id["b-copy"]) == pytest.approx(1.0, abs=1e-3)
    # eps 0.02: a-far (0.985 >= 0.98) goes too; eps 0.004: a-dup (0.995 < 0.996) is kept,
    # and then a-far (0.9973 from a-dup) is its duplicate
    assert set(_ids(Planted(n_clusters=1, eps=0.02), drops=None)) == {"a-dup", "b-copy", "a-far"}
    assert set(_ids(Planted(n_clusters=1, eps=0.004), drops=None)) == {"a-far", "b-copy"}
    assert _ids(Planted(n_clusters=1, eps=0.0), drops=None) == ["b-copy"]  # identical only


def _ids(op: EmbeddingDeduplicator, drops: dict | None, rows: list[dict] = SMALL) -> list[str]:
    drops = op.decide(_entries(op, rows)) if drops is None else drops
    return [rows[pos[0]]["id"] for pos in sorted(drops)]


def test_keep_policy_max_keeps_the_best_of_a_near_duplicate_pair():
    op = Planted(n_clusters=1, eps=0.01, keep_policy="max", keep_stats_key="score")
    ranks = [0.1, 0.9, None, 0.5, 0.3, None, None, None]  # a-dup ranks above a
    drops = op.decide(_entries(op, SMALL, ranks))
    by_id = {SMALL[p[0]]["id"]: r for p, r in drops.items()}
    # admitted best first: a-dup (0.9) kept; a-far (0.5): cos 0.9973 to a-dup -> dropped;
    # a (0.1): 0.995 to a-dup -> dropped; b-copy (0.3) before b (missing: last) -> b dropped
    assert set(by_id) == {"a-far", "a", "b"}
    assert by_id["a"].startswith("near-duplicate of id='a-dup' (input sample #1), cosine 0.99")
    assert by_id["a"].endswith("; kept by max score (this sample: 0.1)")
    assert by_id["b"].startswith("near-duplicate of id='b-copy' (input sample #4)")
    assert by_id["b"].endswith("(this sample: missing)")


@pytest.fixture(scope="module")
def grouped() -> list[dict]:
    """8 far-apart groups (basis directions of 32-d space, points spread ~25 degrees around
    them); 25% of samples are near copies of an earlier one (cosine ~0.999, within eps
    0.01), 10% are further variants of an earlier one (cosine ~0.95, not duplicates)."""
    rng = np.random.default_rng(7)
    rows, vecs = [], []
    for i in range(400):
        r = rng.random()
        if vecs and r < 0.35:
            j = int(rng.integers(len(vecs)))
            spread = 0.045 if r < 0.25 else 0.32  # radians: cos 0.999 / cos 0.95
            noise = rng.standard_normal(32)
            noise -= noise @ vecs[j] * vecs[j]
            v = math.cos(spread) * vecs[j] + math.sin(spread) * noise / np.linalg.norm(noise)
            rows.append({"id": f"{i}-{'copy' if r < 0.25 else 'variant'}-of-{j}",
                         "vec": v.tolist()})  # fmt: skip
        else:
            v = np.zeros(32)
            v[int(rng.integers(8))] = 2.0
            v += 0.45 * rng.standard_normal(32) / math.sqrt(32) * 2
            v /= np.linalg.norm(v)
            rows.append({"id": f"{i}-orig", "vec": v.tolist()})
        vecs.append(np.asarray(rows[-1]["vec"]))
    return rows


def _planted_truth(rows: list[dict]) -> set[str]:
    """Copies whose chain of copies reaches a kept sample: a copy of a copy is within 0.045
    + 0.045 rad (cos 0.996) of the original, also a duplicate; any copy of a kept sample is
    dropped. Here every copy's source is an original or a copy: all copies are dropped."""
    return {r["id"] for r in rows if "-copy-" in r["id"]}


def test_planted_copies_found_across_clusters_and_variants_kept(grouped):
    op = Planted(n_clusters=8, eps=0.01)
    drops = op.decide(_entries(op, grouped))
    dropped = {grouped[p[0]]["id"] for p in drops}
    assert dropped == _planted_truth(grouped)
    for reason in drops.values():
        kept = int(re.search(r"input sample #(\d+)", reason).group(1))
        assert (kept, 0) not in drops  # names a kept sample
        assert _cosine_in(reason) >= 0.99


def test_decision_by_clusters_equals_the_global_one(grouped):
    """The distributed plan (components of the cluster buckets, decided one by one) gives
    the global decision, with every keep policy and a fit on a sample smaller than N."""
    for args in ({}, {"keep_policy": "min", "keep_stats_key": "s"}):
        op = Planted(n_clusters=5, eps=0.03, fit_sample_size=150, **args)
        ranks = [float((i * 37) % 11) if i % 9 else None for i in range(len(grouped))]
        entries = _entries(op, grouped, ranks)
        drops = op.decide(entries)
        assert len(drops) > 60  # the ~80 planted copies, at least
        assert decide_by_components(op, entries) == drops
        # clusters are independent: deciding each cluster's entries alone, the same
        fitted = op.with_fit(op.fit(fit_sample(entries, 150, op.seed)))
        index = fitted.new_index()
        clusters: dict = {}
        for e in entries:
            for b in index.buckets(e[4]):
                clusters.setdefault(b, []).append(e)
        assert len(clusters) == 5
        per_cluster: dict = {}
        for group in clusters.values():
            per_cluster.update(decide(fitted, group))
        assert per_cluster == drops


def test_fit_sample_is_the_smallest_draws_whatever_the_cut(grouped):
    op = Planted()
    entries = _entries(op, grouped)
    sample = fit_sample(entries, 50, seed=3)
    assert len(sample) == 50
    assert fit_sample(list(reversed(entries)), 50, seed=3) == sample
    assert fit_sample(entries, 50, seed=4) != sample
    # as the Ray executor picks it: each shard's 50 smallest draws, the cutoff over them
    shards = [entries[i : i + 64] for i in range(0, len(entries), 64)]
    orders = [np.sort(sample_orders([e[1] for e in sh], 3))[:50] for sh in shards]
    cutoff = sample_cutoff(np.concatenate(orders), 50)
    picked = [e for sh in shards for e, o in zip(sh, sample_orders([e[1] for e in sh], 3))
              if o <= cutoff]  # fmt: skip
    assert [e[4] for e in sorted(picked, key=lambda e: e[1])] == sample
    # the draw is uniform: about half of the sample in each half of the input
    first_half = {e[4] for e in entries[:200]}
    assert 15 <= sum(k in first_half for k in sample) <= 35
    assert fit_sample(entries, 1000, seed=3) == [e[4] for e in entries]


@pytest.mark.parametrize(
    "args, message",
    [({"eps": -0.1}, "eps must be in"), ({"n_clusters": 0}, "n_clusters must be a positive"),
     ({"n_clusters": 10, "fit_sample_size": 5}, "fit_sample_size (5) must be at least"),
     ({"keep_policy": "max"}, "needs keep_stats_key")],
)  # fmt: skip
def test_settings_mistakes_fail_when_built(args, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Planted(**args)


# -- through the engine: streaming, sharded-local and Ray give the same files -------------


@pytest.fixture(scope="module")
def planted_op(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ops") / "planted_embedding_op.py"
    path.write_text(PLANTED_OP)
    return path


def _files(summary: dict) -> dict:
    return {
        "export": {Path(p).name: Path(p).read_bytes() for p in summary["export_files"]},
        "filtered": {Path(p).name: Path(p).read_bytes() for p in summary["filtered_files"]},
        "counts": (summary["exported_samples"], summary["filtered"]),
    }


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray instance for this module's Ray runs (the executor joins it)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


MODES = {"stream": [], "sharded": ["use_checkpoint=true"], "ray": ["executor_type=ray"]}


def test_same_result_streaming_sharded_and_ray(grouped, planted_op, tmp_path, ray_cluster):
    rng = random.Random(1)
    rows = [dict(r, text=f"sample {r['id']}", score=rng.random()) for r in grouped[:240]]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = write_recipe(
        tmp_path / "r.yaml", dataset_path=str(data), export_path=str(tmp_path / "x.jsonl"), np=2,
        io_batch_size=8, custom_operator_paths=[str(planted_op)],
        process=[{"planted_embedding_deduplicator": {"n_clusters": 6, "eps": 0.01,
                                                     "fit_sample_size": 100}}],
    )  # fmt: skip
    results = {}
    for mode, extra in MODES.items():
        summary = run_recipe(recipe, f"export_path={tmp_path / mode}/x.jsonl", *extra)
        if mode != "stream":
            assert summary["shards"] == 8  # 240 samples in shards of 4 x 8
        results[mode] = _files(summary)
    assert results["stream"] == results["sharded"] == results["ray"]
    dropped = [json.loads(line) for line in
               results["stream"]["filtered"]["00_planted_embedding_deduplicator.jsonl"].splitlines()]  # fmt: skip
    ids = {d["sample"]["id"] for d in dropped}
    assert ids == _planted_truth(rows)
    kept = [r["id"] for r in read_jsonl(tmp_path / "stream" / "x.jsonl")]
    assert kept == [r["id"] for r in rows if r["id"] not in ids]  # input order


# -- a tiny CLIP end to end ---------------------------------------------------------------

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "camera", "coins"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """Six photos, then three near copies of each (JPEG quality 60, half size, PNG) in a
    shuffled order, and a sample without an image; {copy id: its photo's id}."""
    from PIL import Image

    skimage_data = pytest.importorskip("skimage.data")
    folder = Path(skimage_data.__file__).parent
    root = tmp_path_factory.mktemp("photos")
    bases, copies, truth = [], [], {}
    for name in PHOTOS:
        src = next(folder / f"{name}.{e}" for e in ("png", "jpg") if (folder / f"{name}.{e}").exists())
        img = Image.open(src).convert("RGB")
        img.thumbnail((160, 160))  # small files: quick to write and to decode
        img.save(root / f"{name}.jpg", quality=90)
        img.save(root / f"{name}_q60.jpg", quality=60)
        img.resize((img.width // 2, img.height // 2)).save(root / f"{name}_half.jpg", quality=85)
        img.save(root / f"{name}_copy.png")
        bases.append({"id": name, "text": name, "images": [str(root / f"{name}.jpg")]})
        for variant in ("q60.jpg", "half.jpg", "copy.png"):
            vid = f"{name}_{variant}"
            copies.append({"id": vid, "text": vid, "images": [str(root / vid)]})
            truth[vid] = name
    random.Random(0).shuffle(copies)
    rows = bases + copies + [{"id": "no-image", "text": "a caption alone"}]
    data = root / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data, truth


def _clip_recipe(tmp_path: Path, data: Path, clip: str, **extra) -> Path:
    # one image per forward pass: a model's float sums depend on the batch it sees, and a
    # stream and a shard batch images differently
    args = {"hf_clip": clip, "accelerator": "cpu", "gpu_batch_size": 1, "n_clusters": 2,
            "eps": 0.005, **extra}  # fmt: skip
    return write_recipe(
        tmp_path / "clip.yaml", dataset_path=str(data), export_path=str(tmp_path / "x.jsonl"),
        np=1, io_batch_size=4, cache_dir=str(tmp_path / "cache"),
        process=[{"image_embedding_deduplicator": args}],
    )  # fmt: skip


def test_tiny_clip_finds_the_copies_and_reruns_from_the_cache(photos, tiny_models, tmp_path):
    """With the tiny random CLIP, a photo's copies are >= 0.9996 from it and distinct photos
    <= 0.991 from each other (measured): at eps 0.005 the copies go, the photos stay."""
    data, truth = photos
    recipe = _clip_recipe(tmp_path, data, tiny_models["clip"])
    first = run_recipe(recipe, f"export_path={tmp_path}/a/x.jsonl")
    (dropped_file,) = first["filtered_files"]
    dropped = read_jsonl(dropped_file)
    reasons = {d["sample"]["id"]: d["reason"] for d in dropped}
    assert set(reasons) == set(truth)
    ids = {i: r["id"] for i, r in enumerate(read_jsonl(data))}
    for vid, reason in reasons.items():
        kept = ids[int(re.search(r"input sample #(\d+)", reason).group(1))]
        assert kept == truth[vid] and reason.startswith(f"near-duplicate of id='{kept}'")
        assert _cosine_in(reason) >= 0.995
    exported = [r["id"] for r in read_jsonl(tmp_path / "a" / "x.jsonl")]
    assert exported == PHOTOS + ["no-image"]
    op = next(o for o in first["ops"] if o["name"] == "image_embedding_deduplicator")
    assert (op["cache_hits"], op["cache_misses"]) == (0, 24)
    # a rerun with another eps embeds nothing again (the same drops at 0.006)
    again = run_recipe(recipe, f"export_path={tmp_path}/b/x.jsonl",
                       "process.0.image_embedding_deduplicator.eps=0.006")  # fmt: skip
    op = next(o for o in again["ops"] if o["name"] == "image_embedding_deduplicator")
    assert (op["cache_hits"], op["cache_misses"]) == (24, 0)
    assert (tmp_path / "b" / "x.jsonl").read_bytes() == (tmp_path / "a" / "x.jsonl").read_bytes()


def test_tiny_clip_same_result_streaming_sharded_and_ray(photos, tiny_models, tmp_path,
                                                         ray_cluster):  # fmt: skip
    data, truth = photos
    recipe = _clip_recipe(tmp_path, data, tiny_models["clip"], keep_policy="max",
                          keep_stats_key="text_len")  # fmt: skip
    recipe.write_text(recipe.read_text().replace(
        "process:\n", "process:\n- text_length_filter: {min_len: 1}\n"))  # fmt: skip
    results = {}
    for mode in ("stream", "ray"):  # (sharded-local: the planted test above)
        summary = run_recipe(recipe, f"export_path={tmp_path / mode}/x.jsonl", "use_cache=false",
                             "io_batch_size=2", *MODES[mode])  # fmt: skip
        results[mode] = _files(summary)
    assert summary["shards"] == 4
    assert results["stream"] == results["ray"]
    # keep_policy max text_len: of each photo and its copies the longest text (the id) is
    # kept, ties to the earlier in the input; exported in input order
    rows = read_jsonl(data)
    best: dict[str, tuple] = {}
    for i, r in enumerate(rows):
        group = truth.get(r["id"], r["id"])
        best[group] = min(best.get(group, (0, 0)), (-len(r["text"]), i))
    expected = [rows[i]["id"] for i in sorted(i for _, i in best.values())]
    kept = [r["id"] for r in read_jsonl(tmp_path / "stream" / "x.jsonl")]
    assert kept == expected
    assert all(k.endswith((".jpg", ".png")) for k in kept if k != "no-image")
