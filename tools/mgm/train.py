"""MGM-2B training entry with MGM ``train_mem.py``'s arguments (pretrain and finetune stages).

The challenge launches ``deepspeed train_mem.py --deepspeed zero2_offload.json ...``; this entry
takes the same command line (``--evaluation_strategy`` is mapped to ``eval_strategy``, which
transformers 5 requires) and runs under ``deepspeed``, ``torchrun`` or plain ``python``. Only
public ``Trainer`` hooks are overridden (``get_train_dataloader``, ``create_optimizer``,
``compute_loss``, ``save_model``) so it keeps working across transformers releases.

Every MGM flag is either implemented as MGM does or refused before any work (``check_args``):
none is accepted and ignored. ``--fidelity toolkit`` (default) weights the loss as MGM under
transformers 4.38 does (mean over each micro-batch's tokens, then mean over micro-batches);
``--fidelity fast`` keeps transformers 5's token-weighted loss (see ``fidelity``).

* Pretrain (``--tune_mm_mlp_adapter True``): only ``mm_projector`` and ``vlm_uni_*`` train; saves
  write ``mm_projector.bin`` (MGM's flat state dict) and ``config.json``.
* Finetune (``--pretrain_mm_mlp_adapter .../mm_projector.bin``): the LLM, projector and
  ``vlm_uni_*`` train, towers frozen; saves a full HF checkpoint (safetensors + index, tokenizer,
  image processor, config with the ``mm_*`` keys) that ``from_pretrained`` reloads for generation.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import transformers
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, HfArgumentParser, Trainer

from dj_synth.tools.mgm import fidelity as fidelity_modes
from dj_synth.tools.mgm.constants import IGNORE_INDEX
from dj_synth.tools.mgm.data import (
    DataCollatorForSupervisedDataset,
    LazySupervisedDataset,
    ModalityLengthGroupedSampler,
)
from dj_synth.tools.mgm.image_processing import MGMImageProcessor
from dj_synth.tools.mgm.model import UNI_MODULES, MGMGemmaForCausalLM

logger = logging.getLogger(__name__)

# What MGM's safe_save_model_for_hf_trainer matches (by substring) into mm_projector.bin.
ADAPTER_KEYS = (
    "mm_projector",
    "vision_resampler",
    "vlm_uni",
    "vision_tower",
    "vision_fpn",
    "vision_stages",
)


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(default=None)
    version: str = field(default="gemma", metadata={"help": "conversation template (gemma)"})
    freeze_backbone: bool = field(default=False)
    tune_mm_mlp_adapter: bool = field(default=False)
    vision_tower: str | None = field(default=None)
    vision_tower_aux: str | None = field(default=None)
    optimize_vision_tower: bool = field(default=False)
    optimize_vision_tower_aux: bool = field(default=False)
    drop_path: bool = field(default=True)
    image_processor: str | None = field(default=None)
    mm_vision_select_layer: int = field(default=-1)
    pretrain_mm_mlp_adapter: str | None = field(default=None)
    mm_projector_type: str = field(default="linear")
    mm_use_im_start_end: bool = field(default=False)
    mm_use_im_patch_token: bool = field(default=True)
    mm_vision_select_feature: str = field(default="patch")
    attn_implementation: str | None = field(
        default=None, metadata={"help": "default: flash_attention_2 when available, else sdpa"}
    )
    init_seed: int = field(
        default=1024, metadata={"help": "seed set before building the model (the toolkit's 1024)"}
    )


@dataclass
class DataArguments:
    data_path: str | None = field(default=None, metadata={"help": "LLaVA JSON / JSONL"})
    lazy_preprocess: bool = False
    is_multimodal: bool = False
    image_folder: str | None = field(default=None)
    image_aspect_ratio: str = "square"
    image_grid_pinpoints: str | None = field(default=None)
    image_size_aux: int | None = field(default=320)
    image_grid: int | None = field(default=1)
    image_global: bool | None = field(default=False)


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    cache_dir: str | None = field(default=None)
    optim: str = field(default="adamw_torch")
    remove_unused_columns: bool = field(default=False)
    freeze_mm_mlp_adapter: bool = field(default=False)
    mpt_attn_impl: str | None = field(default="triton")
    model_max_length: int = field(default=512)
    double_quant: bool = field(default=True)
    quant_type: str = field(default="nf4")
    bits: int = field(default=16)
    lora_enable: bool = False
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_weight_path: str = ""
    lora_bias: str = "none"
    mm_projector_lr: float | None = None
    group_by_modality_length: bool = field(default=False)
    lr_multi: str | None = field(default=None)
    warmup_ratio: float | None = field(
        default=None,
        metadata={"help": "MGM's name; transformers 5 takes the ratio as warmup_steps"},
    )
    fidelity: str = field(
        default=fidelity_modes.TOOLKIT,
        metadata={
            "help": "toolkit: MGM's loss weighting (per-micro-batch token mean, averaged); "
            "fast: transformers 5's token-weighted loss over the whole optimizer step"
        },
    )

    def __post_init__(self) -> None:
        if self.warmup_ratio is not None:
            if not 0 <= self.warmup_ratio < 1:
                raise ValueError(f"--warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
            self.warmup_steps = self.warmup_ratio
        super().__post_init__()


# ----------------------------------------------------------------------------- trainer


class MGMTrainer(Trainer):
    """HF ``Trainer`` plus MGM's modality-grouped batches, projector lr and adapter-only saves."""

    def __init__(
        self,
        *args: Any,
        tune_mm_mlp_adapter: bool = False,
        image_processor: MGMImageProcessor | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.tune_mm_mlp_adapter = tune_mm_mlp_adapter
        self.mgm_image_processor = image_processor
        self.fidelity = fidelity_modes.check_mode(self.args.fidelity)
        if self.fidelity == fidelity_modes.TOOLKIT:
            # No num_items_in_batch: the model returns its micro-batch's token mean, and
            # compute_loss divides by the accumulation steps itself (as MGM's 4.38 Trainer and
            # DeepSpeed's scale_wrt_gas did); data-parallel ranks are averaged by the all-reduce.
            self.model_accepts_loss_kwargs = False
            self.loss_is_scaled_for_ga = True

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        if self.fidelity != fidelity_modes.TOOLKIT or not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        outputs = model(**inputs)
        loss = outputs["loss"]
        labels = inputs.get("labels")
        if labels is not None and not bool((labels[..., 1:] != IGNORE_INDEX).any()):
            # nothing supervised in this micro-batch: MGM's mean would be NaN (0 / 0) and
            # poison the step; here it contributes a zero gradient instead
            loss = outputs["logits"].sum() * 0.0
        loss = loss / self.args.gradient_accumulation_steps
        return (loss, outputs) if return_outputs else loss

    def get_train_dataloader(self) -> DataLoader:
        if not self.args.group_by_modality_length or self.train_dataset is None:
            return super().get_train_dataloader()
        world = self.args.world_size * self.args.gradient_accumulation_steps
        sampler = ModalityLengthGroupedSampler(
            self.args.train_batch_size, world, self.train_dataset.modality_lengths
        )
        params: dict[str, Any] = {
            "batch_size": self._train_batch_size,
            "sampler": sampler,
            "collate_fn": self.data_collator,
            "num_workers": self.args.dataloader_num_workers,
            "pin_memory": self.args.dataloader_pin_memory,
            "persistent_workers": self.args.dataloader_persistent_workers,
            "drop_last": self.args.dataloader_drop_last,
        }
        if self.args.dataloader_num_workers > 0:
            params["prefetch_factor"] = self.args.dataloader_prefetch_factor
        return self.accelerator.prepare(DataLoader(self.train_dataset, **params))

    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        """MGM's parameter groups: decay / no decay, and either ``mm_projector_lr`` for the
        projector or ``lr_multi`` (``key:multiplier,...``: parameters whose name contains
        ``key`` train at ``learning_rate * multiplier``)."""
        if self.optimizer is not None or (
            self.args.mm_projector_lr is None and self.args.lr_multi is None
        ):
            return (
                super().create_optimizer(model) if model is not None else super().create_optimizer()
            )
        model = self.model
        decay = set(self.get_decay_parameter_names(model))
        groups: dict[tuple[bool, float | None], list[torch.nn.Parameter]] = {}
        matched: set[str] = set()
        for name, param in model.named_parameters():
            if param.requires_grad:
                lr, key = parameter_lr(name, self.args)
                matched.update([key] if key else [])
                groups.setdefault((name in decay, lr), []).append(param)
        for key in set(parse_lr_multi(self.args.lr_multi)) - matched:
            logger.warning("--lr_multi %s: no trainable parameter name contains it", key)
        optim_cls, optim_kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, model)
        param_groups = [
            {
                "params": params,
                "weight_decay": self.args.weight_decay if is_decay else 0.0,
                **({"lr": lr} if lr is not None else {}),
            }
            for (is_decay, lr), params in groups.items()
        ]
        self.optimizer = optim_cls(param_groups, **optim_kwargs)
        return self.optimizer

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        output_dir = output_dir or self.args.output_dir
        if self.tune_mm_mlp_adapter:
            save_mm_adapter(self, output_dir)
            return
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            ensure_safetensors_index(output_dir)
            if self.mgm_image_processor is not None:
                self.mgm_image_processor.save_pretrained(output_dir)


