"""The keep/drop decision of a deduplicator over all its hashed samples, and how it splits.

`decide` admits samples one at a time into the operator's `DedupIndex`, in input order
(keep policy `first`) or best first (`max` / `min` of a stats key). A sample is only
dropped as the duplicate of a sample admitted before it, so the decision for one sample
depends only on the samples it can collide with. `DedupIndex.buckets` names those
(exact key, Hamming block, MinHash band): the samples fall into connected components of
the "shares a bucket" graph, and deciding each component on its own gives exactly the
global decision. That is how the Ray executor distributes dedup: group by bucket, join
buckets into components, decide components in parallel.

An operator whose index depends on the data (semantic dedup's k-means centroids) says so
with `fit_sample_size`: it is fitted once, on a seeded sample of the keys chosen by input
position alone (`sample_orders`, `sample_cutoff`), so every executor fits the same model
(`fitted_for`; the Ray executor gathers only the sample). An index whose keys fall in one
bucket each (`partitions = True`) needs no components: its buckets are the components.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable
from typing import Any

import numpy as np

from .base import Deduplicator, _short
from .batch import SampleRef

# (rank, position, ref, id, key). The position orders samples as they entered the stage and
# tells apart the samples a mapper generated from one input sample (they share its ref).
Position = tuple[int, int]  # (input ordinal, k-th sample with that ordinal)
DedupEntry = tuple[float | None, Position, SampleRef, Any, Hashable | None]


def admission_order(op: Deduplicator, entries: list[DedupEntry]) -> list[DedupEntry]:
    """Input order for `first`; best value first (missing last, ties in input order) else."""
    if op.keep_policy == "first":
        return sorted(entries, key=lambda e: e[1])
    sign = -1.0 if op.keep_policy == "max" else 1.0
    return sorted(
        entries, key=lambda e: (e[0] is None, sign * e[0] if e[0] is not None else 0.0, e[1])
    )


def decide(op: Deduplicator, entries: list[DedupEntry]) -> dict[Position, str]:
    """{position: reason} of the samples to drop among `entries`."""
    index = op.new_index()
    policy = f"; kept by {op.keep_policy} {op.keep_stats_key}" if op.keep_policy != "first" else ""
    drops: dict[Position, str] = {}
    for rank, position, ref, sample_id, key in admission_order(op, entries):
        reason = index.admit(key, ref, sample_id)
        if reason is not None:
            if policy:
                reason += f"{policy} (this sample: {'missing' if rank is None else _short(rank)})"
            drops[position] = reason
    return drops


def stable_bucket(bucket: Hashable) -> int:
    """A 63-bit id of a bucket that is the same in every process."""
    digest = hashlib.blake2b(repr(bucket).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def star_edges(members: Iterable[Position]) -> list[tuple[Position, Position]]:
    """Connect a bucket's members to its first one: enough for components."""
    ordered = sorted(members)
    return [(ordered[0], m) for m in ordered[1:]]


def components(edges: Iterable[tuple[Any, Any]]) -> dict[Any, Any]:
    """Union-find: node -> its component's smallest node (only nodes in an edge)."""
    parent: dict[Any, Any] = {}

    def find(x: Any) -> Any:
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
        parent.setdefault(a, a)
        parent.setdefault(b, b)
    return {x: find(x) for x in parent}


def decide_by_components(op: Deduplicator, entries: list[DedupEntry]) -> dict[Position, str]:
    """The same result as `decide`, computed component by component (the distributed plan,
    run in one process: the reference the Ray executor is tested against)."""
    op = fitted_for(op, entries)
    index = op.new_index()
    by_bucket: dict[int, list[Position]] = {}
    for _, position, _, _, key in entries:
        for bucket in index.buckets(key):
            by_bucket.setdefault(stable_bucket(bucket), []).append(position)
    comp = components(e for members in by_bucket.values() for e in star_edges(members))
    groups: dict[Position, list[DedupEntry]] = {}
    for entry in entries:
        root = comp.get(entry[1])
        if root is not None:
            groups.setdefault(root, []).append(entry)
    drops: dict[Position, str] = {}
    for group in groups.values():
        drops.update(decide(op, group))
    return drops


# -- operators fitted on a sample of the keys -------------------------------------------


def sample_orders(positions: Iterable[Position], seed: int) -> np.ndarray:
    """A stable 64-bit draw per position (uint64): the fit sample is the smallest draws."""
    out = [
        int.from_bytes(
            hashlib.blake2b(f"{seed}|{o}|{k}".encode(), digest_size=8).digest(), "little"
        )
        for o, k in positions
    ]
    return np.array(out, dtype=np.uint64)


def sample_cutoff(orders: np.ndarray, size: int) -> int | None:
    """The largest draw in the sample of `size` smallest draws (None: no draws)."""
    if not len(orders):
        return None
    size = min(size, len(orders))
    return int(np.partition(orders, size - 1)[size - 1])


def fit_sample(entries: list[DedupEntry], size: int, seed: int) -> list[Hashable]:
    """The keys (not None) of the `size` entries with the smallest draws, in input order."""
    keyed = sorted((e for e in entries if e[4] is not None), key=lambda e: e[1])
    orders = sample_orders([e[1] for e in keyed], seed)
    cutoff = sample_cutoff(orders, size)
    return [e[4] for e, o in zip(keyed, orders.tolist()) if o <= cutoff] if keyed else []  # type: ignore[misc]


def fitted_for(op: Deduplicator, entries: list[DedupEntry]) -> Deduplicator:
    """`op` ready to decide over `entries`: itself, or for an operator fitted to the data
    (`fit_sample_size`; `fit(keys)` -> state, `with_fit(state)` -> a copy), its copy fitted
    on the seeded sample of the keys."""
    size = getattr(op, "fit_sample_size", 0)
    if not size:
        return op
    return op.with_fit(op.fit(fit_sample(entries, size, op.seed)))  # type: ignore[attr-defined]
