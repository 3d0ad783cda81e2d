"""MGM's image encoders: CLIP tower, OpenCLIP ConvNeXt aux tower, projector, patch info mining.

Module and attribute names mirror MGM's (``vision_tower.vision_tower.vision_model.*``,
``vision_tower_aux.vision_stem.*`` / ``.vision_stages.*``, ``mm_projector.{0,2}.*``) because the
state-dict keys of MGM's published checkpoints and ``mm_projector.bin`` files are derived from
them. Towers can be built as bare structures (their weights then come from a checkpoint) or loaded
from their original local folders; every size follows from the configs, so tiny towers work too.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = ("open_clip_pytorch_model.bin", "open_clip_model.safetensors")


# ----------------------------------------------------------------------------- CLIP tower


def load_clip_vision_config(path: str | Path) -> dict[str, Any]:
    """The CLIP vision config (as a dict) of a local CLIP or CLIPVision checkpoint folder."""
    from transformers import CLIPVisionConfig

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"vision tower: no config.json in {path} (a local CLIP folder)")
    return CLIPVisionConfig.from_pretrained(str(path)).to_dict()


class _VisionModelHolder(nn.Module):
    """Keeps MGM's ``vision_tower.vision_model.*`` key layout on transformers 5, whose
    ``CLIPVisionModel`` no longer has an inner ``vision_model`` (its keys start at ``embeddings``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.vision_model = model

    @property
    def config(self) -> Any:
        return self.vision_model.config

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.vision_model(*args, **kwargs)


def _mgm_layout(model: nn.Module) -> nn.Module:
    """``model`` if it already nests ``vision_model`` (transformers 4), else wrapped."""
    return model if hasattr(model, "vision_model") else _VisionModelHolder(model)


class CLIPVisionTower(nn.Module):
    """CLIP ViT whose hidden layer ``select_layer`` (patch tokens, no CLS) feeds the LLM.

    MGM runs it frozen under ``no_grad``; gradients flow only when some of its weights are
    trainable (``optimize_vision_tower``).
    """

    def __init__(
        self,
        vision_config: dict[str, Any],
        select_layer: int = -2,
        select_feature: str = "patch",
    ) -> None:
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModel

        cfg = CLIPVisionConfig(**{k: v for k, v in vision_config.items() if k != "model_type"})
        self.vision_tower = _mgm_layout(CLIPVisionModel(cfg))
        self.select_layer = select_layer
        self.select_feature = select_feature

    @classmethod
    def from_path(
        cls, path: str | Path, select_layer: int = -2, select_feature: str = "patch"
    ) -> CLIPVisionTower:
        """Load the original weights from a local CLIP folder (``CLIPModel`` or vision-only)."""
        from transformers import CLIPVisionModel

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"vision tower: folder not found: {path}")
        if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
            raise FileNotFoundError(f"vision tower: no weights (*.safetensors / *.bin) in {path}")
        tower = cls(load_clip_vision_config(path), select_layer, select_feature)
        tower.vision_tower = _mgm_layout(
            CLIPVisionModel.from_pretrained(str(path), local_files_only=True)
        )
        return tower

    @property
    def config(self) -> Any:
        return self.vision_tower.config

    @property
    def hidden_size(self) -> int:
        return self.vision_tower.config.hidden_size

    @property
    def image_size(self) -> int:
        return self.vision_tower.config.image_size

    @property
    def num_patches_per_side(self) -> int:
        return self.image_size // self.vision_tower.config.patch_size

    @property
    def num_tokens(self) -> int:
        """Features per image (576 for CLIP-L/14 at 336 with ``patch``; +1 with ``cls_patch``)."""
        return self.num_patches_per_side**2 + (self.select_feature == "cls_patch")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        weight = self.vision_tower.vision_model.embeddings.patch_embedding.weight
        trainable = any(p.requires_grad for p in self.vision_tower.parameters())
        with torch.set_grad_enabled(trainable and torch.is_grad_enabled()):
            out = self.vision_tower(
                images.to(device=weight.device, dtype=weight.dtype), output_hidden_states=True
            )
            feats = out.hidden_states[self.select_layer]
            if self.select_feature == "patch":
                feats = feats[:, 1:]
            elif self.select_feature != "cls_patch":
                raise ValueError(f"unknown mm_vision_select_feature: {self.select_feature}")
        return feats.to(images.dtype)


