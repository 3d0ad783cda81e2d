"""image_text_matching_filter: keep samples whose images match their text under BLIP ITM."""

from __future__ import annotations

from typing import Any, Literal

from .batch import Batch
from .image_text_scoring import ImageTextScoreFilter
from .models import (
    BLIP_ITM,
    check_dtype,
    flip_image,
    load_hf_model,
    load_hf_processor,
    resolve_model_path,
)
from .registry import register


@register("image_text_matching_filter")
class ImageTextMatchingFilter(ImageTextScoreFilter):
    """Stat `image_text_matching_score`: per chunk with images, BLIP's image-text matching
    probability (softmax of the ITM head, "match" class), reduced over the chunk's images.

    Data-Juicer scores one sample at a time; we score every distinct (image, text)
    pair of the batch in accelerator batches of `gpu_batch_size`. Samples without
    images are kept.
    """

    stats_key = "image_text_matching_score"
    stats_keys = ("image_text_matching_score",)

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
        self.check_reduce_mode(reduce_mode)
        self.hf_blip, self.trust_remote_code = hf_blip, trust_remote_code
        self.min_score, self.max_score = min_score, max_score
        self.horizontal_flip, self.vertical_flip = horizontal_flip, vertical_flip
        self.any_or_all, self.reduce_mode = any_or_all, reduce_mode
        self.gpu_batch_size, self.dtype = gpu_batch_size, dtype
        check_dtype(dtype)
        self.model_path = resolve_model_path(
            hf_blip, kind=BLIP_ITM, arg="hf_blip", trust_remote_code=trust_remote_code
        )

    def load_model(self, device: str) -> tuple[Any, Any]:
        model = load_hf_model(self.model_path, "BlipForImageTextRetrieval", device,
                              self.model_dtype(device), self.trust_remote_code)  # fmt: skip
        return model, load_hf_processor(self.model_path)

    def score_pairs(
        self, pairs: list[tuple[str, str]], batch: Batch
    ) -> dict[tuple[str, str], float]:
        media = batch.ctx.media
        flips = self.horizontal_flip, self.vertical_flip

        def prepare(chunk: list[tuple[str, str]]):  # the model is touched only for misses
            processor = self._model[1]
            images = [flip_image(self.pixels(media, p), *flips) for p, _ in chunk]
            return processor(images=images, text=[t for _, t in chunk], padding=True,
                             truncation=True, return_tensors="pt")  # fmt: skip

        def forward(inputs: Any, chunk: list[tuple[str, str]]) -> list[float]:
            import torch

            model = self._model[0]
            inputs = inputs.to(self.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model_dtype())
            with torch.inference_mode():
                logits = model(**inputs, use_itm_head=True).itm_score
            return torch.softmax(logits.float(), dim=-1)[:, 1].cpu().tolist()

        return dict(zip(pairs, self.map_batched(pairs, forward, prepare)))
