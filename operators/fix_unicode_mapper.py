"""fix_unicode_mapper: repair mojibake and other broken Unicode in the text with ftfy."""

from __future__ import annotations

import re

import ftfy

from .base import Mapper
from .batch import Batch
from .registry import register

# ASCII text made only of printable characters, tab and newline, without '&'
# (no HTML entity to unescape, no escape sequence, CR or control character) is
# returned unchanged by every ftfy step and every normalization form: skip the
# (slow) ftfy call for it.
_ASCII_NEEDS_FTFY = re.compile(r"[^\t\n\x20-\x25\x27-\x7e]")


def _fix(text: str, normalization: str) -> str:
    if text.isascii() and not _ASCII_NEEDS_FTFY.search(text):
        return text
    return ftfy.fix_text(text, normalization=normalization)


@register("fix_unicode_mapper")
class FixUnicodeMapper(Mapper):
    """Text = `ftfy.fix_text(text, normalization=...)`, all other ftfy fixes at their defaults.

    That includes mojibake repair, HTML unescaping when the text has no '<',
    removal of terminal escapes and control characters, ligature and full-width
    folding, quote uncurling and CRLF to LF, then Unicode normalization
    (`normalization`: NFC, NFKC, NFD or NFKD, case-insensitive; default NFC).
    """

    def __init__(self, normalization: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.normalization = normalization.upper() if normalization else "NFC"
        if self.normalization not in ("NFC", "NFKC", "NFD", "NFKD"):
            raise ValueError(
                f"Normalization mode [{normalization}] is not supported. "
                'Can only be one of ["NFC", "NFKC", "NFD", "NFKD"]'
            )

    def process(self, batch: Batch) -> Batch:
        form = self.normalization
        batch.texts = [_fix(text, form) for text in batch.texts]
        return batch
