"""pHash and colour thumbnail of an image, both from one small decode, for image dedup.

pHash takes the 8x8 lowest DCT frequencies of an image's luma and sets a bit for each
one above their median. imagehash computes them on a 32x32 LANCZOS resize of whatever
decode it is given, so the bits depend on the decode size: a JPEG original decoded at
1/8 and its PNG copy decoded in full, or a photo and its 2x resize, often differ. Here
the same frequencies are computed as projections onto the cosines of the IMAGE's axes,
each decoded pixel weighted by the part of the image it covers (`media.Axis`; a JPEG
decoded at 1/8 averages 8x8 blocks, so its low frequencies are those of the full image).
Measured by `bench/hash_speed.py` (2026-11-30, planted copies of 2,000 photo-like
originals): exact-hash (t=0) matches of JPEG re-encodes / PNG copies / 0.5-2x resizes
78% / 98% / 80%, against 79% / 83% / 70% with imagehash's definition on a 64 px decode
(all of them within 8 bits either way); and decoding at 32 px, with no resize, roughly
halves the time per image (the decode's entropy step is what remains, ~0.4 ms).

The thumbnail (8x8 RGB, each cell the mean colour of one eighth of each axis) is the
second, independent signal that confirms a near-duplicate (`thumbnail_distance`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .media import Axis, Reduced

DECODE_SIDE = 32  # JPEGs decode at the smallest DCT scale that keeps both sides >= this
LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601, as PIL's convert("L") and JPEG's Y
NOISE = 1e-6  # |coefficient| below this (grey levels) is floating-point noise: 0


@lru_cache(maxsize=8192)
def _cosines(n: int, axis: Axis) -> np.ndarray:
    """(8, n): the 8 lowest DCT-II cosines of the full axis at each decoded pixel's
    centre, times the share of the axis that pixel covers."""
    left, right = axis.extents(n)
    k = np.arange(8)[:, None]
    return np.cos(np.pi * k * (left + right) / (2 * axis.full)) * (right - left) / axis.full


@lru_cache(maxsize=8192)
def _cells(n: int, axis: Axis) -> np.ndarray:
    """(8, n): the share of each of 8 equal cells of the full axis that each decoded pixel
    covers (each row sums to 1)."""
    left, right = axis.extents(n)
    edges = np.arange(9) * (axis.full / 8)
    overlap = np.minimum(right, edges[1:, None]) - np.maximum(left, edges[:-1, None])
    overlap = np.clip(overlap, 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def low_frequencies(img: Reduced) -> np.ndarray:
    """(8, 8) lowest DCT frequencies of the luma, in grey levels (the first is its mean)."""
    h, w = img.pixels.shape[:2]
    return _cosines(h, img.rows) @ (img.pixels @ LUMA) @ _cosines(w, img.cols).T


def phash_hex(lows: np.ndarray) -> list[str]:
    """The 64-bit pHash of each (8, 8) block of `lows` (n, 8, 8): a bit per coefficient
    above the block's median (row-major, first bit most significant), as 16 hex digits."""
    if not len(lows):
        return []
    flat = np.where(np.abs(lows) < NOISE, 0.0, lows).reshape(len(lows), 64)
    bits = flat > np.median(flat, axis=1, keepdims=True)
    return [row.tobytes().hex() for row in np.packbits(bits, axis=1)]


def thumbnail(img: Reduced) -> bytes:
    """8x8 RGB thumbnail, 192 bytes: the mean colour of each cell of an 8x8 grid."""
    h, w = img.pixels.shape[:2]
    by_rows = (_cells(h, img.rows) @ img.pixels.reshape(h, w * 3)).reshape(8, w, 3)
    cells = (by_rows.transpose(0, 2, 1) @ _cells(w, img.cols).T).transpose(0, 2, 1)
    return np.rint(cells).astype(np.uint8).tobytes()  # (8 rows, 8 columns, 3 channels)


def thumbnail_distance(a: bytes, b: bytes) -> float:
    """How different two 8x8 RGB thumbnails look, after evening out brightness and contrast.

    Each thumbnail is normalised to zero mean and unit standard deviation over its 192
    values (std floored at 8 levels, so flat images are not blown up); the distance is the
    largest difference of one value (a cell's channel), or the gap between the two means in
    units of the larger std when that is larger (a black and a white image are not alike).
    Measured (2026-11-30, 320 flat and 120 photo-like originals, 5 variants each, and the
    547 pairs within 10 bits of pHash among 2,000 distinct flat images): re-encodes,
    resizes, PNG copies <= 0.8, colour jitter (+-15% brightness / contrast, +-20%
    saturation) <= 0.8, crops of up to 4% a side <= 1.4 for 98%; the distinct pairs
    >= 1.69. Gray thumbnails or a correlation of colour thumbnails did not separate them.
    Re-measured with these thumbnails (cell means on the 32 px decode; before: PIL's BOX
    resize of the 64 px decode) on 2,000 other flat images: 3 of the 521 distinct pairs
    within 10 bits fall at 1.2-1.37, as with the old thumbnails (two images of one hue
    family whose normalised layouts agree); variants as above (crops <= 1.4 for 99%).
    """
    x = np.frombuffer(a, dtype=np.uint8).astype(np.float64)
    y = np.frombuffer(b, dtype=np.uint8).astype(np.float64)
    mx, my = x.mean(), y.mean()
    sx, sy = max(x.std(), 8.0), max(y.std(), 8.0)
    cells = float(np.abs((x - mx) / sx - (y - my) / sy).max())
    return max(cells, abs(mx - my) / max(sx, sy))
