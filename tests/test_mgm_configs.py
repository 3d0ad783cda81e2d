"""The shipped DeepSpeed configs say what the challenge's launch relies on."""

from __future__ import annotations

import json
from importlib.resources import files


def _config(name: str) -> dict:
    return json.loads(files("dj_synth.tools.mgm").joinpath("configs", name).read_text())


def test_zero2_offload_is_the_challenge_config():
    cfg = _config("zero2_offload.json")
    zero = cfg["zero_optimization"]
    assert zero["stage"] == 2
    assert zero["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert zero["overlap_comm"] is True and zero["contiguous_gradients"] is True
    for key in (
        "train_micro_batch_size_per_gpu",
        "train_batch_size",
        "gradient_accumulation_steps",
    ):
        assert cfg[key] == "auto"  # the Trainer fills them from its arguments
    assert cfg["bf16"]["enabled"] == "auto" and cfg["fp16"]["enabled"] == "auto"


def test_zero3_shards_parameters():
    zero = _config("zero3.json")["zero_optimization"]
    assert zero["stage"] == 3
