"""The dj-train flow at MGM-2B size with RANDOM weights: launch, throughput, peak GPU memory.

    python bench/mgm_flow_bench.py --size full            # GPU: DeepSpeed, real MGM-2B shapes
    python bench/mgm_flow_bench.py --size tiny --items 16 # CPU smoke check of this script

``full`` builds the real architectures from their configs, offline, with random weights in bf16:
Gemma-2B (18 layers, hidden 2048, vocab 256000), CLIP ViT-L/14-336 and OpenCLIP ConvNeXt-L
(d-320). The tokenizer is the tiny character-level one with Gemma's special ids (throughput does
not depend on the vocabulary used). The data are synthetic: ``steps x 256`` pretrain samples,
``steps x 128`` finetune samples, ``--items`` TextVQA questions and ``--items`` MMBench rows
(half circular copies), 336x336 JPEG/PNG images. Then ``dj-train`` runs every stage with
``smoke.max_steps = steps`` and the toolkit's batch settings for one GPU (8 x 32 / 8 x 16).
Peak GPU memory comes from polling ``nvidia-smi`` while the flow runs. The flow runs in the
``--fidelity`` mode (default ``toolkit``, the challenge's numerics). Then both inference modes
answer the same TextVQA and MMBench items with the finetuned model, each timed after its model
load: ``toolkit`` (batch 1, float16 on CUDA / float32 on CPU, stop at ``<eos>``) and ``fast``
(batches of ``--batch-size``, bfloat16 on CUDA, also stop at ``<end_of_turn>``), with the share
of identical answers. The result (per-stage wall time, the Trainer's samples/s, both modes'
items/s) goes to a marked block of bench/RESULTS.md (``mgm_flow:<size>``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml
from PIL import Image

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
sys.path.insert(0, str(HERE.parent))


def build_full_zoo(zoo: Path) -> dict[str, str]:
    """Gemma-2B, CLIP ViT-L/14-336 and ConvNeXt-L d-320 with random bf16 weights."""
    import open_clip
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        GemmaConfig,
        GemmaForCausalLM,
    )

    from dj_synth.tools.mgm.tiny import gemma_tokenizer

    paths = {
        "llm": zoo / "LLM/gemma/gemma-2b-it",
        "vision_tower": zoo / "OpenAI/clip-vit-large-patch14-336",
        "vision_tower_aux": zoo / "OpenAI/openclip-convnext-large-d-320-laion2B-s29B-b131K-ft-soup",
    }
    for p in paths.values():
        p.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    tok = gemma_tokenizer()
    cfg = GemmaConfig(
        vocab_size=256000, hidden_size=2048, intermediate_size=16384, num_hidden_layers=18,
        num_attention_heads=8, num_key_value_heads=1, head_dim=256, max_position_embeddings=8192,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        llm = GemmaForCausalLM(cfg).to(torch.bfloat16)
    llm.config.architectures = ["GemmaForCausalLM"]
    llm.save_pretrained(paths["llm"])
    tok.save_pretrained(paths["llm"])
    del llm
    vision = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
              "num_attention_heads": 16, "image_size": 336, "patch_size": 14,
              "projection_dim": 768}  # fmt: skip
    text = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
            "num_attention_heads": 12}  # fmt: skip
    clip = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=768))
    clip.to(torch.bfloat16).save_pretrained(paths["vision_tower"])
    CLIPImageProcessor(
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}
    ).save_pretrained(paths["vision_tower"])
    model_cfg = open_clip.get_model_config("convnext_large_d_320")
    aux = open_clip.CLIP(**model_cfg)
    torch.save(aux.state_dict(), paths["vision_tower_aux"] / "open_clip_pytorch_model.bin")
    pre = {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD)}
    (paths["vision_tower_aux"] / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": pre})
    )
    return {k: str(v) for k, v in paths.items()}


def write_data(root: Path, n_pre: int, n_ft: int, n_items: int, side: int) -> None:
    """Synthetic pretrain / finetune / TextVQA / MMBench data in the toolkit's layout."""
    from dj_synth.tools.challenge.tiny import SPLIT, _png_b64
    from dj_synth.tools.eval.textvqa import question_text

    rng = __import__("random").Random(0)

    def image(path: Path) -> None:
        colour = tuple(rng.randrange(256) for _ in range(3))
        Image.new("RGB", (side + rng.randrange(64), side), colour).save(path, quality=90)

    pre = root / "input/pretrain_stage_1"
    (pre / "images").mkdir(parents=True, exist_ok=True)
    dj, orig = [], []
    for i in range(n_pre):
        image(pre / f"images/{i}.jpg")
        sid = f"{i:09d}"
        cap = " ".join(
            rng.choice(["a", "red", "photo", "of", "the", "sky", "dog"]) for _ in range(12)
        )
        dj.append({"id": sid, "images": [f"{pre}/images/{i}.jpg"],
                   "text": f"<__dj__image>\n{cap} <|__dj__eoc|>"})  # fmt: skip
        orig.append({"id": sid, "image": f"images/{i}.jpg", "conversations": [
            {"from": "human", "value": "Describe the image briefly.\n<image>"},
            {"from": "gpt", "value": cap}]})  # fmt: skip
    (pre / "mgm_pretrain_stage_1.jsonl").write_text("".join(json.dumps(x) + "\n" for x in dj))
    (pre / "stage_1.json").write_text(json.dumps(orig))
    ft = root / "toolkit/training/data/finetuning_stage_1"
    (ft / "images").mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(n_ft):
        image(ft / f"images/{i}.jpg")
        turns = []
        for _ in range(3):
            turns += [{"from": "human", "value": "What is shown? Explain in detail."},
                      {"from": "gpt", "value": " ".join(["word"] * rng.randrange(20, 120))}]  # fmt: skip
        turns[0]["value"] = "<image>\n" + turns[0]["value"]
        samples.append({"id": f"ft{i}", "image": f"images/{i}.jpg", "conversations": turns})
    (ft / "mgm_instruction_stage_1.json").write_text(json.dumps(samples))
    ev = root / "toolkit/training/data/eval_stage_1"
    (ev / "textvqa/train_images").mkdir(parents=True, exist_ok=True)
    qs, ann = [], []
    for i in range(n_items):
        iid = f"tv{i:05d}"
        image(ev / f"textvqa/train_images/{iid}.jpg")
        q = f"what is written on sign {i}?"
        qs.append({"question_id": iid, "image": f"{iid}.jpg",
                   "text": question_text(q, ["stop", "main", str(i)])})  # fmt: skip
        ann.append({"image_id": iid, "question": q, "answers": ["stop"] * 10})
    (ev / "textvqa/llava_textvqa_val_v051_ocr.jsonl").write_text(
        "".join(json.dumps(x) + "\n" for x in qs)
    )
    (ev / "textvqa/TextVQA_0.5.1_val.json").write_text(json.dumps({"data": ann}))
    (ev / "mmbench").mkdir(parents=True, exist_ok=True)
    header = "index question hint A B C D answer category image source l2-category comment split"
    rows = [header.split()]
    for i in range(n_items):
        main, shift = i // 2, i % 2
        opts = ["red", "green", "blue", "black"]
        opts = opts[shift:] + opts[:shift]
        colour = tuple(rng.randrange(256) for _ in range(3))
        rows.append([str(main + shift * 1_000_000), f"Which colour is item {main}?", "", *opts,
                     "ABCD"[opts.index("red")], "colour", _png_b64(colour), "s", "l2", "", "dev"])  # fmt: skip
    (ev / f"mmbench/{SPLIT}.tsv").write_text("\n".join("\t".join(r) for r in rows) + "\n")


