"""MGM-2B inference for the challenge benchmarks: TextVQA and MMBench answers files.

Mirrors MGM's ``model_vqa_loader`` / ``model_vqa_mmbench`` (same flags, same answer records,
same ``<N>_<i>.jsonl`` chunking) so the toolkit's scripts and scorers read our files. The
checkpoint is loaded by MGM's rule (``checkpoint.load_mgm_checkpoint``: towers from their
folders). ``--fidelity toolkit`` (default) generates as MGM does: one prompt at a time, float16
on CUDA (float32 on CPU), greedy, stopping at ``<eos>`` only. ``--fidelity fast`` decodes
left-padded batches of ``--batch-size`` in bfloat16 and also stops at ``<end_of_turn>`` (see
``fidelity``). A sample whose image cannot be read still gets an answer record, with an empty
``text`` and the error in ``metadata``: it is never silently lost.

``python -m dj_synth.tools.mgm.infer textvqa|mmbench --model-path CKPT ... [--gpus 0,1]`` runs
one chunk per GPU in parallel processes and merges them; without ``--gpus`` it runs in-process.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from . import fidelity as fidelity_modes


class InferenceError(RuntimeError):
    """A checkpoint or input that inference cannot use; the message says what to fix."""


# ----------------------------------------------------------------------------- chunks


def get_chunk(items: Sequence[Any], num_chunks: int, chunk_idx: int) -> list[Any]:
    """MGM's ``split_list`` + ``get_chunk``: ``ceil(len/n)``-sized contiguous slices."""
    if num_chunks < 1 or not 0 <= chunk_idx < num_chunks:
        raise InferenceError(f"chunk {chunk_idx} of {num_chunks}: need 0 <= idx < n, n >= 1")
    size = max(1, math.ceil(len(items) / num_chunks))
    return list(items[chunk_idx * size : (chunk_idx + 1) * size])


def model_name_from_path(path: str | Path) -> str:
    """MGM's ``get_model_name_from_path``: the last folder, ``parent_checkpoint-N`` for a
    checkpoint folder."""
    parts = str(path).rstrip("/").split("/")
    if parts[-1].startswith("checkpoint-") and len(parts) > 1:
        return f"{parts[-2]}_{parts[-1]}"
    return parts[-1]


# ----------------------------------------------------------------------------- model


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    image_processor: Any
    name: str
    device: Any
    fidelity: str = fidelity_modes.TOOLKIT

    @property
    def stop_at_end_of_turn(self) -> bool:
        return fidelity_modes.INFERENCE[self.fidelity].stop_at_end_of_turn


def load_model(
    model_path: str | Path,
    device: str = "auto",
    dtype: str = "auto",
    fidelity: str = fidelity_modes.TOOLKIT,
    vision_tower: str | Path | None = None,
    vision_tower_aux: str | Path | None = None,
) -> LoadedModel:
    """Load a finetuned checkpoint (the HF folder the finetune stage saves, or MGM's own) for
    generation; ``dtype="auto"`` takes the fidelity mode's dtype for the device."""
    import torch
    from transformers import AutoTokenizer

    from .checkpoint import CheckpointError, image_processor_folder, load_mgm_checkpoint
    from .image_processing import MGMImageProcessor

    settings = fidelity_modes.INFERENCE[fidelity_modes.check_mode(fidelity)]
    path = Path(model_path)
    if not (path / "config.json").is_file():
        raise InferenceError(
            f"--model-path {path}: no config.json there; point it at the folder the finetune "
            "stage saved (output/training_dirs/MGM-2B-Finetune-<EXP>)"
        )
    config = json.loads((path / "config.json").read_text())
    if config.get("model_type") != "mgm_gemma":
        raise InferenceError(f"{path}: model_type {config.get('model_type')!r}, not mgm_gemma")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = settings.cuda_dtype if device.startswith("cuda") else settings.cpu_dtype
    try:
        model = load_mgm_checkpoint(path, getattr(torch, dtype), vision_tower, vision_tower_aux)
        processor_dir = image_processor_folder(model.config, path, vision_tower)
    except CheckpointError as exc:
        raise InferenceError(str(exc)) from exc
    model.to(device).eval()
    model.config.use_cache = True
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    processor = MGMImageProcessor.from_pretrained(
        processor_dir,
        image_size_aux=config.get("image_size_aux"),
        image_aspect_ratio=config.get("image_aspect_ratio") or "pad",
    )
    return LoadedModel(model, tokenizer, processor, model_name_from_path(path), device, fidelity)


