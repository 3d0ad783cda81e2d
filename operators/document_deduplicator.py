"""document_deduplicator: drop samples whose (normalised) text exactly repeats an earlier sample's."""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Hashable

from .base import Deduplicator
from .batch import MISSING, Batch, special_tokens
from .registry import register

# Data-Juicer: regex.compile(r"\s+|\d+|[<string.punctuation>]") with the `regex` module.
# Its \s is Unicode White_Space; Python's re \s also matches U+001C..U+001F, so those
# are excluded. (\d may differ only for digits newer than Python's Unicode tables.)
NON_CHARACTER = re.compile(r"[^\S\x1c-\x1f]+|\d+|[" + re.escape(string.punctuation) + "]")


def text_hashes(
    texts: list[str],
    tokens: tuple[str, ...],
    lowercase: bool = False,
    ignore_non_character: bool = False,
) -> list[str]:
    """md5 hex of each text with `tokens` removed, then Data-Juicer's normalisation.

    Data-Juicer's order: lower -> remove non-characters -> strip -> md5 of UTF-8.
    """
    md5 = hashlib.md5
    out = texts
    for token in tokens:
        if token:
            out = [t.replace(token, "") for t in out]
    if lowercase:
        out = [t.lower() for t in out]
    if ignore_non_character:
        sub = NON_CHARACTER.sub
        out = [sub("", t) for t in out]
    return [md5(t.strip().encode("utf-8")).hexdigest() for t in out]


def checked_texts(batch: Batch) -> list[str]:
    """The text column; a clear error for a sample whose text is missing or not a string."""
    texts = batch.texts
    for text in texts:
        if not isinstance(text, str):
            what = "missing" if text is MISSING else f"a {type(text).__name__}, not a string"
            raise TypeError(f"text field {batch.ctx.text_key!r} is {what}")
    return texts


@register("document_deduplicator")
class DocumentDeduplicator(Deduplicator):
    """Key: md5 hex of the text after normalisation; the first occurrence is kept.

    Data-Juicer hashes the text as stored, special tokens included; we remove the
    image token (`<__dj__image>`) and the end-of-chunk token (`<|__dj__eoc|>`) first,
    so only the words are compared: captions that differ only in where or how many
    image slots they carry are duplicates. Then as Data-Juicer:
    `lowercase`, `ignore_non_character` (removes whitespace, digits and ASCII
    punctuation), `strip()`, md5. A text empty after all that still has a key:
    identical empty texts are duplicates of each other.
    """

    def __init__(
        self, lowercase: bool = False, ignore_non_character: bool = False, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.lowercase = lowercase
        self.ignore_non_character = ignore_non_character

    def compute_hash(self, batch: Batch) -> list[Hashable | None]:
        texts = checked_texts(batch)
        return text_hashes(
            texts, special_tokens(self, batch), self.lowercase, self.ignore_non_character
        )