def parse_lr_multi(text: str | None) -> dict[str, float]:
    """``"key:mult,key2:mult2"`` -> ``{key: mult}`` (MGM's ``--lr_multi`` format)."""
    out: dict[str, float] = {}
    for item in text.split(",") if text else []:
        key, sep, mult = item.strip().partition(":")
        try:
            if not key or not sep:
                raise ValueError
            out[key] = float(mult)
        except ValueError:
            raise ValueError(
                f"--lr_multi {text!r}: expected 'key:multiplier,...' (e.g. vlm_uni:10)"
            ) from None
    return out


def parameter_lr(name: str, args: TrainingArguments) -> tuple[float | None, str | None]:
    """A parameter's own learning rate (``None``: the default) and the ``lr_multi`` key that set
    it. ``mm_projector_lr`` wins over ``lr_multi``, as in MGM (check_args refuses both)."""
    if args.mm_projector_lr is not None:
        return (args.mm_projector_lr if "mm_projector" in name else None), None
    keys = [k for k in parse_lr_multi(args.lr_multi) if k in name]
    if len(keys) > 1:
        raise ValueError(
            f"--lr_multi: parameter {name} matches {keys}; MGM would put it in two optimizer "
            "groups (a PyTorch error): use keys that do not overlap"
        )
    if not keys:
        return None, None
    return args.learning_rate * parse_lr_multi(args.lr_multi)[keys[0]], keys[0]


