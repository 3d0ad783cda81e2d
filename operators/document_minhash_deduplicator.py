"""document_minhash_deduplicator: drop texts that are near-duplicates of an earlier one (MinHash LSH)."""

from __future__ import annotations

import os
import re
import tempfile
from array import array
from collections.abc import Hashable
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from rensa import RMinHash

from .base import DedupIndex, Deduplicator
from .batch import Batch, SampleRef, special_tokens
from .document_deduplicator import checked_texts
from .registry import register

SEED = 42  # fixed permutations: signatures are comparable across workers and runs
_PUNCT_SPLIT = re.compile(r"[\W_]+", re.UNICODE)


@lru_cache(maxsize=64)
def optimal_param(threshold: float, num_perm: int, fp_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimising fp_weight * P(false positive) + (1 - fp_weight) * P(false negative)."""
    from scipy.integrate import quad

    def fp(b: int, r: int) -> float:
        return quad(lambda s: 1 - (1 - s**r) ** b, 0.0, threshold)[0]

    def fn(b: int, r: int) -> float:
        return quad(lambda s: 1 - (1 - (1 - s**r) ** b), threshold, 1.0)[0]

    best, best_err = (1, num_perm), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            err = fp_weight * fp(b, r) + (1 - fp_weight) * fn(b, r)
            if err < best_err:
                best, best_err = (b, r), err
    return best


_MIX = np.random.default_rng(SEED)
_MULT = _MIX.integers(1, 2**63, size=64, dtype=np.uint64) | np.uint64(1)  # per row of a band
_SALT = _MIX.integers(0, 2**63, size=1024, dtype=np.uint64)  # per band


def band_hashes(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) nonzero 32-bit hashes (as uint64) of each signature's bands, band id mixed
    in; the same in every process. Used only to find candidates: a candidate must share
    the band's values, checked on the signatures."""
    part = sigs[:, : bands * rows].reshape(len(sigs), bands, rows).astype(np.uint64)
    h = (part * _MULT[np.arange(rows) % 64]).sum(axis=2, dtype=np.uint64) ^ _SALT[:bands]
    h ^= h >> np.uint64(29)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    return np.maximum(h >> np.uint64(32), np.uint64(1))


@register("document_minhash_deduplicator")
class DocumentMinhashDeduplicator(Deduplicator):
    """Key: a MinHash signature of the text's word (or character) n-grams; samples whose
    signatures collide in an LSH band and whose estimated Jaccard similarity is at
    least `jaccard_threshold` are duplicates of the earlier (kept) one.

    As Data-Juicer (arguments, defaults, bands/rows chosen to balance false
    positives and negatives when not given), with fixes: the special tokens are
    removed first (left in, they make unrelated short captions alike); a text
    shorter than `window_size` tokens is one shingle of all its tokens (Data-Juicer
    crashes on it), so short texts match only texts with the same tokens; an empty
    text is never a duplicate; LSH candidates are verified against the signature
    estimate of the Jaccard similarity, so band collisions alone never drop a
    sample; `space` splits on any whitespace (Data-Juicer: on ' ' only).
    `sentencepiece` tokenization needs a model file we cannot download: refused.
    """

    def __init__(
        self,
        tokenization: Literal["space", "punctuation", "character", "sentencepiece"] = "space",
        window_size: int = 5,
        lowercase: bool = True,
        ignore_pattern: str | None = None,
        num_permutations: int = 256,
        jaccard_threshold: float = 0.7,
        num_bands: int | None = None,
        num_rows_per_band: int | None = None,
        tokenizer_model: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if tokenization == "sentencepiece":
            raise ValueError("tokenization 'sentencepiece' needs a SentencePiece model; use space, "
                             "punctuation or character")  # fmt: skip
        if window_size < 1 or num_permutations < 2 or not 0 < jaccard_threshold <= 1:
            raise ValueError("window_size >= 1, num_permutations >= 2, 0 < jaccard_threshold <= 1")
        if (num_bands is None) != (num_rows_per_band is None):
            raise ValueError("give both num_bands and num_rows_per_band, or neither")
        if num_bands is None:
            num_bands, num_rows_per_band = optimal_param(jaccard_threshold, num_permutations)
        if num_bands * num_rows_per_band > num_permutations:
            raise ValueError("num_bands * num_rows_per_band must be <= num_permutations")
        self.tokenization, self.window_size, self.lowercase = tokenization, window_size, lowercase
        self.ignore_pattern = re.compile(ignore_pattern) if ignore_pattern else None
        self.num_permutations, self.jaccard_threshold = num_permutations, jaccard_threshold
        self.num_bands, self.num_rows_per_band = num_bands, num_rows_per_band
        self.tokenizer_model = tokenizer_model

    def shingles(self, text: str) -> set[str]:
        if self.lowercase:
            text = text.lower()
        if self.ignore_pattern is not None:
            text = self.ignore_pattern.sub("", text)
        if self.tokenization == "character":
            tokens: list[str] = list(text.strip())
            sep = ""
        else:
            split = _PUNCT_SPLIT.split if self.tokenization == "punctuation" else str.split
            tokens = [t for t in split(text) if t]
            sep = " "
        if not tokens:
            return set()
        w = min(self.window_size, len(tokens))
        return {sep.join(tokens[i : i + w]) for i in range(len(tokens) - w + 1)}

    def signature(self, shingles: set[str]) -> bytes:
        """`num_permutations` 32-bit minima (rensa's Rust MinHash, fixed seed), as bytes."""
        sketch = RMinHash(num_perm=self.num_permutations, seed=SEED)
        sketch.update(list(shingles))
        return array("I", sketch.digest()).tobytes()

    def compute_hash(self, batch: Batch) -> list[Hashable | None]:
        """The signature's bytes followed by its band hashes (8 bytes a band, computed
        here for the whole batch at once, so the index in the main process need not)."""
        tokens = [t for t in special_tokens(self, batch) if t]
        sigs: list[bytes | None] = []
        for text in checked_texts(batch):
            for token in tokens:
                text = text.replace(token, " ")
            shingles = self.shingles(text)
            sigs.append(self.signature(shingles) if shingles else None)  # None: never a dup
        present = [s for s in sigs if s is not None]
        if not present:
            return list(sigs)
        matrix = np.frombuffer(b"".join(present), dtype=np.uint32).reshape(len(present), -1)
        hashes = iter(band_hashes(matrix, self.num_bands, self.num_rows_per_band))
        return [s + next(hashes).tobytes() if s is not None else None for s in sigs]

    def new_index(self) -> DedupIndex:
        return MinHashIndex(self.num_bands, self.num_rows_per_band, self.jaccard_threshold)


class BandTable:
    """A multimap from 32-bit band hashes (nonzero) to kept indices, 8 bytes an entry
    (hash << 32 | index + 1; 0 is empty), in buckets of 16 slots (two cache lines).

    Each hash has two buckets and goes into the emptier one (two choices keep buckets
    even up to high load); a hash whose two buckets are full goes to a small dict. A
    lookup reads the two buckets of each of a sample's bands at once. The table doubles
    at 90% load (entries moved in chunks: the move needs the two tables and little
    else): 9-18 B a band entry.
    """

    SLOTS = 16
    LOW = np.uint64(0xFFFFFFFF)

    def __init__(self, bits: int = 12) -> None:
        self.slots = np.zeros((1 << bits, self.SLOTS), dtype=np.uint64)
        self.used = 0
        self.stash: dict[int, list[int]] = {}

    def _buckets(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mask = np.uint64(len(self.slots) - 1)
        one = hashes & mask
        two = ((hashes * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)) & mask
        two = np.where(two == one, one ^ np.uint64(1), two)  # two different buckets
        return one.astype(np.int64), two.astype(np.int64)

    def find(self, hashes: np.ndarray) -> tuple[list[int], np.ndarray]:
        """(kept indices stored under any of `hashes`, the free slot each hash would take:
        flat slot number, or -1 when both its buckets are full)."""
        b1, b2 = self._buckets(hashes)
        both = self.slots[np.concatenate([b1, b2])]  # (2n, 8)
        again = np.concatenate([hashes, hashes])[:, None]
        found = ((both[(both >> np.uint64(32)) == again] & self.LOW) - np.uint64(1)).tolist()
        if self.stash:
            for h in hashes.tolist():
                found += self.stash.get(h, [])
        empty = both == 0
        free = empty.sum(axis=1)
        n = len(hashes)
        first = empty.argmax(axis=1)
        use2 = free[n:] > free[:n]  # the emptier bucket (the first one on a tie)
        bucket = np.where(use2, b2, b1)
        slot = np.where(use2, first[n:], first[:n])
        room = np.where(use2, free[n:], free[:n]) > 0
        return found, np.where(room, bucket * self.SLOTS + slot, -1)

    def add(self, hashes: np.ndarray, index: int, free: np.ndarray) -> None:
        """Store `index` under each of `hashes`, at the slots `find` returned."""
        if (self.used + len(hashes)) * 10 > self.slots.size * 9:
            self._grow()
            _, free = self.find(hashes)
        entries = (hashes << np.uint64(32)) | np.uint64(index + 1)
        flat = self.slots.reshape(-1)
        if (free >= 0).all() and len(set(free.tolist())) == len(free):
            flat[free] = entries
        else:  # two bands want one slot, or a full pair of buckets (rare): one at a time
            for entry, h in zip(entries, hashes):
                _, at = self.find(h[None])
                if at[0] >= 0:
                    flat[at[0]] = entry
                else:
                    self.stash.setdefault(int(h), []).append(index)
        self.used += len(hashes)

    def extend(self, hashes: np.ndarray, indices: np.ndarray) -> None:
        """Store indices[i] under each hash of row hashes[i] (n, bands), all at once."""
        while (self.used + hashes.size) * 10 > self.slots.size * 9:
            self._grow()
        idx = np.repeat(indices.astype(np.uint64) + np.uint64(1), hashes.shape[1])
        self._bulk((hashes.reshape(-1) << np.uint64(32)) | idx)
        self.used += hashes.size

    def _grow(self) -> None:
        old = self.slots.reshape(-1)
        self.slots = np.zeros((2 * len(self.slots), self.SLOTS), dtype=np.uint64)
        chunk = 1 << 18
        for lo in range(0, len(old), chunk):
            entries = old[lo : lo + chunk]
            self._bulk(entries[entries != 0])
        del old

    def _bulk(self, entries: np.ndarray, chunk: int = 1 << 15) -> None:
        """Insert entries in rounds: each takes a free slot of its emptier bucket, one entry
        per bucket a round; both buckets full: the stash. In chunks (bounded temporaries)."""
        for lo in range(0, len(entries), chunk):
            self._bulk_chunk(entries[lo : lo + chunk])

    def _bulk_chunk(self, entries: np.ndarray) -> None:
        flat = self.slots.reshape(-1)
        while entries.size:
            hashes = entries >> np.uint64(32)
            b1, b2 = self._buckets(hashes)
            free1 = (self.slots[b1] == 0).sum(axis=1)
            free2 = (self.slots[b2] == 0).sum(axis=1)
            use2 = free2 > free1
            bucket = np.where(use2, b2, b1)
            room = np.maximum(free1, free2) > 0
            for i in np.flatnonzero(~room).tolist():
                self.stash.setdefault(int(hashes[i]), []).append(int(entries[i] & self.LOW) - 1)
            entries, bucket = entries[room], bucket[room]
            _, first = np.unique(bucket, return_index=True)  # one per bucket this round
            slot = (self.slots[bucket[first]] == 0).argmax(axis=1)
            flat[bucket[first] * self.SLOTS + slot] = entries[first]
            rest = np.ones(len(entries), dtype=bool)
            rest[first] = False
            entries = entries[rest]


class MinHashIndex(DedupIndex):
    """Banded LSH over kept signatures; candidates verified by estimated Jaccard.

    Memory per kept caption: one 8-byte slot per band in a `BandTable` (at 45-90% load)
    and the 8-byte offset of its record; 25 bands (the default): ~230-450 B. The full
    signatures (4 B a permutation), input ordinals and ids go to an unlinked temporary
    file (in TMPDIR, ~1 KiB a kept caption) and are read back only for band collisions.
    A candidate must share a whole band (checked on the signatures, so a 32-bit band
    hash collision never counts) and reach the Jaccard estimate: the same decisions as
    holding every signature in memory.
    """

    def __init__(self, bands: int, rows: int, threshold: float) -> None:
        self.bands, self.rows, self.threshold = bands, rows, threshold
        self.table = BandTable()
        self.offsets = np.zeros(1024, dtype=np.int64)  # record i at offsets[i]..[i + 1]
        self.count = 0
        self.file = tempfile.TemporaryFile(prefix="dj-minhash-")  # gone when closed
        self.pending = bytearray()  # records not yet written
        self.written = 0
        self.sig_bytes = 0

    def __del__(self) -> None:
        file = getattr(self, "file", None)
        if file is not None:
            file.close()

    def buckets(self, key: Hashable | None) -> list[Hashable]:
        if key is None:
            return []
        width = self.rows * 4
        return [(i, key[i * width : (i + 1) * width]) for i in range(self.bands)]  # type: ignore[index]

    def admit(self, key: Hashable | None, ref: SampleRef, sample_id: Any) -> str | None:
        if key is None:
            return None
        split = len(key) - 8 * self.bands  # type: ignore[arg-type]
        sig = np.frombuffer(key, dtype=np.uint32, count=split // 4)  # type: ignore[arg-type]
        hashes = np.frombuffer(key, dtype=np.uint64, offset=split)  # type: ignore[arg-type]
        candidates, free = self.table.find(hashes)
        if candidates:
            mine = sig[: self.bands * self.rows].reshape(self.bands, self.rows)
            for index in sorted(set(candidates)):  # the earliest kept sample first
                kept, ordinal, who = self._record(int(index))
                shared = kept[: self.bands * self.rows].reshape(self.bands, self.rows) == mine
                if not shared.all(axis=1).any():
                    continue  # a 32-bit band hash collision, not a shared band
                jaccard = float((kept == sig).mean())
                if jaccard >= self.threshold:
                    who = f"id={who} " if who else ""
                    return f"near-duplicate of {who}(input sample #{ordinal}), estimated jaccard {jaccard:.2f}"
        self._keep(sig, ref.ordinal, sample_id)
        self.table.add(hashes, self.count - 1, free)
        return None

    def _keep(self, sig: np.ndarray, ordinal: int, sample_id: Any) -> None:
        if self.count + 1 >= len(self.offsets):
            self.offsets = np.resize(self.offsets, 2 * len(self.offsets))
        who = repr(sample_id).encode() if sample_id is not None else b""
        self.sig_bytes = sig.nbytes  # the same for every key of one operator
        record = sig.tobytes() + ordinal.to_bytes(8, "little", signed=True) + who
        self.pending += record
        self.offsets[self.count + 1] = self.offsets[self.count] + len(record)
        self.count += 1
        if len(self.pending) >= 1 << 20:
            self._flush()

    def _flush(self) -> None:
        self.file.write(self.pending)
        self.file.flush()
        self.written += len(self.pending)
        self.pending = bytearray()

    def _record(self, index: int) -> tuple[np.ndarray, int, str]:
        """(signature, input ordinal, repr of the id or "") of kept sample `index`."""
        lo, hi = int(self.offsets[index]), int(self.offsets[index + 1])
        if hi > self.written:
            self._flush()
        data = os.pread(self.file.fileno(), hi - lo, lo)
        size = self.sig_bytes
        sig = np.frombuffer(data[:size], dtype=np.uint32)
        ordinal = int.from_bytes(data[size : size + 8], "little", signed=True)
        return sig, ordinal, data[size + 8 :].decode()