Pixels = tuple[Any, Any]  # (image [3,h,w], image_aux [3,H,W]) from MGMImageProcessor


def generate_answers(
    loaded: LoadedModel,
    items: Sequence[tuple[str, Image.Image]],
    max_new_tokens: int = 128,
    temperature: float = 0.0,
) -> list[str]:
    """Answer ``(question, image)`` pairs in one batch with the gemma template."""
    pixels = [loaded.image_processor(image) for _, image in items]
    return generate_from_pixels(loaded, [q for q, _ in items], pixels, max_new_tokens, temperature)


def generate_from_pixels(
    loaded: LoadedModel,
    questions: Sequence[str],
    pixels: Sequence[Pixels],
    max_new_tokens: int = 128,
    temperature: float = 0.0,
) -> list[str]:
    """One left-padded batch through ``generate``; answers decoded and stripped as MGM does.
    Decoding stops at ``<eos>`` (MGM's only terminator), and also at ``<end_of_turn>`` in the
    ``fast`` fidelity mode."""
    import torch

    from .conversation import generation_prompt, tokenizer_image_token

    tok, model = loaded.tokenizer, loaded.model
    prompts = [tokenizer_image_token(generation_prompt(q), tok) for q in questions]
    longest = max(len(p) for p in prompts)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((len(prompts), longest), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), longest), dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, longest - len(p) :] = torch.tensor(p)
        mask[i, longest - len(p) :] = True
    dtype = next(model.parameters()).dtype
    images = torch.stack([a for a, _ in pixels]).to(loaded.device, dtype)
    images_aux = torch.stack([b for _, b in pixels]).to(loaded.device, dtype)
    stop = [tok.eos_token_id]
    end_of_turn = tok.convert_tokens_to_ids("<end_of_turn>")
    if (
        loaded.stop_at_end_of_turn
        and isinstance(end_of_turn, int)
        and end_of_turn != tok.unk_token_id
    ):
        stop.append(end_of_turn)
    sampling: dict[str, Any] = {"do_sample": False}
    if temperature > 0:
        sampling = {"do_sample": True, "temperature": temperature}
    out = model.generate(
        ids.to(loaded.device),
        attention_mask=mask.to(loaded.device),
        images=images,
        images_aux=images_aux,
        max_new_tokens=max_new_tokens,
        eos_token_id=stop,
        pad_token_id=pad,
        **sampling,
    )
    return [t.strip() for t in tok.batch_decode(out, skip_special_tokens=True)]


@dataclass
class Question:
    """One benchmark item: the prompt text, an image loader, and how to write its answer."""

    text: str
    load_image: Callable[[], Image.Image]
    record: Callable[[str, dict[str, Any]], dict[str, Any]]


def _pixels_or_error(loaded: LoadedModel, q: Question) -> Pixels | str:
    """Decode + preprocess one image (in a worker thread); an unreadable one gives its error."""
    try:
        with q.load_image() as image:
            return loaded.image_processor(image)
    except Exception as exc:  # noqa: BLE001 - a bad image becomes an answer with the error
        return f"{type(exc).__name__}: {exc}"


