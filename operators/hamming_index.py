"""Near-duplicate lookup for 64-bit perceptual hashes, without comparing all pairs.

Multi-index hashing: with a threshold of t bits, each hash is cut into t + 1
blocks (or any number > t); two hashes that differ in at most t bits agree exactly
on at least one block (pigeonhole), so a new hash is compared only with the kept
hashes that share a block with it. More blocks: smaller blocks, more candidates to
compare, the same result. The first sample in input order is kept; a later one
within the threshold of a kept sample is its duplicate (no chaining through
dropped samples, so every drop points at a sample that is in the export).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from .base import DedupIndex, ExactIndex
from .batch import SampleRef

BITS = 64


class HammingIndex(DedupIndex):
    """Keys: a tuple of hex hashes (one per image), or `(hashes, extra)` where `extra`
    (e.g. the text's md5) must match exactly as well. None is never a duplicate."""

    def __init__(
        self, threshold: int, with_extra: bool = False, num_blocks: int | None = None
    ) -> None:
        if not 0 < threshold < BITS:
            raise ValueError(f"hamming threshold must be in 1..{BITS - 1}, got {threshold}")
        blocks = threshold + 1 if num_blocks is None else num_blocks
        if not threshold < blocks <= BITS:
            raise ValueError(
                f"num_blocks must be more than the hamming threshold ({threshold}) and at "
                f"most {BITS}, got {num_blocks}"
            )
        self.threshold = threshold
        self.with_extra = with_extra
        cuts = [round(i * BITS / blocks) for i in range(blocks + 1)]
        self.blocks = [(lo, (1 << (hi - lo)) - 1) for lo, hi in zip(cuts, cuts[1:]) if hi > lo]
        self.tables: list[dict[int, list[int]]] = [{} for _ in self.blocks]
        self.kept: list[tuple[tuple[int, ...], Any, int, Any]] = []
        self.no_image = ExactIndex()  # samples without images: by `extra` only

    def buckets(self, key: Hashable | None) -> list[Hashable]:
        if key is None:
            return []
        hashes, extra = key if self.with_extra else (key, None)  # type: ignore[misc]
        if not hashes:
            return [("no-image", extra)] if self.with_extra else []
        first = int(hashes[0], 16)
        return [
            (i, first >> shift & mask, len(hashes), extra)
            for i, (shift, mask) in enumerate(self.blocks)
        ]

    def admit(self, key: Hashable | None, ref: SampleRef, sample_id: Any) -> str | None:
        if key is None:
            return None
        hashes, extra = key if self.with_extra else (key, None)  # type: ignore[misc]
        if not hashes:
            return self.no_image.admit(extra, ref, sample_id) if self.with_extra else None
        values = tuple(int(h, 16) for h in hashes)
        first = values[0]
        candidates: set[int] = set()
        for (shift, mask), table in zip(self.blocks, self.tables):
            candidates.update(table.get(first >> shift & mask, ()))
        for index in sorted(candidates):  # earliest kept sample first: deterministic
            kept_values, kept_extra, ordinal, kept_id = self.kept[index]
            if len(kept_values) != len(values) or kept_extra != extra:
                continue
            distance = max((a ^ b).bit_count() for a, b in zip(kept_values, values))
            if distance <= self.threshold:
                who = f"id={kept_id!r} " if kept_id is not None else ""
                return (
                    f"near-duplicate of {who}(input sample #{ordinal}), hamming distance {distance}"
                )
        index = len(self.kept)
        self.kept.append((values, extra, ref.ordinal, sample_id))
        for (shift, mask), table in zip(self.blocks, self.tables):
            table.setdefault(first >> shift & mask, []).append(index)
        return None
