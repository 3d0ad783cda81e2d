"""MGM's image pipeline: one CLIP-style preprocessing at the aux size, bilinear-resized for CLIP.

MGM processes every image once at ``image_size_aux`` (768: shortest-edge bicubic resize, center
crop, rescale, CLIP mean/std) for the ConvNeXt tower, then resizes that tensor (bilinear,
``align_corners=False``) to the CLIP size (336). ``pad`` first pastes the image centred on a
square of the mean colour. The PIL backend of the CLIP processor is used because MGM's processor
was the slow (PIL) one; sizes come from the tower folder and the config, so tiny towers work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image


def expand2square(image: Image.Image, background: tuple[int, ...]) -> Image.Image:
    """Centre ``image`` on a square canvas of colour ``background`` (MGM's ``pad`` mode)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), background)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


@dataclass
class MGMImageProcessor:
    """Turns a PIL image into ``(image, image_aux)`` tensors for ``MGMGemmaForCausalLM``.

    ``processor`` is a transformers CLIP image processor (its mean/std/resample are used);
    ``image_size`` is the CLIP input size, ``image_size_aux`` the aux-tower input size (equal
    sizes mean no aux tower: both tensors are the same).
    """

    processor: Any
    image_size: int
    image_size_aux: int
    image_aspect_ratio: str = "square"

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        image_size_aux: int | None = None,
        image_aspect_ratio: str = "square",
    ) -> MGMImageProcessor:
        """Read the CLIP preprocessor config of a local tower folder (or a saved checkpoint)."""
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        path = Path(path)
        if not (path / "preprocessor_config.json").is_file():
            raise FileNotFoundError(f"image processor: no preprocessor_config.json in {path}")
        proc = CLIPImageProcessorPil.from_pretrained(str(path), local_files_only=True)
        crop = proc.crop_size
        size = int(crop["height"] if isinstance(crop, dict) else crop.height)
        return cls(proc, size, int(image_size_aux or size), image_aspect_ratio)

    @property
    def image_mean(self) -> list[float]:
        return list(self.processor.image_mean)

    def background(self) -> tuple[int, ...]:
        return tuple(int(x * 255) for x in self.image_mean)

    def __call__(self, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        image = image.convert("RGB")
        if self.image_aspect_ratio == "pad":
            image = expand2square(image, self.background())
        elif self.image_aspect_ratio not in ("square", None, ""):
            raise ValueError(f"unsupported image_aspect_ratio: {self.image_aspect_ratio}")
        aux = self.image_size_aux
        out = self.processor(
            images=image,
            size={"shortest_edge": aux},
            crop_size={"height": aux, "width": aux},
            return_tensors="pt",
        )
        image_aux = out["pixel_values"][0].float()
        if aux == self.image_size:
            return image_aux, image_aux
        raw = F.interpolate(
            image_aux[None],
            size=(self.image_size, self.image_size),
            mode="bilinear",
            align_corners=False,
        )[0]
        return raw, image_aux

    def blank(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero tensors for a text-only sample in a multimodal batch (as MGM does)."""
        return (
            torch.zeros(3, self.image_size, self.image_size),
            torch.zeros(3, self.image_size_aux, self.image_size_aux),
        )

    def save_pretrained(self, path: str | Path) -> None:
        self.processor.save_pretrained(str(path))
