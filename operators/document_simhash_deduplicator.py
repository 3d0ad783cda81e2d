"""document_simhash_deduplicator: drop texts whose SimHash is within a few bits of an earlier one's."""

from __future__ import annotations

import hashlib
from collections.abc import Hashable
from typing import Any, Literal

import numpy as np
import regex

from .base import DedupIndex, Deduplicator
from .batch import Batch, special_tokens
from .document_deduplicator import checked_texts
from .document_minhash_deduplicator import _PUNCT_SPLIT  # the same words as minhash's
from .hamming_index import BITS, HammingIndex
from .registry import register


@register("document_simhash_deduplicator")
class DocumentSimhashDeduplicator(Deduplicator):
    """Key: the 64-bit SimHash of the text's word (or character) n-grams, as 16 hex digits;
    a sample within `hamming_distance` bits of an earlier kept sample is its duplicate.

    SimHash as Data-Juicer (simhash-pybind): each shingle hashes to the first 8 bytes
    of its md5 read big-endian, and bit i of the SimHash is set iff more than half of
    the shingles' hashes have it set; repeated shingles count each time. Arguments and
    defaults are Data-Juicer's; `num_blocks` is the number of blocks of the
    multi-index lookup (more blocks: more candidates, the same result).

    Deviations, as in `document_minhash_deduplicator` (same tokens, so the two agree on
    what a text is): the special tokens are removed first (left in, they make
    unrelated short captions alike); a text shorter than `window_size` tokens is one
    shingle of all its tokens (Data-Juicer hashes it to 0, so all short texts
    collide); a text without tokens (e.g. only special tokens) has no key and is never
    a duplicate; `space` splits on any whitespace (Data-Juicer: on ' ' only) and
    `punctuation` on runs of non-word characters (Data-Juicer: at each punctuation
    mark, spaces kept inside the pieces).

    Keep decision (ours): Data-Juicer keeps one sample per connected component of the
    "within distance" graph, so chains drop far samples (A~B~C drops C even when C is
    far from A). We keep the first sample in input order (or by `keep_policy`) and drop
    a later one only if it is within the distance of a kept sample; the filtered
    record names that sample and the distance.
    """

    def __init__(
        self,
        tokenization: Literal["space", "punctuation", "character"] = "space",
        window_size: int = 6,
        lowercase: bool = True,
        ignore_pattern: str | None = None,
        num_blocks: int = 6,
        hamming_distance: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if tokenization not in ("space", "punctuation", "character"):
            raise ValueError(
                f"tokenization must be space, punctuation or character, not {tokenization!r}"
            )
        if window_size < 1:
            raise ValueError(f"window_size must be positive, got {window_size}")
        if hamming_distance < 1 or num_blocks < 1:
            raise ValueError(
                f"hamming_distance ({hamming_distance}) and num_blocks ({num_blocks}) "
                "must be positive"
            )
        if not hamming_distance < num_blocks <= BITS:
            raise ValueError(
                f"hamming_distance ({hamming_distance}) must be less than num_blocks "
                f"({num_blocks}), and num_blocks at most {BITS}: two hashes within the "
                "distance must agree on at least one block"
            )
        self.tokenization, self.window_size, self.lowercase = tokenization, window_size, lowercase
        self.ignore_pattern = regex.compile(ignore_pattern) if ignore_pattern else None
        self.num_blocks, self.hamming_distance = num_blocks, hamming_distance

    def shingles(self, text: str) -> list[str]:
        """The text's n-grams in order (repeats kept); [] for a text without tokens."""
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
        w = min(self.window_size, len(tokens))
        return [sep.join(tokens[i : i + w]) for i in range(len(tokens) - w + 1)] if w else []

    def compute_hash(self, batch: Batch) -> list[Hashable | None]:
        tokens = [t for t in special_tokens(self, batch) if t]
        per_text = []
        for text in checked_texts(batch):
            for token in tokens:
                text = text.replace(token, " ")
            per_text.append(self.shingles(text))
        hashed = [i for i, s in enumerate(per_text) if s]
        keys: list[Hashable | None] = [None] * len(per_text)
        if not hashed:
            return keys
        md5 = hashlib.md5
        digests = b"".join(md5(s.encode()).digest()[:8] for i in hashed for s in per_text[i])
        # one row of 64 bits per shingle, most significant first (the digest read big-endian)
        bits = np.unpackbits(np.frombuffer(digests, dtype=np.uint8).reshape(-1, 8), axis=1)
        sizes = np.array([len(per_text[i]) for i in hashed])
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        ones = np.add.reduceat(bits, starts, axis=0, dtype=np.int64)  # set bits per text
        packed = np.packbits(2 * ones > sizes[:, None], axis=1)  # majority bit, 8 bytes a text
        for i, row in zip(hashed, packed):
            keys[i] = (row.tobytes().hex(),)
        return keys

    def new_index(self) -> DedupIndex:
        return HammingIndex(self.hamming_distance, num_blocks=self.num_blocks)
