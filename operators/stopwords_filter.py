"""stopwords_filter: keep samples whose share of stopwords is within bounds."""

from __future__ import annotations

from .registry import register
from .word_lists import WordListRatioFilter


@register("stopwords_filter")
class StopWordsFilter(WordListRatioFilter):
    """Stat `stopwords_ratio` = refined words in the stopword list / refined words.

    Words as in `flagged_words_filter` (Data-Juicer's splitting and refinement); 0.0
    for a text without words. The list is `lang`'s ('all' = every language); by
    default the lists shipped with dj-synth (stopwords-iso, 58 languages, see
    operators/wordlists/README.md), or Data-Juicer's `stopwords*.json` files in
    `stopwords_dir`. Unlike Data-Juicer (KeyError on every sample), a `lang` without
    a list fails the recipe at once. `tokenization: true` needs Data-Juicer's
    `{lang}.sp.model` (or `sp_model`).
    """

    words_type = "stopwords"
    stats_key = "stopwords_ratio"
    stats_keys = ("stopwords_ratio",)

    def __init__(
        self,
        lang: str = "en",
        tokenization: bool = False,
        min_ratio: float = 0.3,
        max_ratio: float = 1.0,
        stopwords_dir: str | None = None,
        use_words_aug: bool = False,
        words_aug_group_sizes: list[int] = [2],  # noqa: B006 (Data-Juicer's default, never mutated)
        words_aug_join_char: str = "",
        sp_model: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.min_ratio, self.max_ratio = min_ratio, max_ratio
        self.stopwords_dir = stopwords_dir
        self._init_words(
            lang, tokenization, stopwords_dir, "stopwords_dir", use_words_aug,
            words_aug_group_sizes, words_aug_join_char, sp_model,
        )  # fmt: skip
