"""Tiny random models of the real architectures, built offline, for tests and demos.

`make_tiny_models(out_dir)` writes eleven model folders, each loadable by the same code
that loads the real checkpoints (no network, nothing from the Hugging Face hub):

* ``blip2/``    -- ``Blip2ForConditionalGeneration`` (ViT + Q-Former + OPT) and a
  ``Blip2Processor``::

      model = Blip2ForConditionalGeneration.from_pretrained(path, local_files_only=True)
      processor = AutoProcessor.from_pretrained(path, local_files_only=True)
      inputs = processor(images=imgs, text=prompts_or_None, return_tensors="pt", padding=True)
      ids = model.generate(**inputs, max_new_tokens=8)
      processor.batch_decode(ids, skip_special_tokens=True)

* ``clip/``     -- ``CLIPModel`` and a ``CLIPProcessor`` (``AutoModel`` also works).
* ``blip_itm/`` -- ``BlipForImageTextRetrieval`` and a ``BlipProcessor``;
  ``model(**inputs, use_itm_head=True).itm_score``.
* ``open_clip/`` -- an open_clip ``open_clip_config.json`` + ``open_clip_pytorch_model.bin``::

      open_clip.create_model_and_transforms("local-dir:" + path)
      open_clip.get_tokenizer("local-dir:" + path)   # the bundled SimpleTokenizer

* ``aesthetics/`` -- the layout of the ``shunk031/aesthetics-predictor-v2-*`` checkpoints:
  a CLIP vision tower with projection plus LAION's MLP head (``layers.*``), architecture
  ``AestheticsPredictorV2Linear``, and a ``CLIPProcessor``; loaded by
  ``operators/aesthetics_predictor.py`` (no remote code, no extra package).
* ``nsfw/``, ``watermark/`` -- ``ViTForImageClassification`` with labels ``normal``/``nsfw``
  and ``no_watermark``/``watermark``, and a ``ViTImageProcessor``.
* ``llava/``, ``qwen2_vl/`` -- ``LlavaForConditionalGeneration`` (CLIP tower + Llama) and
  ``Qwen2VLForConditionalGeneration`` (dynamic-resolution tower + Qwen2, M-RoPE) with their
  processors and chat templates; ``AutoModelForImageTextToText`` / ``AutoProcessor``.
* ``stable_diffusion/`` -- a diffusers ``StableDiffusionPipeline`` (UNet, VAE, CLIP text encoder,
  DDIM scheduler, no safety checker) making 32 px images; ``AutoPipelineForText2Image`` /
  ``AutoPipelineForImage2Image.from_pretrained(folder)``.
* ``causal_lm/`` -- ``make_tiny_causal_lm``'s OPT causal LM (with a chat template).

The tokenizers are trained here, in a fraction of a second, on a small built-in English
corpus (byte-level BPE for CLIP and OPT, WordPiece for BLIP's BERT), so any text encodes.

These models have RANDOM weights: they run the real architectures end to end, but their
captions and scores are meaningless.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from dj_synth.tools.cache_cli import cache_app
from dj_synth.tools.cli_common import make_app, run_app

HELP = (
    "These models have RANDOM weights: they run the real architectures end to end, "
    "but their captions and scores are meaningless."
)

# Small built-in corpus for training the tokenizers (captions-like English).
_CORPUS = """\
a photo of a cat sitting on a wooden table next to a cup of coffee
a dog running across a green field with a red ball in its mouth
two people walking along the beach at sunset holding hands
a close up of a flower with yellow petals and a bee on it
a city street at night with cars and bright lights
a bowl of fresh fruit including apples bananas and oranges
an airplane flying over the mountains under a blue sky
a man riding a bicycle down a busy road in the rain
a woman reading a book in a park on a sunny afternoon
a group of children playing football in the school yard
a plate of pasta with tomato sauce and basil leaves
a small boat floating on a calm lake surrounded by trees
the kitchen has white cabinets a sink and a large window
a black and white picture of an old building with tall columns
a bird perched on a branch of a tree covered in snow
three horses grazing in a meadow near a wooden fence
a laptop computer and a phone on a desk in an office
a train arriving at the station while passengers wait
a pizza with cheese mushrooms and peppers cut into slices
the baby is smiling and holding a stuffed toy bear
an image of a red car parked in front of a house
a living room with a sofa a lamp and a television
a person surfing a big wave in the ocean
a cake with candles on a birthday party table
what is shown in this picture? Question: what is in the image? Answer:
describe the image in detail. The image shows 0 1 2 3 4 5 6 7 8 9 objects.
Hello, world! It's a test: (yes) [no] {maybe} "quoted" 'single' - / ; # @ & % $ * + = ~ ^ _ | \\
"""

_TINY_IMAGE = 32  # pixels; patch 8 -> 16 patches + CLS
_QUERY_TOKENS = 4


def _corpus_lines() -> list[str]:
    lines = _CORPUS.splitlines()
    return lines * 4 + [line.upper() for line in lines] + [line.capitalize() for line in lines]


# ----------------------------------------------------------------------------- tokenizers


def _train_bpe(backend, n_merges: int, suffix: str = "") -> tuple[list[str], list[tuple[str, str]]]:
    """A small deterministic byte-level BPE trainer (the `tokenizers` trainers break count
    ties in hash order, so their output changes from run to run).

    `backend` is the tokenizer class's own `tokenizers.Tokenizer`, used for its normalizer and
    pre-tokenizer so the merges match what the tokenizer will see. Returns (tokens, merges):
    every byte symbol (and byte + `suffix`), then one token per merge.
    """
    from collections import Counter

    from tokenizers import pre_tokenizers

    words: Counter[tuple[str, ...]] = Counter()
    for line in _corpus_lines():
        if backend.normalizer is not None:
            line = backend.normalizer.normalize_str(line)
        for word, _ in backend.pre_tokenizer.pre_tokenize_str(line):
            symbols = list(word)
            symbols[-1] += suffix
            words[tuple(symbols)] += 1
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = alphabet + ([ch + suffix for ch in alphabet] if suffix else [])
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        tokens.append(best[0] + best[1])
        merged: Counter[tuple[str, ...]] = Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    return tokens, merges


def _clip_tokenizer():
    from transformers import CLIPTokenizer

    tokens, merges = _train_bpe(CLIPTokenizer().backend_tokenizer, 200, suffix="</w>")
    # As in the real vocabulary, the two special tokens come last.
    vocab = {tok: i for i, tok in enumerate(tokens + ["<|startoftext|>", "<|endoftext|>"])}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def _opt_tokenizer():
    """GPT2-style byte-level BPE with OPT's special tokens (<s>=0 <pad>=1 </s>=2 <unk>=3)."""
    from tokenizers import AddedToken
    from transformers import GPT2Tokenizer

    tokens, merges = _train_bpe(GPT2Tokenizer().backend_tokenizer, 300)
    vocab = {tok: i for i, tok in enumerate(["<s>", "<pad>", "</s>", "<unk>"] + tokens)}
    tok = GPT2Tokenizer(
        vocab=vocab,
        merges=merges,
        bos_token="</s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        add_bos_token=True,  # OPT prepends "</s>" to every text
        padding_side="left",  # batched prompts for a decoder-only model
        model_max_length=128,
    )
    # The BLIP-2 checkpoints carry an "<image>" token whose id is config.image_token_index.
    # "<s>" (id 0) is special too, so that skip_special_tokens drops it from decoded text.
    special = [AddedToken(t, normalized=False, special=True) for t in ("<s>", "<image>")]
    tok.add_tokens(special, special_tokens=True)
    return tok


