"""whitespace_normalization_mapper: strip the text and turn odd whitespace into plain spaces."""

from __future__ import annotations

import re

from .base import Mapper
from .batch import Batch
from .registry import register

# Data-Juicer's VARIOUS_WHITESPACES, exactly: U+0084 (not U+0085) is in it, and
# '\n', '\r', '\v', '\f', U+0085, U+2028 and U+2029 are not.
VARIOUS_WHITESPACES = frozenset(
    " \t\x84\xa0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u200b\u200c\u200d\u202f\u205f\u2060\u3000\ufffc"
)
_OTHER_WHITESPACE = re.compile("[" + "".join(sorted(VARIOUS_WHITESPACES)) + "]")


def normalize_whitespace(text: str) -> str:
    text = text.strip()
    if text.isascii():  # only ' ' and '\t' of the set are ASCII
        return text.replace("\t", " ")
    return _OTHER_WHITESPACE.sub(" ", text)


@register("whitespace_normalization_mapper")
class WhitespaceNormalizationMapper(Mapper):
    """Text = `text.strip()`, then each of 23 whitespace-like characters becomes one space.

    As in Data-Juicer: runs are not collapsed, and newlines are kept (its
    docstring says otherwise, its code does not touch them). The set includes the
    zero-width characters U+200B/C/D, U+2060, U+FFFC and U+0084.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)

    def process(self, batch: Batch) -> Batch:
        batch.texts = [normalize_whitespace(text) for text in batch.texts]
        return batch
