"""punctuation_normalization_mapper: map Unicode punctuation to its ASCII equivalent."""

from __future__ import annotations

import re

from .base import Mapper
from .batch import Batch
from .registry import register

# Data-Juicer's table, verbatim (34 entries), quirks included: FULLWIDTH DIGIT
# ONE maps to '"', only the right single quote is mapped, '—' becomes " - ".
PUNCTUATION_MAP = {
    "，": ",", "。": ".", "、": ",", "„": '"', "”": '"', "“": '"', "«": '"', "»": '"',
    "１": '"', "」": '"', "「": '"', "《": '"', "》": '"', "´": "'", "∶": ":", "：": ":",
    "？": "?", "！": "!", "（": "(", "）": ")", "；": ";", "–": "-", "—": " - ", "．": ". ",
    "～": "~", "’": "'", "…": "...", "━": "-", "〈": "<", "〉": ">", "【": "[", "】": "]",
    "％": "%", "►": "-",
}  # fmt: skip
_PUNCTUATION = re.compile("[" + "".join(PUNCTUATION_MAP) + "]")
_replace = PUNCTUATION_MAP.__getitem__


def normalize_punctuation(text: str) -> str:
    if text.isascii():  # no key of the table is ASCII
        return text
    return _PUNCTUATION.sub(lambda m: _replace(m.group()), text)


@register("punctuation_normalization_mapper")
class PunctuationNormalizationMapper(Mapper):
    """Text with each of 34 Unicode punctuation characters replaced by ASCII (Data-Juicer's table).

    Data-Juicer's table maps FULLWIDTH DIGIT ONE (U+FF11) to '"' (a bug); we keep
    it so outputs match.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)

    def process(self, batch: Batch) -> Batch:
        batch.texts = [normalize_punctuation(text) for text in batch.texts]
        return batch