def _gathered(params: list[torch.nn.Parameter]) -> Any:
    """A context that gathers ZeRO-3 partitioned parameters (a no-op otherwise)."""
    import contextlib

    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=None)
    return contextlib.nullcontext()


def save_mm_adapter(trainer: Trainer, output_dir: str) -> None:
    """Write MGM's ``mm_projector.bin`` (every parameter whose name contains one of
    ``ADAPTER_KEYS``: projector, ``vlm_uni_*``, both towers) and ``config.json``."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    named = [(n, p) for n, p in model.named_parameters() if any(k in n for k in ADAPTER_KEYS)]
    with _gathered([p for _, p in named]):
        state = {n: p.detach().cpu().clone() for n, p in named}
    if trainer.args.should_save:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        model.config.save_pretrained(out)
        torch.save(state, out / "mm_projector.bin")


def ensure_safetensors_index(output_dir: str | Path) -> None:
    """MGM's loader requires ``model.safetensors.index.json``; write one for a single shard."""
    out = Path(output_dir)
    index, single = out / "model.safetensors.index.json", out / "model.safetensors"
    if index.exists() or not single.exists():
        return
    from safetensors import safe_open

    weight_map, total = {}, 0
    with safe_open(str(single), framework="pt") as f:
        for key in f.keys():
            weight_map[key] = single.name
            sl = f.get_slice(key)
            n = 1
            for d in sl.get_shape():
                n *= d
            total += n * _dtype_bytes(sl.get_dtype())
    index.write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n"
    )


