"""Reading images once per batch, and only as deeply as an operator needs.

Three depths, cheapest first: the file size (a `stat`), the header (width,
height, format; no pixel decode) and the pixels (one shared RGB decode per
image per batch). Operators that want a small picture (hashing) get a JPEG
draft decode at reduced scale (always, so a hash never depends on which other
operators ran). Failures raise `MediaError`, which the executors turn into a
quarantine record for the one sample that holds the bad image.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field, replace

import numpy as np
import simplejpeg
from PIL import Image, ImageFile, ImageOps

# Pixel decodes above this many pixels are refused (a PNG header can claim
# 40000x40000 and ask for gigabytes). Header reads never allocate pixels.
MAX_DECODE_PIXELS = 20_000 * 20_000 // 4

# PIL's own bomb check runs inside Image.open, so it would refuse even the header read of
# a huge image (a shape filter must see its size). It is switched off once, here, for the
# process (never swapped per call: decode threads would race on the global), and
# `decode_rgb`, which every pixel decode in dj-synth goes through, enforces the limit above.
Image.MAX_IMAGE_PIXELS = None

# Truncated files are errors, not silently grey-padded images (Data-Juicer sets
# LOAD_TRUNCATED_IMAGES=True globally; the trainer's own loader would then fail).
ImageFile.LOAD_TRUNCATED_IMAGES = False

_ROTATED_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that swap width and height


class MediaError(Exception):
    """An image that cannot be used: missing, unreadable, not an image, too large."""


@dataclass(frozen=True)
class ImageHeader:
    width: int  # as displayed, i.e. after EXIF orientation
    height: int
    format: str
    mode: str


def _open(path: str) -> Image.Image:
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise MediaError(f"missing image: {path}") from None
    except IsADirectoryError:
        raise MediaError(f"image path is a directory: {path}") from None
    except Exception as exc:  # PIL raises many types for junk input
        raise MediaError(f"not a readable image: {path}: {exc}") from None


def read_header(path: str) -> ImageHeader:
    """Width/height/format from the file header, honouring EXIF rotation; no decode."""
    img = _open(path)
    with img:
        width, height = img.size
        try:
            # PngImageFile.getexif() decodes every pixel when no eXIf chunk comes
            # before IDAT; a PNG header read uses only the EXIF the header holds.
            if img.format == "PNG" and "exif" not in img.info:
                orientation = None
            else:
                orientation = img.getexif().get(0x0112)
        except Exception:
            orientation = None
        if orientation in _ROTATED_ORIENTATIONS:
            width, height = height, width
        return ImageHeader(width, height, img.format or "", img.mode)


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB as a person would see it: EXIF-rotated, alpha over white, 16-bit scaled."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.uint32)
        peak = 65535 if img.mode.startswith("I;16") else max(int(arr.max()), 1)
        img = Image.fromarray((arr * 255 // peak).astype("uint8"), mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def draft_scale(width: int, height: int, side: int) -> int:
    """PIL's JPEG draft rule: the largest of 1/8, 1/4, 1/2, 1 keeping both sides >= `side`."""
    fits = min(width // side, height // side)
    return next((a for a in (8, 4, 2) if fits >= a), 1)


@dataclass(frozen=True)
class Axis:
    """Where the decoded pixels of one image axis lie on the file's full-resolution axis:
    pixel i covers [i * scale, min((i + 1) * scale, full)) -- a JPEG decoded at 1/scale
    ends in a partial pixel unless `full` is a multiple of it -- counted from the far end
    when `reversed` (an EXIF flip or turn put the partial pixel first)."""

    full: int
    scale: int = 1
    reversed: bool = False

    def extents(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(left, right) edges of the n decoded pixels, in full-resolution pixels."""
        left = np.arange(n, dtype=np.float64) * self.scale
        right = np.minimum(left + self.scale, self.full)
        if self.reversed:
            left, right = self.full - right[::-1], self.full - left[::-1]
        return left, right


@dataclass(frozen=True)
class Reduced:
    """An RGB decode (h, w, 3) uint8, as displayed, and where its pixels lie on the image."""

    pixels: np.ndarray
    rows: Axis
    cols: Axis

    @classmethod
    def whole(cls, pixels: np.ndarray) -> Reduced:
        """A decode at full resolution: every pixel is one pixel of the image."""
        return cls(pixels, Axis(pixels.shape[0]), Axis(pixels.shape[1]))


# EXIF orientation -> (transpose, flip rows, flip columns), applied in that order; the same
# pictures as ImageOps.exif_transpose (2 mirror, 3 turn 180, 4 flip, 5 transpose, 6 turn
# 90 clockwise, 7 transverse, 8 turn 90 counter-clockwise).
_EXIF_ORIENT = {
    2: (False, False, True),
    3: (False, True, True),
    4: (False, True, False),
    5: (True, False, False),
    6: (True, False, True),
    7: (True, True, True),
    8: (True, True, False),
}


def _orient(pixels: np.ndarray, rows: Axis, cols: Axis, orientation: object) -> Reduced:
    transpose, flip_rows, flip_cols = _EXIF_ORIENT.get(orientation, (False, False, False))  # type: ignore[arg-type]
    if transpose:
        pixels, rows, cols = pixels.transpose(1, 0, 2), cols, rows
    if flip_rows:
        pixels, rows = pixels[::-1], replace(rows, reversed=not rows.reversed)
    if flip_cols:
        pixels, cols = pixels[:, ::-1], replace(cols, reversed=not cols.reversed)
    return Reduced(np.ascontiguousarray(pixels), rows, cols)


def _reduced_jpeg(path: str, side: int) -> Reduced | None:
    """The reduced JPEG decode PIL's draft gives, pixel for pixel (the same libjpeg-turbo
    scaled IDCT at the same scale), through simplejpeg, which skips PIL's per-file overhead
    (~0.2 ms of ~0.7). None when the file is not an RGB/grey JPEG or libjpeg-turbo refuses
    it: PIL then decides (and names the error)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    if not data.startswith(b"\xff\xd8"):
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colorspace not in ("YCbCr", "Gray", "RGB"):
        return None  # CMYK / YCCK: PIL's conversion
    if width * height > MAX_DECODE_PIXELS:
        raise MediaError(
            f"image too large to decode: {path} is {width}x{height} "
            f"(limit {MAX_DECODE_PIXELS} pixels)"
        )
    a = draft_scale(width, height, side)
    want = (-(-height // a), -(-width // a))
    try:
        arr = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=want[0], min_width=want[1])
    except ValueError:
        return None  # truncated or corrupt: PIL raises the MediaError (or copes as before)
    if arr.shape[:2] != want:
        return None
    orientation = None
    if b"Exif\x00\x00" in data[:65536]:  # APP1 EXIF comes before the image data
        try:
            orientation = Image.open(io.BytesIO(data)).getexif().get(0x0112)
        except Exception:
            orientation = None
    return _orient(arr, Axis(height, a), Axis(width, a), orientation)


def _decode_with_pil(path: str, reduce_to: int | None) -> Image.Image:
    img = _open(path)
    with img:
        if img.width * img.height > MAX_DECODE_PIXELS:
            raise MediaError(
                f"image too large to decode: {path} is {img.width}x{img.height} "
                f"(limit {MAX_DECODE_PIXELS} pixels)"
            )
        try:
            if reduce_to and img.format == "JPEG":
                img.draft("RGB", (reduce_to, reduce_to))
            img.load()  # first frame of animations
            return _to_rgb(img)
        except MediaError:
            raise
        except Exception as exc:
            raise MediaError(f"undecodable image: {path}: {exc}") from None


def decode_rgb(path: str, reduce_to: int | None = None) -> Image.Image:
    """Decode to RGB; with `reduce_to`, JPEGs decode at the smallest DCT scale >= that side."""
    if reduce_to:
        fast = _reduced_jpeg(path, reduce_to)
        if fast is not None:
            return Image.fromarray(fast.pixels)
    return _decode_with_pil(path, reduce_to)


def decode_reduced(path: str, side: int) -> Reduced:
    """`decode_rgb(path, side)` as an array, with where its pixels lie on the image.

    PIL's fallback (CMYK JPEGs, other formats) counts as a whole image: exact for
    formats decoded in full, a small approximation for a reduced CMYK JPEG."""
    fast = _reduced_jpeg(path, side)
    if fast is not None:
        return fast
    return Reduced.whole(np.asarray(_decode_with_pil(path, side)))


_DIGESTS: dict[tuple[str, int, int], str] = {}


def content_digest(path: str) -> str:
    """blake2b of the file's bytes, remembered per (path, size, mtime): what identifies an
    input image wherever it lies (model-output cache keys, sampling seeds)."""
    try:
        st = os.stat(path)
        memo = (path, st.st_size, st.st_mtime_ns)
        digest = _DIGESTS.get(memo)
        if digest is None:
            with open(path, "rb") as fh:
                digest = hashlib.file_digest(fh, "blake2b").hexdigest()
            if len(_DIGESTS) >= 100_000:
                _DIGESTS.clear()
            _DIGESTS[memo] = digest
        return digest
    except FileNotFoundError:
        raise MediaError(f"missing image: {path}") from None
    except OSError as exc:
        raise MediaError(f"unreadable image: {path}: {exc}") from None


# How a complete file ends (trailing padding aside): a truncated download or copy
# lacks it. Cheap to check (one small read at the end of the file).
_TRAILERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82", "GIF": b"\x3b"}


def verify_complete(path: str, image_format: str) -> None:
    """Raise `MediaError` for a truncated JPEG/PNG/GIF without decoding the good ones.

    A file whose end is not its format's trailer is decoded to decide: some
    writers append bytes after the trailer, and those files are fine.
    """
    trailer = _TRAILERS.get(image_format)
    if trailer is None:
        return
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(fh.tell() - 64, 0))
            tail = fh.read().rstrip(b"\x00\r\n\t ")
    except OSError as exc:
        raise MediaError(f"unreadable image: {path}: {exc}") from None
    if not tail.endswith(trailer):
        decode_rgb(path)  # raises "undecodable image: ... truncated" for a cut file


@dataclass
class MediaFacts:
    """What a batch learned about its files without decoding them (sizes, headers): small
    and picklable, so it travels with the batch from ingest to the operators."""

    sizes: dict[str, int] = field(default_factory=dict)
    headers: dict[str, ImageHeader] = field(default_factory=dict)


class MediaCache:
    """Per-batch cache: each image file is stat'ed, header-read and decoded at most once
    (the stat and header once per stage: `facts()` seeds the next cache of the batch)."""

    def __init__(self, known: MediaFacts | None = None) -> None:
        self._sizes: dict[str, int] = dict(known.sizes) if known else {}
        self._headers: dict[str, ImageHeader] = dict(known.headers) if known else {}
        self._rgb: dict[str, Image.Image] = {}
        self._reduced: dict[tuple[str, int], Reduced] = {}
        self._small: dict[tuple[str, int], Image.Image] = {}

    def facts(self) -> MediaFacts:
        return MediaFacts(dict(self._sizes), dict(self._headers))

    def file_size(self, path: str) -> int:
        if path not in self._sizes:
            try:
                self._sizes[path] = os.path.getsize(path)
            except FileNotFoundError:
                raise MediaError(f"missing image: {path}") from None
            except OSError as exc:
                raise MediaError(f"unreadable image: {path}: {exc}") from None
        return self._sizes[path]

    def header(self, path: str) -> ImageHeader:
        if path not in self._headers:
            self._headers[path] = read_header(path)
        return self._headers[path]

    def verify(self, path: str) -> None:
        """Header readable and file complete (see `verify_complete`); no full decode."""
        verify_complete(path, self.header(path).format)

    def rgb(self, path: str) -> Image.Image:
        """The full-resolution RGB decode, shared by every operator in the batch."""
        if path not in self._rgb:
            self._rgb[path] = decode_rgb(path)
        return self._rgb[path]

    def reduced(self, path: str, min_side: int) -> Reduced:
        """The RGB pixels at least `min_side` on each side where the file allows (for
        hashing), with where they lie on the image."""
        # JPEGs decode at a reduced DCT scale; reusing a full decode here would make
        # hashes depend on what other operators did. Other formats decode in full anyway.
        key = (path, min_side)
        if key not in self._reduced:
            if path in self._rgb and self.header(path).format != "JPEG":
                self._reduced[key] = Reduced.whole(np.asarray(self._rgb[path]))
            else:
                self._reduced[key] = decode_reduced(path, min_side)
        return self._reduced[key]

    def small(self, path: str, min_side: int) -> Image.Image:
        """`reduced` as a PIL image."""
        if path in self._rgb and self.header(path).format != "JPEG":
            return self._rgb[path]
        key = (path, min_side)
        if key not in self._small:
            self._small[key] = Image.fromarray(self.reduced(path, min_side).pixels)
        return self._small[key]

    def clear(self) -> None:
        self._sizes.clear()
        self._headers.clear()
        self._rgb.clear()
        self._reduced.clear()
        self._small.clear()
