"""``MGMConfig`` / ``MGMGemmaForCausalLM``: Mini-Gemini over Hugging Face Gemma (transformers 5).

Why a re-implementation: MGM's own classes are pinned to transformers 4.38 (legacy KV tuples, a
custom ``prepare_inputs_for_generation``, ``transformers.deepspeed`` imports). This one keeps
MGM's module names, so MGM's published weights and ``mm_projector.bin`` files load, and uses only
current public APIs: decoding goes through the generic ``generate`` with ``Cache`` objects.

Differences from MGM that matter for loading: every multimodal module (both towers, projector,
``vlm_uni_*``) is built in ``__init__`` from the config, so ``from_pretrained`` on a checkpoint
loads all of them from its safetensors in one go (MGM builds ``vlm_uni_*`` later and re-reads the
shards through the index). The tower configs are stored in the config (``mm_vision_config``,
``mm_vision_aux_config``) so ``from_pretrained`` can rebuild a checkpoint without the original
tower folders; for MGM's own checkpoints (without those keys) they are read from
``mm_vision_tower(_aux)``. Evaluation loads checkpoints with ``checkpoint.load_mgm_checkpoint``,
which follows MGM's rule (towers from their folders) instead.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    GemmaConfig,
    GemmaForCausalLM,
    GemmaModel,
)

from .constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from .encoders import (
    CLIPVisionTower,
    OpenCLIPConvNeXtTower,
    build_uni_projector,
    build_vision_projector,
    load_clip_vision_config,
    load_open_clip_vision_config,
    mine_patch_info,
)

logger = logging.getLogger(__name__)

UNI_MODULES = ("vlm_uni_query_projector", "vlm_uni_aux_projector", "vlm_uni_val_projector")


class MGMConfig(GemmaConfig):
    """Gemma config plus MGM's ``mm_*`` / ``image_*`` / ``tokenizer_*`` keys (stored as given).

    ``hidden_act: "gelu"`` (gemma-2b-it's config, hence MGM-2B's) means the EXACT (erf) GELU
    here, as it did in transformers 4.38.x, the version the challenge's toolkit pins and MGM-2B
    was trained and evaluated with (``GemmaMLP`` used ``ACT2FN[config.hidden_act]``; its
    ``hidden_activation`` key, introduced in 4.39, was ignored). transformers 5's
    ``GemmaConfig`` rewrites ``"gelu"`` to the tanh approximation, which would shift every
    MLP activation of published MGM weights; this subclass keeps the value as written, so
    checkpoints saved here also read back as exact GELU in MGM's own code.
    """

    model_type = "mgm_gemma"

    def __post_init__(self, **kwargs: Any) -> None:
        exact_gelu = self.hidden_act == "gelu"
        if exact_gelu:  # hide it from the parent's rewrite (and its misleading warning)
            self.hidden_act = "gelu_pytorch_tanh"
        super().__post_init__(**kwargs)
        if exact_gelu:
            self.hidden_act = "gelu"


class MGMGemmaModel(GemmaModel):
    """Gemma decoder that also owns the vision modules, named as in MGM's ``MGMMetaModel``."""

    config_class = MGMConfig

    def __init__(self, config: GemmaConfig) -> None:
        super().__init__(config)
        if getattr(config, "mm_vision_tower", None):
            self.build_vision_modules(config)

    # -- structure ---------------------------------------------------------------------------

    def build_vision_modules(self, config: Any) -> None:
        """Build (random-initialised) towers, projector and ``vlm_uni_*`` from the config."""
        vis_cfg = getattr(config, "mm_vision_config", None) or load_clip_vision_config(
            config.mm_vision_tower
        )
        self.vision_tower = CLIPVisionTower(
            vis_cfg,
            getattr(config, "mm_vision_select_layer", -2),
            getattr(config, "mm_vision_select_feature", "patch"),
        )
        mm_hidden = getattr(config, "mm_hidden_size", None) or self.vision_tower.hidden_size
        self.mm_projector = build_vision_projector(
            getattr(config, "mm_projector_type", "linear"), mm_hidden, config.hidden_size
        )
        if getattr(config, "mm_vision_tower_aux", None):
            aux_cfg = getattr(config, "mm_vision_aux_config", None) or (
                load_open_clip_vision_config(config.mm_vision_tower_aux)
            )
            self.vision_tower_aux = OpenCLIPConvNeXtTower(
                aux_cfg, drop_path=getattr(config, "drop_path", True)
            )
            self.build_uni_modules(mm_hidden, self.vision_tower_aux.hidden_size)

    def build_uni_modules(self, hidden: int, hidden_aux: int) -> None:
        """The three patch-info-mining projectors (fresh PyTorch-default init, as in MGM)."""
        self.vlm_uni_query_projector = build_uni_projector(hidden, hidden)
        self.vlm_uni_aux_projector = build_uni_projector(hidden_aux, hidden)
        self.vlm_uni_val_projector = build_uni_projector(hidden_aux, hidden)

    def get_vision_tower(self) -> CLIPVisionTower | None:
        return getattr(self, "vision_tower", None)

    def get_vision_tower_aux(self) -> OpenCLIPConvNeXtTower | None:
        return getattr(self, "vision_tower_aux", None)

    # -- training-time initialisation (MGM's initialize_vision_modules + initialize_uni_modules)

    def initialize_vision_modules(self, model_args: Any) -> None:
        """Load both towers from their local folders, build projector + ``vlm_uni_*``, write the
        ``mm_*`` config keys and load ``pretrain_mm_mlp_adapter`` if given."""
        cfg = self.config
        vision_path = str(Path(model_args.vision_tower).resolve())
        cfg.mm_vision_tower = vision_path
        cfg.mm_vision_select_layer = model_args.mm_vision_select_layer
        cfg.mm_vision_select_feature = model_args.mm_vision_select_feature
        cfg.mm_projector_type = model_args.mm_projector_type
        self.vision_tower = CLIPVisionTower.from_path(
            vision_path, cfg.mm_vision_select_layer, cfg.mm_vision_select_feature
        )
        cfg.mm_vision_config = self.vision_tower.config.to_dict()
        cfg.mm_hidden_size = self.vision_tower.hidden_size
        cfg.use_mm_proj = True
        if getattr(self, "mm_projector", None) is None:
            self.mm_projector = build_vision_projector(
                cfg.mm_projector_type, cfg.mm_hidden_size, cfg.hidden_size
            )
        else:  # unfreeze, as MGM does when re-initialising
            self.mm_projector.requires_grad_(True)
        if getattr(model_args, "vision_tower_aux", None):
            aux_path = str(Path(model_args.vision_tower_aux).resolve())
            cfg.mm_vision_tower_aux = aux_path
            cfg.drop_path = getattr(model_args, "drop_path", True)
            self.vision_tower_aux = OpenCLIPConvNeXtTower.from_path(aux_path, cfg.drop_path)
            cfg.mm_vision_aux_config = load_open_clip_vision_config(aux_path)
            cfg.mm_hidden_size_aux = self.vision_tower_aux.hidden_size
            self.build_uni_modules(cfg.mm_hidden_size, cfg.mm_hidden_size_aux)
        cfg.optimize_vision_tower = bool(getattr(model_args, "optimize_vision_tower", False))
        cfg.optimize_vision_tower_aux = bool(
            getattr(model_args, "optimize_vision_tower_aux", False)
        )
        self.set_towers_trainable(cfg.optimize_vision_tower, cfg.optimize_vision_tower_aux)
        adapter = getattr(model_args, "pretrain_mm_mlp_adapter", None)
        if adapter:
            self.load_mm_adapter(adapter, load_aux=cfg.optimize_vision_tower_aux)

    def set_towers_trainable(self, optimize: bool, optimize_aux: bool) -> None:
        """MGM's rule: towers frozen; ``optimize_vision_tower`` unfreezes the last half of the
        CLIP encoder layers (``layers[n // 2:]``), ``optimize_vision_tower_aux`` the last block
        of each ConvNeXt stage (stem and downsampling layers stay frozen)."""
        self.vision_tower.requires_grad_(False)
        if optimize:
            layers = self.vision_tower.vision_tower.vision_model.encoder.layers
            for layer in layers[len(layers) // 2 :]:
                layer.requires_grad_(True)
        aux = self.get_vision_tower_aux()
        if aux is not None:
            aux.requires_grad_(False)
            if optimize_aux:
                for stage in aux.vision_stages:
                    stage.blocks[-1].requires_grad_(True)

    def load_mm_adapter(self, path: str | Path, load_aux: bool = False) -> None:
        """Load an MGM ``mm_projector.bin``: projector, ``vlm_uni_*`` and the CLIP tower.

        Keys are matched by substring and the prefix up to the module name stripped, as MGM does;
        the aux-tower keys in the file are used only with ``load_aux`` (MGM reads them only when
        ``optimize_vision_tower_aux`` is on; otherwise the aux tower comes from its own folder).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"pretrain_mm_mlp_adapter: file not found: {path}")
        weights = torch.load(path, map_location="cpu", weights_only=True)

        def get_w(keyword: str) -> dict[str, torch.Tensor]:
            return {
                k.split(keyword + ".", 1)[1]: v for k, v in weights.items() if keyword + "." in k
            }

        result = self.mm_projector.load_state_dict(get_w("mm_projector"), strict=False)
        if result.missing_keys:
            logger.warning("mm_projector keys missing from %s: %s", path, result.missing_keys)
        for name in UNI_MODULES:
            module = getattr(self, name, None)
            sub = get_w(name)
            if module is not None and sub:
                module.load_state_dict(sub, strict=True)
            elif module is not None:
                logger.warning("%s: no %s weights, keeping the fresh ones", path, name)
        clip = get_w("vision_tower.vision_tower")
        if clip:
            self.vision_tower.vision_tower.load_state_dict(clip, strict=True)
        aux = self.get_vision_tower_aux()
        if load_aux and aux is not None:
            for name in ("vision_stem", "vision_stages"):
                sub = get_w("vision_tower_aux." + name)
                if sub:
                    getattr(aux, name).load_state_dict(sub, strict=True)


class MGMGemmaForCausalLM(GemmaForCausalLM):
    """Gemma causal LM whose prompts may hold ``<image>`` (id -200) placeholders.

    ``forward(input_ids, ..., images, images_aux)`` splices the projected image features in (one
    block per -200; labels -100 there); ``generate(inputs, images=..., images_aux=...)`` does the
    same once and then decodes with the KV cache like any HF causal LM.
    """

    config_class = MGMConfig

    def __init__(self, config: GemmaConfig) -> None:
        super().__init__(config)
        self.model = MGMGemmaModel(config)
        self.post_init()

    def get_model(self) -> MGMGemmaModel:
        return self.model

    # -- image features ----------------------------------------------------------------------

    def encode_images(
        self, images: torch.Tensor, images_aux: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[B,3,h,w] (+ [B,3,H,W] aux) -> [B, N, hidden], already carrying Gemma's embed scale.

        transformers 4.38's Gemma multiplied every input embedding by sqrt(hidden) inside the
        model; transformers 5 moved that into ``embed_tokens``, so spliced image features must be
        scaled here to reproduce MGM's numerics (and to suit its trained projector weights).
        """
        model = self.get_model()
        feats = model.vision_tower(images)
        if images_aux is not None and model.get_vision_tower_aux() is not None:
            feats_aux = model.vision_tower_aux(images_aux)
            feats = mine_patch_info(
                feats,
                feats_aux,
                model.vlm_uni_query_projector,
                model.vlm_uni_aux_projector,
                model.vlm_uni_val_projector,
            )
        proj_weight = next(model.mm_projector.parameters(), None)
        if proj_weight is not None:
            feats = feats.to(proj_weight.dtype)
        feats = model.mm_projector(feats)
        scale = getattr(model.embed_tokens, "embed_scale", None)
        if scale is not None:
            feats = feats * scale.to(feats.dtype)
        return feats

    def prepare_inputs_labels_for_multimodal(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None,
        labels: torch.LongTensor | None,
        images: torch.Tensor,
        images_aux: torch.Tensor | None = None,
        padding_side: str | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """Replace each -200 by the image's projected features; returns ``inputs_embeds``,
        ``attention_mask``, ``position_ids`` and ``labels`` (``None`` if not given).

        Padding is dropped, sequences are truncated to ``tokenizer_model_max_length`` and re-padded
        on ``padding_side`` (default: the config's ``tokenizer_padding_side``, right). A sample
        without -200 consumes one image slot (its zero placeholder) like in MGM, contributing an
        empty slice so every sample stays in the graph.
        """
        model = self.get_model()
        image_features = self.encode_images(images, images_aux)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        attention_mask = attention_mask.bool()
        if labels is None:
            labels_in = torch.full_like(input_ids, IGNORE_INDEX)
        else:
            labels_in = labels
        embeds_out: list[torch.Tensor] = []
        labels_out: list[torch.Tensor] = []
        img_idx = 0
        for ids, mask, lab in zip(input_ids, attention_mask, labels_in):
            ids, lab = ids[mask], lab[mask]
            positions = torch.where(ids == IMAGE_TOKEN_INDEX)[0].tolist()
            text_embeds = model.embed_tokens(ids.clamp(min=0))
            if not positions:
                feat = image_features[min(img_idx, len(image_features) - 1)]
                embeds_out.append(torch.cat([text_embeds, feat[0:0].to(text_embeds.dtype)]))
                labels_out.append(lab)
                img_idx += 1
                continue
            pieces, piece_labels, start = [], [], 0
            for pos in positions:
                pieces.append(text_embeds[start:pos])
                piece_labels.append(lab[start:pos])
                feat = image_features[img_idx].to(text_embeds.dtype)
                img_idx += 1
                pieces.append(feat)
                piece_labels.append(
                    torch.full((feat.shape[0],), IGNORE_INDEX, dtype=lab.dtype, device=lab.device)
                )
                start = pos + 1
            pieces.append(text_embeds[start:])
            piece_labels.append(lab[start:])
            embeds_out.append(torch.cat(pieces))
            labels_out.append(torch.cat(piece_labels))
        max_len = getattr(self.config, "tokenizer_model_max_length", None)
        if max_len:
            embeds_out = [e[:max_len] for e in embeds_out]
            labels_out = [x[:max_len] for x in labels_out]
        side = padding_side or getattr(self.config, "tokenizer_padding_side", "right")
        longest = max(e.shape[0] for e in embeds_out)
        batch, hidden = len(embeds_out), embeds_out[0].shape[-1]
        ref = embeds_out[0]
        new_embeds = ref.new_zeros((batch, longest, hidden))
        new_labels = torch.full(
            (batch, longest), IGNORE_INDEX, dtype=labels_in.dtype, device=labels_in.device
        )
        new_mask = torch.zeros((batch, longest), dtype=attention_mask.dtype, device=ref.device)
        position_ids = torch.zeros((batch, longest), dtype=torch.long, device=ref.device)
        for i, (emb, lab) in enumerate(zip(embeds_out, labels_out)):
            n = emb.shape[0]
            span = slice(longest - n, longest) if side == "left" else slice(0, n)
            new_embeds[i, span] = emb
            new_labels[i, span] = lab
            new_mask[i, span] = True
            position_ids[i, span] = torch.arange(n, device=ref.device)
        return {
            "inputs_embeds": new_embeds,
            "attention_mask": new_mask,
            "position_ids": position_ids,
            "labels": new_labels if labels is not None else None,
        }

    # -- forward / generate ------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        images: torch.Tensor | None = None,
        images_aux: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        if (
            inputs_embeds is None
            and images is not None
            and input_ids is not None
            and self.get_model().get_vision_tower() is not None
        ):
            spliced = self.prepare_inputs_labels_for_multimodal(
                input_ids, attention_mask, labels, images, images_aux
            )
            input_ids = None
            inputs_embeds = spliced["inputs_embeds"]
            attention_mask = spliced["attention_mask"]
            position_ids = spliced["position_ids"]
            labels = spliced["labels"]
        elif input_ids is not None and bool((input_ids == IMAGE_TOKEN_INDEX).any()):
            raise ValueError("input_ids hold <image> (-200) but no images were given")
        if past_key_values is not None:  # older callers; generate passes `cache` in kwargs
            kwargs["past_key_values"] = past_key_values
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            **kwargs,
        )

    @torch.no_grad()
    def generate(
        self,
        inputs: torch.LongTensor | None = None,
        images: torch.Tensor | None = None,
        images_aux: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """Greedy/sampled decoding from a prompt with ``<image>`` ids (MGM's ``generate``).

        The prompt is turned into ``inputs_embeds`` (left-padded for batches) and handed to the
        generic HF ``generate``; the result holds only the new tokens, as in MGM.
        """
        if "inputs_embeds" in kwargs:
            raise NotImplementedError("pass `inputs` (ids with -200), not `inputs_embeds`")
        inputs = kwargs.pop("input_ids", inputs)
        attention_mask = kwargs.pop("attention_mask", None)
        kwargs.pop("position_ids", None)
        if images is not None and self.get_model().get_vision_tower() is not None:
            spliced = self.prepare_inputs_labels_for_multimodal(
                inputs, attention_mask, None, images, images_aux, padding_side="left"
            )
            embeds, attention_mask = spliced["inputs_embeds"], spliced["attention_mask"]
        else:
            embeds = self.get_model().embed_tokens(inputs)
            if attention_mask is None:
                attention_mask = torch.ones_like(inputs, dtype=torch.bool)
        return super().generate(
            inputs_embeds=embeds, attention_mask=attention_mask.long(), **kwargs
        )


def register_auto_classes() -> None:
    """Make ``AutoConfig`` / ``AutoModelForCausalLM`` resolve ``mgm_gemma`` (no remote code)."""
    AutoConfig.register("mgm_gemma", MGMConfig, exist_ok=True)
    AutoModelForCausalLM.register(MGMConfig, MGMGemmaForCausalLM, exist_ok=True)


register_auto_classes()


def trainable_parameter_names(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]
