"""token_num_filter: keep samples whose Hugging Face tokenizer token count is within bounds."""

from __future__ import annotations

import os
import sys
from typing import Any

from .base import RangeFilter
from .batch import Batch
from .model_files import _hf_cache_dir
from .models import ModelNotFoundError, ModelOp, quiet_transformers
from .registry import register

_TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model",
    "spiece.model", "sentencepiece.bpe.model",
)  # fmt: skip
_BATCH = 128  # texts per tokenizer call (Data-Juicer's _TOKENIZATION_BATCH_SIZE)


def resolve_tokenizer_path(name_or_path: str, op: str = "token_num_filter") -> str:
    """A local folder holding a Hugging Face tokenizer: the path itself or its HF cache entry.

    Unlike `models.resolve_model_path`, no weights are needed. Nothing is downloaded.
    """
    candidates = [os.path.expanduser(name_or_path)]
    if not os.path.isabs(name_or_path) and name_or_path.count("/") <= 1:
        cached = _hf_cache_dir(name_or_path)
        if cached:
            candidates.append(cached)
    for path in candidates:
        if os.path.isdir(path) and any(
            os.path.exists(os.path.join(path, f)) for f in _TOKENIZER_FILES
        ):
            return path
    raise ModelNotFoundError(
        f"tokenizer {name_or_path!r} not found (tried: {', '.join(candidates)}; nothing is "
        f"downloaded; a folder needs one of {', '.join(_TOKENIZER_FILES)}). On a machine with "
        f"internet: `hf download {name_or_path} --include 'tokenizer*' '*.json' '*.txt' "
        f"'*.model' --local-dir /models/{os.path.basename(name_or_path.rstrip('/'))}`, copy the "
        f"folder here and set {op}.hf_tokenizer to it."
    )


@register("token_num_filter")
class TokenNumFilter(ModelOp, RangeFilter):
    """Stat `num_token`: tokens of `hf_tokenizer` for the text, special tokens not added.

    As Data-Juicer 1.6.1 (`tokenizer(texts, add_special_tokens=False)`); the tokenizer
    loads offline, from a local folder or the Hugging Face cache, and a missing one
    fails the recipe before any work. `trust_remote_code` (ours) stays off unless set.
    """

    stats_key = "num_token"
    stats_keys = ("num_token",)
    min_arg, max_arg = "min_num", "max_num"
    fork_safe = True  # a tokenizer, no torch state

    def __init__(
        self,
        hf_tokenizer: str = "EleutherAI/pythia-6.9b-deduped",
        min_num: int = 10,
        max_num: int = sys.maxsize,
        trust_remote_code: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hf_tokenizer = hf_tokenizer
        self.min_num, self.max_num = min_num, max_num
        self.trust_remote_code = trust_remote_code
        self.tokenizer_path = resolve_tokenizer_path(hf_tokenizer)

    def load_model(self, device: str) -> Any:
        from transformers import AutoTokenizer

        quiet_transformers()
        return AutoTokenizer.from_pretrained(
            self.tokenizer_path, local_files_only=True, trust_remote_code=self.trust_remote_code
        )

    def compute(self, batch: Batch) -> list[int]:
        self.setup()
        texts = batch.texts
        counts: list[int] = []
        for i in range(0, len(texts), _BATCH):
            ids = self._model(texts[i : i + _BATCH], add_special_tokens=False)["input_ids"]
            counts.extend(len(row) for row in ids)
        return counts
