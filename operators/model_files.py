"""Finding a model's files offline, and checking they are the kind of model the operator runs.

Both checks run in the operator's `__init__`, i.e. when the recipe is validated: a
missing folder, an incomplete one or a model of the wrong kind (a CLIP folder given
as `hf_img2seq`) fails the recipe before any work, with a message that says what to
fix, instead of quarantining every sample later.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth")
# Hub snapshots (transformers 4) carry preprocessor_config.json; transformers >= 5.24's
# save_pretrained nests the image processor in processor_config.json instead. Either will do.
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
DIFFUSERS_INDEX = "model_index.json"  # a diffusers pipeline's top-level file


class ModelNotFoundError(FileNotFoundError):
    """The model's files are not where the recipe says; the message says what to put there."""


class WrongModelError(ValueError):
    """The folder holds a model of another kind than the operator runs."""


@dataclass(frozen=True)
class ModelKind:
    """What an operator's model argument must hold.

    `architectures`: regular expressions, one of which must match (in full) one of
    the `architectures` of the folder's config.json; `described` says it in words.
    A config without `architectures` is accepted (older exports lack it).
    """

    described: str
    architectures: tuple[str, ...] = ()
    needs_processor: bool = True

    def check(self, arg: str, name: str, config: dict) -> None:
        found = config.get("architectures") or []
        if not self.architectures or not found:
            return
        if any(re.fullmatch(p, a) for p in self.architectures for a in found):
            return
        raise WrongModelError(
            f"{arg} {name!r} is a {', '.join(found)} (config.json architectures); expected "
            f"{self.described}. Point {arg} at such a model folder."
        )


def resolve_model_path(
    name_or_path: str,
    required: Sequence[str] = ("config.json",),
    kind: ModelKind | None = None,
    arg: str = "model",
    trust_remote_code: bool = False,
) -> str:
    """A local directory holding the model: the path itself, or the Hugging Face cache entry.

    Nothing is downloaded. Raises `ModelNotFoundError` naming the paths tried, the
    files missing and how to provide them, and `WrongModelError` when `kind` does not
    match the architecture in config.json (not checked under `trust_remote_code`,
    where a custom class may carry any name).
    """
    tried = []
    candidates = [os.path.expanduser(name_or_path)]
    if not os.path.isabs(name_or_path) and name_or_path.count("/") <= 1:
        cached = _hf_cache_dir(name_or_path)
        if cached:
            candidates.append(cached)
    for path in candidates:
        tried.append(path)
        if os.path.isdir(path):
            missing = [f for f in required if not os.path.exists(os.path.join(path, f))]
            if (
                kind is not None
                and kind.needs_processor
                and not any(os.path.exists(os.path.join(path, f)) for f in PROCESSOR_FILES)
            ):
                missing.append(" or ".join(PROCESSOR_FILES))
            has_weights = _has_weights(path)
            if missing or not has_weights:
                detail = ", ".join(
                    missing + ([] if has_weights else ["model weights (*.safetensors / *.bin)"])
                )
                raise ModelNotFoundError(
                    f"model directory {path} is incomplete: missing {detail}. Put the complete "
                    f"Hugging Face snapshot of {name_or_path!r} there."
                )
            if kind is not None and not trust_remote_code:
                kind.check(arg, name_or_path, read_config(path))
            return path
    raise ModelNotFoundError(
        f"model {name_or_path!r} not found (tried: {', '.join(tried)}; nothing is downloaded). "
        f"On a machine with internet: `huggingface-cli download {name_or_path} --local-dir "
        f"/models/{os.path.basename(name_or_path.rstrip('/'))}` (or `hf download ...`), copy the "
        "folder here and point the recipe at it. To try the pipeline without weights: "
        "`dj-synth make-tiny-models DIR` (random weights, meaningless output)."
    )


def read_config(path: str) -> dict:
    """The folder's config.json as a dict ({} when absent or unreadable); for a diffusers
    pipeline (model_index.json, no config.json), its class as `architectures`."""
    config = _read_json(os.path.join(path, "config.json"))
    if config is None and os.path.exists(os.path.join(path, DIFFUSERS_INDEX)):
        index = _read_json(os.path.join(path, DIFFUSERS_INDEX)) or {}
        name = index.get("_class_name")
        return {"architectures": [name]} if isinstance(name, str) else {}
    return config or {}


def _read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _has_weights(path: str) -> bool:
    """Weight files in the folder, or in its components' folders for a diffusers pipeline."""
    if any(glob.glob(os.path.join(path, p)) for p in WEIGHT_PATTERNS):
        return True
    if os.path.exists(os.path.join(path, DIFFUSERS_INDEX)):
        return any(glob.glob(os.path.join(path, "*", p)) for p in WEIGHT_PATTERNS)
    return False


def _hf_cache_dir(repo_id: str) -> str | None:
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo_id, local_files_only=True)
    except Exception:
        return None


# The kinds the built-in operators run.
IMG2SEQ = ModelKind(
    "an image-to-text generation model (architectures *ForConditionalGeneration, "
    "*ForImageTextToText or *ForVision2Seq, e.g. Blip2ForConditionalGeneration)",
    (r".*ForConditionalGeneration", r".*ForImageTextToText", r".*ForVision2Seq"),
)
CLIP = ModelKind(
    "a CLIP-style dual encoder (CLIPModel, SiglipModel, ...)",
    (r".*CLIPModel", r"Siglip\d*Model", r"MetaClip\d*Model"),
)
BLIP_ITM = ModelKind(
    "a BLIP image-text matching model (BlipForImageTextRetrieval)",
    (r"BlipForImageTextRetrieval",),
)
IMAGE_CLASSIFIER = ModelKind(
    "an image classifier (architectures *ForImageClassification, e.g. ViTForImageClassification)",
    (r".*ForImageClassification",),
)
AESTHETICS = ModelKind(
    "a LAION aesthetics predictor (AestheticsPredictorV1, AestheticsPredictorV2Linear or "
    "AestheticsPredictorV2ReLU: a CLIP vision tower plus a score head)",
    (r"AestheticsPredictor(V1|V2Linear|V2ReLU)",),
)
DIFFUSION = ModelKind(
    "a diffusers pipeline (model_index.json with a *Pipeline class, e.g. "
    "StableDiffusionPipeline, StableDiffusionXLPipeline, StableDiffusion3Pipeline)",
    (r".*Pipeline",),
    needs_processor=False,
)