def _dtype_bytes(name: str) -> int:
    return {
        "F64": 8,
        "F32": 4,
        "I64": 8,
        "I32": 4,
        "F16": 2,
        "BF16": 2,
        "I8": 1,
        "U8": 1,
        "BOOL": 1,
    }.get(name, 4)


# ----------------------------------------------------------------------------- set-up


def _rewrite_argv(argv: Sequence[str]) -> list[str]:
    """Port the challenge's command line: ``--evaluation_strategy`` -> ``--eval_strategy``;
    ``--tf32 True`` is dropped (with a notice) where CUDA is absent, for CPU test runs."""
    out: list[str] = []
    it = iter(range(len(argv)))
    args = list(argv)
    for i in it:
        arg = args[i]
        if arg.startswith("--evaluation_strategy"):
            arg = arg.replace("--evaluation_strategy", "--eval_strategy", 1)
        if arg.split("=")[0] == "--tf32" and not torch.cuda.is_available():
            if "=" not in arg and i + 1 < len(args) and not args[i + 1].startswith("--"):
                next(it, None)
            print("[dj-mgm-train] no CUDA: ignoring --tf32", file=sys.stderr)
            continue
        out.append(arg)
    return out


class MGMArgumentError(ValueError):
    """MGM flags this entry does not implement (or a combination MGM would mishandle)."""


# Flags MGM reads only for LoRA / 4-8 bit / MPT training, none of which is bundled: a value other
# than MGM's default would be silently without effect, so it is refused.
_UNBUNDLED_KNOBS = (
    "lora_r", "lora_alpha", "lora_dropout", "lora_weight_path", "lora_bias",
    "double_quant", "quant_type", "mpt_attn_impl",
)  # fmt: skip


def check_args(
    model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments
) -> None:
    """Refuse, before any work and all at once, every MGM flag value this entry would not honour
    as MGM does (README: "MGM training flags")."""
    problems: list[str] = []
    if model_args.version != "gemma":
        problems.append(f"--version {model_args.version!r}: only the 'gemma' template is bundled")
    if training_args.lora_enable:
        problems.append("--lora_enable True: LoRA training is not bundled (MGM-2B trains fully)")
    if training_args.bits != 16:
        problems.append(f"--bits {training_args.bits}: quantised training is not bundled")
    defaults = {f.name: f.default for f in fields(TrainingArguments)}
    for name in _UNBUNDLED_KNOBS:
        if getattr(training_args, name) != defaults[name]:
            problems.append(
                f"--{name} {getattr(training_args, name)!r}: only used by MGM for LoRA / "
                "quantised / MPT training, which is not bundled; drop the flag"
            )
    if model_args.vision_tower:
        if model_args.mm_use_im_start_end:
            problems.append("--mm_use_im_start_end True is not implemented (MGM-2B: False)")
        if model_args.mm_use_im_patch_token:
            problems.append(
                "--mm_use_im_patch_token True (MGM's default) adds an <im_patch> token and "
                "resizes the embeddings; not implemented: pass --mm_use_im_patch_token False "
                "as the challenge's commands do"
            )
    elif model_args.vision_tower_aux:
        problems.append("--vision_tower_aux needs --vision_tower")
    if model_args.image_processor:
        problems.append(
            "--image_processor: MGM uses it only for EVA towers (not bundled); the CLIP "
            "preprocessing is read from --vision_tower"
        )
    if model_args.optimize_vision_tower_aux and not model_args.vision_tower_aux:
        problems.append("--optimize_vision_tower_aux True needs --vision_tower_aux")
    if data_args.image_aspect_ratio not in ("square", "pad"):
        problems.append(
            f"--image_aspect_ratio {data_args.image_aspect_ratio!r}: use 'square' or 'pad' "
            "(MGM's training treats any other value as 'square')"
        )
    if data_args.image_grid_pinpoints:
        problems.append("--image_grid_pinpoints: only for 'anyres', which is not bundled")
    if data_args.image_grid not in (None, 1):
        problems.append(f"--image_grid {data_args.image_grid}: only 1 (MGM-2B's) is implemented")
    if data_args.image_global:
        problems.append("--image_global True is not implemented (MGM-2B: False)")
    if training_args.lr_multi is not None:
        if training_args.mm_projector_lr is not None:
            problems.append(
                "--lr_multi with --mm_projector_lr: MGM silently ignores --lr_multi then; "
                "give one of them"
            )
        try:
            parse_lr_multi(training_args.lr_multi)
        except ValueError as exc:
            problems.append(str(exc))
    if training_args.fidelity not in fidelity_modes.MODES:
        problems.append(
            f"--fidelity {training_args.fidelity!r}: use one of {', '.join(fidelity_modes.MODES)}"
        )
    llm_config = Path(model_args.model_name_or_path or "") / "config.json"
    if llm_config.is_file():
        model_type = json.loads(llm_config.read_text()).get("model_type")
        if model_type not in ("gemma", "mgm_gemma"):
            problems.append(
                f"--model_name_or_path: model_type {model_type!r}; only Gemma (MGM-2B) is bundled"
            )
    if problems:
        raise MGMArgumentError("\n  - ".join(["MGM flags not honoured here:", *problems]))


