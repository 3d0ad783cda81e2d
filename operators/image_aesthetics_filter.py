"""image_aesthetics_filter: keep samples whose images look good to LAION's aesthetics predictor."""

from __future__ import annotations

from typing import Any, Literal

from .aesthetics_predictor import AestheticsModel, head_kind
from .image_scoring import ImageScoreFilter
from .models import AESTHETICS, check_dtype, load_hf_processor, resolve_model_path
from .registry import register

DEFAULT_SCORER = "shunk031/aesthetics-predictor-v2-sac-logos-ava1-l14-linearMSE"


@register("image_aesthetics_filter")
class ImageAestheticsFilter(ImageScoreFilter):
    """Stat `image_aesthetics_scores`: per image, the aesthetics rating divided by 10
    (LAION's 1-10 scale to 0-1), kept when within [`min_score`, `max_score`]
    (`any_or_all` over its images); a sample without images is kept.

    The checkpoint (CLIP ViT-L/14 vision tower + MLP head) loads with transformers
    alone (`aesthetics_predictor.py`). Data-Juicer divides by 10 only when the model
    *name* contains `shunk031/aesthetics-predictor`, so a local copy of the same
    checkpoint scores 10x higher there; we divide for every LAION predictor.
    """

    stats_key = "image_aesthetics_scores"
    stats_keys = ("image_aesthetics_scores",)
    min_arg, max_arg = "min_score", "max_score"

    def __init__(
        self,
        hf_scorer_model: str = DEFAULT_SCORER,
        trust_remote_code: bool = False,
        min_score: float = 0.5,
        max_score: float = 1.0,
        any_or_all: Literal["any", "all"] = "any",
        gpu_batch_size: int = 64,
        dtype: str = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.check_any_or_all(any_or_all)
        check_dtype(dtype)
        self.hf_scorer_model = hf_scorer_model or DEFAULT_SCORER  # Data-Juicer's "" default
        self.trust_remote_code = trust_remote_code
        self.min_score, self.max_score, self.any_or_all = min_score, max_score, any_or_all
        self.gpu_batch_size, self.dtype = gpu_batch_size, dtype
        self.model_path = resolve_model_path(self.hf_scorer_model, kind=AESTHETICS,
                                             arg="hf_scorer_model")  # fmt: skip
        head_kind(self.model_path, self.hf_scorer_model)  # which head: known before work

    def load_model(self, device: str) -> tuple[Any, Any]:
        model = AestheticsModel(self.model_path, self.hf_scorer_model, device,
                                self.model_dtype(device))  # fmt: skip
        return model, load_hf_processor(self.model_path, image_only=True)

    def preprocess(self, images: list[Any]) -> Any:
        return self._model[1](images=images, return_tensors="pt")["pixel_values"]

    def score(self, pixels: Any) -> list[float]:
        return (self._model[0](pixels) / 10.0).cpu().tolist()
