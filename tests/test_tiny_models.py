"""The tiny random models load through the real loading calls and run end to end."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
open_clip = pytest.importorskip("open_clip")


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)),
    ]


def test_layout_and_size(tiny_models: dict[str, str]) -> None:
    assert set(tiny_models) == {
        "blip2", "clip", "blip_itm", "open_clip", "aesthetics", "nsfw", "watermark", "llava",
        "qwen2_vl", "stable_diffusion", "causal_lm",
    }  # fmt: skip
    for name in ("blip2", "clip", "blip_itm", "aesthetics"):
        files = {p.name for p in Path(tiny_models[name]).iterdir()}
        assert {
            "config.json",
            "model.safetensors",
            "processor_config.json",
            "preprocessor_config.json",
        } <= files, name
    for name in ("nsfw", "watermark"):
        files = {p.name for p in Path(tiny_models[name]).iterdir()}
        assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= files, name
    for name in ("llava", "qwen2_vl", "causal_lm"):  # instruction models: a chat template
        files = {p.name for p in Path(tiny_models[name]).iterdir()}
        assert {"config.json", "model.safetensors", "chat_template.jinja"} <= files, name
    sd = Path(tiny_models["stable_diffusion"])
    assert {p.name for p in sd.iterdir()} == {
        "model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler"
    }  # fmt: skip
    total = sum(p.stat().st_size for d in tiny_models.values() for p in Path(d).rglob("*"))
    assert total < 8 * 2**20


def test_reproducible(tiny_models: dict[str, str], tmp_path: Path) -> None:
    from dj_synth.tools.tiny_models import make_tiny_models

    again = make_tiny_models(tmp_path, seed=0)

    def digest(folder: str) -> dict[str, str]:
        files = (p for p in Path(folder).rglob("*") if p.is_file())
        return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    for name in tiny_models:
        assert digest(again[name]) == digest(tiny_models[name]), name


def test_blip2_generate(tiny_models: dict[str, str], images: list[Image.Image]) -> None:
    from transformers import AutoProcessor, Blip2ForConditionalGeneration

    path = tiny_models["blip2"]
    model = Blip2ForConditionalGeneration.from_pretrained(
        path, dtype=torch.float32, local_files_only=True
    )
    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    assert model.config.architectures == ["Blip2ForConditionalGeneration"]
    assert type(processor).__name__ == "Blip2Processor"

    # No prompt: generate() starts from the query tokens and bos itself.
    inputs = processor(images=images, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False, num_beams=1)
    captions = processor.batch_decode(out, skip_special_tokens=True)
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)

    # Prompts, beams and several sequences per image.
    prompts = ["Question: what is in the image? Answer:", "a photo of"]
    inputs = processor(images=images, text=prompts, return_tensors="pt", padding=True)
    out = model.generate(**inputs, max_new_tokens=4, num_beams=2, num_return_sequences=2)
    captions = processor.batch_decode(out, skip_special_tokens=True)
    assert len(captions) == 4
    assert captions[0].startswith(prompts[0]) and captions[2].startswith(prompts[1])
    out = model.generate(**inputs, max_new_tokens=4, do_sample=True, num_return_sequences=2)
    assert len(processor.batch_decode(out, skip_special_tokens=True)) == 4


def _tensor(out):
    """transformers 5 returns a model output (pooler_output = the projection) here."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def test_clip_features(tiny_models: dict[str, str], images: list[Image.Image]) -> None:
    from transformers import AutoModel, AutoProcessor, CLIPModel

    path = tiny_models["clip"]
    model = AutoModel.from_pretrained(path, local_files_only=True)
    assert isinstance(model, CLIPModel)
    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    inputs = processor(
        text=["a cat on a table", "a dog " * 100],
        images=images,
        return_tensors="pt",
        padding=True,
        truncation=True,
        max_length=77,
    )
    assert inputs["input_ids"].shape[1] <= 77
    assert inputs["pixel_values"].shape[-2:] == (32, 32)
    with torch.no_grad():
        img = _tensor(model.get_image_features(pixel_values=inputs["pixel_values"]))
        txt = _tensor(
            model.get_text_features(
                input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
            )
        )
    assert img.shape == txt.shape == (2, model.config.projection_dim)
    assert torch.isfinite(img).all() and torch.isfinite(txt).all()


def test_blip_itm_score(tiny_models: dict[str, str], images: list[Image.Image]) -> None:
    from transformers import AutoProcessor, BlipForImageTextRetrieval

    path = tiny_models["blip_itm"]
    model = BlipForImageTextRetrieval.from_pretrained(path, local_files_only=True)
    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    inputs = processor(
        images=images, text=["a cat", "two dogs in the snow"], return_tensors="pt", padding=True
    )
    with torch.no_grad():
        itm = model(**inputs, use_itm_head=True).itm_score
        itc = model(**inputs, use_itm_head=False).itm_score
    assert itm.shape == (2, 2)
    probs = itm.softmax(dim=-1)[:, 1]
    assert ((probs >= 0) & (probs <= 1)).all()
    assert itc.shape[0] == 2


def test_open_clip(tiny_models: dict[str, str], images: list[Image.Image]) -> None:
    name = "local-dir:" + tiny_models["open_clip"]
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    tokenizer = open_clip.get_tokenizer(name)
    model.eval()
    with torch.no_grad():
        img = model.encode_image(torch.stack([preprocess(im) for im in images]))
        txt = model.encode_text(tokenizer(["a cat", "a dog on the grass"]))
    assert img.shape == txt.shape == (2, 16)
    assert torch.isfinite(img).all() and torch.isfinite(txt).all()


def test_cli(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dj_synth.tools.tiny_models import HELP, app

    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "RANDOM" in result.output
    assert HELP.startswith("These models have RANDOM weights")


def test_aesthetics_checkpoint_layout(tiny_models: dict[str, str]) -> None:
    """The published layout: tower keys as CLIPVisionModelWithProjection's, the V2 head under
    layers.{0,2,4,6,7} with LAION's sizes, and the predictor's architecture name."""
    import json

    from safetensors import safe_open

    path = Path(tiny_models["aesthetics"])
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == ["AestheticsPredictorV2Linear"]
    with safe_open(str(path / "model.safetensors"), framework="pt") as fh:
        shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    head = {k: v for k, v in shapes.items() if k.startswith("layers.")}
    dim = config["projection_dim"]
    assert head == {
        "layers.0.weight": (1024, dim), "layers.0.bias": (1024,),
        "layers.2.weight": (128, 1024), "layers.2.bias": (128,),
        "layers.4.weight": (64, 128), "layers.4.bias": (64,),
        "layers.6.weight": (16, 64), "layers.6.bias": (16,),
        "layers.7.weight": (1, 16), "layers.7.bias": (1,),
    }  # fmt: skip
    assert shapes["visual_projection.weight"] == (dim, config["hidden_size"])
    assert any(k.startswith("vision_model.encoder.layers.") for k in shapes)


def test_image_classifiers(tiny_models: dict[str, str], images: list[Image.Image]) -> None:
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    for name, label in (("nsfw", "nsfw"), ("watermark", "watermark")):
        model = AutoModelForImageClassification.from_pretrained(tiny_models[name]).eval()
        processor = AutoImageProcessor.from_pretrained(tiny_models[name])
        assert model.config.id2label[1] == label
        with torch.no_grad():
            logits = model(**processor(images=images, return_tensors="pt")).logits
        assert logits.shape == (2, 2)
