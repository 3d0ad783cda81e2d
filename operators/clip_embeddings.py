"""CLIP for operators: its arguments, its load, and one embedding per sample (float16 bytes).

Shared by every CLIP operator (`image_text_similarity_filter`, and those that decide
from embeddings: `cluster_balanced_selector`, `image_embedding_deduplicator`): the CLIP
arguments, the model load, and the embedding of each sample's text or images through
`ModelOp.map_batched` (so the model-output cache serves reruns: a rerun with other
selection or dedup settings embeds nothing again). A mixin, so its source is part of the
cache's code identity.
"""

from __future__ import annotations

import os
from typing import Any

from .batch import Batch, image_chunks, special_tokens
from .models import CLIP, ModelOp, check_dtype, resolve_model_path


class ClipEmbedder(ModelOp):
    """Embeds samples with CLIP (`hf_clip`, or open_clip's `open_clip_model`)."""

    output_modules = ("dj_synth.operators.clip_backends",)  # its embeddings come from there

    def init_clip(
        self,
        hf_clip: str,
        trust_remote_code: bool,
        open_clip_model: str | None,
        open_clip_pretrained: str | None,
        gpu_batch_size: int,
        dtype: str,
    ) -> None:
        """Set the CLIP arguments and find the weights (a missing model fails at load)."""
        check_dtype(dtype)
        self.hf_clip, self.trust_remote_code = hf_clip, trust_remote_code
        self.open_clip_model, self.open_clip_pretrained = open_clip_model, open_clip_pretrained
        self.gpu_batch_size, self.dtype = gpu_batch_size, dtype
        if open_clip_model is None:
            self.model_path = resolve_model_path(
                hf_clip, kind=CLIP, arg="hf_clip", trust_remote_code=trust_remote_code
            )
        else:
            self.model_path = open_clip_pretrained
            if open_clip_pretrained is not None and not os.path.exists(open_clip_pretrained):
                raise FileNotFoundError(
                    f"open_clip_pretrained {open_clip_pretrained} does not exist"
                )

    def load_model(self, device: str) -> Any:
        from .clip_backends import load_clip

        return load_clip(
            self.hf_clip if self.open_clip_model is None else None,
            self.model_path, self.open_clip_model, device,
            self.model_dtype(device), self.trust_remote_code,
        )  # fmt: skip

    def embedding_keys(self, batch: Batch, embed: str) -> list[bytes | None]:
        """Per sample, its unit embedding as float16 bytes; None when there is nothing to
        embed. `text`: the caption without special tokens; `image`: the mean of the
        sample's image embeddings, made unit again."""
        import numpy as np

        if embed == "text":
            image_token, eoc_token = special_tokens(self, batch)  # type: ignore[arg-type]
            texts = [
                " ".join(t for t, _ in image_chunks(text, [], image_token, eoc_token) if t)
                for text in batch.texts
            ]
            distinct = sorted(set(texts))
            found = self.map_batched(distinct, lambda c, _: self._model.embed_texts(c))
            emb = dict(zip(distinct, found))
            rows = [emb[t] for t in texts]
        else:
            media = batch.ctx.media
            paths = sorted({p for row in batch.images for p in row})

            def prepare(chunk: list[str]) -> Any:  # the model is touched only for misses
                return self._model.preprocess_images([self.pixels(media, p) for p in chunk])  # type: ignore[attr-defined]

            found = self.map_batched(
                paths, lambda px, _: self._model.embed_images(px), prepare
            )
            emb = dict(zip(paths, found))
            rows = [unit(np.mean([emb[p] for p in row], axis=0)) if row else None
                    for row in batch.images]  # fmt: skip
        return [None if r is None else r.astype(np.float16).tobytes() for r in rows]


def unit(v: Any) -> Any:
    """`v` scaled to length 1 (a zero vector stays zero)."""
    import numpy as np

    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v