class GpuMemoryPoller:
    """Peak ``memory.used`` (MiB) over all GPUs, polled from nvidia-smi twice a second."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                    capture_output=True, text=True, timeout=10,
                ).stdout  # fmt: skip
                self.peak = max([self.peak, *[int(x) for x in out.split() if x.isdigit()]])
            except (OSError, subprocess.SubprocessError):
                return
            self._stop.wait(0.5)

    def __enter__(self) -> GpuMemoryPoller:
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


def trainer_summary(log: Path) -> dict[str, float]:
    """The Trainer's final dict (``train_runtime``, ``train_samples_per_second``, ...)."""
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if "train_runtime" in line:
            pairs = re.findall(r"'(\w+)': '?([0-9.eE+-]+)'?", line)
            return {k: float(v) for k, v in pairs}
    return {}


def compare_inference(ckpt: Path, root: Path, n_items: int, batch_size: int, max_new: int) -> dict:
    """Both fidelity modes on the same TextVQA / MMBench items: load seconds, items/s, and how
    many answers the two modes share."""
    import dataclasses
    import json as _json

    from dj_synth.tools.challenge.tiny import SPLIT
    from dj_synth.tools.mgm import infer

    ev = root / "toolkit/training/data/eval_stage_1"
    out = root / "output" / "bench_inference"
    result: dict = {}
    answers: dict = {}
    for mode, batch in (("toolkit", 1), ("fast", batch_size)):
        t0 = time.time()
        loaded = infer.load_model(ckpt, fidelity=mode)
        load_s = time.time() - t0
        row = {"load_s": round(load_s, 1), "batch_size": batch,
               "dtype": str(next(loaded.model.parameters()).dtype).removeprefix("torch.")}  # fmt: skip
        for bench, questions in (
            ("textvqa", infer.textvqa_questions(
                ev / "textvqa/llava_textvqa_val_v051_ocr.jsonl", ev / "textvqa/train_images",
                loaded.name)),
            ("mmbench", infer.mmbench_questions(ev / f"mmbench/{SPLIT}.tsv", loaded.name)),
        ):  # fmt: skip
            questions = questions[:n_items]
            target = out / f"{mode}_{bench}.jsonl"
            t0 = time.time()
            infer.answer_questions(
                dataclasses.replace(loaded, fidelity=mode), questions, target, batch,
                max_new_tokens=max_new, progress=False,
            )  # fmt: skip
            row[f"{bench}_items_per_s"] = round(len(questions) / (time.time() - t0), 2)
            answers[(mode, bench)] = [
                _json.loads(x)["text"] for x in target.read_text().splitlines()
            ]
        result[mode] = row
        del loaded
    same = sum(
        a == b
        for bench in ("textvqa", "mmbench")
        for a, b in zip(answers[("toolkit", bench)], answers[("fast", bench)])
    )
    total = sum(len(answers[("toolkit", bench)]) for bench in ("textvqa", "mmbench"))
    result["same_answers"] = f"{same}/{total}"
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=["full", "tiny"], default="full")
    ap.add_argument("--work", type=Path, default=HERE / "out" / "mgm_flow")
    ap.add_argument("--steps", type=int, default=2, help="optimizer steps per training stage")
    ap.add_argument("--items", type=int, default=200, help="TextVQA questions and MMBench rows")
    ap.add_argument("--batch-size", type=int, default=16, help="fast-mode prompts per batch")
    ap.add_argument("--fidelity", choices=["toolkit", "fast"], default="toolkit",
                    help="the mode the dj-train flow runs in")  # fmt: skip
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()

    import torch

    from dj_synth.tools.challenge.cli import train_main
    from dj_synth.tools.mgm.tiny import AUX_IMAGE, make_tiny_mgm

    root = args.work / args.size
    shutil.rmtree(root / "output", ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    gpus = torch.cuda.device_count()
    full = args.size == "full"
    t0 = time.time()
    zoo_dir = root / "toolkit/training/model_zoo"
    zoo = build_full_zoo(zoo_dir) if full else make_tiny_mgm(zoo_dir)
    build_s = time.time() - t0
    per_dev = 8 if full else 4
    world = max(1, gpus)
    pre_acc, ft_acc = 256 // (per_dev * world), 128 // (per_dev * world)
    write_data(root, args.steps * 256, args.steps * 128, args.items, 336 if full else 48)
    ev = "toolkit/training/data/eval_stage_1"
    config = {
        "exp_name": f"bench-{args.size}",
        "pretrain": {"dataset": "input/pretrain_stage_1/mgm_pretrain_stage_1.jsonl",
                     "image_folder": "input/pretrain_stage_1",
                     "original_llava": "input/pretrain_stage_1/stage_1.json",
                     "per_device_train_batch_size": per_dev, "gradient_accumulation_steps": pre_acc,
                     "dataloader_num_workers": 4 if full else 0},
        "finetune": {"data_path": "toolkit/training/data/finetuning_stage_1/mgm_instruction_stage_1.json",
                     "image_folder": "toolkit/training/data/finetuning_stage_1",
                     "per_device_train_batch_size": per_dev, "gradient_accumulation_steps": ft_acc,
                     "dataloader_num_workers": 4 if full else 0},
        "model_zoo": {**zoo, "image_size_aux": 768 if full else AUX_IMAGE},
        "eval": {"textvqa": {"question_file": f"{ev}/textvqa/llava_textvqa_val_v051_ocr.jsonl",
                             "image_folder": f"{ev}/textvqa/train_images",
                             "annotation_file": f"{ev}/textvqa/TextVQA_0.5.1_val.json"},
                 "mmbench": {"question_file": f"{ev}/mmbench/mmbench_dev_20230712.tsv"},
                 **({"batch_size": args.batch_size} if args.fidelity == "fast" else {})},
        "fidelity": args.fidelity,
        "bf16": full, "tf32": full,
        "smoke": {"max_steps": args.steps, "max_new_tokens": 16},
    }  # fmt: skip
    cfg_path = root / "flow.yaml"
    cfg_path.write_text(yaml.safe_dump(config, sort_keys=False))
    t1 = time.time()
    with GpuMemoryPoller() as poller:
        code = train_main([str(cfg_path), "--quiet"])
    wall = time.time() - t1
    out = root / "output"
    state = json.loads((out / "dj_train_state.json").read_text())
    stages = {k: v.get("seconds") for k, v in state["stages"].items()}
    exp = config["exp_name"]
    pre = trainer_summary(out / f"training_dirs/MGM-2B-Pretrain-{exp}/pretrain.log")
    ft = trainer_summary(out / f"training_dirs/MGM-2B-Finetune-{exp}/finetuning.log")
    modes = None
    if code == 0:
        ckpt = out / f"training_dirs/MGM-2B-Finetune-{exp}"
        load_before = os.getloadavg()[0]
        modes = compare_inference(ckpt, root, args.items, args.batch_size, 16)
        modes["load_avg"] = f"{load_before:.1f} -> {os.getloadavg()[0]:.1f}"
    result = {
        "measured_at": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M}",
        "exit_code": code, "size": args.size, "gpus": gpus, "zoo_build_s": round(build_s, 1),
        "fidelity": args.fidelity, "inference_modes": modes,
        "flow_wall_s": round(wall, 1), "stages_s": stages, "peak_gpu_mib": poller.peak,
        "pretrain": pre, "finetune": ft,
        "textvqa_items_per_s": round(args.items / stages["textvqa"], 2) if stages.get("textvqa") else None,
        "mmbench_items_per_s": round(args.items / stages["mmbench"], 2) if stages.get("mmbench") else None,
    }  # fmt: skip
    print(json.dumps(result, indent=2))
    if not args.no_record and code == 0:
        write_block(args.out, render(result, args), f"mgm_flow:{args.size}")
    return code


