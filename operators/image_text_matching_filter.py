"""image_text_matching_filter: keep samples whose images match their text under BLIP ITM."""

from __future__ import annotations

from typing import Any, Literal

from .base import RangeFilter
from .batch import Batch, image_chunks
from .image_text_similarity_filter import REDUCERS
from .models import (
    ModelOp,
    flip_image,
    pick_device,
    pick_dtype,
    quiet_transformers,
    resolve_model_path,
    run_in_batches,
)
from .registry import register


@register("image_text_matching_filter")
class ImageTextMatchingFilter(ModelOp, RangeFilter):
    """Stat `image_text_matching_score`: per chunk with images, BLIP's image-text matching
    probability (softmax of the ITM head, "match" class), reduced over the chunk's images.

    Data-Juicer scores one sample at a time; we score every distinct (image, text)
    pair of the batch in accelerator batches of `gpu_batch_size`. Samples without
    images are kept.
    """

    accelerator = "cuda"
    needs_pixels = True
    default_batch_size = 256
    stats_key = "image_text_matching_score"
    stats_keys = ("image_text_matching_score",)
    min_arg, max_arg = "min_score", "max_score"

    def __init__(
        self,
        hf_blip: str = "Salesforce/blip-itm-base-coco",
        trust_remote_code: bool = False,
        min_score: float = 0.003,
        max_score: float = 1.0,
        horizontal_flip: bool = False,
        vertical_flip: bool = False,
        any_or_all: Literal["any", "all"] = "any",
        reduce_mode: Literal["avg", "max", "min"] = "avg",
        gpu_batch_size: int = 64,
        dtype: str = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if reduce_mode not in REDUCERS:
            raise ValueError(f"reduce_mode must be one of {sorted(REDUCERS)}, got {reduce_mode!r}")
        self.hf_blip, self.trust_remote_code = hf_blip, trust_remote_code
        self.min_score, self.max_score = min_score, max_score
        self.horizontal_flip, self.vertical_flip = horizontal_flip, vertical_flip
        self.any_or_all, self.reduce_mode = any_or_all, reduce_mode
        self.gpu_batch_size, self.dtype = gpu_batch_size, dtype
        pick_dtype(dtype, "cpu")
        self.model_path = resolve_model_path(hf_blip, ("config.json", "preprocessor_config.json"))

    def setup(self) -> None:
        if self._model is None:
            from transformers import AutoProcessor, BlipForImageTextRetrieval

            quiet_transformers()
            device = pick_device(self.accelerator)
            dtype = pick_dtype(self.dtype, device)
            model = BlipForImageTextRetrieval.from_pretrained(
                self.model_path, dtype=dtype, local_files_only=True,
                trust_remote_code=self.trust_remote_code,
            ).to(device).eval()  # fmt: skip
            processor = AutoProcessor.from_pretrained(self.model_path, local_files_only=True)
            self._model = (model, processor, device, dtype)

    def compute(self, batch: Batch) -> list[list[float]]:
        ctx = batch.ctx
        per_sample = [
            image_chunks(text, paths, ctx.image_token, ctx.eoc_token)
            for text, paths in zip(batch.texts, batch.images)
        ]
        pairs = sorted(
            {(p, text) for chunks in per_sample for text, paths in chunks for p in paths}
        )

        def score(chunk: list[tuple[str, str]]) -> list[float]:
            import torch

            model, processor, device, dtype = self._model
            flips = self.horizontal_flip, self.vertical_flip
            images = [flip_image(ctx.media.rgb(p), *flips) for p, _ in chunk]
            inputs = processor(images=images, text=[t for _, t in chunk], padding=True,
                               truncation=True, return_tensors="pt").to(device)  # fmt: skip
            inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
            with torch.inference_mode():
                logits = model(**inputs, use_itm_head=True).itm_score
            return torch.softmax(logits.float(), dim=-1)[:, 1].cpu().tolist()

        scores = dict(zip(pairs, run_in_batches(score, pairs, self.gpu_batch_size)))
        reduce = REDUCERS[self.reduce_mode]
        return [
            [reduce([scores[(p, text)] for p in paths]) for text, paths in chunks if paths]
            for chunks in per_sample
        ]