def _bert_tokenizer():
    """WordPiece vocabulary: specials, characters, ##characters, then the corpus's words."""
    import string

    from transformers import BertTokenizer

    backend = BertTokenizer().backend_tokenizer
    words = {
        word
        for line in _corpus_lines()
        for word, _ in backend.pre_tokenizer.pre_tokenize_str(
            backend.normalizer.normalize_str(line)
        )
    }
    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
    # "[DEC]" is the bos token of BLIP's text decoder; harmless for ITM, kept for fidelity.
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    tokens += chars + ["##" + ch for ch in chars] + sorted(words - set(chars))
    return BertTokenizer(vocab={tok: i for i, tok in enumerate(tokens)}, model_max_length=64)


# ----------------------------------------------------------------------------- models


def _vision(hidden: int = 32, layers: int = 2, heads: int = 4) -> dict:
    return {
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "image_size": _TINY_IMAGE,
        "patch_size": 8,
    }


def _build_blip2(path: Path) -> None:
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        BlipImageProcessor,
    )

    tok = _opt_tokenizer()
    image_token_id = tok.convert_tokens_to_ids("<image>")
    text_config = {
        "model_type": "opt",
        "vocab_size": len(tok),
        "hidden_size": 32,
        "ffn_dim": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 256,
        "word_embed_proj_dim": 32,
        "pad_token_id": 1,
        "bos_token_id": 2,
        "eos_token_id": 2,
    }
    qformer_config = {
        "vocab_size": 64,  # unused without use_qformer_text_input
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
        "cross_attention_frequency": 1,
    }
    config = Blip2Config(
        vision_config=_vision(),
        qformer_config=qformer_config,
        text_config=text_config,
        num_query_tokens=_QUERY_TOKENS,
        image_text_hidden_size=32,
        image_token_index=image_token_id,
    )
    model = Blip2ForConditionalGeneration(config).eval()
    model.config.architectures = ["Blip2ForConditionalGeneration"]
    model.generation_config.pad_token_id = 1
    model.generation_config.bos_token_id = 2
    model.generation_config.eos_token_id = 2
    model.save_pretrained(path)
    image_processor = BlipImageProcessor(size={"height": _TINY_IMAGE, "width": _TINY_IMAGE})
    _save_processor(Blip2Processor(image_processor, tok, num_query_tokens=_QUERY_TOKENS), path)