def render(r: dict, args: argparse.Namespace) -> str:
    import torch
    import transformers

    if torch.cuda.is_available():
        dev = f"{torch.cuda.get_device_name(0)} x{r['gpus']}"
    else:
        dev = f"{os.cpu_count()} CPUs ({platform.machine()}), no GPU"
    cmd = "python bench/mgm_flow_bench.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    modes = r["inference_modes"] or {}
    mode_rows = [
        f"| {m} | {v['batch_size']} | {v['dtype']} | {v['load_s']} | {v['textvqa_items_per_s']} "
        f"| {v['mmbench_items_per_s']} |"
        for m, v in modes.items()
        if isinstance(v, dict)
    ]
    lines = [
        f"### dj-train flow ({r['size']} MGM-2B shapes, random weights)",
        "",
        f"Measured {r['measured_at']} UTC on {dev}; "
        f"torch {torch.__version__}, transformers {transformers.__version__}. Command: `{cmd}`. "
        f"{args.steps} optimizer steps per stage (global batch 256 / 128), {args.items} TextVQA "
        f"questions and MMBench rows, 16 new tokens; the flow ran in fidelity `{r['fidelity']}` "
        f"(inference batch {1 if r['fidelity'] == 'toolkit' else args.batch_size}). Stage "
        "times include process start and model loading.",
        "",
        "| stage | wall s |",
        "|---|---:|",
        *[f"| {k} | {v} |" for k, v in r["stages_s"].items()],
        "",
        f"- pretrain: {r['pretrain'].get('train_samples_per_second')} samples/s, "
        f"finetune: {r['finetune'].get('train_samples_per_second')} samples/s (Trainer summary)",
        f"- TextVQA {r['textvqa_items_per_s']} items/s, MMBench {r['mmbench_items_per_s']} "
        "items/s (stage wall time, model load included)",
        f"- peak GPU memory (nvidia-smi, all GPUs): {r['peak_gpu_mib']} MiB; random-weight zoo "
        f"built in {r['zoo_build_s']} s",
        "",
        f"Both inference modes on the same {args.items} TextVQA and {args.items} MMBench items "
        "(timed after the model load, 16 new tokens at most; answers identical in "
        f"{modes.get('same_answers')}; 1-minute load average {modes.get('load_avg')}, so "
        "compare the modes' ratio rather than absolute figures):",
        "",
        "| mode | batch | dtype | load s | TextVQA items/s | MMBench items/s |",
        "|---|---:|---|---:|---:|---:|",
        *mode_rows,
    ]
    if not r["gpus"]:
        lines += [
            "",
            "No GPU was available to this run: on CPU both modes compute in float32, so the table "
            "shows the cost of batch 1 vs batched decoding only; `--size full` on a GPU machine "
            "adds float16 (toolkit) vs bfloat16 (fast).",
        ]
    return "\n".join(lines)


def write_block(path: Path, block: str, key: str) -> None:
    from results_block import write_marked_block

    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    write_marked_block(path, begin, end, f"{begin}\n{block}\n{end}")


if __name__ == "__main__":
    sys.exit(main())
