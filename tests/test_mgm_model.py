"""MGM model pieces on tiny random towers: template, masking, image pipeline, mining, splice."""

from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("open_clip")
pytest.importorskip("timm")

from PIL import Image  # noqa: E402

from dj_synth.tools.mgm.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX  # noqa: E402
from dj_synth.tools.mgm.conversation import (  # noqa: E402
    generation_prompt,
    preprocess_gemma,
    preprocess_multimodal,
    render_gemma,
    tokenizer_image_token,
)
from dj_synth.tools.mgm.encoders import (  # noqa: E402
    CLIPVisionTower,
    OpenCLIPConvNeXtTower,
    mine_patch_info,
    windows_of,
)
from dj_synth.tools.mgm.image_processing import MGMImageProcessor, expand2square  # noqa: E402
from dj_synth.tools.mgm.tiny import AUX_IMAGE, gemma_tokenizer, make_tiny_mgm  # noqa: E402

ONE_ROUND = [
    {"from": "human", "value": "Describe it.\n<image>"},
    {"from": "gpt", "value": "A red cat."},
]
TWO_ROUNDS = [
    {"from": "human", "value": "<image>\nWhat is it?"},
    {"from": "gpt", "value": "A cat."},
    {"from": "human", "value": "Colour?"},
    {"from": "gpt", "value": "Red."},
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_mgm(tmp_path_factory.mktemp("tiny_mgm"), seed=0)


@pytest.fixture(scope="module")
def tok():
    return gemma_tokenizer()


@pytest.fixture(scope="module")
def model(tiny):
    from dj_synth.tools.mgm.model import MGMGemmaForCausalLM

    torch.manual_seed(0)
    m = MGMGemmaForCausalLM.from_pretrained(tiny["llm"])
    m.get_model().initialize_vision_modules(
        SimpleNamespace(
            vision_tower=tiny["vision_tower"],
            vision_tower_aux=tiny["vision_tower_aux"],
            mm_vision_select_layer=-2,
            mm_vision_select_feature="patch",
            mm_projector_type="mlp2x_gelu",
            pretrain_mm_mlp_adapter=None,
        )
    )
    return m.eval()


def supervised_text(tok, out) -> str:
    return tok.decode([i for i in out["labels"].tolist() if i != IGNORE_INDEX])


# ----------------------------------------------------------------------------- template


def test_template_string_single_and_multi_round():
    conv = preprocess_multimodal(ONE_ROUND)
    assert conv[0]["value"] == "<image>\nDescribe it."
    assert render_gemma(conv) == (
        "<start_of_turn>user\n<image>\nDescribe it.<end_of_turn>\n"
        "<start_of_turn>model\nA red cat.<end_of_turn>\n<eos>"
    )
    assert render_gemma(TWO_ROUNDS) == (
        "<start_of_turn>user\n<image>\nWhat is it?<end_of_turn>\n"
        "<start_of_turn>model\nA cat.<end_of_turn>\n<eos>"
        "<start_of_turn>user\nColour?<end_of_turn>\n"
        "<start_of_turn>model\nRed.<end_of_turn>\n<eos>"
    )
    assert generation_prompt("Q?") == (
        "<start_of_turn>user\n<image>\nQ?<end_of_turn>\n<start_of_turn>model\n"
    )
    # A leading gpt turn is dropped; non-alternating turns are refused.
    assert render_gemma([{"from": "gpt", "value": "x"}, *ONE_ROUND]).startswith(
        "<start_of_turn>user"
    )
    with pytest.raises(ValueError):
        render_gemma([ONE_ROUND[0], ONE_ROUND[0]])


def test_tokenizer_image_token_single_bos_and_minus_200(tok):
    ids = tokenizer_image_token("<image>\nab<image>c", tok)
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert ids.count(IMAGE_TOKEN_INDEX) == 2
    assert ids[1] == IMAGE_TOKEN_INDEX
    assert tok.decode([i for i in ids if i >= 0], skip_special_tokens=True) == "\nabc"


def test_label_mask_single_round(tok):
    out = preprocess_gemma(preprocess_multimodal(ONE_ROUND), tok, has_image=True)
    ids, labels = out["input_ids"], out["labels"]
    assert ids[0] == tok.bos_token_id and int((ids == IMAGE_TOKEN_INDEX).sum()) == 1
    assert labels[ids == IMAGE_TOKEN_INDEX].eq(IGNORE_INDEX).all()
    # Only the answer, <end_of_turn>\n and <eos> are supervised, and they are the tail.
    assert supervised_text(tok, out) == "A red cat.<end_of_turn>\n<eos>"
    n = int(labels.ne(IGNORE_INDEX).sum())
    assert torch.equal(labels[-n:], ids[-n:])


def test_label_mask_multi_round_and_text_only(tok):
    for has_image in (True, False):
        conv = preprocess_multimodal(TWO_ROUNDS) if has_image else TWO_ROUNDS[1:]
        if not has_image:  # text-only: drop the image and start with a human turn
            conv = [{"from": "human", "value": "Hi"}, *TWO_ROUNDS[1:]]
        out = preprocess_gemma(conv, tok, has_image=has_image)
        text = supervised_text(tok, out)
        assert text == "A cat.<end_of_turn>\n<eos>Red.<end_of_turn>\n<eos>"
        # the user turns and the "<start_of_turn>model\n" headers are masked
        labels = out["labels"]
        assert labels[0] == IGNORE_INDEX
        assert int(labels.ne(IGNORE_INDEX).sum()) == len(
            tok(text, add_special_tokens=False).input_ids
        )


def test_tokenization_mismatch_masks_everything(tok, caplog):
    bad = [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "a <eos> b"}]
    with caplog.at_level(logging.WARNING):
        out = preprocess_gemma(bad, tok, has_image=False)
    assert out["labels"].eq(IGNORE_INDEX).all()
    assert "tokenization mismatch" in caplog.text