def _build_clip(path: Path) -> None:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tok = _clip_tokenizer()
    text_config = {
        "vocab_size": len(tok),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    config = CLIPConfig(text_config=text_config, vision_config=_vision(), projection_dim=16)
    model = CLIPModel(config).eval()
    model.config.architectures = ["CLIPModel"]
    model.save_pretrained(path)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": _TINY_IMAGE},
        crop_size={"height": _TINY_IMAGE, "width": _TINY_IMAGE},
    )
    _save_processor(CLIPProcessor(image_processor, tok), path)


def _build_blip_itm(path: Path) -> None:
    from transformers import (
        BlipConfig,
        BlipForImageTextRetrieval,
        BlipImageProcessor,
        BlipProcessor,
    )

    tok = _bert_tokenizer()
    text_config = {
        "vocab_size": len(tok),
        "hidden_size": 32,
        "encoder_hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 64,
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.convert_tokens_to_ids("[DEC]"),
        "sep_token_id": tok.sep_token_id,
    }
    config = BlipConfig(
        text_config=text_config,
        vision_config=_vision(),
        projection_dim=16,
        image_text_hidden_size=16,
    )
    model = BlipForImageTextRetrieval(config).eval()
    model.config.architectures = ["BlipForImageTextRetrieval"]
    model.save_pretrained(path)
    image_processor = BlipImageProcessor(size={"height": _TINY_IMAGE, "width": _TINY_IMAGE})
    _save_processor(BlipProcessor(image_processor, tok), path)


