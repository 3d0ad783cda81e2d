"""Text generation for the synthesis mappers: decoding settings, sampling seeded per row,
and the generated continuation without the echoed prompt.

`generate()` samples each row with its own random generator, seeded from the row's input
(`stable_seed`): a caption depends on its image, prompt, candidate index and the recipe's
`seed` only, never on which other inputs share its batch, the batch size, `np` or the
executor. transformers' own sampling draws from one generator for the whole batch, so a
row's caption would change with its neighbours; here a logits processor draws the token
of every row from that row's generator and greedy decoding takes it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Decoding:
    """Data-Juicer's generation arguments. `temperature` > 0 with one beam samples (seeded
    per row); `temperature` 0 decodes greedily; `num_beams` > 1 is beam search."""

    max_new_tokens: int = 256
    temperature: float = 0.2
    top_p: float | None = None
    num_beams: int = 1

    def check(self, op: str) -> None:
        """Refuse impossible settings when the recipe is loaded."""
        if self.max_new_tokens < 1:
            raise ValueError(f"{op}: max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"{op}: temperature must be >= 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"{op}: top_p must be in (0, 1], got {self.top_p}")
        if self.num_beams < 1:
            raise ValueError(f"{op}: num_beams must be >= 1, got {self.num_beams}")

    @property
    def sampling(self) -> bool:
        return self.temperature > 0 and self.num_beams == 1


def generate(
    model: Any, inputs: Any, decoding: Decoding, seeds: list[int], decode: Any, n: int = 1
) -> list[list[str]]:
    """`n` stripped continuations per row of `inputs` (a tokenized, left-padded batch).

    Sampling: one row per output (the caller repeats an input once per candidate) drawn
    with `seeds[row]`, so `n` must be 1. Greedy or beam search: `n` sequences per row
    (beam search returns up to `num_beams` distinct ones, so `num_beams` is raised to
    `n`). `decode` is the tokenizer's (or processor's) `batch_decode`.
    """
    import torch
    from transformers import LogitsProcessorList

    kwargs: dict[str, Any] = {"max_new_tokens": decoding.max_new_tokens, "do_sample": False}
    if decoding.sampling:
        if n != 1:
            raise ValueError("sampling makes one sequence per row: repeat the input instead")
        sampler = RowSampler(seeds, decoding.temperature, decoding.top_p)
        kwargs["logits_processor"] = LogitsProcessorList([sampler])
        kwargs["num_beams"] = 1
    else:
        kwargs["num_beams"] = max(decoding.num_beams, n)
        kwargs["num_return_sequences"] = n
    with torch.inference_mode():
        out = model.generate(**inputs, **kwargs)
    prompt = inputs.get("input_ids")
    if prompt is not None and out.shape[1] >= prompt.shape[1]:
        width = prompt.shape[1]
        echoed = prompt.repeat_interleave(n, dim=0).to(out.device)
        if torch.equal(out[:, :width], echoed):
            out = out[:, width:]  # decoder-only models return the prompt first
    texts = [t.strip() for t in decode(out, skip_special_tokens=True)]
    return [texts[i * n : (i + 1) * n] for i in range(len(texts) // n)]


class RowSampler:
    """A logits processor that draws each row's next token from that row's own seeded
    generator (temperature and nucleus `top_p` applied first) and leaves only that token
    possible, for greedy decoding to take.

    Rows that finished early keep drawing (and discarding) tokens, so a row's k-th token
    is always its generator's k-th draw, in any batch.
    """

    def __init__(self, seeds: list[int], temperature: float, top_p: float | None) -> None:
        self.seeds, self.temperature, self.top_p = seeds, temperature, top_p
        self.generators: list[Any] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if scores.shape[0] != len(self.seeds):
            raise RuntimeError(f"{scores.shape[0]} rows for {len(self.seeds)} seeds")
        if not self.generators:  # on the scores' device: no copy of the vocabulary per step
            self.generators = [
                torch.Generator(scores.device).manual_seed(s) for s in self.seeds
            ]
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p is not None and self.top_p < 1:
            ordered, order = probs.sort(dim=-1, descending=True)
            # keep the smallest prefix whose mass reaches top_p (always the top token)
            drop = ordered.cumsum(dim=-1) - ordered >= self.top_p
            probs = probs.scatter(-1, order, ordered.masked_fill(drop, 0.0))
        picks = torch.stack(
            [torch.multinomial(row, 1, generator=g) for row, g in zip(probs, self.generators)]
        )
        return torch.full_like(scores, float("-inf")).scatter_(1, picks, 0.0)


def has_chat_template(path: str) -> bool:
    """Whether the model folder ships a chat template (its own file, or in a config)."""
    for name in ("chat_template.jinja", "chat_template.json"):
        if os.path.exists(os.path.join(path, name)):
            return True
    for name in ("tokenizer_config.json", "processor_config.json"):
        try:
            with open(os.path.join(path, name), encoding="utf-8") as fh:
                if json.load(fh).get("chat_template"):
                    return True
        except (OSError, ValueError, AttributeError):
            continue
    return False


def left_padded(tokenizer: Any) -> Any:
    """Decoder-only models generate after the prompt: pad on the left, with a pad token."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def cut_words(text: str, max_words: int | None) -> str:
    """At most `max_words` words of `text` (None: all of it)."""
    if max_words is None:
        return text
    words = text.split()
    return text if len(words) <= max_words else " ".join(words[:max_words])
