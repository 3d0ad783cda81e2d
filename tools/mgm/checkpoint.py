"""Load a finetuned MGM checkpoint for evaluation by MGM's rule (``mgm/model/builder.py``).

MGM's evaluation loader builds both vision towers from the folders named in the checkpoint's
config (``mm_vision_tower``, ``mm_vision_tower_aux``; a missing folder is an error), then reads
back from the checkpoint only what training may have changed: the CLIP tower (its
``vision_tower.vision_tower.*`` keys), the ConvNeXt stem and stages only when the run had
``optimize_vision_tower_aux``, ``vlm_uni_*``, the projector and the LLM. This module does the
same, so a published MGM checkpoint (whose aux weights in the shards are ignored by MGM) gives
MGM's numerics, and a checkpoint without tower weights gets them from the folders instead of
random ones. Everything that is neither a tower nor found in the checkpoint is an error.

``vision_tower`` / ``vision_tower_aux`` arguments relocate the folders (the config stores the
absolute paths of the training machine).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CLIP_PREFIX = "model.vision_tower.vision_tower."
AUX_PREFIX = "model.vision_tower_aux."
PROCESSOR_FILE = "preprocessor_config.json"


class CheckpointError(RuntimeError):
    """A checkpoint or tower folder that cannot be loaded; the message names the path."""


def checkpoint_keys(path: str | Path) -> set[str]:
    """Parameter names stored in a Hugging Face checkpoint folder (safetensors or bin)."""
    path = Path(path)
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (path / index).is_file():
            return set(json.loads((path / index).read_text())["weight_map"])
    if (path / "model.safetensors").is_file():
        from safetensors import safe_open

        with safe_open(str(path / "model.safetensors"), framework="pt") as f:
            return set(f.keys())
    if (path / "pytorch_model.bin").is_file():
        import torch

        state = torch.load(path / "pytorch_model.bin", map_location="meta", weights_only=True)
        return set(state)
    raise CheckpointError(
        f"{path}: no weights (model.safetensors[.index.json] / pytorch_model.bin); an "
        "adapter-only pretrain folder cannot be evaluated, evaluate the finetune output"
    )


def tower_folder(config: Any, key: str, override: str | Path | None) -> Path:
    """The tower folder for ``mm_vision_tower`` / ``mm_vision_tower_aux`` (MGM requires it)."""
    value = override or getattr(config, key, None)
    if not value:
        raise CheckpointError(f"the checkpoint's config has no {key}")
    folder = Path(value).expanduser()
    if not folder.is_dir():
        flag = "--vision-tower" if key == "mm_vision_tower" else "--vision-tower-aux"
        raise CheckpointError(
            f"{key}: tower folder not found: {folder} (MGM reloads the towers from their "
            f"original folders; pass {flag} DIR if it moved)"
        )
    return folder


def _check_complete(model: Any, stored: set[str], path: Path) -> None:
    """Every non-tower parameter must come from the checkpoint (random weights never pass)."""
    tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", True) else set()
    missing = sorted(
        name
        for name in model.state_dict()
        if name not in stored and name not in tied and not name.startswith(("model.vision_tower",))
    )
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise CheckpointError(f"{path}: weights missing from the checkpoint: {shown}")


def _all_or_none(stored: set[str], prefix: str, expected: set[str], path: Path) -> bool:
    have = {k for k in stored if k.startswith(prefix)}
    if have and have != expected:
        raise CheckpointError(
            f"{path}: holds {len(have)} of the {len(expected)} '{prefix}*' weights; "
            "a tower is loaded whole, from the checkpoint or from its folder"
        )
    return bool(have)


def load_mgm_checkpoint(
    path: str | Path,
    dtype: Any,
    vision_tower: str | Path | None = None,
    vision_tower_aux: str | Path | None = None,
) -> Any:
    """``MGMGemmaForCausalLM`` from ``path`` in ``dtype`` (on CPU, eval mode), towers by MGM's rule."""
    from .encoders import CLIPVisionTower, OpenCLIPConvNeXtTower
    from .model import MGMConfig, MGMGemmaForCausalLM

    path = Path(path)
    config = MGMConfig.from_pretrained(str(path), local_files_only=True)
    clip_dir = tower_folder(config, "mm_vision_tower", vision_tower)
    config.mm_vision_tower = str(clip_dir)
    aux_dir = None
    if getattr(config, "mm_vision_tower_aux", None) or vision_tower_aux:
        aux_dir = tower_folder(config, "mm_vision_tower_aux", vision_tower_aux)
        config.mm_vision_tower_aux = str(aux_dir)
    stored = checkpoint_keys(path)
    model = MGMGemmaForCausalLM.from_pretrained(
        str(path), config=config, dtype=dtype, local_files_only=True
    )
    _check_complete(model, stored, path)
    inner = model.get_model()
    state = model.state_dict()
    try:
        clip = CLIPVisionTower.from_path(clip_dir)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"mm_vision_tower {clip_dir}: cannot load the tower: {exc}") from exc
    clip_keys = {k for k in state if k.startswith(CLIP_PREFIX)}
    if not _all_or_none(stored, CLIP_PREFIX, clip_keys, path):
        inner.vision_tower.vision_tower.load_state_dict(clip.vision_tower.state_dict())
    if aux_dir is not None:
        try:
            aux = OpenCLIPConvNeXtTower.from_path(aux_dir, getattr(config, "drop_path", True))
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(
                f"mm_vision_tower_aux {aux_dir}: cannot load the tower: {exc}"
            ) from exc
        aux_keys = {k for k in state if k.startswith(AUX_PREFIX)}
        in_ckpt = _all_or_none(stored, AUX_PREFIX, aux_keys, path)
        if not (in_ckpt and getattr(config, "optimize_vision_tower_aux", False)):
            inner.vision_tower_aux.load_state_dict(aux.state_dict())
    return model.eval()


def image_processor_folder(config: Any, path: str | Path, vision_tower: str | Path | None) -> Path:
    """MGM reads the CLIP preprocessing from the tower folder; a checkpoint copy is the fallback."""
    candidates = [Path(vision_tower or getattr(config, "mm_vision_tower", "") or ""), Path(path)]
    for folder in candidates:
        if str(folder) and (folder / PROCESSOR_FILE).is_file():
            return folder
    raise CheckpointError(
        f"no {PROCESSOR_FILE} in the CLIP tower folder or the checkpoint: "
        + ", ".join(str(c) for c in candidates)
    )
