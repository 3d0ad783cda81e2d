"""mllm_mapper: captions or answers from an instruction-tuned vision-language model."""

from __future__ import annotations

from typing import Any

from .base import Mapper
from .batch import Batch, image_chunks
from .generation import Decoding, cut_words, generate, has_chat_template, left_padded
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


@register("mllm_mapper")
class MllmMapper(ModelOp, Mapper):
    """Each image's answer from any Hugging Face image-text-to-text model (LLaVA, LLaVA-NeXT,
    Qwen2-VL, Qwen2.5-VL, ...), asked through the processor's chat template: the user turn
    is the image, then the prompt.

    Data-Juicer's arguments (`hf_model`, `max_new_tokens`, `temperature`, `top_p`,
    `num_beams`); the prompt is, as in Data-Juicer, the sample's text (here each image's
    own chunk text, without special tokens) unless `prompt` is set. Ours: `max_words`
    cuts each answer to that many words (short captions: "at most 10 words");
    `caption_num` answers per image make `caption_num` samples per input (the k-th holds
    every image's k-th answer); `keep_original_sample` keeps the input before them.

    Output in Data-Juicer's text format, as `image_captioning_mapper`: per chunk with
    images `<__dj__image> {answer} <|__dj__eoc|>`, each answer after its own image token;
    generated samples keep the `id`, drop their stats and record `generated_by`, `model`,
    `candidate` and `source_text` in `__dj__meta__`. A sample without images passes
    through unchanged.

    Differences from Data-Juicer, on purpose: its output (a list of strings, one per
    image, each still holding the echoed prompt) is replaced by the format above with the
    prompt stripped; every distinct (image, prompt) of the batch is answered in
    accelerator batches of `gpu_batch_size` (Data-Juicer: one `generate` per image);
    `temperature` > 0 samples seeded per image (`seed`), so a recipe gives the same
    answers on every run, at any `np` and batch size; `temperature: 0` is greedy,
    `num_beams` > 1 beam search.
    """

    synthesizes = True

    accelerator = "cuda"
    needs_pixels = True  # full resolution: the model's processor resizes (Qwen2-VL: natively)
    default_batch_size = 256

    def __init__(
        self,
        hf_model: str = "llava-hf/llava-v1.6-vicuna-7b-hf",
        max_new_tokens: int = 256,
        temperature: float = 0.2,
        top_p: float | None = None,
        num_beams: int = 1,
        trust_remote_code: bool = False,
        prompt: str | None = None,
        max_words: int | None = None,
        caption_num: int = 1,
        keep_original_sample: bool = False,
        seed: int = 0,
        dtype: str = "auto",
        gpu_batch_size: int = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.decoding = Decoding(max_new_tokens, temperature, top_p, num_beams)
        self.decoding.check(self.name)
        if caption_num < 1:
            raise ValueError(f"{self.name}: caption_num must be >= 1, got {caption_num}")
        if max_words is not None and max_words < 1:
            raise ValueError(f"{self.name}: max_words must be >= 1 (or unset), got {max_words}")
        if gpu_batch_size < 1:
            raise ValueError(f"{self.name}: gpu_batch_size must be >= 1, got {gpu_batch_size}")
        check_dtype(dtype)
        self.hf_model, self.trust_remote_code = hf_model, trust_remote_code
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.num_beams, self.prompt, self.max_words = num_beams, prompt, max_words
        self.caption_num, self.keep_original_sample = caption_num, keep_original_sample
        self.seed, self.dtype, self.gpu_batch_size = seed, dtype, gpu_batch_size
        self.model_path = resolve_model_path(
            hf_model, kind=IMG2SEQ, arg="hf_model", trust_remote_code=trust_remote_code
        )
        if not has_chat_template(self.model_path):
            raise ValueError(
                f"{self.name}: hf_model {hf_model!r} has no chat template (chat_template.jinja "
                "or a chat_template entry): point it at an instruction-tuned model such as "
                "Qwen/Qwen2-VL-2B-Instruct or llava-hf/llava-1.5-7b-hf; for BLIP-2-style "
                "captioning models use image_captioning_mapper"
            )

    # -- model ------------------------------------------------------------
    def load_model(self, device: str) -> tuple[Any, Any]:
        architectures = read_config(self.model_path).get("architectures") or []
        cls = architectures[0] if architectures else "AutoModelForImageTextToText"
        model = load_hf_model(
            self.model_path, cls, device, self.model_dtype(device), self.trust_remote_code
        )
        processor = load_hf_processor(self.model_path, self.trust_remote_code)
        left_padded(processor.tokenizer)
        return model, processor

    # -- answering --------------------------------------------------------
    def answer(self, jobs: list[tuple[str, str]], media: Any) -> dict[tuple[str, str], list[str]]:
        """`caption_num` answers per distinct (image path, prompt), batched on the accelerator."""
        n = self.caption_num
        if self.decoding.sampling:  # one row per candidate, each with its own seed
            rows = [(path, prompt, k) for path, prompt in jobs for k in range(n)]
        else:  # greedy / beam search: the candidates come out of one row
            rows = [(path, prompt, 0) for path, prompt in jobs]
        processor = self._model[1]

        def prepare(part: list[tuple[str, str, int]]) -> list[tuple[Any, str]]:
            return [(self.pixels(media, path), self._chat(processor, prompt))
                    for path, prompt, _ in part]  # fmt: skip

        outputs = self.map_batched(rows, self._generate, prepare)
        found: dict[tuple[str, str], list[str]] = {}
        for (path, prompt, _), texts in zip(rows, outputs):
            found.setdefault((path, prompt), []).extend(texts)
        return found

    def _chat(self, processor: Any, prompt: str) -> str:
        turn = [{"type": "image"}] + ([{"type": "text", "text": prompt}] if prompt else [])
        return processor.apply_chat_template(
            [{"role": "user", "content": turn}], add_generation_prompt=True, tokenize=False
        )

    def _generate(
        self, prepared: list[tuple[Any, str]], part: list[tuple[str, str, int]]
    ) -> list[list[str]]:
        model, processor = self._model
        images, texts = [p[0] for p in prepared], [p[1] for p in prepared]
        inputs = processor(images=images, text=texts, return_tensors="pt", padding=True)
        inputs = inputs.to(self.device)
        dtype = self.model_dtype()
        for key, value in inputs.items():
            if value.is_floating_point():
                inputs[key] = value.to(dtype)
        seeds = [  # keyed by the image's content: the same draw wherever the file lies
            stable_seed(self.seed, f"{content_digest(path)}\0{prompt}", k) for path, prompt, k in part
        ]
        n = 1 if self.decoding.sampling else self.caption_num
        out = generate(model, inputs, self.decoding, seeds, processor.batch_decode, n)
        return [[cut_words(t, self.max_words) for t in texts] for texts in out]

    # -- samples ----------------------------------------------------------
    def process(self, batch: Batch) -> Batch:
        ctx = batch.ctx
        rows = batch.rows()
        chunks = [
            image_chunks(text if isinstance(text, str) else "", paths, ctx.image_token,
                         ctx.eoc_token)
            for text, paths in zip(batch.texts, batch.images)
        ]  # fmt: skip
        asked = [[(paths, self._prompt(text)) for text, paths in cs] for cs in chunks]
        jobs = sorted({(p, q) for sample in asked for paths, q in sample for p in paths})
        answers = self.answer(jobs, ctx.media) if jobs else {}
        out_rows, out_refs = [], []
        for row, ref, sample in zip(rows, batch.refs, asked):
            new = []
            if any(paths for paths, _ in sample):
                for k in range(self.caption_num):
                    chosen = [[answers[(p, q)][k] for p in paths] for paths, q in sample if paths]
                    text = captions_text(chosen, ctx.image_token, ctx.eoc_token)
                    origin = {"generated_by": self.name, "model": self.hf_model, "candidate": k}
                    new.append(generated_row(row, ctx.text_key, text, origin))
            add_generated(out_rows, out_refs, row, ref, new, self.keep_original_sample)
        return Batch.from_rows(out_rows, out_refs, ctx)

    def _prompt(self, chunk_text: str) -> str:
        return self.prompt if self.prompt is not None else chunk_text