# ----------------------------------------------------------------------------- aux tower


def load_open_clip_vision_config(path: str | Path) -> dict[str, Any]:
    """``model_cfg.vision_cfg`` of an OpenCLIP folder (``open_clip_config.json``).

    Without that file, a folder named like MGM's ConvNeXt-L d-320 falls back to open_clip's
    built-in ``convnext_large_d_320`` config, as MGM itself does.
    """
    path = Path(path)
    cfg_file = path / OPEN_CLIP_CONFIG
    if cfg_file.is_file():
        cfg = json.loads(cfg_file.read_text())
        return dict(cfg.get("model_cfg", cfg)["vision_cfg"])
    name = path.name.lower()
    if "convnext" in name and "large" in name and "d-320" in name:
        import open_clip

        return dict(open_clip.get_model_config("convnext_large_d_320")["vision_cfg"])
    raise FileNotFoundError(f"vision tower aux: no {OPEN_CLIP_CONFIG} in {path}")


class OpenCLIPConvNeXtTower(nn.Module):
    """The OpenCLIP ConvNeXt trunk (stem + 4 stages) as a multi-scale feature extractor.

    Stages 2-4 are upsampled (bilinear) to stage 1's size and concatenated on channels, giving
    ``sum(channels) x H/4 x W/4`` (2880 x 192 x 192 for ConvNeXt-L at 768). ``drop_path`` keeps
    OpenCLIP's ``timm_drop_path`` live in train mode, as MGM does (its tower is frozen but its
    DropPath still fires during training).
    """

    def __init__(self, vision_cfg: dict[str, Any], drop_path: bool = True) -> None:
        super().__init__()
        import timm

        name = vision_cfg.get("timm_model_name")
        if not name or "convnext" not in name:
            raise ValueError(f"vision tower aux: expected a timm ConvNeXt, got {name!r}")
        rate = float(vision_cfg.get("timm_drop_path") or 0.0) if drop_path else 0.0
        trunk = timm.create_model(name, pretrained=False, num_classes=0, drop_path_rate=rate)
        self.vision_stem = trunk.stem
        self.vision_stages = trunk.stages
        self.channels = [int(info["num_chs"]) for info in trunk.feature_info][-4:]
        self.image_size = vision_cfg.get("image_size")

    @classmethod
    def from_path(cls, path: str | Path, drop_path: bool = True) -> OpenCLIPConvNeXtTower:
        """Load stem + stages from ``open_clip_pytorch_model.bin`` (or ``.safetensors``)."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"vision tower aux: folder not found: {path}")
        tower = cls(load_open_clip_vision_config(path), drop_path=drop_path)
        files = [path / f for f in OPEN_CLIP_WEIGHTS if (path / f).is_file()]
        if not files:
            raise FileNotFoundError(
                f"vision tower aux: no weights ({' / '.join(OPEN_CLIP_WEIGHTS)}) in {path}"
            )
        if files[0].suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(files[0]))
        else:
            state = torch.load(files[0], map_location="cpu", weights_only=True)
            state = state.get("state_dict", state)
        tower.load_open_clip_state_dict(state, source=str(files[0]))
        return tower

    def load_open_clip_state_dict(self, state: dict[str, torch.Tensor], source: str = "") -> None:
        """Copy ``visual.trunk.stem.*`` / ``visual.trunk.stages.*`` into the tower (strict)."""
        state = {k.removeprefix("module."): v for k, v in state.items()}
        for attr, prefix in (("vision_stem", "stem."), ("vision_stages", "stages.")):
            full = "visual.trunk." + prefix
            sub = {k[len(full) :]: v.float() for k, v in state.items() if k.startswith(full)}
            if not sub:
                raise KeyError(f"vision tower aux: no '{full}*' weights in {source}")
            getattr(self, attr).load_state_dict(sub, strict=True)

    @property
    def hidden_size(self) -> int:
        return sum(self.channels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        weight = self.vision_stem[0].weight
        trainable = any(p.requires_grad for p in self.parameters())
        with torch.set_grad_enabled(trainable and torch.is_grad_enabled()):
            x = self.vision_stem(images.to(device=weight.device, dtype=weight.dtype))
            stages = []
            for stage in self.vision_stages:
                x = stage(x)
                stages.append(x)
            size = stages[0].shape[-2:]
            feats = [
                F.interpolate(s.float(), size=size, mode="bilinear", align_corners=False).to(
                    s.dtype
                )
                for s in stages
            ]
            return torch.cat(feats, dim=1)


# ----------------------------------------------------------------------------- projectors


def build_vision_projector(projector_type: str, in_dim: int, out_dim: int) -> nn.Module:
    """MGM's ``mm_projector``: ``linear``, ``mlpNx_gelu`` (``mlp2x_gelu`` for MGM-2B), ``identity``."""
    if projector_type == "linear":
        return nn.Linear(in_dim, out_dim)
    match = re.match(r"^mlp(\d+)x_gelu$", projector_type)
    if match:
        layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
        for _ in range(1, int(match.group(1))):
            layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
        return nn.Sequential(*layers)
    if projector_type == "identity":
        return nn.Identity()
    raise ValueError(f"unknown mm_projector_type: {projector_type}")


