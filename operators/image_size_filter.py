"""image_size_filter: keep samples whose image files' sizes in bytes are within [min_size, max_size]."""

from __future__ import annotations

from fractions import Fraction
from typing import Literal

from .base import RangeFilter
from .batch import Batch
from .registry import register

# Data-Juicer's units: KB and KiB alike are powers of 1024.
_SHIFTS = {
    "kb": 10, "kib": 10, "mb": 20, "mib": 20, "gb": 30, "gib": 30, "tb": 40, "tib": 40,
    "pb": 50, "pib": 50, "eb": 60, "eib": 60, "zb": 70, "zib": 70, "yb": 80, "yib": 80,
}  # fmt: skip


def size_to_bytes(size: str | int) -> int:
    """Bytes in a size such as "0", "10 KB", "1.5MiB" or 2048 (an int is already bytes).

    As Data-Juicer's `size_to_bytes`: letters form the unit (case-insensitive, KB == KiB
    == 1024 bytes, a bare "B" is an error), other characters than digits are ignored.
    Data-Juicer also drops the decimal point ("1.5MB" -> 15 MiB); we keep it, so
    "1.5MB" is 1.5 MiB = 1572864 bytes (fractions of a byte are floored).
    """
    if isinstance(size, bool):
        raise TypeError(f"size must be a string or an int, not {size!r}")
    if isinstance(size, int):
        return size
    if not isinstance(size, str):
        raise TypeError(f"size must be a string or an int, not {type(size).__name__} {size!r}")
    number = "".join(c for c in size if c.isdigit() or c == ".")
    unit = "".join(c for c in size if c.isalpha()).lower()
    if not any(c.isdigit() for c in number):
        raise ValueError(f"size {size!r} does not contain a number")
    try:
        value = Fraction(number)
    except ValueError:
        raise ValueError(f"size {size!r}: {number!r} is not a number") from None
    if not unit:
        return int(value)
    if unit not in _SHIFTS:
        raise ValueError(
            f"size {size!r}: unknown unit {unit!r} (use KB, MB, GB, TB, PB, EB, ZB, YB "
            "or KiB ... YiB, all powers of 1024; no unit means bytes)"
        )
    return int(value * (1 << _SHIFTS[unit]))


@register("image_size_filter")
class ImageSizeFilter(RangeFilter):
    """Stat `image_sizes`: one file size in bytes per image (a `stat`, no decode).

    Sizes accept Data-Juicer's strings ("10KB", "1TB"; KB means 1024 bytes) or ints
    (bytes). Data-Juicer drops the decimal point ("1.5MB" means 15 MiB there); we
    read it ("1.5MB" is 1.5 MiB). Data-Juicer takes sizes from `image_bytes` when
    a sample carries them; samples here always reference files.
    """

    stats_key = "image_sizes"
    stats_keys = ("image_sizes",)
    min_arg, max_arg = "min_size", "max_size"

    def __init__(
        self,
        min_size: str | int = "0",
        max_size: str | int = "1TB",
        any_or_all: Literal["any", "all"] = "any",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if any_or_all not in ("any", "all"):
            raise ValueError(f"any_or_all must be 'any' or 'all', not {any_or_all!r}")
        self.min_size = size_to_bytes(min_size)
        self.max_size = size_to_bytes(max_size)
        self.any_or_all = any_or_all

    def compute(self, batch: Batch) -> list[list[int]]:
        file_size = batch.ctx.media.file_size
        return [[file_size(p) for p in paths] for paths in batch.images]
