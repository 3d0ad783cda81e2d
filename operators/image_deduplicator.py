"""image_deduplicator: drop samples whose images (optionally with text) repeat an earlier one's."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Literal

import imagehash
import numpy as np

from .base import DedupIndex, Deduplicator, ExactIndex
from .batch import Batch, special_tokens
from .document_deduplicator import checked_texts, text_hashes
from .hamming_index import HammingIndex
from .image_fingerprint import (
    DECODE_SIDE,
    low_frequencies,
    phash_hex,
    thumbnail,
    thumbnail_distance,
)
from .registry import register

# dHash / wHash / aHash (imagehash, on a PIL image) decode at >= 64 px: they resize to
# 8x8 .. 64x64 anyway. pHash has its own decode side (image_fingerprint.DECODE_SIDE).
HASH_SIDE = 64

_HASHERS = {
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

    Data-Juicer hashes with `imagededup` on the full decode. Our pHash
    (`image_fingerprint`) takes the same 8x8 lowest DCT frequencies of the luma, but of
    the image itself rather than of a 32x32 resize of one decode, from a JPEG decoded at
    >= 32 px a side: twice as fast, and more copies of an image get the very same hash
    (measured in `image_fingerprint`). dHash, aHash and wHash are imagehash's on a decode
    of >= 64 px (our wHash uses a fixed 64 px scale so the hash does not depend on the
    decode size). None is bit-identical to Data-Juicer's (imagededup's pHash median
    skips the DC term, its wHash works at 256 px and keeps the LL band), so borderline
    pairs may be judged differently.

    `hamming_threshold` (ours): 0 is Data-Juicer's exact matching; t > 0 makes a
    sample a duplicate of an earlier kept sample whose image hashes (same count,
    in order) each differ in at most t bits (multi-index hashing, no all-pairs
    comparison) AND, unless `max_thumbnail_distance` is None, whose 8x8 colour
    thumbnails confirm it (`thumbnail_distance` at most that, for every image): a
    hash alone puts distinct flat images (a gradient and a few shapes) within 4-8
    bits. The filtered record gives both values.
    """

    def __init__(
        self,
        method: Literal["phash", "dhash", "whash", "ahash"] = "phash",
        consider_text: bool = False,
        hamming_threshold: int = 0,
        max_thumbnail_distance: float | None = 1.4,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if method != "phash" and method not in _HASHERS:
            raise ValueError(f"method must be phash, dhash, whash or ahash, not {method!r}")
        if not 0 <= hamming_threshold < 64:
            raise ValueError(f"hamming_threshold must be in 0..63 bits, got {hamming_threshold}")
        if max_thumbnail_distance is not None and not max_thumbnail_distance > 0:
            raise ValueError(
                f"max_thumbnail_distance must be positive (or null to trust the hash alone), "
                f"got {max_thumbnail_distance}"
            )
        self.method = method
        self.consider_text = consider_text
        self.hamming_threshold = hamming_threshold
        self.max_thumbnail_distance = max_thumbnail_distance
        self.verifies = hamming_threshold > 0 and max_thumbnail_distance is not None

    def new_index(self) -> DedupIndex:
        if self.hamming_threshold == 0:
            return ExactIndex()
        verify = self._verify if self.verifies else None
        return HammingIndex(self.hamming_threshold, with_extra=self.consider_text, verify=verify)

    def _verify(self, kept: tuple[bytes, ...], new: tuple[bytes, ...]) -> tuple[bool, str]:
        distance = max(thumbnail_distance(a, b) for a, b in zip(kept, new))
        ok = distance <= self.max_thumbnail_distance  # type: ignore[operator]
        return ok, f"thumbnail distance {distance:.2f}"

    def _hash_paths(self, batch: Batch, paths: list[str]) -> dict[str, tuple[str, bytes]]:
        """path -> (hex hash, thumbnail bytes or b"") for each distinct path of the batch."""
        media = batch.ctx.media
        side = DECODE_SIDE if self.method == "phash" else HASH_SIDE
        decoded = [media.reduced(path, side) for path in paths]
        if self.method == "phash":
            hashes = phash_hex(np.array([low_frequencies(img) for img in decoded]))
        else:
            hashes = [str(_HASHERS[self.method](media.small(path, side))) for path in paths]
        thumbs = [thumbnail(img) for img in decoded] if self.verifies else [b""] * len(paths)
        return {p: (h, t) for p, h, t in zip(paths, hashes, thumbs)}

    def compute_hash(self, batch: Batch) -> list[Hashable | None]:
        hashed = self._hash_paths(batch, list(dict.fromkeys(p for ps in batch.images for p in ps)))
        keys: list[Hashable | None] = []
        images: list[tuple[str, ...]] = []
        for paths in batch.images:
            distinct = tuple(dict.fromkeys(paths))
            images.append(distinct)
            keys.append(tuple(hashed[p][0] for p in distinct) if distinct else None)
        texts = (
            text_hashes(checked_texts(batch), special_tokens(self, batch))
            if self.consider_text
            else [None] * len(keys)
        )
        if self.verifies:
            return [
                (k or (), t, tuple(hashed[p][1] for p in distinct))
                if k is not None or self.consider_text
                else None
                for k, t, distinct in zip(keys, texts, images)
            ]
        if not self.consider_text:
            return keys
        return [(k or (), t) for k, t in zip(keys, texts)]
