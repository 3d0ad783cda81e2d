"""flagged_words_filter: keep samples whose share of flagged (obscene) words is within bounds."""

from __future__ import annotations

from .registry import register
from .word_lists import WordListRatioFilter


@register("flagged_words_filter")
class FlaggedWordFilter(WordListRatioFilter):
    """Stat `flagged_words_ratio` = refined words in the flagged list / refined words.

    Words as Data-Juicer splits and refines them (`words.py`: whitespace or
    SentencePiece pieces, lower-cased, special characters stripped from the ends,
    plus joined groups with `use_words_aug`); 0.0 for a text without words. The list
    is `lang`'s ('all' = every language); by default the lists shipped with dj-synth
    (LDNOOBW, 28 languages, see operators/wordlists/README.md), or Data-Juicer's
    `flagged_words*.json` files in `flagged_words_dir`. Unlike Data-Juicer (KeyError
    on every sample), a `lang` without a list fails the recipe at once.
    `tokenization: true` needs Data-Juicer's `{lang}.sp.model` (or `sp_model`).
    """

    words_type = "flagged_words"
    stats_key = "flagged_words_ratio"
    stats_keys = ("flagged_words_ratio",)

    def __init__(
        self,
        lang: str = "en",
        tokenization: bool = False,
        min_ratio: float = 0.0,
        max_ratio: float = 0.045,
        flagged_words_dir: str | None = None,
        use_words_aug: bool = False,
        words_aug_group_sizes: list[int] = [2],  # noqa: B006 (Data-Juicer's default, never mutated)
        words_aug_join_char: str = "",
        sp_model: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.min_ratio, self.max_ratio = min_ratio, max_ratio
        self.flagged_words_dir = flagged_words_dir
        self._init_words(
            lang, tokenization, flagged_words_dir, "flagged_words_dir", use_words_aug,
            words_aug_group_sizes, words_aug_join_char, sp_model,
        )  # fmt: skip
