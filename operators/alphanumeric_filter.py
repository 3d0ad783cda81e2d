"""alphanumeric_filter: keep samples whose alphanumeric ratio is within bounds."""

from __future__ import annotations

import re
import sys
from typing import Any

from .base import RangeFilter
from .batch import Batch
from .models import ModelOp, load_hf_processor
from .registry import register
from .token_num_filter import resolve_tokenizer_path

# re's \w on str is exactly `c.isalnum() or c == "_"`, so deleting [\W_] leaves
# the characters for which str.isalnum() is true, counted in C.
_NOT_ALNUM = re.compile(r"[\W_]+")
DJ_TOKENIZER = "EleutherAI/pythia-6.9b-deduped"  # fixed in Data-Juicer


@register("alphanumeric_filter")
class AlphanumericFilter(ModelOp, RangeFilter):
    """Stat `alnum_ratio` = characters with `str.isalnum()` / `len(text)` (0.0 for empty text).

    `isalnum` is Unicode-aware: CJK characters, accented letters and Unicode
    digits count. With `tokenization: true` the stat is Data-Juicer's
    `alpha_token_ratio` = characters with `str.isalpha()` (letters only, no digits)
    / tokens of the Hugging Face tokenizer EleutherAI/pythia-6.9b-deduped, special
    tokens not added (0.0 with no token): letters per token, so it can exceed 1.
    The tokenizer loads offline, from a local folder or the Hugging Face cache;
    `hf_tokenizer` (ours) names another, and a missing one fails the recipe before work.
    """

    stats_key = "alnum_ratio"
    stats_keys = ("alnum_ratio", "alpha_token_ratio")  # this instance's one is set in __init__
    min_arg, max_arg = "min_ratio", "max_ratio"
    fork_safe = True  # a tokenizer, no torch state

    def __init__(
        self,
        tokenization: bool = False,
        min_ratio: float = 0.25,
        max_ratio: float = sys.maxsize,
        hf_tokenizer: str = DJ_TOKENIZER,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.tokenization = tokenization
        self.min_ratio = min_ratio
        self.max_ratio = max_ratio
        self.hf_tokenizer = hf_tokenizer
        self.stats_key = "alpha_token_ratio" if tokenization else "alnum_ratio"
        self.stats_keys = (self.stats_key,)
        self.tokenizer_path = (
            resolve_tokenizer_path(hf_tokenizer, self.name) if tokenization else None
        )

    def load_model(self, device: str) -> Any:
        if self.tokenizer_path is None:
            return None  # character ratio: nothing to load
        return load_hf_processor(self.tokenizer_path)  # Data-Juicer's AutoProcessor

    def compute(self, batch: Batch) -> list[float]:
        texts = list(batch.texts)
        if not self.tokenization:
            sub = _NOT_ALNUM.sub
            return [len(sub("", t)) / len(t) if t else 0.0 for t in texts]
        if not texts:
            return []
        self.setup()  # (a no-op once the executor has prepared this worker)
        # Token ids without special tokens: as many as `tokenizer.tokenize(text)` pieces.
        ids = self._model(texts, add_special_tokens=False)["input_ids"]
        return [
            sum(map(str.isalpha, text)) / len(row) if row else 0.0 for text, row in zip(texts, ids)
        ]