def _build_open_clip(path: Path) -> None:
    import open_clip
    import torch

    model_cfg = {
        "embed_dim": 16,
        "vision_cfg": {
            "image_size": _TINY_IMAGE,
            "layers": 2,
            "width": 32,
            "head_width": 8,
            "patch_size": 8,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,  # open_clip's bundled SimpleTokenizer vocabulary
            "width": 32,
            "heads": 4,
            "layers": 2,
        },
    }
    preprocess_cfg = {
        "size": _TINY_IMAGE,
        "mean": list(open_clip.OPENAI_DATASET_MEAN),
        "std": list(open_clip.OPENAI_DATASET_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    model = open_clip.CLIP(**model_cfg)
    # The token embedding is most of the bytes (49408 x 32); keep it in fp16 on disk.
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save(state, path / "open_clip_pytorch_model.bin")
    cfg = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    (path / "open_clip_config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def _build_aesthetics(path: Path) -> None:
    """The published aesthetics-predictor layout: a CLIP vision tower with projection plus
    LAION's V2 linear MLP head (`layers.*`), architecture `AestheticsPredictorV2Linear`."""
    from safetensors.torch import save_file
    from transformers import CLIPImageProcessor, CLIPProcessor, CLIPVisionConfig
    from transformers import CLIPVisionModelWithProjection as Tower

    from dj_synth.operators.aesthetics_predictor import build_head

    config = CLIPVisionConfig(**_vision(), projection_dim=16)
    state = dict(Tower(config).eval().state_dict())
    head = build_head("linear", config.projection_dim)
    state.update({f"layers.{k}": v for k, v in head.state_dict().items()})
    save_file({k: v.contiguous() for k, v in state.items()}, str(path / "model.safetensors"),
              metadata={"format": "pt"})  # fmt: skip
    fields = {**config.to_dict(), "architectures": ["AestheticsPredictorV2Linear"]}
    (path / "config.json").write_text(json.dumps(fields, indent=2, sort_keys=True) + "\n")
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": _TINY_IMAGE},
        crop_size={"height": _TINY_IMAGE, "width": _TINY_IMAGE},
    )
    _save_processor(CLIPProcessor(image_processor, _clip_tokenizer()), path)


def _image_classifier(path: Path, labels: list[str]) -> None:
    """A ViT image classifier (the NSFW and watermark detectors' architecture)."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(**_vision(), id2label=dict(enumerate(labels)),
                       label2id={name: i for i, name in enumerate(labels)})  # fmt: skip
    model = ViTForImageClassification(config).eval()
    model.config.architectures = ["ViTForImageClassification"]
    model.save_pretrained(path)
    ViTImageProcessor(size={"height": _TINY_IMAGE, "width": _TINY_IMAGE}).save_pretrained(path)


def _build_nsfw(path: Path) -> None:
    _image_classifier(path, ["normal", "nsfw"])  # Falconsai/nsfw_image_detection's labels


def _build_watermark(path: Path) -> None:
    _image_classifier(path, ["no_watermark", "watermark"])


# A Vicuna-style template ("USER: ... ASSISTANT:"): image parts become the processor's
# "<image>" token; no special tokens needed, so any tokenizer here can carry it.
_CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }} "
    "{% else %}{{ m['role'].upper() }}: {% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %} "
    "{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
# Qwen2-VL's ChatML layout, an image part as <|vision_start|><|image_pad|><|vision_end|>.
_QWEN_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}"
    "{{ m['content'] }}{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif c['type'] == 'text' %}{{ c['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Random weights this large make tiny language models emit varied tokens (at the default
# 0.02 they repeat one token), so tests comparing outputs compare something.
_LM_INIT = 0.3


def _llama_text(vocab_size: int, pad: int, bos: int, eos: int) -> dict:
    return {
        "vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 512, "pad_token_id": pad, "bos_token_id": bos,
        "eos_token_id": eos, "initializer_range": _LM_INIT,
    }  # fmt: skip


def _build_llava(path: Path) -> None:
    """LLaVA-1.5's architecture: CLIP vision tower (penultimate layer, CLS dropped), MLP
    projector, Llama; "<image>" expands to 16 patch tokens (32 px, patch 8)."""
    from transformers import (
        CLIPImageProcessor,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tok = _opt_tokenizer()
    config = LlavaConfig(
        vision_config={"model_type": "clip_vision_model", **_vision(), "projection_dim": 16},
        text_config={"model_type": "llama", **_llama_text(len(tok), 1, 2, 2)},
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default", vision_feature_layer=-2,
    )  # fmt: skip
    model = LlavaForConditionalGeneration(config).eval()
    model.config.architectures = ["LlavaForConditionalGeneration"]
    for key, value in (("pad_token_id", 1), ("bos_token_id", 2), ("eos_token_id", 2)):
        setattr(model.generation_config, key, value)
    model.save_pretrained(path)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": _TINY_IMAGE},
        crop_size={"height": _TINY_IMAGE, "width": _TINY_IMAGE},
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tok, patch_size=8,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=_CHAT_TEMPLATE,
    )  # fmt: skip
    _save_processor(processor, path)


_QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                  "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")  # fmt: skip


def _qwen_tokenizer():
    """Byte-level BPE with Qwen2's special tokens (ChatML and the vision markers)."""
    from tokenizers import AddedToken
    from transformers import GPT2Tokenizer

    tokens, merges = _train_bpe(GPT2Tokenizer().backend_tokenizer, 300)
    tok = GPT2Tokenizer(
        vocab={t: i for i, t in enumerate(tokens)}, merges=merges, unk_token=None,
        bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        padding_side="left", model_max_length=512,
    )  # fmt: skip
    tok.add_tokens([AddedToken(t, normalized=False, special=True) for t in _QWEN_SPECIALS],
                   special_tokens=True)  # fmt: skip
    return tok


def _build_qwen2_vl(path: Path) -> None:
    """Qwen2-VL's architecture: native-resolution vision tower (patch 4 here, 2x2 merge),
    Qwen2 decoder with M-RoPE; images of 8-32 px sides (a few vision tokens each)."""
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    tok = _qwen_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in _QWEN_SPECIALS}
    pad, eos = ids["<|endoftext|>"], ids["<|im_end|>"]
    text = _llama_text(len(tok), pad, pad, eos)
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0,
                               "mrope_section": [1, 1, 2]}  # fmt: skip
    config = Qwen2VLConfig(
        vision_config={"depth": 2, "embed_dim": 32, "hidden_size": 32, "num_heads": 4,
                       "mlp_ratio": 2, "patch_size": 4, "spatial_merge_size": 2,
                       "temporal_patch_size": 2},
        text_config=text, image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )  # fmt: skip
    model = Qwen2VLForConditionalGeneration(config).eval()
    model.config.architectures = ["Qwen2VLForConditionalGeneration"]
    for key, value in (("pad_token_id", pad), ("bos_token_id", pad), ("eos_token_id", eos)):
        setattr(model.generation_config, key, value)
    model.save_pretrained(path)
    vision = dict(patch_size=4, merge_size=2, temporal_patch_size=2,
                  size={"shortest_edge": 8 * 8 * 4, "longest_edge": _TINY_IMAGE**2})  # fmt: skip
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**vision), tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(**vision), chat_template=_QWEN_CHAT_TEMPLATE,
    )  # fmt: skip
    _save_processor(processor, path)


