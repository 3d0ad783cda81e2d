"""image_text_similarity_filter: keep samples whose images match their text under CLIP."""

from __future__ import annotations

from typing import Any, Literal

from .batch import Batch
from .clip_embeddings import ClipEmbedder
from .image_text_scoring import ImageTextScoreFilter
from .models import flip_image
from .registry import register


@register("image_text_similarity_filter")
class ImageTextSimilarityFilter(ClipEmbedder, ImageTextScoreFilter):
    """Stat `image_text_similarity`: per chunk with images, the cosine similarity of the
    CLIP image and text embeddings, reduced over the chunk's images by `reduce_mode`.

    Data-Juicer computes `logits_per_text / 100`, which is the same cosine for
    OpenAI CLIP (logit scale 100); we compute the cosine directly, for any CLIP.
    It scores one sample at a time; we embed every distinct image and text of the
    batch in accelerator batches of `gpu_batch_size`. Samples without images are
    kept. `open_clip_model` (+ `open_clip_pretrained`, a weights file) loads an
    open_clip model instead of `hf_clip`.
    """

    stats_key = "image_text_similarity"
    stats_keys = ("image_text_similarity",)

    def __init__(
        self,
        hf_clip: str = "openai/clip-vit-base-patch32",
        trust_remote_code: bool = False,
        min_score: float = 0.1,
        max_score: float = 1.0,
        horizontal_flip: bool = False,
        vertical_flip: bool = False,
        any_or_all: Literal["any", "all"] = "any",
        reduce_mode: Literal["avg", "max", "min"] = "avg",
        open_clip_model: str | None = None,
        open_clip_pretrained: str | None = None,
        gpu_batch_size: int = 128,
        dtype: str = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.check_reduce_mode(reduce_mode)
        self.min_score, self.max_score = min_score, max_score
        self.horizontal_flip, self.vertical_flip = horizontal_flip, vertical_flip
        self.any_or_all, self.reduce_mode = any_or_all, reduce_mode
        self.init_clip(hf_clip, trust_remote_code, open_clip_model, open_clip_pretrained,
                       gpu_batch_size, dtype)  # fmt: skip

    # -- stats ------------------------------------------------------------
    def score_pairs(
        self, pairs: list[tuple[str, str]], batch: Batch
    ) -> dict[tuple[str, str], float]:
        """Cosine similarity per (image path, text), embedding each distinct image/text once."""
        media = batch.ctx.media
        paths = sorted({p for p, _ in pairs})
        texts = sorted({t for _, t in pairs})
        flips = self.horizontal_flip, self.vertical_flip

        def prepare(chunk: list[str]):  # the model is touched only for misses
            return self._model.preprocess_images(
                [flip_image(self.pixels(media, p), *flips) for p in chunk]
            )

        image_emb = self.map_batched(
            paths, lambda pixels, _: self._model.embed_images(pixels), prepare
        )
        text_emb = self.map_batched(texts, lambda chunk, _: self._model.embed_texts(chunk))
        img_index = {p: i for i, p in enumerate(paths)}
        txt_index = {t: i for i, t in enumerate(texts)}
        return {
            (p, t): float((image_emb[img_index[p]] * text_emb[txt_index[t]]).sum())
            for p, t in pairs
        }