def parse_args(
    argv: Sequence[str] | None = None,
) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """Parse MGM's command line; unknown flags and unimplemented values are errors."""
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    argv = _rewrite_argv(sys.argv[1:] if argv is None else argv)
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    check_args(model_args, data_args, training_args)
    return model_args, data_args, training_args


def _attn_implementation(requested: str | None) -> str:
    if requested:
        return requested
    try:
        import flash_attn  # noqa: F401

        return "flash_attention_2" if torch.cuda.is_available() else "sdpa"
    except ImportError:
        return "sdpa"


def _compute_dtype(args: TrainingArguments) -> torch.dtype:
    return torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else torch.float32


def _check_aux_normalisation(processor: MGMImageProcessor, aux_path: str | None) -> None:
    """MGM asserts the CLIP and OpenCLIP normalisations agree; we warn (tiny towers may differ)."""
    cfg = Path(aux_path or "") / "open_clip_config.json"
    if not aux_path or not cfg.is_file():
        return
    pre = json.loads(cfg.read_text()).get("preprocess_cfg", {})
    if "mean" in pre and [round(x, 4) for x in pre["mean"]] != [
        round(x, 4) for x in processor.image_mean
    ]:
        logger.warning("CLIP and OpenCLIP image means differ: %s vs %s", processor.image_mean, pre)


