"""CLIP behind one small interface, from Hugging Face transformers or open_clip.

`preprocess_images` runs on CPU threads (ahead of the accelerator);
`embed_images` / `embed_texts` run on the device and return L2-normalised
float32 numpy rows, so a dot product is the cosine similarity (numpy, not tensors:
a score computed from cached embeddings never imports torch).
"""

from __future__ import annotations

from typing import Any


class HFClip:
    def __init__(self, path: str, device: str, dtype: Any, trust_remote_code: bool) -> None:
        from .models import load_hf_model, load_hf_processor

        self.device, self.dtype = device, dtype
        self.model = load_hf_model(path, "AutoModel", device, dtype, trust_remote_code)
        self.processor = load_hf_processor(path, trust_remote_code)
        text_cfg = getattr(self.model.config, "text_config", None)
        self.max_length = getattr(text_cfg, "max_position_embeddings", 77)

    def preprocess_images(self, images: list) -> Any:
        return self.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]

    def embed_images(self, pixels: Any) -> list:
        import torch

        with torch.inference_mode():
            batch = _stacked(pixels).to(self.device, self.dtype)
            emb = _features(self.model.get_image_features(pixel_values=batch))
        return _rows(emb)

    def embed_texts(self, texts: list[str]) -> list:
        import torch

        tok = self.processor.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        with torch.inference_mode():
            emb = _features(self.model.get_text_features(**tok.to(self.device)))
        return _rows(emb)


def _rows(emb: Any) -> list:
    """L2-normalised float32 numpy rows of a (N, D) tensor."""
    import torch

    return list(torch.nn.functional.normalize(emb.float(), dim=-1).cpu().numpy())


def _stacked(pixels: Any) -> Any:
    """A (N, C, H, W) tensor from a tensor or a list of (C, H, W) tensors."""
    import torch

    return pixels if isinstance(pixels, torch.Tensor) else torch.stack(pixels)


def _features(out: Any) -> Any:
    """transformers 5 may return a model output object where 4.x returned the tensor."""
    if hasattr(out, "pooler_output") and not hasattr(out, "shape"):
        return out.pooler_output
    return out


class OpenClip:
    def __init__(self, model_name: str, pretrained: str | None, device: str, dtype: Any) -> None:
        import open_clip

        self.device, self.dtype = device, dtype
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, device=device, precision=_precision(dtype)
        )  # checkpoints load with torch.load(weights_only=True), open_clip's default
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(model_name)

    def preprocess_images(self, images: list) -> Any:
        import torch

        return torch.stack([self.preprocess(img) for img in images])

    def embed_images(self, pixels: Any) -> list:
        import torch

        with torch.inference_mode():
            emb = self.model.encode_image(_stacked(pixels).to(self.device, self.dtype))
        return _rows(emb)

    def embed_texts(self, texts: list[str]) -> list:
        import torch

        with torch.inference_mode():
            emb = self.model.encode_text(self.tokenizer(texts).to(self.device))
        return _rows(emb)


def _precision(dtype: Any) -> str:
    import torch

    return {torch.bfloat16: "pure_bf16", torch.float16: "pure_fp16"}.get(dtype, "fp32")


def load_clip(hf_name: str | None, path: str | None, open_clip_model: str | None, device: str,
              dtype: Any, trust_remote_code: bool) -> HFClip | OpenClip:  # fmt: skip
    if open_clip_model is not None:
        return OpenClip(open_clip_model, path, device, dtype)
    assert path is not None, hf_name
    return HFClip(path, device, dtype, trust_remote_code)
