"""image_nsfw_filter: drop samples whose images are probably not safe for work."""

from __future__ import annotations

from typing import Any, Literal

from .image_scoring import ImageClassifierFilter
from .registry import register

# NudeNet's detector classes that make an image NSFW; faces, feet, covered parts do not.
NUDENET_EXPLICIT = frozenset(
    {
        "FEMALE_GENITALIA_EXPOSED",
        "MALE_GENITALIA_EXPOSED",
        "FEMALE_BREAST_EXPOSED",
        "BUTTOCKS_EXPOSED",
        "ANUS_EXPOSED",
    }
)


def nudenet_score(detections: list[dict[str, Any]]) -> float:
    """One NSFW score per image from NudeNet's detections: the highest confidence of an
    explicit class (`NUDENET_EXPLICIT`), 0.0 when there is none."""
    return max((float(d["score"]) for d in detections if d["class"] in NUDENET_EXPLICIT),
               default=0.0)  # fmt: skip


@register("image_nsfw_filter")
class ImageNSFWFilter(ImageClassifierFilter):
    """Stat `image_nsfw_score`: per image, the classifier's probability of the `nsfw`
    label (class 1 when no label has that name); kept when within [`min_score`,
    `max_score`] (`any_or_all` over its images); a sample without images is kept.

    `backend: nudenet` (ours) needs no download: the `nudenet` package ships its ONNX
    detector (320 px, CPU). Its score per image is the highest detection confidence
    among the exposed breast / genitalia / buttocks / anus classes, 0 when none is
    detected (NudeNet reports detections from 0.2 up), so `max_score: 0.5` drops
    images with a confident explicit detection. `hf_nsfw_model` is then unused.
    """

    stats_key = "image_nsfw_score"
    stats_keys = ("image_nsfw_score",)
    positive_label = "nsfw"
    min_arg, max_arg = "min_score", "max_score"

    def __init__(
        self,
        hf_nsfw_model: str = "Falconsai/nsfw_image_detection",
        trust_remote_code: bool = False,
        min_score: float = 0.0,
        max_score: float = 0.5,
        any_or_all: Literal["any", "all"] = "any",
        backend: Literal["hf", "nudenet"] = "hf",
        gpu_batch_size: int = 64,
        dtype: str = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.check_any_or_all(any_or_all)
        if backend not in ("hf", "nudenet"):
            raise ValueError(f"backend must be 'hf' or 'nudenet', got {backend!r}")
        self.hf_nsfw_model, self.backend = hf_nsfw_model, backend
        self.min_score, self.max_score, self.any_or_all = min_score, max_score, any_or_all
        if backend == "hf":
            self.init_classifier(
                "hf_nsfw_model", hf_nsfw_model, trust_remote_code, gpu_batch_size, dtype
            )
            return
        import importlib.util

        if importlib.util.find_spec("nudenet") is None:
            raise ValueError("backend: nudenet needs the nudenet package: pip install nudenet")
        self.gpu_batch_size, self.accelerator = gpu_batch_size, "cpu"  # ONNX on CPU

    def load_model(self, device: str) -> Any:
        if self.backend == "hf":
            return super().load_model(device)
        from nudenet import NudeDetector

        return NudeDetector()

    def preprocess(self, images: list[Any]) -> Any:
        if self.backend == "hf":
            return super().preprocess(images)
        import numpy as np

        return [np.asarray(img.convert("RGBA")) for img in images]  # NudeNet's RGBA input

    def score(self, inputs: Any) -> list[float]:
        if self.backend == "hf":
            return super().score(inputs)
        found = self._model.detect_batch(inputs, batch_size=len(inputs))
        return [nudenet_score(d) for d in found]