def answer_questions(
    loaded: LoadedModel,
    questions: Sequence[Question],
    answers_file: str | Path,
    batch_size: int = 8,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    progress: bool = True,
    workers: int = 4,
) -> int:
    """Write one answer record per question to ``answers_file`` (JSONL), in question order.

    The next batch's images are decoded and preprocessed on ``workers`` threads while the
    current batch generates, so the accelerator does not wait on PIL (at most two batches of
    pixels are held).
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    out = Path(answers_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    batches = [questions[i : i + batch_size] for i in range(0, len(questions), batch_size)]
    with (
        ThreadPoolExecutor(max(1, workers)) as pool,
        tmp.open("w", encoding="utf-8") as fh,
        tqdm(total=len(questions), disable=not progress, desc=out.name, file=sys.stderr) as bar,
    ):

        def submit(batch: Sequence[Question]) -> list[Any]:
            return [pool.submit(_pixels_or_error, loaded, q) for q in batch]

        pending = submit(batches[0]) if batches else []
        for k, batch in enumerate(batches):
            prepared = [f.result() for f in pending]
            pending = submit(batches[k + 1]) if k + 1 < len(batches) else []
            ok = [i for i, p in enumerate(prepared) if not isinstance(p, str)]
            texts: dict[int, str] = {}
            if ok:
                answers = generate_from_pixels(
                    loaded,
                    [batch[i].text for i in ok],
                    [prepared[i] for i in ok],
                    max_new_tokens,
                    temperature,
                )
                texts = dict(zip(ok, answers))
            for i, (q, p) in enumerate(zip(batch, prepared)):
                meta = {"error": p} if isinstance(p, str) else {}
                fh.write(json.dumps(q.record(texts.get(i, ""), meta), ensure_ascii=False) + "\n")
            bar.update(len(batch))
    os.replace(tmp, out)
    return len(questions)


# ----------------------------------------------------------------------------- benchmarks


def textvqa_questions(
    question_file: str | Path, image_folder: str | Path, model_name: str
) -> list[Question]:
    """Questions of ``llava_textvqa_val_v051_ocr.jsonl``; answers keep ``text`` as ``prompt``."""
    from dj_synth.tools.eval.textvqa import read_jsonl

    folder = Path(image_folder)
    out = []
    for line in read_jsonl(question_file):

        def record(text: str, meta: dict[str, Any], line: dict[str, Any] = line) -> dict[str, Any]:
            return {
                "question_id": line["question_id"],
                "prompt": line["text"],
                "text": text,
                "answer_id": uuid.uuid4().hex,
                "model_id": model_name,
                "metadata": meta,
            }

        out.append(Question(line["text"], lambda p=folder / line["image"]: Image.open(p), record))
    return out


def mmbench_questions(
    question_file: str | Path, model_name: str, lang: str = "en"
) -> list[Question]:
    """Round-0 questions of an MMBench TSV (MGM's ``--single-pred-prompt``, no ``--all-rounds``)."""
    from dj_synth.tools.eval import mmbench

    frame = mmbench.load_mmbench(question_file)
    out = []
    for _, row in frame.iterrows():
        # the model sees the answer instruction; the record's `prompt` omits it, as MGM's
        text, options, chars = mmbench.build_prompt(row, lang=lang)
        shown, _, _ = mmbench.build_prompt(row, lang=lang, with_instruction=False)

        def record(
            answer: str,
            meta: dict[str, Any],
            row: Any = row,
            shown: str = shown,
            options: list[str] = options,
            chars: list[str] = chars,
        ) -> dict[str, Any]:
            rec = mmbench.answer_record(
                row, shown, answer, model_name, round_id=0, options=options, option_chars=chars
            )
            rec["metadata"] = meta
            return rec

        out.append(Question(text, lambda row=row: mmbench.decode_image(row), record))
    return out


# ----------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dj_synth.tools.mgm.infer",
        description="MGM-2B answers for TextVQA / MMBench (MGM's model_vqa_loader / _mmbench flags)",
    )
    sub = p.add_subparsers(dest="bench", required=True)
    for name in ("textvqa", "mmbench"):
        s = sub.add_parser(name)
        s.add_argument("--model-path", required=True)
        s.add_argument("--question-file", required=True)
        s.add_argument("--answers-file", help="one chunk's answers (MGM's flag)")
        s.add_argument("--num-chunks", type=int, default=1)
        s.add_argument("--chunk-idx", type=int, default=0)
        s.add_argument("--temperature", type=float, default=0.0)
        s.add_argument("--conv-mode", default="gemma", choices=["gemma"])
        s.add_argument(
            "--fidelity",
            default=fidelity_modes.TOOLKIT,
            choices=fidelity_modes.MODES,
            help="toolkit (default): batch 1, float16 on CUDA, stop at <eos> as MGM; "
            "fast: batches of --batch-size, bfloat16, also stop at <end_of_turn>",
        )
        s.add_argument(
            "--batch-size", type=int, default=None, help="with --fidelity fast (default 8)"
        )
        s.add_argument("--device", default="auto")
        s.add_argument("--dtype", default="auto", help="default: the fidelity mode's dtype")
        s.add_argument("--vision-tower", default=None, help="CLIP folder, if it moved")
        s.add_argument("--vision-tower-aux", default=None, help="ConvNeXt folder, if it moved")
        s.add_argument(
            "--gpus",
            default=None,
            help="comma list: one chunk per GPU in parallel processes, merged into --answers-file "
            "(e.g. 0,1,2,3; 'cpu' = one chunk here on the CPU)",
        )
        s.add_argument("--out-dir", help="with --gpus: where <N>_<i>.jsonl and the merge go")
        s.add_argument("--no-progress", action="store_true")
        if name == "textvqa":
            s.add_argument("--image-folder", required=True)
            s.add_argument("--max-new-tokens", "--max_new_tokens", type=int, default=128)
        else:
            s.add_argument("--image-folder", default=None, help="unused: images are in the TSV")
            s.add_argument("--max-new-tokens", "--max_new_tokens", type=int, default=1024)
            s.add_argument("--lang", default="en", choices=["en", "cn"])
            s.add_argument("--single-pred-prompt", action="store_true", default=True)
    return p


