"""The distributed dedup plan (buckets -> components -> decide each) equals the global decision."""

from __future__ import annotations

import random

import numpy as np
import pytest
from helpers import run_op
from test_text_dedup_planted import ROWS

from dj_synth.operators import SampleRef, get_operator
from dj_synth.operators.base import DEDUP_KEY
from dj_synth.operators.dedup_decision import components, decide, decide_by_components


def _entries(name: str, rows: list[dict], **args):
    out, _ = run_op(name, rows, **args)
    rng = random.Random(1)  # a rank per sample, with ties and missing values
    ranks = [rng.choice([None, 0.5, 1.0]) if i % 3 == 0 else rng.random() for i in range(len(rows))]
    return [
        (ranks[ref.ordinal], (ref.ordinal, 0), ref, row["id"], key)
        for row, key, ref in zip(out.rows(), out.columns[DEDUP_KEY], out.refs)
    ]


def _hamming_entries(n: int = 600, seed: int = 0, thumbs: bool = False):
    """Clusters of 64-bit hashes (a few bits flipped) and chains that only connect in steps.
    With `thumbs`, image keys for verification: cluster members carry their base's
    thumbnail with a little noise, except every third one, whose thumbnail is unrelated."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    keys = []
    for _ in range(n // 6):
        base = rng.getrandbits(64)
        look = nrng.integers(0, 256, 192)
        keys.append((base, look))
        for j in range(rng.randint(0, 4)):
            h = base ^ sum(1 << b for b in rng.sample(range(64), rng.randint(0, 9)))
            other = nrng.integers(0, 256, 192) if j % 3 == 2 else look + nrng.integers(-3, 4, 192)
            keys.append((h, other))
    rng.shuffle(keys)
    return [
        (
            rng.random() if i % 4 else None,
            (i, 0),
            SampleRef(i, "t", i + 1),
            f"i{i}",
            ((f"{k:016x}",), None, (np.clip(t, 0, 255).astype(np.uint8).tobytes(),))
            if thumbs
            else (f"{k:016x}",),
        )
        for i, (k, t) in enumerate(keys)
    ]


TEXT = [{"id": rid, "text": text} for rid, _, _, text in ROWS]
CASES = [
    ("document_deduplicator", {"lowercase": True, "ignore_non_character": True}),
    ("document_minhash_deduplicator", {"tokenization": "punctuation", "window_size": 2, "jaccard_threshold": 0.5}),
    ("document_simhash_deduplicator", {"tokenization": "punctuation", "window_size": 2, "hamming_distance": 10, "num_blocks": 11}),
]  # fmt: skip


@pytest.mark.parametrize("policy", ["first", "max", "min"])
@pytest.mark.parametrize("name, args", CASES)
def test_text_dedup_components_equal_global(name, args, policy):
    keep = {} if policy == "first" else {"keep_policy": policy, "keep_stats_key": "s"}
    op = get_operator(name)(**args, **keep)
    entries = _entries(name, TEXT, **args)
    drops = decide(op, entries)
    assert len(drops) >= 40  # the corpus has work for every method
    assert decide_by_components(op, entries) == drops


@pytest.mark.parametrize("policy", ["first", "max"])
@pytest.mark.parametrize("threshold", [3, 8])
@pytest.mark.parametrize("verify", [False, True])
def test_hamming_components_equal_global(threshold, policy, verify):
    keep = {} if policy == "first" else {"keep_policy": policy, "keep_stats_key": "s"}
    check = {} if verify else {"max_thumbnail_distance": None}
    op = get_operator("image_deduplicator")(hamming_threshold=threshold, **check, **keep)
    entries = _hamming_entries(thumbs=verify)
    drops = decide(op, entries)
    assert len(drops) > 50  # of ~200 planted variants; more at the larger threshold
    assert decide_by_components(op, entries) == drops
    if verify:  # the unrelated thumbnails kept some that the hash alone drops
        hash_only = get_operator("image_deduplicator")(
            hamming_threshold=threshold, max_thumbnail_distance=None, **keep
        )
        plain = [(*e[:4], e[4][0]) for e in entries]
        assert len(decide(hash_only, plain)) > len(drops)
        assert all("thumbnail distance" in reason for reason in drops.values())


def test_components_union_find():
    comp = components([(5, 7), (1, 2), (7, 2), (9, 10)])
    assert comp == {1: 1, 2: 1, 5: 1, 7: 1, 9: 9, 10: 9}
