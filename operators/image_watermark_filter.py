"""image_watermark_filter: drop samples whose images probably carry a watermark."""

from __future__ import annotations

from typing import Any, Literal

from .image_scoring import ImageClassifierFilter
from .registry import register


@register("image_watermark_filter")
class ImageWatermarkFilter(ImageClassifierFilter):
    """Stat `image_watermark_prob`: per image, the watermark detector's probability of
    the `watermark` label (class 1 when no label has that name). A sample is kept when
    its probabilities are <= `prob_threshold` (`any_or_all` over its images); a sample
    without images is kept. BLIP-2 writes "stock photo" about watermarked images, so
    run it before recaptioning.
    """

    stats_key = "image_watermark_prob"
    stats_keys = ("image_watermark_prob",)
    positive_label = "watermark"
    min_arg, max_arg = "min_prob", "prob_threshold"
    min_prob = None  # Data-Juicer's keep rule is `prob <= prob_threshold`, no lower bound

    def __init__(
        self,
        hf_watermark_model: str = "amrul-hzz/watermark_detector",
        trust_remote_code: bool = False,
        prob_threshold: float = 0.8,
        any_or_all: Literal["any", "all"] = "any",
        gpu_batch_size: int = 64,
        dtype: str = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.check_any_or_all(any_or_all)
        self.hf_watermark_model, self.prob_threshold = hf_watermark_model, prob_threshold
        self.any_or_all = any_or_all
        self.init_classifier(
            "hf_watermark_model", hf_watermark_model, trust_remote_code, gpu_batch_size, dtype
        )
