"""perplexity_filter: keep samples whose language-model perplexity is within [min_ppl, max_ppl]."""

from __future__ import annotations

import math
from typing import Any

from .base import RangeFilter
from .batch import Batch, special_tokens
from .dj_model_files import require_dj_model
from .models import (
    ModelKind,
    ModelNotFoundError,
    ModelOp,
    check_dtype,
    load_causal_lm,
    resolve_model_path,
)
from .registry import register
from .words import WordSplitter

CAUSAL_LM = ModelKind(
    "a causal language model (architectures *ForCausalLM or *LMHeadModel, e.g. "
    "Qwen2ForCausalLM, GPT2LMHeadModel)",
    (r".*ForCausalLM", r".*LMHeadModel"),
    needs_processor=False,
)


def kenlm_perplexity(model: Any, words: list[str]) -> float:
    """Data-Juicer's formula: 10 ** (-sum of line log10 scores / (words + one </s> per line))."""
    logits, length = 0.0, 0
    for line in " ".join(words).splitlines():
        logits += model.score(line)  # log10, with <s> and </s>
        length += len(line.split()) + 1
    return round(10.0 ** (-logits / length), 1) if length else 0.0


@register("perplexity_filter")
class PerplexityFilter(ModelOp, RangeFilter):
    """Stat `perplexity`, rounded to 0.1 as Data-Juicer; 0.0 for a text with no words.

    Data-Juicer's model (the default): KenLM `{lang}.arpa.bin` over the pieces of the
    SentencePiece model `{lang}.sp.model`, both found where Data-Juicer finds them
    (`DATA_JUICER_MODELS_CACHE`, default ~/.cache/data_juicer/models; see
    `dj_model_files`) or given by path (`kenlm_model`, `sp_model`; ours). The text is
    scored as Data-Juicer does, special tokens included.

    Ours: `hf_model`, any local Hugging Face causal language model (a folder or a Hugging
    Face cache entry): perplexity = exp(mean negative log-likelihood of the text's tokens),
    each predicted from the ones before it after the model's BOS (else EOS) token, the
    image and chunk-end tokens removed first, at most `max_length` tokens. Its scale is
    the model's, not KenLM's: set `max_ppl` for it. Runs on the accelerator
    (`accelerator: cuda` by default) in batches of `gpu_batch_size`.

    A missing model file fails the recipe before any work, saying what to put where.
    """

    stats_key = "perplexity"
    stats_keys = ("perplexity",)
    min_arg, max_arg = "min_ppl", "max_ppl"

    def __init__(
        self,
        lang: str = "en",
        min_ppl: float = 0,
        max_ppl: float = 1500,
        kenlm_model: str | None = None,
        sp_model: str | None = None,
        hf_model: str | None = None,
        trust_remote_code: bool = False,
        max_length: int = 1024,
        gpu_batch_size: int = 16,
        dtype: str = "auto",
        **kwargs: Any,
    ) -> None:
        if hf_model is not None and kwargs.get("accelerator") is None:
            kwargs["accelerator"] = "cuda"
        super().__init__(**kwargs)
        self.lang, self.min_ppl, self.max_ppl = lang, min_ppl, max_ppl
        self.hf_model, self.trust_remote_code = hf_model, trust_remote_code
        self.max_length, self.gpu_batch_size, self.dtype = max_length, gpu_batch_size, dtype
        if max_length < 2:
            raise ValueError(f"perplexity_filter: max_length must be >= 2, got {max_length}")
        if hf_model is not None:
            check_dtype(dtype)
            self.model_path = resolve_model_path(
                hf_model, kind=CAUSAL_LM, arg="hf_model", trust_remote_code=trust_remote_code
            )
            self.splitter = None
            return
        self.fork_safe = True  # KenLM and SentencePiece hold no torch state
        missing = []  # both files named in one message
        try:
            self.model_path = require_dj_model(
                f"{lang}.arpa.bin", self.name, "KenLM", kenlm_model, "kenlm_model"
            )
        except ModelNotFoundError as exc:
            missing.append(str(exc))
        try:
            self.splitter = WordSplitter(self.name, lang, True, sp_model)
        except ModelNotFoundError as exc:
            missing.append(str(exc))
        if missing:
            hint = " Or set hf_model to a local Hugging Face causal language model."
            raise ModelNotFoundError(" ".join(missing) + hint)
        try:
            import kenlm  # noqa: F401
        except ImportError:
            raise ImportError(
                "perplexity_filter: Data-Juicer's KenLM model needs the kenlm package: "
                "pip install kenlm (builds from source: needs a C++ compiler and cmake), "
                "or use hf_model: a local Hugging Face causal language model"
            ) from None

    # -- model ------------------------------------------------------------
    def load_model(self, device: str) -> Any:
        if self.hf_model is None:
            import kenlm

            return kenlm.Model(self.model_path)
        model, tokenizer = load_causal_lm(
            self.model_path, device, self.model_dtype(device), self.trust_remote_code
        )
        return tokenizer, model

    # -- stats ------------------------------------------------------------
    def compute(self, batch: Batch) -> list[float]:
        self.setup()  # (a no-op once the executor has prepared this worker)
        if self.hf_model is None:
            words, model = self.splitter.words, self._model
            return [kenlm_perplexity(model, words(text)) for text in batch.texts]
        texts = batch.texts
        for token in special_tokens(self, batch):
            if token:
                texts = [t.replace(token, " ") for t in texts]
        return self._hf_perplexities([" ".join(t.split()) for t in texts])

    def _hf_perplexities(self, texts: list[str]) -> list[float]:
        tokenizer, _ = self._model
        start = tokenizer.bos_token_id
        if start is None:
            start = tokenizer.eos_token_id
        prefix = [start] if start is not None else []
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        seqs = [tuple(prefix + row)[: self.max_length] for row in ids]
        # Longest first, so each accelerator batch pads little; scored once per distinct text.
        distinct = sorted(set(seqs), key=lambda seq: (-len(seq), seq))
        nll = dict(zip(distinct, self.map_batched(distinct, self._nll)))
        return [
            round(math.exp(nll[seq][0] / nll[seq][1]), 1) if nll[seq][1] else 0.0 for seq in seqs
        ]

    def _nll(self, _: Any, seqs: list[tuple[int, ...]]) -> list[tuple[float, int]]:
        """(sum of negative log-likelihoods, predicted tokens) per token sequence."""
        import torch

        _, model = self._model
        width = max(len(s) for s in seqs)
        if width < 2:
            return [(0.0, 0)] * len(seqs)
        input_ids = torch.zeros((len(seqs), width), dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        with torch.inference_mode():
            logits = model(input_ids=input_ids, attention_mask=mask).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        token_nll = -logp.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1) * mask[:, 1:]
        totals = token_nll.sum(dim=1).tolist()
        counts = mask[:, 1:].sum(dim=1).tolist()
        return [(float(t), int(c)) for t, c in zip(totals, counts)]
