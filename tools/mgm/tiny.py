"""Tiny random MGM ingredients (Gemma LLM + tokenizer, CLIP, OpenCLIP ConvNeXt) saved to disk.

Tests and smoke runs need the same folder layouts the challenge uses (an HF Gemma folder, a CLIP
folder with ``preprocessor_config.json``, an OpenCLIP folder with ``open_clip_config.json`` +
``open_clip_pytorch_model.bin``) without downloading anything. The weights are RANDOM.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
CLIP_IMAGE = 28  # patch 14 -> 2x2 CLIP tokens
AUX_IMAGE = 32  # ConvNeXt stride 4 -> 8x8 stage-1 map -> 4x4 window per CLIP token


def gemma_tokenizer(model_max_length: int = 2048):
    """A character-level fast tokenizer with Gemma's special tokens (ids 0-5) and a ``<bos>``
    post-processor, wrapped as ``PreTrainedTokenizerFast`` (right padding, like MGM training)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set(string.printable) - set("\x0b\x0c\r"))
    vocab = {tok: i for i, tok in enumerate(GEMMA_SPECIALS + chars)}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in GEMMA_SPECIALS])
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="right",
        model_max_length=model_max_length,
    )


def build_gemma(path: Path, hidden: int = 64, layers: int = 2) -> None:
    """Tiny random ``GemmaForCausalLM`` + tokenizer, saved sharded (an index json exists).

    Its ``config.json`` says ``hidden_act: "gelu"`` like gemma-2b-it's (transformers 5 would
    write its tanh rewrite), so the tiny runs take the same activation path as the real one."""
    from transformers import GemmaConfig, GemmaForCausalLM

    tok = gemma_tokenizer()
    config = GemmaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=hidden // 4,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = GemmaForCausalLM(config).eval()
    model.config.architectures = ["GemmaForCausalLM"]
    model.save_pretrained(path, max_shard_size="100KB")
    cfg_file = path / "config.json"
    cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text()), "hidden_act": "gelu"}))
    tok.save_pretrained(path)


def build_clip(path: Path, hidden: int = 32, layers: int = 3) -> None:
    """Tiny random ``CLIPModel`` (vision: image 28, patch 14) + ``preprocessor_config.json``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    vision = {
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "image_size": CLIP_IMAGE,
        "patch_size": 14,
    }
    text = {
        "vocab_size": 64,
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "max_position_embeddings": 16,
    }
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    model.config.architectures = ["CLIPModel"]
    model.save_pretrained(path)
    CLIPImageProcessor(
        size={"shortest_edge": CLIP_IMAGE}, crop_size={"height": CLIP_IMAGE, "width": CLIP_IMAGE}
    ).save_pretrained(path)


def build_convnext(path: Path) -> None:
    """Tiny random OpenCLIP ConvNeXt (timm ``convnext_atto``) in OpenCLIP's hub-folder layout."""
    import open_clip
    import torch

    model_cfg = {
        "embed_dim": 16,
        "vision_cfg": {
            "timm_model_name": "convnext_atto",
            "timm_model_pretrained": False,
            "timm_pool": "",
            "timm_proj": "mlp",
            "timm_drop": 0.0,
            "timm_drop_path": 0.1,
            "image_size": AUX_IMAGE,
        },
        "text_cfg": {"context_length": 16, "vocab_size": 64, "width": 32, "heads": 4, "layers": 1},
    }
    model = open_clip.CLIP(**model_cfg)
    torch.save(model.state_dict(), path / "open_clip_pytorch_model.bin")
    preprocess_cfg = {
        "mean": list(open_clip.OPENAI_DATASET_MEAN),
        "std": list(open_clip.OPENAI_DATASET_STD),
    }
    cfg = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    (path / "open_clip_config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def make_tiny_mgm(out_dir: str | Path, seed: int = 0) -> dict[str, str]:
    """Build ``gemma/``, ``OpenAI/clip-tiny/`` and ``OpenAI/openclip-convnext-tiny/`` under
    ``out_dir``; returns ``{"llm", "vision_tower", "vision_tower_aux"}`` -> folder."""
    import torch

    out = Path(out_dir)
    paths = {
        "llm": out / "gemma",
        "vision_tower": out / "OpenAI" / "clip-tiny",
        "vision_tower_aux": out / "OpenAI" / "openclip-convnext-tiny",
    }
    builders = {"llm": build_gemma, "vision_tower": build_clip, "vision_tower_aux": build_convnext}
    for name, folder in paths.items():
        folder.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(seed)
        builders[name](folder)
    return {k: str(v) for k, v in paths.items()}