def build_model(
    model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments
) -> tuple[MGMGemmaForCausalLM, Any, MGMImageProcessor | None]:
    """Load Gemma as ``MGMGemmaForCausalLM``, attach the towers and set the trainable set."""
    check_args(model_args, data_args, training_args)
    transformers.set_seed(model_args.init_seed)
    dtype = _compute_dtype(training_args)
    model = MGMGemmaForCausalLM.from_pretrained(
        model_args.model_name_or_path,
        dtype=dtype,
        attn_implementation=_attn_implementation(model_args.attn_implementation),
        cache_dir=training_args.cache_dir,
    )
    model.config.use_cache = False
    if model_args.freeze_backbone:
        model.get_model().requires_grad_(False)
    if training_args.gradient_checkpointing:
        model.enable_input_require_grads()
    tokenizer = AutoTokenizer.from_pretrained(
        model_args.model_name_or_path,
        cache_dir=training_args.cache_dir,
        model_max_length=training_args.model_max_length,
        padding_side="right",
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token
    image_processor = None
    if model_args.vision_tower:
        inner = model.get_model()
        inner.initialize_vision_modules(model_args)
        # Towers in the compute dtype (as MGM); new modules stay fp32 unless DeepSpeed casts them.
        inner.vision_tower.to(dtype=dtype)
        if inner.get_vision_tower_aux() is not None:
            inner.vision_tower_aux.to(dtype=dtype)
        image_processor = MGMImageProcessor.from_pretrained(
            model_args.vision_tower,
            image_size_aux=data_args.image_size_aux if model_args.vision_tower_aux else None,
            image_aspect_ratio=data_args.image_aspect_ratio,
        )
        _check_aux_normalisation(image_processor, model_args.vision_tower_aux)
        cfg = model.config
        cfg.image_size_aux = image_processor.image_size_aux
        cfg.image_aspect_ratio = data_args.image_aspect_ratio
        cfg.image_grid = data_args.image_grid
        cfg.image_global = data_args.image_global
        cfg.image_grid_pinpoints = data_args.image_grid_pinpoints
        cfg.tokenizer_padding_side = tokenizer.padding_side
        cfg.tokenizer_model_max_length = tokenizer.model_max_length
        cfg.tune_mm_mlp_adapter = model_args.tune_mm_mlp_adapter
        cfg.freeze_mm_mlp_adapter = training_args.freeze_mm_mlp_adapter
        cfg.mm_use_im_start_end = model_args.mm_use_im_start_end
        cfg.mm_use_im_patch_token = model_args.mm_use_im_patch_token
        cfg.mm_projector_lr = training_args.mm_projector_lr
        set_trainable(model, model_args, training_args)
    return model, tokenizer, image_processor


def set_trainable(
    model: MGMGemmaForCausalLM, model_args: ModelArguments, training_args: TrainingArguments
) -> None:
    """Pretrain: projector + ``vlm_uni_*``; finetune: LLM + projector + ``vlm_uni_*``.
    Tower parts train only with ``optimize_vision_tower(_aux)``, by MGM's rule
    (``MGMGemmaModel.set_towers_trainable``)."""
    inner = model.get_model()
    if model_args.tune_mm_mlp_adapter:
        model.requires_grad_(False)
        inner.mm_projector.requires_grad_(True)
    inner.mm_projector.requires_grad_(not training_args.freeze_mm_mlp_adapter)
    for name in UNI_MODULES:
        module = getattr(inner, name, None)
        if module is not None:
            module.requires_grad_(True)
    inner.set_towers_trainable(
        model_args.optimize_vision_tower, model_args.optimize_vision_tower_aux
    )


def train(argv: Sequence[str] | None = None, callbacks: list[Any] | None = None) -> MGMTrainer:
    """Run one stage; returns the ``Trainer`` (its ``model`` is the trained model)."""
    model_args, data_args, training_args = parse_args(argv)
    model, tokenizer, image_processor = build_model(model_args, data_args, training_args)
    dataset = LazySupervisedDataset(
        data_args.data_path,
        tokenizer,
        image_processor=image_processor,
        image_folder=data_args.image_folder,
        template=model_args.version,
    )
    tower = model.get_model().get_vision_tower()
    collator = DataCollatorForSupervisedDataset(
        tokenizer,
        training_args.model_max_length,
        image_tokens=tower.num_tokens if tower is not None else None,
    )
    trainer = MGMTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=tokenizer,
        tune_mm_mlp_adapter=model_args.tune_mm_mlp_adapter,
        image_processor=image_processor,
        callbacks=callbacks,
    )
    out = Path(training_args.output_dir)
    resume = bool(list(out.glob("checkpoint-*"))) and not model_args.tune_mm_mlp_adapter
    if list(out.glob("checkpoint-*")) and model_args.tune_mm_mlp_adapter:
        print(f"[dj-mgm-train] {out} holds adapter-only checkpoints: starting afresh")
    trainer.train(resume_from_checkpoint=True if resume else None)
    trainer.save_state()
    model.config.use_cache = True
    trainer.save_model(training_args.output_dir)
    return trainer


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        train(argv)
    except MGMArgumentError as exc:
        print(f"[dj-mgm-train] error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
