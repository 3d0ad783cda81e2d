"""The shared shape of per-image model filters (aesthetics, NSFW, watermark).

Each image gets one score; the stat is the list of scores in `images` order, judged
against the range with `any_or_all`; a sample without images has `[]` and is kept.
Every distinct image of a batch is scored once, in accelerator batches
(`ModelOp.map_batched`). A subclass only loads its model (`load_model`), turns
decoded images into model inputs (`preprocess`, on CPU threads) and inputs into
scores (`score`, on the accelerator).

Data-Juicer scores the images of one sample at a time and keeps one score per
distinct path of the sample; we keep one per listed image (a path listed twice
has its score twice), so the stat lines up with `images`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .base import RangeFilter
from .batch import Batch
from .models import (
    IMAGE_CLASSIFIER,
    ModelOp,
    check_dtype,
    load_hf_model,
    load_hf_processor,
    resolve_model_path,
)


class ImageScoreFilter(ModelOp, RangeFilter):
    accelerator = "cuda"
    needs_pixels = True
    pixel_side = 448  # the models here see 224-384 px
    default_batch_size = 256

    def check_any_or_all(self, any_or_all: str) -> None:
        if any_or_all not in ("any", "all"):
            raise ValueError(f"any_or_all must be 'any' or 'all', got {any_or_all!r}")

    def preprocess(self, images: list[Any]) -> Any:
        """Model inputs for decoded RGB images (runs on CPU threads)."""
        raise NotImplementedError

    def score(self, inputs: Any) -> list[float]:
        """One score per image of `inputs` (runs on the accelerator)."""
        raise NotImplementedError

    def compute(self, batch: Batch) -> list[list[float]]:
        media = batch.ctx.media
        paths = sorted({p for row in batch.images for p in row})
        scores = self.map_batched(
            paths,
            lambda inputs, _: self.score(inputs),
            lambda chunk: self.preprocess([self.pixels(media, p) for p in chunk]),
        )
        by_path = dict(zip(paths, scores))
        return [[by_path[p] for p in row] for row in batch.images]


class ImageClassifierFilter(ImageScoreFilter):
    """The probability of one label of a Hugging Face image classifier, per image.

    The label is found by name in the model's `id2label` (`positive_label`, any
    case); a model whose labels do not name it uses class index 1, as Data-Juicer
    always does.
    """

    positive_label: ClassVar[str]

    def init_classifier(
        self, arg: str, name: str, trust_remote_code: bool, gpu_batch_size: int, dtype: str
    ) -> None:
        check_dtype(dtype)
        self.trust_remote_code, self.gpu_batch_size, self.dtype = (
            trust_remote_code, gpu_batch_size, dtype,
        )  # fmt: skip
        self.model_path = resolve_model_path(
            name, kind=IMAGE_CLASSIFIER, arg=arg, trust_remote_code=trust_remote_code
        )

    def load_model(self, device: str) -> tuple[Any, Any, int]:
        trust = self.trust_remote_code
        model = load_hf_model(self.model_path, "AutoModelForImageClassification", device,
                              self.model_dtype(device), trust)  # fmt: skip
        processor = load_hf_processor(self.model_path, trust, image_only=True)
        labels = {str(v).lower(): int(k) for k, v in model.config.id2label.items()}
        return model, processor, labels.get(self.positive_label, 1)

    def preprocess(self, images: list[Any]) -> Any:
        return self._model[1](images=images, return_tensors="pt")["pixel_values"]

    def score(self, pixels: Any) -> list[float]:
        import torch

        model, _, index = self._model
        with torch.inference_mode():
            logits = model(pixel_values=pixels.to(self.device, self.model_dtype())).logits
        return torch.softmax(logits.float(), dim=-1)[:, index].cpu().tolist()
