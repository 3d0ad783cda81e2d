"""document_minhash_deduplicator: drop texts that are near-duplicates of an earlier one (MinHash LSH)."""

from __future__ import annotations

import re
from array import array
from collections.abc import Hashable
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from rensa import RMinHash

from .base import DedupIndex, Deduplicator
from .batch import Batch, SampleRef
from .document_deduplicator import checked_texts, special_tokens
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
        tokens = [t for t in special_tokens(self, batch) if t]
        keys: list[Hashable | None] = []
        for text in checked_texts(batch):
            for token in tokens:
                text = text.replace(token, " ")
            shingles = self.shingles(text)
            keys.append(self.signature(shingles) if shingles else None)  # None: never a dup
        return keys

    def new_index(self) -> DedupIndex:
        return MinHashIndex(self.num_bands, self.num_rows_per_band, self.jaccard_threshold)


class MinHashIndex(DedupIndex):
    """Banded LSH over kept signatures; candidates verified by estimated Jaccard.

    Memory per kept sample: its signature (4 bytes a permutation, in one growing
    array) and one small-int dict entry per band (the band's 64-bit hash -> index).
    """

    def __init__(self, bands: int, rows: int, threshold: float) -> None:
        self.bands, self.rows, self.threshold = bands, rows, threshold
        self.tables: list[dict[int, int | list[int]]] = [{} for _ in range(bands)]
        self.sigs = np.zeros((0, 0), dtype=np.uint32)
        self.count = 0
        self.origin: list[tuple[int, Any]] = []

    def _append(self, sig: np.ndarray) -> int:
        if self.count == len(self.sigs):
            grown = np.zeros((max(1024, 2 * len(self.sigs)), sig.size), dtype=np.uint32)
            if self.count:
                grown[: self.count] = self.sigs[: self.count]
            self.sigs = grown
        self.sigs[self.count] = sig
        self.count += 1
        return self.count - 1

    def buckets(self, key: Hashable | None) -> list[Hashable]:
        if key is None:
            return []
        width = self.rows * 4
        return [(i, key[i * width : (i + 1) * width]) for i in range(self.bands)]  # type: ignore[index]

    def admit(self, key: Hashable | None, ref: SampleRef, sample_id: Any) -> str | None:
        if key is None:
            return None
        sig = np.frombuffer(key, dtype=np.uint32)  # type: ignore[arg-type]
        width = self.rows * 4
        band_keys = [hash(key[i * width : (i + 1) * width]) for i in range(self.bands)]  # type: ignore[index]
        candidates: set[int] = set()
        for table, band in zip(self.tables, band_keys):
            hit = table.get(band)
            if hit is not None:
                candidates.update(hit if isinstance(hit, list) else (hit,))
        for index in sorted(candidates):  # the earliest kept sample first
            jaccard = float((self.sigs[index] == sig).mean())
            if jaccard >= self.threshold:
                ordinal, kept_id = self.origin[index]
                who = f"id={kept_id!r} " if kept_id is not None else ""
                return f"near-duplicate of {who}(input sample #{ordinal}), estimated jaccard {jaccard:.2f}"
        index = self._append(sig)
        self.origin.append((ref.ordinal, sample_id))
        for table, band in zip(self.tables, band_keys):
            hit = table.get(band)
            if hit is None:
                table[band] = index
            elif isinstance(hit, list):
                hit.append(index)
            else:
                table[band] = [hit, index]
        return None
