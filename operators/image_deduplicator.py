"""image_deduplicator: drop samples whose images (optionally with text) exactly repeat an earlier one's."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Literal

import imagehash

from .base import DedupIndex, Deduplicator, ExactIndex
from .batch import Batch
from .document_deduplicator import checked_texts, special_tokens, text_hashes
from .hamming_index import HammingIndex
from .registry import register

HASH_SIDE = 64  # decode side for hashing: hashes resize to 8x8 .. 64x64 anyway

_HASHERS = {
    "phash": imagehash.phash,  # 32x32 grey, DCT, 8x8 low frequencies vs their median
    "dhash": imagehash.dhash,  # 9x8 grey, horizontal gradient signs
    "whash": lambda img: imagehash.whash(img, image_scale=HASH_SIDE),  # fixed scale, see below
    "ahash": imagehash.average_hash,  # 8x8 grey vs its mean
}


@register("image_deduplicator")
class ImageDeduplicator(Deduplicator):
    """Key: the 64-bit perceptual hashes (hex) of the sample's distinct images, in order.

    As Data-Juicer: a repeated path in one sample counts once, order matters, a
    sample without images is never a duplicate, and duplicates are exact matches
    of the whole key; the first occurrence is kept. With `consider_text` the key
    also holds the text's md5 (as `document_deduplicator` with default arguments,
    special tokens removed), and, as in Data-Juicer, samples without images are
    then deduplicated by their text alone.

    Data-Juicer hashes with `imagededup` on the full decode; we use `imagehash`
    on a reduced decode (JPEG draft, >= 64 px a side). The hashes are not
    bit-identical to Data-Juicer's (imagededup's pHash median skips the DC term,
    its wHash works at 256 px and keeps the LL band; our wHash uses a fixed
    64 px scale so the hash does not depend on the decode size), so borderline
    pairs may be judged differently.

    `hamming_threshold` (ours): 0 is Data-Juicer's exact matching; t > 0 makes a
    sample a duplicate of an earlier kept sample whose image hashes (same count,
    in order) each differ in at most t bits (multi-index hashing, no all-pairs
    comparison; the filtered record gives the distance).
    """

    def __init__(
        self,
        method: Literal["phash", "dhash", "whash", "ahash"] = "phash",
        consider_text: bool = False,
        hamming_threshold: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if method not in _HASHERS:
            raise ValueError(f"method must be one of {sorted(_HASHERS)}, not {method!r}")
        if not 0 <= hamming_threshold < 64:
            raise ValueError(f"hamming_threshold must be in 0..63 bits, got {hamming_threshold}")
        self.method = method
        self.consider_text = consider_text
        self.hamming_threshold = hamming_threshold
        self._hash = _HASHERS[method]

    def new_index(self) -> DedupIndex:
        if self.hamming_threshold == 0:
            return ExactIndex()
        return HammingIndex(self.hamming_threshold, with_extra=self.consider_text)

    def compute_hash(self, batch: Batch) -> list[Hashable | None]:
        small = batch.ctx.media.small
        hasher = self._hash
        seen: dict[str, str] = {}  # path -> hex, shared by the samples of this batch
        keys: list[Hashable | None] = []
        for paths in batch.images:
            hashes = []
            for path in dict.fromkeys(paths):
                h = seen.get(path)
                if h is None:
                    h = seen[path] = str(hasher(small(path, HASH_SIDE)))
                hashes.append(h)
            keys.append(tuple(hashes) if hashes else None)
        if not self.consider_text:
            return keys
        texts = text_hashes(checked_texts(batch), special_tokens(self, batch))
        return [(k or (), t) for k, t in zip(keys, texts)]
