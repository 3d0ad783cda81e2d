"""Fidelity modes: how closely training and evaluation follow the challenge's toolkit (MGM).

A local score is only a prediction of the official one if it is produced the way the toolkit
produces it, so ``toolkit`` is the default everywhere (``dj-train``, ``dj-mgm-train``, inference)
and ``fast`` is an explicit opt-in whose name is recorded in ``train.sh`` and ``scores.json``.

``toolkit`` (MGM with transformers 4.38, as the toolkit pins it):
  * loss: cross entropy averaged over the supervised tokens of each micro-batch, then averaged
    over the micro-batches of an optimizer step (gradient accumulation, data-parallel ranks);
  * inference: one prompt at a time (no padding), float16 on CUDA (float32 on CPU, where
    float16 kernels are missing or slow), greedy, stopping at ``<eos>`` only.

``fast`` (the current-stack defaults, quicker to run):
  * loss: summed over tokens and divided by the supervised-token count of the whole optimizer
    step (transformers 5's ``num_items_in_batch``; counted after the ``model_max_length`` cut),
    so a long answer weighs more than a short one;
  * inference: left-padded batches (``--batch-size``), bfloat16 on CUDA, stopping at ``<eos>``
    or ``<end_of_turn>``. Greedy answers can differ from ``toolkit`` in rare near-ties, and text
    the model writes after ``<end_of_turn>`` is cut instead of kept.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

TOOLKIT = "toolkit"
FAST = "fast"
MODES = (TOOLKIT, FAST)


@dataclass(frozen=True)
class InferenceSettings:
    """What one fidelity mode means for answer generation."""

    batch_size: int | None  # None: the caller's --batch-size
    cuda_dtype: str
    cpu_dtype: str
    stop_at_end_of_turn: bool


INFERENCE = {
    TOOLKIT: InferenceSettings(1, "float16", "float32", False),
    FAST: InferenceSettings(None, "bfloat16", "float32", True),
}

LOSS = {
    TOOLKIT: "mean over each micro-batch's supervised tokens, then mean over micro-batches (MGM)",
    FAST: "sum over tokens / supervised tokens of the whole optimizer step (transformers 5)",
}


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"fidelity {mode!r}: use one of {', '.join(MODES)}")
    return mode


def describe(mode: str) -> dict[str, object]:
    """The record that goes into ``scores.json``: the mode and what it meant."""
    check_mode(mode)
    inference = asdict(INFERENCE[mode])
    if inference["batch_size"] is None:
        inference["batch_size"] = "from --batch-size (eval.batch_size)"
    return {"mode": mode, "loss": LOSS[mode], "inference": inference}