def _build_stable_diffusion(path: Path) -> None:
    """Stable Diffusion 1.x's pipeline layout (model_index.json + component folders): UNet
    with cross-attention, KL VAE (2x down here: 32 px images from 16 px latents), CLIP text
    encoder and tokenizer, DDIM scheduler with SD's beta schedule."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline
    from diffusers import UNet2DConditionModel as UNet
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = _clip_tokenizer()
    half = _TINY_IMAGE // 2
    unet = UNet(
        sample_size=half, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
        attention_head_dim=2, norm_num_groups=4,
    )  # fmt: skip
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
        layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=_TINY_IMAGE,
    )  # fmt: skip
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )).eval()  # fmt: skip
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1,
    )  # fmt: skip
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tok, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(path)


def _save_processor(processor, path: Path) -> None:
    """processor.save_pretrained, plus the files a hub snapshot made by transformers 4 has.

    transformers 5 nests the image processor inside processor_config.json and writes only
    tokenizer.json; the hub checkpoints also carry preprocessor_config.json and the
    tokenizer's vocab.json + merges.txt (BPE) or vocab.txt (WordPiece). Loading code (and
    transformers 4) may look for those, so write them too.
    """
    processor.save_pretrained(path)
    processor.image_processor.save_pretrained(path)
    processor.tokenizer.backend_tokenizer.model.save(str(path))


_BUILDERS = {
    "blip2": _build_blip2,
    "clip": _build_clip,
    "blip_itm": _build_blip_itm,
    "open_clip": _build_open_clip,
    "aesthetics": _build_aesthetics,
    "nsfw": _build_nsfw,
    "watermark": _build_watermark,
    "llava": _build_llava,
    "qwen2_vl": _build_qwen2_vl,
    "stable_diffusion": _build_stable_diffusion,
    "causal_lm": lambda path: make_tiny_causal_lm(path),
}
TINY_MODEL_NAMES = tuple(_BUILDERS)


def make_tiny_models(
    out_dir: str | Path, seed: int = 0, names: tuple[str, ...] | None = None
) -> dict[str, str]:
    """Build the tiny random models under `out_dir` (all, or only `names`); returns
    {name: folder}.

    Names: "blip2", "clip", "blip_itm", "open_clip", "aesthetics", "nsfw", "watermark",
    "llava", "qwen2_vl", "stable_diffusion" (needs diffusers), "causal_lm".
    The open_clip folder loads with ``open_clip.create_model_and_transforms("local-dir:" +
    folder)``; "aesthetics" with the image_aesthetics_filter (the published
    aesthetics-predictor layout); the others with ``from_pretrained(folder,
    local_files_only=True)`` / ``AutoProcessor.from_pretrained``.
    """
    import torch
    from transformers.utils import logging as hf_logging

    unknown = set(names or ()) - set(_BUILDERS)
    if unknown:
        raise ValueError(f"unknown tiny model(s) {sorted(unknown)}; known: {list(_BUILDERS)}")
    out = Path(out_dir)
    paths: dict[str, str] = {}
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # "Writing model shards" bars, once per model
    try:
        for name, build in _BUILDERS.items():
            if names is not None and name not in names:
                continue
            folder = out / name
            folder.mkdir(parents=True, exist_ok=True)
            torch.manual_seed(seed)
            build(folder)
            paths[name] = str(folder)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return paths


def make_tiny_causal_lm(out_dir: str | Path, seed: int = 0) -> str:
    """A tiny random OPT causal language model (perplexity_filter's `hf_model`) in
    `out_dir`; loads with ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained``."""
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tok = _opt_tokenizer()
    config = OPTConfig(
        vocab_size=len(tok), hidden_size=32, ffn_dim=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=256, word_embed_proj_dim=32,
        pad_token_id=1, bos_token_id=2, eos_token_id=2,
    )  # fmt: skip
    model = OPTForCausalLM(config).eval()
    model.config.architectures = ["OPTForCausalLM"]
    model.save_pretrained(folder)
    tok.chat_template = _CHAT_TEMPLATE  # for the LLM rewriting mappers; no effect on scores
    tok.save_pretrained(folder)
    return str(folder)


app = make_app(f"dj-synth utilities. {HELP}", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@app.command(
    "make-tiny-models",
    help=f"Build tiny models into DIR (blip2, clip, blip_itm, open_clip, aesthetics, nsfw, "
    f"watermark, llava, qwen2_vl, stable_diffusion, causal_lm). {HELP}",
)
def make_tiny_models_cmd(
    out_dir: Annotated[Path, typer.Argument(metavar="DIR", help="Folder to write the models in")],
    seed: Annotated[int, typer.Option(help="Seed for the random weights")] = 0,
) -> None:
    paths = make_tiny_models(out_dir, seed=seed)
    for name, path in paths.items():
        typer.echo(f"{name}: {path}")
    typer.echo(HELP, err=True)


@app.command(
    "make-tiny-challenge",
    help="Build a miniature challenge folder (toolkit layout, tiny RANDOM models) and its "
    "flow config; then `dj-train DIR/flow.yaml` runs the whole flow on CPU (about 80 s of "
    "CPU time).",
)
def make_tiny_challenge_cmd(
    out_dir: Annotated[Path, typer.Argument(metavar="DIR", help="Folder to create")],
) -> None:
    from dj_synth.tools.challenge.tiny import make_challenge

    config = make_challenge(out_dir)
    typer.echo(f"flow config: {config}")
    typer.echo(f"next: dj-train {config} && dj-pack --config {config}", err=True)


def main() -> int:
    """The `dj-synth` console script."""
    return run_app(app, "dj-synth")


if __name__ == "__main__":
    main()