# ----------------------------------------------------------------------------- images


def test_image_processing_square_and_pad(tiny):
    square = MGMImageProcessor.from_pretrained(tiny["vision_tower"], AUX_IMAGE, "square")
    pad = MGMImageProcessor.from_pretrained(tiny["vision_tower"], AUX_IMAGE, "pad")
    assert square.image_size == 28 and square.image_size_aux == AUX_IMAGE
    wide = Image.new("RGB", (80, 20), (255, 0, 0))
    for proc in (square, pad):
        raw, aux = proc(wide)
        assert raw.shape == (3, 28, 28) and aux.shape == (3, AUX_IMAGE, AUX_IMAGE)
        expect = torch.nn.functional.interpolate(
            aux[None], size=(28, 28), mode="bilinear", align_corners=False
        )[0]
        assert torch.allclose(raw, expect)
    # square crops the centre (all red); pad keeps mean-colour bands at top and bottom
    _, aux_sq = square(wide)
    _, aux_pad = pad(wide)
    assert torch.allclose(aux_sq[:, 0], aux_sq[:, AUX_IMAGE // 2], atol=1e-4)
    assert not torch.allclose(aux_pad[:, 0], aux_pad[:, AUX_IMAGE // 2], atol=1e-2)
    assert aux_pad[:, 0].abs().max() < 0.05  # mean colour normalises to ~0
    padded = expand2square(wide, (1, 2, 3))
    assert padded.size == (80, 80) and padded.getpixel((0, 0)) == (1, 2, 3)


# ----------------------------------------------------------------------------- towers


def test_tower_shapes_and_names(model):
    inner = model.get_model()
    assert isinstance(inner.vision_tower, CLIPVisionTower)
    assert isinstance(inner.vision_tower_aux, OpenCLIPConvNeXtTower)
    feats = inner.vision_tower(torch.randn(2, 3, 28, 28))
    assert feats.shape == (2, 4, 32)  # 2x2 patches, CLS dropped
    aux = inner.vision_tower_aux(torch.randn(2, 3, AUX_IMAGE, AUX_IMAGE))
    assert aux.shape == (2, 40 + 80 + 160 + 320, AUX_IMAGE // 4, AUX_IMAGE // 4)
    names = {n for n, _ in model.named_parameters()}
    for key in (
        "model.mm_projector.0.weight",
        "model.mm_projector.2.bias",
        "model.vlm_uni_query_projector.0.weight",
        "model.vlm_uni_aux_projector.1.weight",
        "model.vlm_uni_val_projector.1.bias",
        "model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight",
        "model.vision_tower_aux.vision_stem.0.weight",
        "model.vision_tower_aux.vision_stages.3.blocks.0.conv_dw.weight",
    ):
        assert key in names, key
    assert tuple(inner.vlm_uni_aux_projector[1].weight.shape) == (32, 600)
    assert tuple(inner.mm_projector[2].weight.shape) == (64, 64)


def test_clip_feature_is_hidden_layer_minus_2(model):
    tower = model.get_model().vision_tower
    images = torch.randn(1, 3, 28, 28)
    out = tower.vision_tower(images, output_hidden_states=True)
    assert torch.allclose(tower(images), out.hidden_states[-2][:, 1:])
    assert not torch.allclose(tower(images), out.hidden_states[-1][:, 1:])


def test_window_attention_matches_a_per_token_loop():
    torch.manual_seed(0)
    b, grid, c, ca, win = 2, 3, 8, 6, 2
    feats = torch.randn(b, grid * grid, c)
    aux = torch.randn(b, ca, grid * win, grid * win)
    windows = windows_of(aux, grid)
    assert windows.shape == (b, grid * grid, win * win, ca)
    # window (r, c) holds exactly the aux pixels under CLIP token r * grid + c
    r, col = 1, 2
    expect = aux[0, :, r * win : (r + 1) * win, col * win : (col + 1) * win]
    assert torch.equal(windows[0, r * grid + col], expect.permute(1, 2, 0).reshape(-1, ca))
    q = torch.nn.Sequential(torch.nn.LayerNorm(c), torch.nn.Linear(c, c))
    k = torch.nn.Sequential(torch.nn.LayerNorm(ca), torch.nn.Linear(ca, c))
    v = torch.nn.Sequential(torch.nn.LayerNorm(ca), torch.nn.Linear(ca, c))
    out = mine_patch_info(feats, aux, q, k, v)
    assert out.shape == feats.shape
    i = r * grid + col
    qi, ki, vi = q(feats[0, i]), k(windows[0, i]), v(windows[0, i])
    att = torch.softmax(ki @ qi / math.sqrt(c), dim=-1)
    assert torch.allclose(out[0, i], feats[0, i] + att @ vi, atol=1e-5)
    with pytest.raises(ValueError):
        windows_of(torch.randn(1, ca, 7, 7), grid)


# ----------------------------------------------------------------------------- splice


def test_splice_expands_minus_200_with_scale_labels_and_padding(model, tok):
    n_img = 4  # 2x2 CLIP tokens
    a = preprocess_gemma(preprocess_multimodal(ONE_ROUND), tok, has_image=True)
    b = preprocess_gemma(
        [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo."}], tok, has_image=False
    )
    from dj_synth.tools.mgm.data import DataCollatorForSupervisedDataset

    images = torch.randn(2, 3, 28, 28)
    images_aux = torch.randn(2, 3, AUX_IMAGE, AUX_IMAGE)
    batch = DataCollatorForSupervisedDataset(tok)([a, b])
    assert batch["input_ids"].shape[1] == max(len(a["input_ids"]), len(b["input_ids"]))
    assert batch["labels"][1, len(b["input_ids"]) :].eq(IGNORE_INDEX).all()
    assert not batch["attention_mask"][1, len(b["input_ids"]) :].any()
    with torch.no_grad():
        out = model.prepare_inputs_labels_for_multimodal(
            batch["input_ids"], batch["attention_mask"], batch["labels"], images, images_aux
        )
        feats = model.encode_images(images, images_aux)
        inner = model.get_model()
        raw = inner.mm_projector(
            mine_patch_info(
                inner.vision_tower(images),
                inner.vision_tower_aux(images_aux),
                inner.vlm_uni_query_projector,
                inner.vlm_uni_aux_projector,
                inner.vlm_uni_val_projector,
            )
        )
    # Gemma's sqrt(hidden) embedding scale is applied to image rows too (as transformers 4.38 did)
    assert torch.allclose(feats, raw * math.sqrt(64), atol=1e-4)
    la, lb = len(a["input_ids"]) - 1 + n_img, len(b["input_ids"])
    assert out["inputs_embeds"].shape == (2, la, 64)
    assert out["attention_mask"][0].all() and out["attention_mask"][1].sum() == lb
    assert out["position_ids"][0].tolist() == list(range(la))
    pos = int((a["input_ids"] == IMAGE_TOKEN_INDEX).nonzero())
    assert torch.allclose(out["inputs_embeds"][0, pos : pos + n_img], feats[0], atol=1e-5)
    assert out["labels"][0, pos : pos + n_img].eq(IGNORE_INDEX).all()
    assert torch.equal(out["labels"][0, pos + n_img :], a["labels"][pos + 1 :])
    text = inner.embed_tokens(b["input_ids"])
    assert torch.allclose(out["inputs_embeds"][1, :lb], text, atol=1e-6)
    # left padding (generation) and truncation to tokenizer_model_max_length
    with torch.no_grad():
        left = model.prepare_inputs_labels_for_multimodal(
            batch["input_ids"], batch["attention_mask"], None, images, images_aux, "left"
        )
    assert left["labels"] is None and left["attention_mask"][1, -lb:].all()
    model.config.tokenizer_model_max_length = 10
    try:
        with torch.no_grad():
            cut = model.prepare_inputs_labels_for_multimodal(
                batch["input_ids"], batch["attention_mask"], batch["labels"], images, images_aux
            )
    finally:
        del model.config.tokenizer_model_max_length
    assert cut["inputs_embeds"].shape[1] == 10
    batch_cut = DataCollatorForSupervisedDataset(tok, model_max_length=7)([a, b])
    assert batch_cut["input_ids"].shape == (2, 7)


def test_forward_without_images_refuses_image_ids(model, tok):
    ids = torch.tensor([tokenizer_image_token("<image>\nhi", tok)])
    with pytest.raises(ValueError, match="-200"):
        model(input_ids=ids)


def test_missing_tower_weights_name_the_path(tmp_path, tiny):
    import shutil

    clip = tmp_path / "clip"
    shutil.copytree(tiny["vision_tower"], clip)
    for f in clip.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(FileNotFoundError, match=str(clip)):
        CLIPVisionTower.from_path(clip)
    aux = tmp_path / "aux"
    shutil.copytree(tiny["vision_tower_aux"], aux)
    (aux / "open_clip_pytorch_model.bin").unlink()
    with pytest.raises(FileNotFoundError, match=str(aux)):
        OpenCLIPConvNeXtTower.from_path(aux)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        CLIPVisionTower.from_path(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- activation


def _gemma_config(act: str):
    from dj_synth.tools.mgm.model import MGMConfig

    return MGMConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=8, hidden_act=act,
    )  # fmt: skip


def test_gemma_gelu_is_exact_as_in_transformers_4_38(tmp_path):
    """gemma-2b-it's hidden_act "gelu" was the exact (erf) GELU in transformers 4.38 (MGM-2B's);
    transformers 5 would turn it into the tanh approximation. Checked against both formulas."""
    import json

    from dj_synth.tools.mgm.model import MGMConfig, MGMGemmaForCausalLM

    torch.manual_seed(0)
    model = MGMGemmaForCausalLM(_gemma_config("gelu"))
    mlp = model.model.layers[0].mlp
    g = torch.linspace(-4, 4, 161)
    exact = 0.5 * g * (1 + torch.erf(g / math.sqrt(2)))
    tanh = 0.5 * g * (1 + torch.tanh(math.sqrt(2 / math.pi) * (g + 0.044715 * g**3)))
    assert (mlp.act_fn(g) - exact).abs().max() < 1e-6
    assert (mlp.act_fn(g) - tanh).abs().max() > 2e-4  # the two differ by up to ~5e-4
    x = torch.randn(3, 16)
    with torch.no_grad():
        gate = mlp.gate_proj(x)
        by_hand = mlp.down_proj(0.5 * gate * (1 + torch.erf(gate / math.sqrt(2))) * mlp.up_proj(x))
        assert torch.allclose(mlp(x), by_hand, rtol=1e-5, atol=1e-9)
    model.save_pretrained(tmp_path)  # MGM's own code reads the same value back
    assert json.loads((tmp_path / "config.json").read_text())["hidden_act"] == "gelu"
    assert MGMConfig.from_pretrained(tmp_path).hidden_act == "gelu"
    assert MGMConfig(hidden_act="gelu_pytorch_tanh").hidden_act == "gelu_pytorch_tanh"


def test_tiny_gemma_folder_loads_with_exact_gelu(tiny):
    from transformers.activations import GELUActivation

    from dj_synth.tools.mgm.model import MGMGemmaForCausalLM

    model = MGMGemmaForCausalLM.from_pretrained(tiny["llm"])
    act = model.model.layers[0].mlp.act_fn
    assert isinstance(act, GELUActivation) and act.act is torch.nn.functional.gelu


REF_438 = """
import sys, torch
from transformers import GemmaForCausalLM
m = GemmaForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32,
                                     attn_implementation="eager").eval()
with torch.no_grad():
    torch.save(m(torch.arange(2, 40)[None]).logits, sys.argv[2])
"""


@pytest.mark.skipif(
    not __import__("os").environ.get("DJ_SYNTH_TRANSFORMERS_438"),
    reason="set DJ_SYNTH_TRANSFORMERS_438 to a folder holding transformers 4.38.0 (pip --target)",
)
def test_logits_equal_transformers_4_38(tmp_path):
    """Opt-in: the same Gemma weights give bit-identical float32 logits here and under
    transformers 4.38.0 (MGM-2B's), a separate install run in a subprocess."""
    import os
    import subprocess
    import sys

    from dj_synth.tools.mgm.model import MGMGemmaForCausalLM
    from dj_synth.tools.mgm.tiny import build_gemma

    torch.manual_seed(0)
    build_gemma(tmp_path, hidden=64, layers=2)
    (tmp_path / "ref.py").write_text(REF_438)
    env = {**os.environ, "PYTHONPATH": os.environ["DJ_SYNTH_TRANSFORMERS_438"]}
    subprocess.run([sys.executable, str(tmp_path / "ref.py"), str(tmp_path),
                    str(tmp_path / "ref.pt")], env=env, check=True)  # fmt: skip
    ref = torch.load(tmp_path / "ref.pt", weights_only=True)
    model = MGMGemmaForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    with torch.no_grad():
        ours = model(torch.arange(2, 40)[None]).logits
    assert torch.equal(ours, ref)