def build_uni_projector(in_dim: int, out_dim: int) -> nn.Sequential:
    """One of the ``vlm_uni_*_projector`` modules: LayerNorm + Linear."""
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim))


def windows_of(features_aux: torch.Tensor, grid: int) -> torch.Tensor:
    """[B, C, H, W] aux features -> [B, grid*grid, (H/grid)*(W/grid), C] windows.

    Window ``i`` holds the aux features under CLIP token ``i`` (row-major), as MGM lays them out.
    """
    b, c, h, w = features_aux.shape
    if h % grid or w % grid:
        raise ValueError(f"aux feature map {h}x{w} is not divisible by the CLIP grid {grid}")
    ph, pw = h // grid, w // grid
    x = features_aux.permute(0, 2, 3, 1).reshape(b, grid, ph, grid, pw, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, grid * grid, ph * pw, c).contiguous()


def mine_patch_info(
    features: torch.Tensor,
    features_aux: torch.Tensor,
    query_projector: nn.Module,
    aux_projector: nn.Module,
    val_projector: nn.Module,
) -> torch.Tensor:
    """MGM's patch info mining: CLIP features + attention over each token's aux window.

    ``features`` [B, N, C] (N = grid^2 CLIP tokens), ``features_aux`` [B, Ca, H, W]. Each token's
    query attends over its window: softmax(q k^T / sqrt(d)) v, averaged, added to ``features``.
    """
    grid = math.isqrt(features.shape[1])
    if grid * grid != features.shape[1]:
        raise ValueError(f"{features.shape[1]} CLIP tokens do not form a square grid")
    dtype = next(query_projector.parameters()).dtype
    features = features.to(dtype)
    windows = windows_of(features_aux.to(dtype), grid)
    query = query_projector(features)  # [B, N, D]
    key = aux_projector(windows)  # [B, N, P, D]
    value = val_projector(windows)  # [B, N, P, D]
    att = query[:, :, None] @ (key.transpose(-1, -2) / key.shape[-1] ** 0.5)  # [B, N, 1, P]
    att = att.nan_to_num()
    mined = (att.softmax(-1) @ value).mean(2)  # [B, N, D]
    return features + mined
