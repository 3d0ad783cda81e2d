"""dj-mgm-train against MGM's own rules, on tiny random models: the loss weighting of each
fidelity mode (checked against hand-computed objectives), the tower parts that
``optimize_vision_tower(_aux)`` unfreeze, ``lr_multi`` groups, and refused flags."""

from __future__ import annotations

import copy
import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("open_clip")
pytest.importorskip("timm")
pytest.importorskip("accelerate")

from PIL import Image  # noqa: E402
from test_mgm_train import common_args  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from dj_synth.tools.mgm.constants import IGNORE_INDEX  # noqa: E402
from dj_synth.tools.mgm.tiny import make_tiny_mgm  # noqa: E402
from dj_synth.tools.mgm.train import (  # noqa: E402
    MGMArgumentError,
    MGMTrainer,
    build_model,
    main,
    parse_args,
    train,
)

# Two micro-batches of two samples: short answers first, long ones second. With a 64-token
# cut, the long answers are truncated (by the collator, and by 3 more tokens after the 2x2
# image features replace <image>), so the fast mode's token count has to follow the cut.
ANSWERS = ["ok", "no", "a long answer " * 6, "another long one " * 5]
MAX_LEN = 64


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("mgm_fidelity")
    tiny = make_tiny_mgm(root / "zoo", seed=0)
    data = root / "data"
    (data / "images").mkdir(parents=True)
    samples = []
    for i, answer in enumerate(ANSWERS):
        Image.new("RGB", (40, 30 + 5 * i), (40 * i, 90, 200)).save(data / f"images/{i}.jpg")
        samples.append(
            {
                "id": str(i),
                "image": f"images/{i}.jpg",
                "conversations": [
                    {"from": "human", "value": "<image>\nDescribe."},
                    {"from": "gpt", "value": answer.strip()},
                ],
            }
        )
    (data / "data.json").write_text(json.dumps(samples))
    return {"tiny": tiny, "data": data / "data.json", "root": root}


class FirstStep(TrainerCallback):
    """The gradients of the first optimizer step and the model as it was before it."""

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0:
            self.grads = {
                n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad
            }
            self.model = copy.deepcopy(model)


def run_one_step(setup, fidelity: str) -> tuple[MGMTrainer, FirstStep]:
    out = setup["root"] / f"out_{fidelity}"
    rec = FirstStep()
    trainer = train(
        common_args(setup["tiny"], setup["data"], out)
        + ["--tune_mm_mlp_adapter", "True", "--learning_rate", "1e-3", "--save_strategy", "no",
           "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2",
           "--max_steps", "1", "--train_sampling_strategy", "sequential", "--drop_path", "False",
           "--max_grad_norm", "0", "--gradient_checkpointing", "False",
           "--model_max_length", str(MAX_LEN), "--fidelity", fidelity],
        callbacks=[rec],
    )  # fmt: skip
    return trainer, rec


