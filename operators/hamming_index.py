"""Near-duplicate lookup for 64-bit hashes (pHash, SimHash), without comparing all pairs.

Multi-index hashing with bit flips: `m` disjoint blocks of `b` bits are cut from the hash.
Two hashes within `t` bits differ in at most `t // m` bits of at least one block
(pigeonhole), so the kept hashes worth comparing are those whose block equals one of the
query's blocks with at most `r = t // m` bits flipped: `m * V(b, r)` probes, where
V(b, r) = sum_{k<=r} C(b, k). Each table is a sorted array (CSR: the kept indices ordered
by block value, and where each value starts), rebuilt as the index grows (amortised
O(1) per hash); the hashes kept since the last rebuild are compared all at once
(numpy popcount), so a lookup is a handful of vectorised operations whatever N.
The block width follows N (about log2 N bits, at most 21), which keeps both the probes
and the candidates per probe near-constant: the cost per lookup stays flat as N grows.

The first sample in input order (or by keep policy) is kept; a later one within the
threshold of a kept sample is its duplicate (no chaining through dropped samples, so every
drop points at a sample that is in the export). An optional `verify` callback must
confirm a candidate pair before a drop (image dedup: a colour-thumbnail distance).

Memory per kept hash: 8 B hash, 16 B per table (3 tables by default), 8 B input ordinal,
a reference to its sample id, plus whatever `verify` needs (192 B of thumbnail for images);
extra key parts (more than one image, a text hash) in a dict for the samples that have them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable
from functools import lru_cache
from typing import Any

import numpy as np

from .base import DedupIndex, ExactIndex
from .batch import SampleRef

BITS = 64
MAX_BLOCK_BITS = 21  # a table's offsets array: 2^21 x 4 B = 8 MiB at most
RECENT = 4096  # hashes compared by brute force before they join the tables

# verify(kept_check, new_check) -> (confirmed, value for the drop reason)
Verify = Callable[[Any, Any], tuple[bool, str]]


@lru_cache(maxsize=64)
def flip_masks(bits: int, radius: int) -> np.ndarray:
    """All values of `bits` bits with at most `radius` bits set (the probes' XOR masks)."""
    masks = [0]
    for k in range(1, radius + 1):
        masks += [sum(1 << i for i in c) for c in itertools.combinations(range(bits), k)]
    return np.array(masks, dtype=np.int64)


class HammingIndex(DedupIndex):
    """Keys: a tuple of hex hashes (one per image); with `with_extra`, `(hashes, extra)`
    where `extra` (e.g. the text's md5) must match exactly as well; with `verify`,
    `(hashes, extra, checks)` where `checks` (one per hash) go to `verify`. The first hash
    finds the candidates, all hashes must be within the threshold. None is never a
    duplicate."""

    def __init__(
        self,
        threshold: int,
        with_extra: bool = False,
        num_blocks: int | None = None,
        verify: Verify | None = None,
    ) -> None:
        if not 0 < threshold < BITS:
            raise ValueError(f"hamming threshold must be in 1..{BITS - 1}, got {threshold}")
        if num_blocks is not None and not threshold < num_blocks <= BITS:
            raise ValueError(
                f"num_blocks must be more than the hamming threshold ({threshold}) and at "
                f"most {BITS}, got {num_blocks}"
            )
        self.threshold = threshold
        self.with_extra = with_extra
        self.verify = verify
        # bucket blocks (for the distributed decision): t + 1 exact blocks, as before
        blocks = threshold + 1 if num_blocks is None else num_blocks
        cuts = [round(i * BITS / blocks) for i in range(blocks + 1)]
        self.blocks = [(lo, (1 << (hi - lo)) - 1) for lo, hi in zip(cuts, cuts[1:]) if hi > lo]
        # lookup tables: m blocks of up to 21 bits, r flips each
        self.tables = num_blocks or 3
        self.radius = threshold // self.tables
        self.bits = 0  # block width of the built tables (0: none built yet)
        self.values: list[np.ndarray] = []  # per table: block values of the kept, sorted
        self.order = np.zeros(0, dtype=np.int32)  # the kept indices in that order
        self.hashes = np.zeros(0, dtype=np.uint64)  # and their hashes
        self.starts = np.zeros(0, dtype=np.int64)  # where each block value starts in it
        self.built = 0  # kept hashes [0, built) are in the tables
        # the kept hashes
        self.first = np.zeros(1024, dtype=np.uint64)
        self.ordinal = np.zeros(1024, dtype=np.int64)
        self.ids: list[Any] = []
        self.checks: list[Any] = []  # verify's data, one entry per kept hash (or [])
        self.rest: dict[int, tuple[tuple[int, ...], Any]] = {}  # all hashes and extra
        self.count = 0
        self.no_image = ExactIndex()  # samples without images: by `extra` only

    # -- keys ------------------------------------------------------------------
    def _parts(self, key: Any) -> tuple[tuple[str, ...], Any, Any]:
        if self.verify is not None:
            return key
        if self.with_extra:
            return key[0], key[1], None
        return key, None, None

    def buckets(self, key: Hashable | None) -> list[Hashable]:
        if key is None:
            return []
        hashes, extra, _ = self._parts(key)
        if not hashes:
            return [("no-image", extra)] if self.with_extra else []
        first = int(hashes[0], 16)
        return [
            (i, first >> shift & mask, len(hashes), extra)
            for i, (shift, mask) in enumerate(self.blocks)
        ]

    # -- the decision ------------------------------------------------------------
    def admit(self, key: Hashable | None, ref: SampleRef, sample_id: Any) -> str | None:
        if key is None:
            return None
        hashes, extra, checks = self._parts(key)
        if not hashes:
            return self.no_image.admit(extra, ref, sample_id) if self.with_extra else None
        values = tuple(int(h, 16) for h in hashes)
        for index in self._within(values[0]):  # earliest kept sample first: deterministic
            reason = self._confirm(int(index), values, extra, checks)
            if reason is not None:
                who = self.ids[index]
                who = f"id={who!r} " if who is not None else ""
                return f"near-duplicate of {who}(input sample #{self.ordinal[index]}), {reason}"
        self._keep(values, extra, checks, ref.ordinal, sample_id)
        return None

    def _within(self, q: int) -> np.ndarray:
        """Kept indices whose first hash is within the threshold of q, ascending."""
        qv = np.uint64(q)
        found = []
        if self.count > self.built:  # recent hashes: all at once
            d = np.bitwise_count(self.first[self.built : self.count] ^ qv)
            found.append(np.flatnonzero(d <= self.threshold) + self.built)
        if self.built:
            found.append(self._probe(q, qv))
        found = [f for f in found if f.size]
        if not found:
            return np.zeros(0, dtype=np.int64)
        hits = np.concatenate(found) if len(found) > 1 else found[0]
        return np.unique(hits) if hits.size > 1 else hits

    def _probe(self, q: int, qv: np.uint64) -> np.ndarray:
        """Kept indices in the tables within the threshold of q (repeats possible)."""
        shifts, top = self.shifts, (1 << self.bits) - 1
        blocks = np.array([(q >> shift) & top for shift in shifts], dtype=np.int64)
        probes = (self.masks[None, :] ^ blocks[:, None]) + self.table_base[:, None]
        lo = self.starts[probes.ravel()]
        n = self.starts[probes.ravel() + 1] - lo
        total = int(n.sum())
        if not total:
            return np.zeros(0, dtype=np.int64)
        # positions lo..hi-1 of every probe, in one vector; the hashes sit in table order
        at = np.repeat(lo - (np.cumsum(n) - n), n) + np.arange(total)
        near = np.bitwise_count(self.hashes[at] ^ qv) <= self.threshold
        return self.order[at[near]]

    def _confirm(self, index: int, values: tuple[int, ...], extra: Any, checks: Any) -> str | None:
        """The reason when kept hash `index` is a duplicate of the new key, else None."""
        kept_values, kept_extra = self.rest.get(index, ((int(self.first[index]),), None))
        if len(kept_values) != len(values) or kept_extra != extra:
            return None
        distance = max((a ^ b).bit_count() for a, b in zip(kept_values, values))
        if distance > self.threshold:
            return None
        reason = f"hamming distance {distance}"
        if self.verify is not None:
            ok, value = self.verify(self.checks[index], checks)
            if not ok:
                return None
            reason += f", {value}"
        return reason

    def _keep(self, values: tuple[int, ...], extra: Any, checks: Any, ordinal: int,
              sample_id: Any) -> None:  # fmt: skip
        index = self.count
        if index == len(self.first):
            self.first = np.resize(self.first, 2 * index)
            self.ordinal = np.resize(self.ordinal, 2 * index)
        self.first[index] = values[0]
        self.ordinal[index] = ordinal
        self.ids.append(sample_id)
        if self.verify is not None:
            self.checks.append(checks)
        if len(values) > 1 or extra is not None:
            self.rest[index] = (values, extra)
        self.count += 1
        if self.count - self.built >= RECENT:
            self._build()

    def _build(self) -> None:
        """Add the recent hashes to the tables (a merge: timsort finds the sorted run); all
        of them anew when N has grown enough to widen the blocks (~log2 N bits, <= 21).

        The tables live in two flat arrays (`starts`, `order`), table t's values offset by
        t * (2^bits + 1) and t * N, so that one lookup probes all tables at once."""
        n, old = self.count, self.built
        bits = min(MAX_BLOCK_BITS, BITS // self.tables, max(8, n.bit_length()))
        width = (1 << bits) + 1
        if bits != self.bits:
            old = 0
            self.values = [np.zeros(0, dtype=np.int32) for _ in range(self.tables)]
            self.starts = np.zeros(self.tables * width, dtype=np.int64)
            self.order = np.zeros(0, dtype=np.int32)
        new = self.first[old:n]
        shifts = [BITS - (t + 1) * bits for t in range(self.tables)]
        top = np.uint64((1 << bits) - 1)
        starts = np.empty(self.tables * width, dtype=np.int64)
        orders = []
        for t, shift in enumerate(shifts):
            block = ((new >> np.uint64(shift)) & top).astype(np.int32)
            values = np.concatenate([self.values[t], block])
            perm = np.argsort(values, kind="stable")  # sorted prefix + new: a merge
            self.values[t] = values[perm]
            indices = np.concatenate([self.order[t * old : (t + 1) * old], np.arange(old, n)])
            orders.append(indices.astype(np.int32)[perm])
            segment = self.starts[t * width : (t + 1) * width] - t * old
            segment[1:] += np.cumsum(np.bincount(block, minlength=1 << bits))
            starts[t * width : (t + 1) * width] = segment + t * n
        self.starts, self.order = starts, np.concatenate(orders)
        self.hashes = self.first[self.order]  # each table's hashes in its order: one read each
        self.shifts, self.bits, self.built = shifts, bits, n
        self.masks = flip_masks(bits, self.radius)
        self.table_base = np.arange(self.tables, dtype=np.int64) * width
