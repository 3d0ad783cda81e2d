"""word_repetition_filter: keep samples whose word n-gram repetition ratio is within bounds."""

from __future__ import annotations

from collections import Counter

from .base import RangeFilter
from .batch import Batch
from .registry import register
from .words import WordSplitter, refine_words


def word_rep_ratio(words: list[str], n: int) -> float:
    """Occurrences of the word n-grams seen more than once / all n-grams (0.0 if none)."""
    total = len(words) - n + 1
    if total <= 0:
        return 0.0
    counts = Counter(" ".join(words[i : i + n]) for i in range(total))
    return sum(c for c in counts.values() if c > 1) / total


@register("word_repetition_filter")
class WordRepetitionFilter(RangeFilter):
    """Stat `word_rep_ratio` (BigScience): repeated word `rep_len`-grams / all of them.

    Words as Data-Juicer splits and refines them (`words.py`: on ' ', '\\n', '\\t' or
    SentencePiece pieces, lower-cased, special characters stripped from the ends,
    empty ones dropped); n-grams are consecutive words joined by a space. The stat
    counts every occurrence of each n-gram that occurs more than once ("a b a b a b"
    with rep_len 2: "a b" x3 + "b a" x2 of 5 = 1.0); 0.0 for fewer than `rep_len`
    words. `tokenization: true` needs Data-Juicer's `{lang}.sp.model` (or `sp_model`).
    """

    stats_key = "word_rep_ratio"
    stats_keys = ("word_rep_ratio",)
    min_arg, max_arg = "min_ratio", "max_ratio"

    def __init__(
        self,
        lang: str = "en",
        tokenization: bool = False,
        rep_len: int = 10,
        min_ratio: float = 0.0,
        max_ratio: float = 0.5,
        sp_model: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if rep_len < 1:
            raise ValueError(f"word_repetition_filter: rep_len must be >= 1, got {rep_len}")
        self.lang, self.tokenization, self.rep_len = lang, tokenization, rep_len
        self.min_ratio, self.max_ratio = min_ratio, max_ratio
        self.splitter = WordSplitter(self.name, lang, tokenization, sp_model)

    def compute(self, batch: Batch) -> list[float]:
        words, n = self.splitter.words, self.rep_len
        return [word_rep_ratio(refine_words(words(text)), n) for text in batch.texts]