def token_losses(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-micro-batch (sum of token NLLs, supervised token count), computed by hand from the
    logits: each position predicts the next label; -100 labels (image rows, prompt, padding,
    the part cut at model_max_length) do not count."""
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        images=batch["images"],
        images_aux=batch["images_aux"],
    )
    labels = model.prepare_inputs_labels_for_multimodal(
        batch["input_ids"], batch["attention_mask"], batch["labels"],
        batch["images"], batch["images_aux"],
    )["labels"]  # fmt: skip
    logp = out.logits[:, :-1].float().log_softmax(-1)
    target = labels[:, 1:]
    mask = target != IGNORE_INDEX
    nll = -logp.gather(-1, target.clamp(min=0)[..., None])[..., 0]
    return (nll * mask).sum(), mask.sum()


def reference_grads(trainer, rec, objective: str) -> tuple[dict[str, torch.Tensor], float]:
    """Gradients of the hand-computed objective on the pre-step model copy."""
    model = rec.model
    model.zero_grad()
    ds, collate = trainer.train_dataset, trainer.data_collator
    (s1, n1), (s2, n2) = (token_losses(model, collate([ds[i], ds[i + 1]])) for i in (0, 2))
    assert n1 < n2 / 5  # the micro-batches really differ in supervised tokens
    if objective == "mean_of_means":
        loss = (s1 / n1 + s2 / n2) / 2
    else:
        loss = (s1 + s2) / (n1 + n2)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return grads, float(loss.detach())


def assert_grads(actual, expected, same: bool) -> None:
    assert set(actual) == set(expected)
    close = all(torch.allclose(actual[n], expected[n], rtol=1e-4, atol=1e-7) for n in actual)
    assert close is same


@pytest.mark.parametrize("fidelity", ["toolkit", "fast"])
def test_loss_weighting_matches_hand_computed_objective(setup, fidelity):
    """(a) toolkit: mean over micro-batches of each micro-batch's token mean (MGM, 4.38);
    fast: one token mean over the whole accumulated step, counted after the cut."""
    trainer, rec = run_one_step(setup, fidelity)
    means, mean_loss = reference_grads(trainer, rec, "mean_of_means")
    tokens, token_loss = reference_grads(trainer, rec, "token_mean")
    expected, other = (means, tokens) if fidelity == "toolkit" else (tokens, means)
    assert_grads(rec.grads, expected, same=True)
    assert_grads(rec.grads, other, same=False)
    logged = [x["loss"] for x in trainer.state.log_history if "loss" in x][0]
    assert logged == pytest.approx(mean_loss if fidelity == "toolkit" else token_loss, rel=1e-4)


# ----------------------------------------------------------------------------- tower unfreezing


def build(setup, *extra: str):
    args = parse_args(common_args(setup["tiny"], setup["data"], setup["root"] / "x") + list(extra))
    model, _, _ = build_model(*args)
    return model, args


def test_optimize_vision_tower_unfreezes_mgms_parts(setup):
    """(b) tiny CLIP has 3 encoder layers -> layers[3 // 2:] = 1, 2; tiny ConvNeXt (atto) has
    stages of 2, 2, 6, 2 blocks -> blocks 1, 1, 5, 1. Nothing else of either tower trains."""
    model, _ = build(setup, "--tune_mm_mlp_adapter", "True", "--optimize_vision_tower", "True",
                     "--optimize_vision_tower_aux", "True")  # fmt: skip
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    clip = {n for n in trainable if n.startswith("model.vision_tower.")}
    aux = {n for n in trainable if n.startswith("model.vision_tower_aux.")}
    clip_prefix = "model.vision_tower.vision_tower.vision_model.encoder.layers."
    assert {n.removeprefix(clip_prefix).split(".")[0] for n in clip} == {"1", "2"}
    assert all(n.startswith(clip_prefix) for n in clip)
    aux_blocks = {tuple(n.split(".")[3:6]) for n in aux}
    assert aux_blocks == {("0", "blocks", "1"), ("1", "blocks", "1"), ("2", "blocks", "5"),
                          ("3", "blocks", "1")}  # fmt: skip
    # every parameter of those blocks/layers, none of the embeddings, stem or downsampling
    names = {n for n, _ in model.named_parameters()}
    for layer in ("1", "2"):
        assert {n for n in names if n.startswith(f"{clip_prefix}{layer}.")} <= clip
    assert not any("embeddings" in n or "vision_stem" in n or "downsample" in n for n in trainable)
    # gradients reach the unfrozen parts (their forward is not run under no_grad)
    images = torch.randn(1, 3, 28, 28)
    feats = model.encode_images(images, torch.randn(1, 3, 32, 32))
    feats.sum().backward()
    # (layer 2 trains in name only: hidden_states[-2] is layer 1's output, in MGM as well)
    layers = model.model.vision_tower.vision_tower.vision_model.encoder.layers
    assert layers[1].mlp.fc1.weight.grad is not None and layers[0].mlp.fc1.weight.grad is None
    stages = model.model.vision_tower_aux.vision_stages
    assert stages[2].blocks[5].mlp.fc1.weight.grad is not None
    assert stages[2].blocks[4].mlp.fc1.weight.grad is None


def test_adapter_aux_weights_used_only_with_optimize_aux(setup, tmp_path):
    """MGM's finetune reads vision_tower_aux.* from mm_projector.bin only when
    optimize_vision_tower_aux is on; otherwise the ConvNeXt comes from its folder."""
    from dj_synth.tools.mgm.encoders import OpenCLIPConvNeXtTower

    folder = OpenCLIPConvNeXtTower.from_path(setup["tiny"]["vision_tower_aux"]).state_dict()
    adapter = {f"model.vision_tower_aux.{k}": v + 1 for k, v in folder.items()}
    torch.save(adapter, tmp_path / "mm_projector.bin")
    key = "vision_stages.2.blocks.5.mlp.fc1.weight"
    for optimize_aux, expected in ((False, folder[key]), (True, folder[key] + 1)):
        model, _ = build(
            setup, "--pretrain_mm_mlp_adapter", str(tmp_path / "mm_projector.bin"),
            "--optimize_vision_tower_aux", str(optimize_aux),
        )  # fmt: skip
        assert torch.equal(model.model.vision_tower_aux.state_dict()[key], expected)


def test_towers_frozen_without_the_flags(setup):
    model, _ = build(setup)  # finetune-style: LLM trains, towers do not
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not {n for n in trainable if "vision_tower" in n}
    assert any(n.startswith("model.layers.") for n in trainable)


def test_lr_multi_groups_as_mgm(setup):
    model, (_, _, targs) = build(setup, "--tune_mm_mlp_adapter", "True", "--learning_rate", "1e-3",
                                 "--lr_multi", "vlm_uni_val:10,mm_projector.2:0.5")  # fmt: skip
    trainer = MGMTrainer(model=model, args=targs)
    opt = trainer.create_optimizer()
    lr_of = {id(p): g.get("lr", targs.learning_rate) for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        expected = 1e-2 if "vlm_uni_val" in name else 5e-4 if "mm_projector.2" in name else 1e-3
        assert lr_of[id(p)] == pytest.approx(expected), name
    assert sum(len(g["params"]) for g in opt.param_groups) == sum(
        p.requires_grad for p in model.parameters()
    )


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--image_grid", "2"], "--image_grid 2"),
        (["--image_global", "True"], "--image_global"),
        (["--image_grid_pinpoints", "[(336, 672)]"], "--image_grid_pinpoints"),
        (["--image_aspect_ratio", "anyres"], "--image_aspect_ratio 'anyres'"),
        (["--mm_use_im_patch_token", "True"], "--mm_use_im_patch_token True"),
        (["--mm_use_im_start_end", "True"], "--mm_use_im_start_end"),
        (["--image_processor", "x"], "--image_processor"),
        (["--lora_enable", "True"], "--lora_enable"),
        (["--lora_r", "8"], "--lora_r"),
        (["--bits", "4"], "--bits 4"),
        (["--version", "v1"], "--version 'v1'"),
        (["--lr_multi", "vlm_uni:2", "--mm_projector_lr", "1e-4"], "--lr_multi with"),
        (["--lr_multi", "vlm_uni"], "key:multiplier"),
        (["--fidelity", "exact"], "--fidelity 'exact'"),
    ],
)
def test_unimplemented_flags_are_refused(setup, flags, message):
    """(c) before any model is loaded, with the flag in the message"""
    argv = common_args(setup["tiny"], setup["data"], setup["root"] / "x") + flags
    with pytest.raises(MGMArgumentError, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse_args(argv)


def test_unknown_flag_and_exit_code(setup, capsys):
    argv = common_args(setup["tiny"], setup["data"], setup["root"] / "x")
    with pytest.raises(ValueError, match="--no_such_flag"):
        parse_args(argv + ["--no_such_flag", "1"])
    with pytest.raises(SystemExit) as exit_info:
        main(argv + ["--image_grid", "2", "--bits", "8"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--image_grid 2" in err and "--bits 8" in err  # every problem, at once


# ----------------------------------------------------------------------------- recorded


def _shipped_flow(**overrides):
    from pathlib import Path

    import yaml

    from dj_synth.tools.challenge.config import FlowConfig, ResolvedConfig, check_fidelity

    shipped = Path(__file__).resolve().parent.parent / "recipes" / "challenge_flow.yaml"
    data = yaml.safe_load(shipped.read_text())
    data = {**data, "launcher": "python", "recipe": None, **overrides,
            "pretrain": {**data["pretrain"], "dataset": "input/dj.jsonl"}}  # fmt: skip
    rc = ResolvedConfig(FlowConfig.model_validate(data), shipped)
    return rc, check_fidelity(rc)


def test_fidelity_is_in_every_command_of_train_sh():
    """The mode reaches both training stages, both inference stages and scores.json."""
    from dj_synth.tools.challenge import flow

    rc, problems = _shipped_flow()
    assert rc.cfg.fidelity == "toolkit" and problems == []
    script = flow.render_script(rc, flow.active_stages(rc))
    lines = [x for x in script.splitlines() if "dj_synth.tools." in x and not x.startswith("#")]
    modules = ("mgm.train", "mgm.infer textvqa", "mgm.infer mmbench", "eval.cli scores")
    for module in modules:
        line = next(x for x in lines if f"dj_synth.tools.{module}" in x)
        assert "--fidelity toolkit" in line, module
        assert "--batch-size" not in line
    assert "#   fidelity: toolkit" in script  # the resolved config, as comments
    rc, problems = _shipped_flow(fidelity="fast", eval={**rc.cfg.eval.model_dump(),
                                                         "batch_size": 16})  # fmt: skip
    script = flow.render_script(rc, flow.active_stages(rc))
    infer = [x for x in script.splitlines() if "dj_synth.tools.mgm.infer" in x]
    assert problems == [] and all(
        "--fidelity fast --no-progress --batch-size 16" in x for x in infer
    )
    _, problems = _shipped_flow(eval={**rc.cfg.eval.model_dump(), "batch_size": 16})
    assert problems and "fidelity: fast" in problems[0]


def test_scores_json_records_the_mode(tmp_path):
    from typer.testing import CliRunner

    from dj_synth.tools.eval.cli import app

    out = tmp_path / "scores.json"
    result = CliRunner().invoke(app, ["scores", "--out", str(out), "--fidelity", "toolkit"])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())["fidelity"]
    assert record["mode"] == "toolkit" and record["inference"]["batch_size"] == 1
    assert record["inference"]["cuda_dtype"] == "float16"
    assert record["inference"]["stop_at_end_of_turn"] is False
    assert "micro-batch" in record["loss"]
    bad = CliRunner().invoke(app, ["scores", "--out", str(out), "--fidelity", "quick"])
    assert bad.exit_code == 2


class _StubLM(torch.nn.Module):
    def __init__(self, loss: float) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.loss = loss

    def forward(self, input_ids=None, labels=None, **kwargs):
        logits = self.w * torch.ones(*input_ids.shape, 3)
        return {"loss": self.w.sum() * self.loss, "logits": logits}


def test_toolkit_loss_divides_by_accumulation_and_survives_empty_micro_batches(tmp_path):
    """The micro-batch mean is divided by the accumulation steps (4.38 / DeepSpeed GAS); a
    micro-batch without supervised tokens adds a zero gradient, not MGM's NaN."""
    from dj_synth.tools.mgm.train import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), gradient_accumulation_steps=4,
                             use_cpu=True, report_to="none")  # fmt: skip
    ids = torch.ones(2, 5, dtype=torch.long)
    supervised = torch.full((2, 5), IGNORE_INDEX)
    supervised[0, 3] = 7
    trainer = MGMTrainer(model=_StubLM(2.0), args=args)
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, {"input_ids": ids, "labels": supervised})
    assert float(loss) == pytest.approx(0.5)
    nan_trainer = MGMTrainer(model=_StubLM(float("nan")), args=args)
    nan_trainer.model.train()
    empty = torch.full((2, 5), IGNORE_INDEX)
    loss = nan_trainer.compute_loss(nan_trainer.model, {"input_ids": ids, "labels": empty})
    loss.backward()
    assert float(loss) == 0.0 and float(nan_trainer.model.w.grad) == 0.0