def batch_size_for(fidelity: str, requested: int | None) -> int:
    """The toolkit mode answers one prompt at a time; a batch size there is a mistake."""
    fixed = fidelity_modes.INFERENCE[fidelity_modes.check_mode(fidelity)].batch_size
    if fixed is not None:
        if requested not in (None, fixed):
            raise InferenceError(
                f"--batch-size {requested} needs --fidelity fast (--fidelity {fidelity} "
                f"answers {fixed} prompt at a time, as MGM)"
            )
        return fixed
    return requested or 8


def run_one(args: argparse.Namespace) -> int:
    """Answer one chunk in this process."""
    batch_size = batch_size_for(args.fidelity, args.batch_size)
    loaded = load_model(
        args.model_path,
        args.device,
        args.dtype,
        args.fidelity,
        args.vision_tower,
        args.vision_tower_aux,
    )
    if args.bench == "textvqa":
        questions = textvqa_questions(args.question_file, args.image_folder, loaded.name)
    else:
        questions = mmbench_questions(args.question_file, loaded.name, args.lang)
    chunk = get_chunk(questions, args.num_chunks, args.chunk_idx)
    return answer_questions(
        loaded,
        chunk,
        args.answers_file,
        batch_size,
        args.max_new_tokens,
        args.temperature,
        progress=not args.no_progress,
    )


def run_chunked(argv: Sequence[str], gpus: list[str], answers: list[Path]) -> None:
    """One process per GPU (``CUDA_VISIBLE_DEVICES`` = that GPU), each writing one chunk."""
    procs = []
    for idx, (gpu, answer) in enumerate(zip(gpus, answers)):
        cmd = [sys.executable, "-m", "dj_synth.tools.mgm.infer", *argv]
        cmd += ["--num-chunks", str(len(gpus)), "--chunk-idx", str(idx)]
        cmd += ["--answers-file", str(answer)]
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu}
        procs.append((idx, gpu, subprocess.Popen(cmd, env=env)))
    failed = [(idx, gpu, p.wait()) for idx, gpu, p in procs]
    failed = [f for f in failed if f[2] != 0]
    if failed:
        raise InferenceError(
            "; ".join(f"chunk {i} on GPU {g} exited with {rc}" for i, g, rc in failed)
        )


def _strip_chunk_flags(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--gpus", "--out-dir", "--num-chunks", "--chunk-idx", "--answers-file"):
            skip = True
            continue
        if arg.split("=")[0] in ("--gpus", "--out-dir", "--num-chunks", "--chunk-idx"):
            continue
        out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from dj_synth.tools.eval.textvqa import merge_answer_chunks

    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    try:
        batch_size_for(args.fidelity, args.batch_size)  # a mode mistake fails before any work
        if args.gpus is None:
            if not args.answers_file:
                raise InferenceError("--answers-file is required (or --gpus with --out-dir)")
            run_one(args)
            return 0
        gpus = [g.strip() for g in args.gpus.split(",") if g.strip()]
        if not gpus or not args.out_dir:
            raise InferenceError("--gpus needs a non-empty GPU list and --out-dir")
        out_dir = Path(args.out_dir)
        merged_name = args.answers_file
        chunks = [out_dir / f"{len(gpus)}_{i}.jsonl" for i in range(len(gpus))]
        if gpus == ["cpu"]:  # one chunk, in this process
            args.num_chunks, args.chunk_idx, args.answers_file = 1, 0, str(chunks[0])
            args.device = "cpu" if args.device == "auto" else args.device
            run_one(args)
        else:
            run_chunked(_strip_chunk_flags(argv), gpus, chunks)
        merged = Path(merged_name) if merged_name else out_dir / "merge.jsonl"
        merge_answer_chunks(out_dir, len(gpus), out=merged)
        return 0
    except (InferenceError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
