"""MinHashIndex (band table + signatures on disk) decides exactly as the in-memory LSH index
it replaced (kept here as the reference), for every keep policy."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from dj_synth.operators import Batch, SampleRef, get_operator
from dj_synth.operators import document_minhash_deduplicator as mh
from dj_synth.operators.dedup_decision import decide


class ReferenceIndex:
    """The index before (dj-synth eb6c4fe): one dict per band of the band's bytes, every
    kept signature in memory; candidates in kept order, verified by estimated Jaccard."""

    def __init__(self, bands: int, rows: int, threshold: float) -> None:
        self.bands, self.rows, self.threshold = bands, rows, threshold
        self.tables: list[dict[bytes, list[int]]] = [{} for _ in range(bands)]
        self.kept: list[tuple[np.ndarray, int, Any]] = []

    def admit(self, key: bytes | None, ref: SampleRef, sample_id: Any) -> str | None:
        if key is None:
            return None
        key = key[: len(key) - 8 * self.bands]  # the signature; band hashes follow
        sig = np.frombuffer(key, dtype=np.uint32)
        width = self.rows * 4
        parts = [key[i * width : (i + 1) * width] for i in range(self.bands)]
        candidates = sorted({i for t, p in zip(self.tables, parts) for i in t.get(p, ())})
        for index in candidates:
            kept, ordinal, kept_id = self.kept[index]
            jaccard = float((kept == sig).mean())
            if jaccard >= self.threshold:
                who = f"id={kept_id!r} " if kept_id is not None else ""
                return f"near-duplicate of {who}(input sample #{ordinal}), estimated jaccard {jaccard:.2f}"
        for t, p in zip(self.tables, parts):
            t.setdefault(p, []).append(len(self.kept))
        self.kept.append((sig, ref.ordinal, sample_id))
        return None


WORDS = "a the red blue small big cat dog sits runs on in near tree car sky sun boat".split()


@pytest.fixture(scope="module")
def keyed():
    """3,000 short captions over an 18-word vocabulary (many band collisions, many
    Jaccard scores near the threshold), ~30% one-word edits or repeats of earlier ones."""
    rng = random.Random(4)
    op = get_operator("document_minhash_deduplicator")(window_size=1)
    texts: list[str] = []
    for _ in range(3000):
        if texts and rng.random() < 0.3:
            words = rng.choice(texts).split()
            words[rng.randrange(len(words))] = rng.choice(WORDS)
        else:
            words = [rng.choice(WORDS) for _ in range(rng.randint(3, 9))]
        texts.append(" ".join(words))
    rows = [{"id": i, "text": t} for i, t in enumerate(texts)]
    rows[17]["text"] = "  "  # an empty text: never a duplicate
    keys = op.compute_hash(Batch.from_rows(rows, [SampleRef(i, "t", i) for i in range(len(rows))]))
    assert keys[17] is None
    ids: list[Any] = [f"c{i}" for i in range(len(keys))]
    ids[5], ids[6] = None, 10**20  # ids of any JSON type
    return op, keys, ids


def test_same_decisions_as_the_reference(keyed):
    op, keys, ids = keyed
    index = op.new_index()
    index.table = mh.BandTable(bits=2)  # 4 buckets of 8: it grows 10 times or more
    reference = ReferenceIndex(op.num_bands, op.num_rows_per_band, op.jaccard_threshold)
    ours, theirs = [], []
    for i, (key, sid) in enumerate(zip(keys, ids)):
        ref = SampleRef(i, "t", i + 1)
        ours.append(index.admit(key, ref, sid))
        theirs.append(reference.admit(key, ref, sid))
    assert ours == theirs
    dropped = sum(r is not None for r in ours)
    assert 500 < dropped < 2500  # the corpus has work on both sides of the threshold
    assert index.count == 3000 - dropped - 1 and index.table.used == 25 * index.count
    assert len(index.table.slots) >= 2**12


@pytest.mark.parametrize("policy", ["max", "min"])
def test_same_decisions_ranked(keyed, monkeypatch, policy):
    _, keys, ids = keyed
    op = get_operator("document_minhash_deduplicator")(
        window_size=1, keep_policy=policy, keep_stats_key="s"
    )
    rng = random.Random(9)
    entries = [
        (None if i % 7 == 0 else rng.choice([0.5, rng.random()]), (i, 0), SampleRef(i, "t", i + 1), sid, key)
        for i, (key, sid) in enumerate(zip(keys, ids))
    ]  # fmt: skip
    ours = decide(op, entries)
    monkeypatch.setattr(
        op, "new_index", lambda: ReferenceIndex(op.num_bands, op.num_rows_per_band, 0.7)
    )
    assert decide(op, entries) == ours and len(ours) > 500


def test_band_table_is_a_multimap():
    """Random 32-bit hashes, many repeated (several kept samples share a band) and many
    sharing a home slot; against a dict of lists."""
    rng = np.random.default_rng(0)
    table = mh.BandTable(bits=1)
    truth: dict[int, list[int]] = {}
    pool = rng.integers(0, 2**32, 300, dtype=np.uint64)
    for index in range(800):
        hashes = np.unique(rng.choice(pool, 5))
        found, free = table.find(hashes)
        expect = sorted(i for h in hashes.tolist() for i in truth.get(h, []))
        assert sorted(found) == expect
        table.add(hashes, index, free)
        for h in hashes.tolist():
            truth.setdefault(h, []).append(index)
    assert table.used == sum(len(v) for v in truth.values())
    assert table.used * 10 <= table.slots.size * 9
    assert table.stash  # 2 buckets of 16 cannot hold a hash repeated more than 32 times
