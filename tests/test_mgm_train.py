"""MGM training end to end on tiny random models: pretrain -> mm_projector.bin -> finetune ->
reload -> greedy generate with the KV cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("open_clip")
pytest.importorskip("timm")
pytest.importorskip("accelerate")  # the HF Trainer needs it

from test_mgm_data import write_llava  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from dj_synth.tools.mgm.tiny import AUX_IMAGE, make_tiny_mgm  # noqa: E402
from dj_synth.tools.mgm.train import train  # noqa: E402

UNI = (
    "model.vlm_uni_query_projector.",
    "model.vlm_uni_aux_projector.",
    "model.vlm_uni_val_projector.",
)


class GradRecorder(TrainerCallback):
    """Names of parameters holding a non-zero gradient before each optimizer step."""

    def __init__(self) -> None:
        self.with_grad: set[str] = set()
        self.start: dict[str, torch.Tensor] = {}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.start = {n: p.detach().clone() for n, p in model.named_parameters()}

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        for name, p in model.named_parameters():
            if p.grad is not None and p.grad.abs().sum() > 0:
                self.with_grad.add(name)


def common_args(tiny: dict[str, str], data: Path, out: Path) -> list[str]:
    return [
        "--model_name_or_path", tiny["llm"], "--version", "gemma",
        "--data_path", str(data), "--image_folder", str(data.parent),
        "--vision_tower", tiny["vision_tower"], "--vision_tower_aux", tiny["vision_tower_aux"],
        "--mm_projector_type", "mlp2x_gelu", "--mm_vision_select_layer", "-2",
        "--mm_use_im_start_end", "False", "--mm_use_im_patch_token", "False",
        "--image_size_aux", str(AUX_IMAGE), "--output_dir", str(out),
        "--num_train_epochs", "1", "--per_device_train_batch_size", "2",
        "--gradient_accumulation_steps", "1", "--evaluation_strategy", "no",
        "--weight_decay", "0.", "--warmup_ratio", "0.03", "--lr_scheduler_type", "cosine",
        "--logging_steps", "1", "--tf32", "True", "--model_max_length", "2048",
        "--gradient_checkpointing", "True", "--dataloader_num_workers", "0",
        "--lazy_preprocess", "True", "--report_to", "none", "--max_steps", "2",
        "--disable_tqdm", "True", "--use_cpu", "True",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    """Run the pretrain and the finetune once; tests inspect the results."""
    root = tmp_path_factory.mktemp("mgm_train")
    tiny = make_tiny_mgm(root / "zoo", seed=0)
    data = write_llava(root / "data", n_images=3, broken=True, text_only=True)
    pre_out = root / "MGM-2B-Pretrain-test"
    pre_rec = GradRecorder()
    pre = train(
        common_args(tiny, data, pre_out)
        + ["--tune_mm_mlp_adapter", "True", "--learning_rate", "1e-3",
           "--save_strategy", "steps", "--save_steps", "1", "--save_total_limit", "1"],
        callbacks=[pre_rec],
    )  # fmt: skip
    ft_out = root / "MGM-2B-Finetune-test"
    ft_rec = GradRecorder()
    ft = train(
        common_args(tiny, data, ft_out)
        + ["--pretrain_mm_mlp_adapter", str(pre_out / "mm_projector.bin"),
           "--image_aspect_ratio", "pad", "--group_by_modality_length", "True",
           "--learning_rate", "2e-5", "--save_strategy", "no"],
        callbacks=[ft_rec],
    )  # fmt: skip
    return {
        "tiny": tiny, "pre": pre, "pre_rec": pre_rec, "pre_out": pre_out,
        "ft": ft, "ft_rec": ft_rec, "ft_out": ft_out,
    }  # fmt: skip


def is_adapter(name: str) -> bool:
    return name.startswith(("model.mm_projector.", *UNI))


def test_pretrain_trains_only_projector_and_uni(stages):
    rec, model = stages["pre_rec"], stages["pre"].model
    names = {n for n, _ in model.named_parameters()}
    expected = {n for n in names if is_adapter(n)}
    assert len(expected) == 4 + 12
    assert rec.with_grad == expected
    assert {n for n, p in model.named_parameters() if p.requires_grad} == expected
    # frozen weights are bit-identical after two steps; the projector moved
    for n, p in model.named_parameters():
        if n not in expected:
            assert torch.equal(rec.start[n], p.detach()), n
    assert not torch.equal(
        rec.start["model.mm_projector.2.weight"], model.model.mm_projector[2].weight
    )
    log = stages["pre"].state.log_history
    assert [x["step"] for x in log if "loss" in x] == [1, 2]
    assert all(
        {"loss", "grad_norm", "learning_rate", "epoch"} <= set(x) for x in log if "loss" in x
    )


def test_mm_projector_bin_key_set(stages):
    out = stages["pre_out"]
    state = torch.load(out / "mm_projector.bin", map_location="cpu", weights_only=True)
    model = stages["pre"].model
    params = dict(model.named_parameters())
    prefixes = {
        "model.mm_projector.", *UNI, "model.vision_tower.vision_tower.vision_model.",
        "model.vision_tower_aux.vision_stem.", "model.vision_tower_aux.vision_stages.",
    }  # fmt: skip
    assert set(state) == {n for n in params if n.startswith(tuple(prefixes))}
    for p in prefixes:
        assert any(k.startswith(p) for k in state), p
    assert not any(k.startswith(("model.layers.", "model.embed_tokens", "lm_head")) for k in state)
    for k, v in state.items():
        assert torch.equal(v, params[k].detach()), k
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "mgm_gemma" and config["tune_mm_mlp_adapter"] is True
    # intermediate checkpoints are adapter-only, and rotated (save_total_limit 1)
    ckpts = sorted(out.glob("checkpoint-*"))
    assert [c.name for c in ckpts] == ["checkpoint-2"]
    assert (ckpts[0] / "mm_projector.bin").is_file()
    assert not list(ckpts[0].glob("*.safetensors"))


def test_finetune_loads_adapter_and_trains_llm(stages):
    adapter = torch.load(
        stages["pre_out"] / "mm_projector.bin", map_location="cpu", weights_only=True
    )
    rec, model = stages["ft_rec"], stages["ft"].model
    for k in adapter:
        if is_adapter(k) or k.startswith("model.vision_tower.vision_tower."):
            assert torch.equal(rec.start[k], adapter[k]), k
    names = [n for n, _ in model.named_parameters()]
    towers = [n for n in names if "vision_tower" in n]
    assert towers and not rec.with_grad & set(towers)
    assert any(n.startswith("model.layers.") for n in rec.with_grad)
    assert {n for n in names if is_adapter(n)} <= rec.with_grad
    assert model.config.image_aspect_ratio == "pad"


def test_checkpoint_reloads_and_generates_with_kv_cache(stages):
    from transformers import AutoModelForCausalLM, AutoTokenizer, Cache

    from dj_synth.tools.mgm.conversation import generation_prompt, tokenizer_image_token
    from dj_synth.tools.mgm.image_processing import MGMImageProcessor
    from dj_synth.tools.mgm.model import MGMGemmaForCausalLM

    out = stages["ft_out"]
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors.index.json", "tokenizer.json"} <= files
    assert "preprocessor_config.json" in files
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert all((out / f).is_file() for f in set(index["weight_map"].values()))
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "mgm_gemma"
    assert config["architectures"] == ["MGMGemmaForCausalLM"]
    for key in (
        "mm_vision_tower",
        "mm_vision_tower_aux",
        "mm_hidden_size",
        "mm_hidden_size_aux",
        "mm_projector_type",
        "mm_vision_select_layer",
        "image_size_aux",
        "image_aspect_ratio",
        "tokenizer_model_max_length",
        "tokenizer_padding_side",
    ):
        assert key in config, key  # fmt: skip
    assert config["mm_hidden_size_aux"] == 600 and config["use_cache"] is True

    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert isinstance(model, MGMGemmaForCausalLM)
    trained = stages["ft"].model.state_dict()
    reloaded = model.state_dict()
    assert set(reloaded) == set(trained)
    for k, v in reloaded.items():
        assert torch.equal(v, trained[k].to(v.dtype)), k

    tok = AutoTokenizer.from_pretrained(out)
    proc = MGMImageProcessor.from_pretrained(
        out, config["image_size_aux"], config["image_aspect_ratio"]
    )
    from PIL import Image

    image, image_aux = proc(Image.new("RGB", (50, 30), (200, 20, 20)))
    ids = torch.tensor([tokenizer_image_token(generation_prompt("What is it?"), tok)])
    n_new = 5
    gen = model.generate(
        ids, images=image[None], images_aux=image_aux[None], do_sample=False,
        max_new_tokens=n_new, min_new_tokens=n_new, return_dict_in_generate=True,
    )  # fmt: skip
    assert isinstance(gen.past_key_values, Cache)
    new = gen.sequences[0].tolist()
    assert len(new) == n_new  # only the new tokens, as MGM returns

    # the same greedy decode without any cache, one full forward per token
    with torch.no_grad():
        spliced = model.prepare_inputs_labels_for_multimodal(
            ids, None, None, image[None], image_aux[None]
        )
        embeds = spliced["inputs_embeds"]
        ref = []
        for _ in range(n_new):
            logits = model(inputs_embeds=embeds, use_cache=False).logits[0, -1]
            logits[tok.eos_token_id] = -float("inf")  # min_new_tokens
            nxt = int(logits.argmax())
            ref.append(nxt)
            embeds = torch.cat([embeds, model.get_model().embed_tokens(torch.tensor([[nxt]]))], 1)
    assert new == ref
