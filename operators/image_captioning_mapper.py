"""image_captioning_mapper: recaption images with an image-to-text model (BLIP-2 by default)."""

from __future__ import annotations

import hashlib
import random
from typing import Any, Literal

from .base import Mapper
from .batch import Batch, image_chunks
from .media import content_digest
from .models import (
    IMG2SEQ,
    ModelOp,
    check_dtype,
    load_hf_model,
    load_hf_processor,
    read_config,
    resolve_model_path,
    stable_seed,
)
from .registry import register
from .synthesis import add_generated, captions_text, generated_row


@register("image_captioning_mapper")
class ImageCaptioningMapper(ModelOp, Mapper):
    """New samples whose text is a generated caption per image: per chunk
    `<__dj__image> {caption} <|__dj__eoc|>`, each caption right after its own image token.

    As Data-Juicer: `caption_num` candidates per image; `keep_candidate_mode`
    `random_any` / `similar_one_simhash` make one new sample per input (a random
    candidate / the one closest to the original chunk text by 64-bit simhash of
    word bigrams), `all` makes `caption_num` samples; with `keep_original_sample`
    the original comes first, then its new samples. Generated samples keep the
    original `id` (LLaVA conversion restores questions by id) and say where they
    came from in `__dj__meta__`; their stats start empty.

    Differences from Data-Juicer, on purpose: every distinct (image, prompt) of the
    batch is captioned in accelerator batches of `gpu_batch_size` (Data-Juicer
    calls `generate` per sample), with images preprocessed on CPU threads ahead of
    the accelerator and a CUDA out-of-memory error splitting the batch; several
    images in one chunk each get their own caption in place (Data-Juicer stacks
    them after the first token); sampling is seeded (`seed`), so a recipe gives the
    same captions every run; captions are stripped; a sample without images is
    passed through unchanged (Data-Juicer drops it when `keep_original_sample` is
    false); a text with images but no image token is one chunk owning all images.
    """

    synthesizes = True

    accelerator = "cuda"
    needs_pixels = True
    pixel_side = 448  # BLIP-2 sees 224 px
    default_batch_size = 256

    def __init__(
        self,
        hf_img2seq: str = "Salesforce/blip2-opt-2.7b",
        trust_remote_code: bool = False,
        caption_num: int = 1,
        keep_candidate_mode: Literal["random_any", "similar_one_simhash", "all"] = "random_any",
        keep_original_sample: bool = True,
        prompt: str | None = None,
        prompt_key: str | None = None,
        max_new_tokens: int = 128,
        min_new_tokens: int | None = None,
        num_beams: int = 1,
        do_sample: bool = True,
        temperature: float = 1.0,
        seed: int = 0,
        dtype: str = "auto",
        gpu_batch_size: int = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if caption_num < 1:
            raise ValueError(f"caption_num must be >= 1, got {caption_num}")
        if keep_candidate_mode not in ("random_any", "similar_one_simhash", "all"):
            raise ValueError(f"unknown keep_candidate_mode {keep_candidate_mode!r}")
        self.hf_img2seq, self.trust_remote_code = hf_img2seq, trust_remote_code
        self.caption_num, self.keep_candidate_mode = caption_num, keep_candidate_mode
        self.keep_original_sample = keep_original_sample
        self.prompt, self.prompt_key = prompt, prompt_key
        self.max_new_tokens, self.min_new_tokens = max_new_tokens, min_new_tokens
        # beam search returns at most num_beams distinct sequences
        self.num_beams = num_beams if do_sample else max(num_beams, caption_num)
        self.do_sample, self.temperature, self.seed = do_sample, temperature, seed
        self.dtype, self.gpu_batch_size = dtype, gpu_batch_size
        check_dtype(dtype)
        self.model_path = resolve_model_path(
            hf_img2seq, kind=IMG2SEQ, arg="hf_img2seq", trust_remote_code=trust_remote_code
        )

    # -- model ------------------------------------------------------------
    def load_model(self, device: str) -> tuple[Any, Any]:
        architectures = read_config(self.model_path).get("architectures") or []
        cls = architectures[0] if architectures else "AutoModelForImageTextToText"
        model = load_hf_model(
            self.model_path, cls, device, self.model_dtype(device), self.trust_remote_code
        )
        processor = load_hf_processor(self.model_path, self.trust_remote_code)
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.padding_side = (
                "left"  # decoder-only language models generate after the prompt
            )
        return model, processor

    # -- captioning -------------------------------------------------------
    def caption(self, jobs: list[tuple[str, str | None]], media: Any) -> dict[tuple, list[str]]:
        """`caption_num` captions per distinct (image path, prompt), batched on the accelerator."""
        def prepare(chunk: list[tuple[str, str | None]]):  # the model is touched only for misses
            processor = self._model[1]
            images = [self.pixels(media, p) for p, _ in chunk]
            prompts = [q for _, q in chunk]
            text = [q or "" for q in prompts] if any(q is not None for q in prompts) else None
            return processor(images=images, text=text, return_tensors="pt", padding=True)

        return dict(zip(jobs, self.map_batched(jobs, self._generate, prepare)))

    def _generate(self, inputs: Any, chunk: list[tuple[str, str | None]]) -> list[list[str]]:
        """generate() on one prepared slice: `caption_num` stripped captions per job."""
        import torch

        model, processor = self._model
        batch = inputs.to(self.device)
        batch["pixel_values"] = batch["pixel_values"].to(self.model_dtype())
        # seeded per slice from its content (image bytes, prompt), so runs, np and where the
        # files lie do not change captions
        path, prompt = chunk[0]
        torch.manual_seed(stable_seed(self.seed, repr((content_digest(path), prompt)), len(chunk)))
        kwargs = dict(
            max_new_tokens=self.max_new_tokens, num_beams=self.num_beams,
            do_sample=self.do_sample, num_return_sequences=self.caption_num,
        )  # fmt: skip
        if self.do_sample:
            kwargs["temperature"] = self.temperature
        if self.min_new_tokens is not None:
            kwargs["min_new_tokens"] = self.min_new_tokens
        with torch.inference_mode():
            out = model.generate(**batch, **kwargs)
        prompt_ids = batch.get("input_ids")
        if prompt_ids is not None and out.shape[1] > prompt_ids.shape[1]:
            width = prompt_ids.shape[1]
            if torch.equal(out[0, :width].cpu(), prompt_ids[0].cpu()):
                out = out[:, width:]  # the caption is the continuation, not the prompt
        texts = processor.batch_decode(out, skip_special_tokens=True)
        n = self.caption_num
        return [[t.strip() for t in texts[i * n : (i + 1) * n]] for i in range(len(chunk))]

    # -- samples ----------------------------------------------------------
    def process(self, batch: Batch) -> Batch:
        ctx = batch.ctx
        rows = batch.rows()
        prompts = [self._prompt(row) for row in rows]
        chunks = [
            image_chunks(text, paths, ctx.image_token, ctx.eoc_token)
            for text, paths in zip(batch.texts, batch.images)
        ]
        jobs = sorted({(p, q) for cs, q in zip(chunks, prompts) for _, paths in cs for p in paths},
                      key=lambda j: (j[0], j[1] or ""))  # fmt: skip
        captions = self.caption(jobs, ctx.media) if jobs else {}
        out_rows, out_refs = [], []
        for row, ref, cs, q in zip(rows, batch.refs, chunks, prompts):
            new = (
                []
                if not any(paths for _, paths in cs)
                else self._new_samples(row, ref, cs, q, captions, ctx)
            )
            add_generated(out_rows, out_refs, row, ref, new, self.keep_original_sample)
        return Batch.from_rows(out_rows, out_refs, ctx)

    def _prompt(self, row: dict[str, Any]) -> str | None:
        if self.prompt_key:
            value = row.get(self.prompt_key)
            if not isinstance(value, str):
                raise KeyError(f"prompt_key {self.prompt_key!r}: the sample has no string there")
            return value
        return self.prompt

    def _new_samples(self, row, ref, chunks, prompt, captions, ctx) -> list[dict[str, Any]]:
        if self.keep_candidate_mode == "all":
            picks_per_sample = [
                [[k] * len(paths) for _, paths in chunks] for k in range(self.caption_num)
            ]
        else:
            rng = random.Random(stable_seed(self.seed, str(ref.ordinal), 0))
            picks = []
            for text, paths in chunks:
                if self.keep_candidate_mode == "random_any":
                    picks.append([rng.randrange(self.caption_num) for _ in paths])
                else:
                    target = simhash64(text)
                    picks.append([
                        min(range(self.caption_num),
                            key=lambda k, p=p: (simhash64(captions[(p, prompt)][k]) ^ target).bit_count())
                        for p in paths
                    ])  # fmt: skip
            picks_per_sample = [picks]
        samples = []
        for picks in picks_per_sample:
            chosen = [
                [captions[(p, prompt)][k] for p, k in zip(paths, chunk_picks)]
                for (_, paths), chunk_picks in zip(chunks, picks)
                if paths
            ]
            origin = {"generated_by": self.name, "model": self.hf_img2seq,
                      "candidates": [k for ks in picks for k in ks]}  # fmt: skip
            text = captions_text(chosen, ctx.image_token, ctx.eoc_token)
            samples.append(generated_row(row, ctx.text_key, text, origin))
        return samples


def simhash64(text: str) -> int:
    """64-bit simhash over lower-cased word bigrams (Data-Juicer's window_size=2)."""
    words = text.lower().split()
    grams = [" ".join(words[i : i + 2]) for i in range(max(len(words) - 1, 1))] if words else [""]
    counts = [0] * 64
    for gram in grams:
        h = int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8).digest(), "little")
        for bit in range(64):
            counts[bit] += 1 if h >> bit & 1 else -1
    return sum(1 << bit for bit in range(64) if counts[bit] > 0)
