"""LAION's aesthetics predictors, loaded from the published checkpoints with transformers only.

The `shunk031/aesthetics-predictor-*` checkpoints (made by the simple-aesthetics-predictor
package) are a CLIP vision tower with projection (`vision_model.*`,
`visual_projection.*`) plus a score head (`layers.*` for V2, `predictor.*` for V1),
with `AestheticsPredictor...` as the architecture in config.json. We build the tower
as transformers' `CLIPVisionModelWithProjection` from that config and the head as
the same `nn.Sequential`, so the checkpoint loads without `trust_remote_code` and
without the package. The score is the head applied to the L2-normalised image
embedding: LAION's 1-10 rating scale.
"""

from __future__ import annotations

import glob
import os
from typing import Any

from .models import load_hf_model, read_config

HEADS = {
    "AestheticsPredictorV1": "v1",
    "AestheticsPredictorV2Linear": "linear",
    "AestheticsPredictorV2ReLU": "relu",
}
# Keys of config.json that are not CLIPVisionConfig fields.
_NOT_VISION = {"architectures", "model_type", "auto_map", "transformers_version", "_name_or_path"}


def head_kind(path: str, name: str) -> str:
    """v1 / linear / relu: from config.json's architecture, else (as Data-Juicer) the name."""
    for arch in read_config(path).get("architectures") or []:
        if arch in HEADS:
            return HEADS[arch]
    low = name.lower()
    if "v1" in low:
        return "v1"
    if "v2" in low and ("linear" in low or "relu" in low):
        return "linear" if "linear" in low else "relu"
    raise ValueError(
        f"{name!r}: cannot tell the aesthetics head (config.json architectures should be one "
        f"of {sorted(HEADS)})"
    )


def build_head(kind: str, dim: int) -> Any:
    """The score head, with the module indices of the checkpoints' state dicts."""
    from torch import nn

    if kind == "v1":
        return nn.Linear(dim, 1)
    sizes, dropouts = [dim, 1024, 128, 64, 16], [0.2, 0.2, 0.1]
    layers: list[nn.Module] = []
    for i in range(4):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if kind == "relu":
            layers.append(nn.ReLU())
        if i < len(dropouts):
            layers.append(nn.Dropout(dropouts[i]))
    layers.append(nn.Linear(16, 1))
    return nn.Sequential(*layers)


def _head_state(path: str, prefix: str) -> dict[str, Any]:
    """The head's tensors (keys under `prefix`) from the checkpoint, nothing else read."""
    import torch

    tensors = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if tensors:
        from safetensors import safe_open

        out = {}
        for file in tensors:
            with safe_open(file, framework="pt") as fh:
                out.update({k[len(prefix) :]: fh.get_tensor(k) for k in fh.keys() if k.startswith(prefix)})  # fmt: skip
        return out
    out = {}
    for file in sorted(glob.glob(os.path.join(path, "*.bin"))):
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        out.update({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    return out


class AestheticsModel:
    """Tower + head on one device; `__call__(pixel_values)` gives the 1-10 ratings."""

    def __init__(self, path: str, name: str, device: str, dtype: Any) -> None:
        from transformers import CLIPVisionConfig
        from transformers.utils import logging as hf_logging

        kind = head_kind(path, name)
        fields = read_config(path)
        fields = fields.get("vision_config", fields)  # a full CLIP config works too
        config = CLIPVisionConfig(**{k: v for k, v in fields.items() if k not in _NOT_VISION})
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the head's keys are "unexpected" to the tower
        try:
            self.tower = load_hf_model(
                path, "CLIPVisionModelWithProjection", device, dtype, config=config
            )
        finally:
            hf_logging.set_verbosity(verbosity)
        self.head = build_head(kind, config.projection_dim)
        prefix = "predictor." if kind == "v1" else "layers."
        self.head.load_state_dict(_head_state(path, prefix))  # strict: every head weight
        self.head.to(device, dtype).eval()
        self.device, self.dtype = device, dtype

    def __call__(self, pixel_values: Any) -> Any:
        import torch

        with torch.inference_mode():
            pixels = pixel_values.to(self.device, self.dtype)
            emb = self.tower(pixel_values=pixels).image_embeds
            emb = emb / emb.norm(dim=-1, keepdim=True)
            return self.head(emb)[:, 0].float()
