"""words_num_filter: keep samples whose word count is within [min_num, max_num]."""

from __future__ import annotations

import sys

from .base import RangeFilter
from .batch import Batch
from .registry import register
from .special_characters_filter import ASCII_SPECIAL, SPECIAL_CHARACTERS
from .words import WordSplitter

# Data-Juicer splits on ' ', '\n' and '\t' only, strips special characters from
# both ends of each word and drops words that end up empty. So a word counts iff
# it is not made only of special characters (`issuperset` is True for "" too, so
# the empty pieces between separators are not counted either).
_ASCII_DELETE = bytes(b for b in ASCII_SPECIAL if b not in b" \n\t")


def count_words(text: str) -> int:
    """Data-Juicer's `num_words` for `tokenization=False`."""
    if text.isascii():
        # Deleting the ASCII specials other than ' ', '\n', '\t' leaves those three
        # as the only bytes.split() whitespace ('\r', '\v', '\f' are special).
        return len(text.encode().translate(None, _ASCII_DELETE).split())
    return count_refined(text.replace("\n", " ").replace("\t", " ").split(" "))


def count_refined(words: list[str]) -> int:
    """The words left once special characters are stripped from their ends (no lower-casing)."""
    return len(words) - sum(map(SPECIAL_CHARACTERS.issuperset, words))


@register("words_num_filter")
class WordsNumFilter(RangeFilter):
    """Stat `num_words`: whitespace-separated words that are not made only of special characters.

    Words are split on ' ', '\\n' and '\\t' only (as Data-Juicer does); special
    characters (punctuation, digits, emoji, ...) are stripped from word edges and
    words left empty are not counted: "a , b --- 123" has 2 words. With
    `tokenization: true` the words are the pieces of Data-Juicer's SentencePiece model
    `{lang}.sp.model` (found as Data-Juicer finds it, see `dj_model_files`, or given by
    path with `sp_model`, ours), refined the same way: a piece such as "\u2581" counts
    (U+2581 is not special), "," or "1" does not. Words are not lower-cased
    (Data-Juicer's `words_refinement` default here).
    """

    stats_key = "num_words"
    stats_keys = ("num_words",)
    min_arg, max_arg = "min_num", "max_num"

    def __init__(
        self,
        lang: str = "en",
        tokenization: bool = False,
        min_num: int = 10,
        max_num: int = sys.maxsize,
        sp_model: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.lang = lang
        self.tokenization = tokenization
        self.min_num = min_num
        self.max_num = max_num
        self.splitter = WordSplitter(self.name, lang, tokenization, sp_model)

    def compute(self, batch: Batch) -> list[int]:
        if not self.tokenization:
            return [count_words(text) for text in batch.texts]
        return [count_refined(pieces) for pieces in self.splitter.words_of(batch.texts)]
