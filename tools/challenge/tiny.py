"""A miniature Better-Synth challenge folder with tiny RANDOM models, for trying ``dj-train``.

It has the toolkit's layout (``input/pretrain_stage_1``, ``toolkit/training/{data,model_zoo}``,
``solution/``) at toy size: five seed images with Data-Juicer captions and the original LLaVA
questions, a finetune set (with one unreadable image, as the real one has), TextVQA questions +
annotations and an MMBench TSV with circular copies, a recipe that recaptions with a tiny
BLIP-2 (the synthesis step) and a flow config. The whole flow takes about 80 s of CPU time
(bench/tiny_challenge_bench.py); every number it produces is meaningless (random weights), the
plumbing is real.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import yaml
from PIL import Image

from dj_synth.tools.eval.mmbench import DEFAULT_SPLIT
from dj_synth.tools.eval.textvqa import question_text
from dj_synth.tools.mgm.tiny import AUX_IMAGE, make_tiny_mgm

EXP = "tiny"
SPLIT = DEFAULT_SPLIT

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200)]


def _png_b64(colour: tuple[int, int, int]) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (48, 40), colour).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _finetune_set(folder: Path) -> Path:
    """Three captioned images, an unreadable one and a text-only conversation."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(3):
        Image.new("RGB", (40 + 10 * i, 30), (50 * i, 100, 200)).save(folder / f"images/{i}.jpg")
        samples.append({"id": f"img{i}", "image": f"images/{i}.jpg", "conversations": [
            {"from": "human", "value": "<image>\nDescribe."},
            {"from": "gpt", "value": f"picture {i}"}]})  # fmt: skip
    (folder / "images/bad.jpg").write_bytes(b"not a jpeg")
    samples.append({"id": "bad", "image": "images/bad.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "broken"}]})  # fmt: skip
    samples.append({"id": "txt", "conversations": [
        {"from": "human", "value": "Say hi"}, {"from": "gpt", "value": "hi there"}]})  # fmt: skip
    path = folder / "mgm_instruction_stage_1.json"
    path.write_text(json.dumps(samples))
    return path


def make_challenge(root: str | Path, blip2: str | None = None) -> Path:
    """Write the miniature challenge under ``root``; returns the flow config's path.

    ``blip2``: a (tiny) BLIP-2 folder for the recipe; built under ``root/tiny_models`` if None.
    Every path written is relative to ``root`` (config) or to the dataset's folder (image
    paths in the data), so ``root`` may be given relative to the caller's folder, and moved.
    """
    with _quiet_transformers():
        return _make_challenge(Path(root), blip2)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Building random models makes transformers warn about the tiny vocabularies and draw
    shard-writing bars: noise for someone trying the challenge."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _make_challenge(root: Path, blip2: str | None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if blip2 is None:
        from dj_synth.tools.tiny_models import make_tiny_models

        make_tiny_models(root / "tiny_models", names=("blip2",))
        blip2 = "tiny_models/blip2"  # the recipe runs in root: its paths resolve from there
    else:
        blip2 = str(Path(blip2).resolve())
    pre = root / "input" / "pretrain_stage_1"
    (pre / "images").mkdir(parents=True)
    dj_lines, originals = [], []
    for i, colour in enumerate(COLOURS):
        Image.new("RGB", (64 + 8 * i, 64), colour).save(pre / "images" / f"{i}.jpg")
        sid = f"{i:09d}"
        dj_lines.append(
            {"id": sid, "images": [f"images/{i}.jpg"],  # from the dataset's folder, as DJ
             "text": f"<__dj__image>\na photo of colour {i} <|__dj__eoc|>"}
        )  # fmt: skip
        originals.append(
            {"id": sid, "image": f"images/{i}.jpg",
             "conversations": [{"from": "human", "value": "Write a short caption.\n<image>"},
                               {"from": "gpt", "value": f"a photo of colour {i}"}]}
        )  # fmt: skip
    (pre / "mgm_pretrain_stage_1.jsonl").write_text("".join(json.dumps(x) + "\n" for x in dj_lines))
    (pre / "stage_1.json").write_text(json.dumps(originals))
    _finetune_set(root / "toolkit/training/data/finetuning_stage_1")
    zoo = make_tiny_mgm(root / "toolkit/training/model_zoo", seed=0)

    ev = root / "toolkit/training/data/eval_stage_1"
    (ev / "textvqa/train_images").mkdir(parents=True)
    questions, annotations = [], []
    for i, colour in enumerate(COLOURS[:4]):
        image_id = f"tv{i:03d}"
        Image.new("RGB", (50, 36), colour).save(ev / f"textvqa/train_images/{image_id}.jpg")
        q = f"what colour is sign {i}?"
        questions.append(
            {"question_id": image_id, "image": f"{image_id}.jpg",
             "text": question_text(q, ["stop", str(i)]) if i % 2 else question_text(q, [])}
        )  # fmt: skip
        annotations.append({"image_id": image_id, "question": q, "answers": ["red"] * 10})
    (ev / "textvqa/llava_textvqa_val_v051_ocr.jsonl").write_text(
        "".join(json.dumps(q) + "\n" for q in questions)
    )
    (ev / "textvqa/TextVQA_0.5.1_val.json").write_text(json.dumps({"data": annotations}))
    (ev / "mmbench").mkdir()
    header = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image",
              "source", "l2-category", "comment", "split"]  # fmt: skip
    rows = []
    for i in range(3):
        for shift in range(2):  # a main question and its circular copy
            opts = ["red", "green", "blue"]
            opts = opts[shift:] + opts[:shift]
            rows.append([str(i + shift * 1_000_000), f"colour {i}?", "" if i else "a hint",
                         *opts, "", "ABC"[opts.index("red")], "colour" if i < 2 else "misc",
                         _png_b64(COLOURS[i]), "src", "l2", "", "dev"])  # fmt: skip
    (ev / f"mmbench/{SPLIT}.tsv").write_text(
        "\n".join("\t".join(r) for r in [header, *rows]) + "\n"
    )
    sol = root / "solution"
    sol.mkdir()
    recipe = {
        "project_name": "tiny-synth",
        "dataset_path": "input/pretrain_stage_1/mgm_pretrain_stage_1.jsonl",
        "export_path": "output/data/pretrain.jsonl",
        "np": 1,
        "process": [
            {"image_captioning_mapper": {"hf_img2seq": blip2, "keep_original_sample": True,
                                         "max_new_tokens": 6, "gpu_batch_size": 8}},
            {"text_length_filter": {"min_len": 1}},
        ],
    }  # fmt: skip
    (sol / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    (sol / "notes.py").write_text("# participant code\n")
    rel = {k: str(Path(v).relative_to(root)) for k, v in zoo.items()}
    config = {
        "exp_name": EXP,
        "recipe": "solution/recipe.yaml",
        "pretrain": {
            "image_folder": "input/pretrain_stage_1",
            "original_llava": "input/pretrain_stage_1/stage_1.json",
            "per_device_train_batch_size": 4, "gradient_accumulation_steps": 64,
            "dataloader_num_workers": 0,
        },
        "finetune": {
            "data_path": "toolkit/training/data/finetuning_stage_1/mgm_instruction_stage_1.json",
            "image_folder": "toolkit/training/data/finetuning_stage_1",
            "per_device_train_batch_size": 4, "gradient_accumulation_steps": 32,
            "dataloader_num_workers": 0,
        },
        "model_zoo": {**rel, "llm": rel["llm"], "image_size_aux": AUX_IMAGE},
        "eval": {
            "textvqa": {
                "question_file": f"{ev.relative_to(root)}/textvqa/llava_textvqa_val_v051_ocr.jsonl",
                "image_folder": f"{ev.relative_to(root)}/textvqa/train_images",
                "annotation_file": f"{ev.relative_to(root)}/textvqa/TextVQA_0.5.1_val.json",
            },
            "mmbench": {"question_file": f"{ev.relative_to(root)}/mmbench/{SPLIT}.tsv"},
            "batch_size": 1,  # toolkit fidelity: one prompt at a time, as MGM
        },
        "launcher": "python",
        "bf16": False,
        "tf32": False,
        "smoke": {"max_new_tokens": 4, "attn_implementation": "eager"},
        "solution": ["solution"],
    }  # fmt: skip
    path = root / "flow.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
