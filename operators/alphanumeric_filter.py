"""alphanumeric_filter: keep samples whose alphanumeric ratio is within bounds."""

from __future__ import annotations

import re
import sys

from .base import RangeFilter
from .batch import Batch
from .registry import register

# re's \w on str is exactly `c.isalnum() or c == "_"`, so deleting [\W_] leaves
# the characters for which str.isalnum() is true, counted in C.
_NOT_ALNUM = re.compile(r"[\W_]+")


@register("alphanumeric_filter")
class AlphanumericFilter(RangeFilter):
    """Stat `alnum_ratio` = characters with `str.isalnum()` / `len(text)` (0.0 for empty text).

    `isalnum` is Unicode-aware: CJK characters, accented letters and Unicode
    digits count. Data-Juicer's `tokenization=True` mode (stat `alpha_token_ratio`,
    letters per token of the downloaded EleutherAI/pythia-6.9b-deduped tokenizer)
    cannot run offline, so it is rejected with an error.
    """

    stats_key = "alnum_ratio"
    stats_keys = ("alnum_ratio",)
    min_arg, max_arg = "min_ratio", "max_ratio"

    def __init__(
        self,
        tokenization: bool = False,
        min_ratio: float = 0.25,
        max_ratio: float = sys.maxsize,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if tokenization:
            raise ValueError(
                "alphanumeric_filter: tokenization=True needs the Hugging Face tokenizer "
                "EleutherAI/pythia-6.9b-deduped, which dj-synth cannot download; use "
                "tokenization=False (stat alnum_ratio)"
            )
        self.tokenization = tokenization
        self.min_ratio = min_ratio
        self.max_ratio = max_ratio

    def compute(self, batch: Batch) -> list[float]:
        sub = _NOT_ALNUM.sub
        return [len(sub("", t)) / len(t) if t else 0.0 for t in batch.texts]
