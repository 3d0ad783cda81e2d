"""Words as Data-Juicer's word-based filters see them (its `ops/common/helper_func.py`).

A document is split on ' ', '\\n' and '\\t' only (empty pieces dropped), or into
SentencePiece pieces with `tokenization: true`. Filters then lower-case each word,
strip Data-Juicer's special characters from both ends, drop words left empty and,
with `use_words_aug`, append the joined groups of consecutive words (for Chinese
and Vietnamese, whose words span several tokens).
"""

from __future__ import annotations

import re
from typing import Any

from .dj_model_files import require_dj_model
from .special_characters_filter import SPECIAL_CHARACTERS

# str.strip with every special character is Data-Juicer's `strip(word, SPECIAL_CHARACTERS)`.
_SPECIAL_STRIP = "".join(sorted(SPECIAL_CHARACTERS))
_WHITESPACE = re.compile("[ \n\t]")


def split_words(text: str) -> list[str]:
    """Data-Juicer's `split_on_whitespace(text, new_line=True, tab=True)`."""
    return [w for w in _WHITESPACE.split(text) if w]


def refine_words(
    words: list[str],
    use_words_aug: bool = False,
    words_aug_group_sizes: list[int] | tuple[int, ...] = (2,),
    words_aug_join_char: str = "",
) -> list[str]:
    """Data-Juicer's `words_refinement(words, lower_case=True, strip_chars=SPECIAL_CHARACTERS, ...)`.

    Lower-case first, then strip (the order matters for the few letters in the
    special set, e.g. Cyrillic 'Г' stays as 'г').
    """
    out = [w for w in (word.lower().strip(_SPECIAL_STRIP) for word in words) if w]
    if use_words_aug:
        join = words_aug_join_char.join
        out = out + [
            join(out[i : i + size])
            for size in words_aug_group_sizes
            for i in range(len(out) - size + 1)
        ]
    return out


def check_group_sizes(op: str, sizes: list[int]) -> None:
    """Data-Juicer types `words_aug_group_sizes` as a list of positive ints."""
    if not sizes or any(not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(f"{op}: words_aug_group_sizes must be positive integers, got {sizes!r}")


class WordSplitter:
    """Whitespace words, or the pieces of Data-Juicer's SentencePiece model `{lang}.sp.model`.

    The model file is found the way Data-Juicer finds it (see `dj_model_files`) when the
    operator is built, so a missing file fails the recipe before any work; it is loaded
    on first use in each worker and never pickled.
    """

    def __init__(self, op: str, lang: str, tokenization: bool, sp_model: str | None = None):
        self.tokenization = tokenization
        self.sp_path = (
            require_dj_model(f"{lang}.sp.model", op, "SentencePiece", sp_model, "sp_model")
            if tokenization
            else None
        )
        if tokenization:
            _sentencepiece()  # not installed: the recipe fails now, not in a worker
        self._sp: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_sp": None}

    def words(self, text: str) -> list[str]:
        if self.sp_path is None:
            return split_words(text)
        return self._processor().encode_as_pieces(text)

    def words_of(self, texts: list[str]) -> list[list[str]]:
        """`words` of each text; SentencePiece encodes the whole list in one call."""
        if self.sp_path is None:
            return [split_words(text) for text in texts]
        return self._processor().encode(list(texts), out_type=str)

    def _processor(self) -> Any:
        if self._sp is None:
            self._sp = load_sentencepiece(self.sp_path)
        return self._sp


def _sentencepiece() -> Any:
    try:
        import sentencepiece
    except ImportError:
        raise ImportError(
            "SentencePiece models need the sentencepiece package: pip install sentencepiece "
            "(or pip install 'dj-synth[models]')"
        ) from None
    return sentencepiece


def load_sentencepiece(path: str) -> Any:
    processor = _sentencepiece().SentencePieceProcessor()
    processor.load(path)
    return processor
