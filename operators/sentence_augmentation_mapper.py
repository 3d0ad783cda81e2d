"""sentence_augmentation_mapper: a language model rewrites each caption (or any text)."""

from __future__ import annotations

import string
from typing import Any

from .base import Mapper
from .batch import Batch
from .generation import Decoding, generate, has_chat_template, left_padded
from .models import (
    ModelOp,
    check_dtype,
    load_causal_lm,
    resolve_model_path,
    stable_seed,
)
from .perplexity_filter import CAUSAL_LM
from .registry import register
from .synthesis import META, with_origin, without_tokens

# Data-Juicer's default system prompt and user turn.
DEFAULT_SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user's questions."
)
DJ_TEMPLATE = 'Here is a sentence: "{caption}". {task_sentence}'
FIELDS = ("caption", "original", "ocr", "task_sentence")


@register("sentence_augmentation_mapper")
class SentenceAugmentationMapper(ModelOp, Mapper):
    """A causal language model (through its chat template) rewrites the text of every chunk.

    Data-Juicer's arguments: `hf_model`, `system_prompt` (its default), `task_sentence`
    (the instruction), `max_new_tokens`, `temperature`, `top_p`, `num_beams`, `text_key`,
    `text_key_second` (where the rewrite goes; unset: the text itself is rewritten).
    The user turn is Data-Juicer's `Here is a sentence: "{caption}". {task_sentence}`
    unless `prompt_template` (ours) says otherwise; a template may use
    - `{caption}`: the chunk's text, special tokens removed;
    - `{original}`: the text the sample's synthesis chain started from (the
      `source_text` the synthesis mappers record in `__dj__meta__`, e.g. the alt text
      before `image_captioning_mapper` replaced it), or the field `original_key`;
      the caption itself when there is neither;
    - `{ocr}`: the words `image_ocr_mapper` found in the chunk's images (empty if none);
    - `{task_sentence}`.
    So "fuse the alt text, the BLIP-2 caption and the OCR words into one short caption"
    is one entry after the captioning and OCR mappers.

    Captions are rewritten chunk by chunk (text split at `<|__dj__eoc|>`), each chunk's
    image tokens kept in front of its new text, so the Data-Juicer format and the image
    order survive; a text without special tokens is one chunk. The rewrite is stripped
    of spaces and quotes (as Data-Juicer). A model without a chat template gets
    Data-Juicer's plain `{system} USER: {prompt} ASSISTANT:` layout. Rewritten samples
    record `generated_by`, `model` and `source_text` in `__dj__meta__`.

    Differences from Data-Juicer, on purpose: all chunks of a batch are rewritten in
    accelerator batches of `gpu_batch_size` (Data-Juicer: one `generate` per sample);
    sampling (`temperature` > 0) is seeded per chunk (`seed`), so a recipe rewrites the
    same way on every run and any `np`; a missing `task_sentence` (with the default
    template) fails the recipe (Data-Juicer blanks every text); `text_key_second` unset
    rewrites in place (Data-Juicer needs it).
    """

    synthesizes = True

    accelerator = "cuda"
    default_batch_size = 256

    def __init__(
        self,
        hf_model: str = "Qwen/Qwen2-7B-Instruct",
        system_prompt: str | None = None,
        task_sentence: str | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.2,
        top_p: float | None = None,
        num_beams: int = 1,
        text_key_second: str | None = None,
        trust_remote_code: bool = False,
        prompt_template: str | None = None,
        original_key: str | None = None,
        seed: int = 0,
        dtype: str = "auto",
        gpu_batch_size: int = 16,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.decoding = Decoding(max_new_tokens, temperature, top_p, num_beams)
        self.decoding.check(self.name)
        template = prompt_template if prompt_template is not None else DJ_TEMPLATE
        used = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        unknown = used - set(FIELDS)
        if unknown:
            raise ValueError(
                f"{self.name}: prompt_template uses unknown field(s) {sorted(unknown)}; it may "
                f"use {', '.join('{' + f + '}' for f in FIELDS)}"
            )
        if "task_sentence" in used and not task_sentence:
            raise ValueError(
                f"{self.name}: task_sentence is not set: give the instruction (e.g. 'Rewrite it "
                "as one short caption.') or a prompt_template without {task_sentence}"
            )
        if gpu_batch_size < 1:
            raise ValueError(f"{self.name}: gpu_batch_size must be >= 1, got {gpu_batch_size}")
        check_dtype(dtype)
        self.hf_model, self.trust_remote_code = hf_model, trust_remote_code
        self.system_prompt = system_prompt if system_prompt is not None else DEFAULT_SYSTEM_PROMPT
        self.task_sentence, self.prompt_template = task_sentence, template
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.num_beams, self.text_key_second = num_beams, text_key_second
        self.original_key, self.seed = original_key, seed
        self.dtype, self.gpu_batch_size = dtype, gpu_batch_size
        self.model_path = resolve_model_path(
            hf_model, kind=CAUSAL_LM, arg="hf_model", trust_remote_code=trust_remote_code
        )
        self.chat = has_chat_template(self.model_path)

    # -- model ------------------------------------------------------------
    def load_model(self, device: str) -> tuple[Any, Any]:
        model, tokenizer = load_causal_lm(
            self.model_path, device, self.model_dtype(device), self.trust_remote_code
        )
        return model, left_padded(tokenizer)

    def rewrite(self, prompts: list[str]) -> dict[str, str]:
        """The model's answer to each distinct user turn, batched on the accelerator."""
        return dict(zip(prompts, self.map_batched(prompts, self._generate)))

    def _generate(self, _: Any, prompts: list[str]) -> list[str]:
        model, tokenizer = self._model
        if self.chat:
            messages = [[{"role": "system", "content": self.system_prompt},
                         {"role": "user", "content": p}] for p in prompts]  # fmt: skip
            texts = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
                     for m in messages]  # fmt: skip
            inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        else:
            texts = [f"{self.system_prompt} USER: {p} ASSISTANT:" for p in prompts]
            inputs = tokenizer(texts, return_tensors="pt", padding=True)
        inputs = inputs.to(self.device)
        seeds = [stable_seed(self.seed, p, 0) for p in prompts]
        out = generate(model, inputs, self.decoding, seeds, tokenizer.batch_decode)
        return [texts[0].strip().strip('"').strip() for texts in out]

    # -- samples ----------------------------------------------------------
    def process(self, batch: Batch) -> Batch:
        ctx = batch.ctx
        token, eoc = ctx.image_token, ctx.eoc_token
        metas = batch.column(META)
        plans = []  # per sample: its chunks, each (text piece, user turn or None)
        for i, (text, paths) in enumerate(zip(batch.texts, batch.images)):
            if not isinstance(text, str):
                plans.append(None)
                continue
            meta = metas[i] or {}
            original = self._original(batch, i, meta, text, token, eoc)
            ocr = _ocr_words(meta.get("ocr"), len(paths))
            pieces, first = [], 0
            whole = bool(paths) and token not in text  # a plain caption owning every image
            for piece in text.split(eoc):
                count = len(paths) if whole else piece.count(token)
                words = without_tokens(piece, token)
                turn = None
                if words:
                    turn = self.prompt_template.format(
                        caption=words, original=original, task_sentence=self.task_sentence,
                        ocr=" ".join(w for w in ocr[first : first + count] if w),
                    )  # fmt: skip
                pieces.append((piece, turn))
                first += count
            plans.append(pieces)
        turns = sorted({t for plan in plans if plan for _, t in plan if t is not None})
        answers = self.rewrite(turns) if turns else {}
        target = self.text_key_second or ctx.text_key
        column = batch.column(target)
        for i, plan in enumerate(plans):
            if plan is None:
                continue
            pieces = [_replace_words(p, answers[t], token) if t else p for p, t in plan]
            row = {ctx.text_key: batch.texts[i], META: metas[i]}
            metas[i] = with_origin(
                row, ctx.text_key, {"generated_by": self.name, "model": self.hf_model}
            )
            column[i] = eoc.join(pieces)
        return batch

    def _original(self, batch: Batch, i: int, meta: dict, text: str, token: str, eoc: str) -> str:
        source = batch.column(self.original_key)[i] if self.original_key else None
        if not isinstance(source, str):
            source = meta.get("source_text")
        if not isinstance(source, str):
            source = text
        return without_tokens(source, token, eoc)


def _ocr_words(ocr: Any, n_images: int) -> list[str]:
    """Per image, the words `image_ocr_mapper` found (its `__dj__meta__.ocr`), '' if none."""
    words = [""] * n_images
    if isinstance(ocr, list):
        for k, lines in enumerate(ocr[:n_images]):
            if isinstance(lines, list):
                found = [ln.get("text", "") for ln in lines if isinstance(ln, dict)]
                words[k] = " ".join(" ".join(found).split())
    return words


def _replace_words(piece: str, new: str, token: str) -> str:
    """The chunk `piece` with its words replaced by `new`: its image tokens first (or last,
    when the chunk ended with them), its outer whitespace kept."""
    body = piece.strip()
    lead = piece[: len(piece) - len(piece.lstrip())]
    trail = piece[len(piece.rstrip()) :]
    tokens = " ".join([token] * body.count(token))
    if not tokens:
        return f"{lead}{new}{trail}"
    at_end = body.endswith(token) and not body.startswith(token)
    return f"{lead}{new} {tokens}{trail}" if at_end else f"{lead}{tokens} {new}{trail}"
