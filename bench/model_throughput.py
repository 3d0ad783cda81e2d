"""Model operator throughput: BLIP-2 recaptioning, CLIP, aesthetics and NSFW scoring, images/s;
and the synthesis mappers: VLM answers (mllm_mapper), text-to-image (image_diffusion_mapper),
LLM rewrites (sentence_augmentation_mapper, tiny only).

    python bench/model_throughput.py --device cuda            # real architectures, bf16 (GPU)
    python bench/model_throughput.py --tiny --device cpu      # CPU smoke check, tiny models
    python bench/model_throughput.py --device cuda --only-synthesis --block cuda-synthesis
    python bench/model_throughput.py --tiny --device cpu --only-synthesis --block cpu-tiny-synthesis

Synthesis at full size (random weights, bf16): Qwen2-VL-2B (its published config: 675M vision
tower + 1.5B Qwen2, M-RoPE; images at most 1280*28*28 pixels, the model card's suggestion),
answers of 30 tokens (min = max new tokens, greedy); Stable Diffusion 1.5 (its published
UNet / VAE / CLIP ViT-L text encoder configs, 512 px, DDIM, `--diffusion-steps` steps,
classifier-free guidance), text-to-image, PNG files written as the operator does.

The real architectures are built from their configs with RANDOM weights, in bf16, straight
on the device (nothing is downloaded; throughput does not depend on the weights):
BLIP-2 OPT-2.7B (EVA ViT-g + Q-Former + OPT-2.7b, ~3.8B parameters), CLIP ViT-L/14 and
ViT-B/32. Tokenizers and image processors are built offline (dj_synth.tools.tiny_models'
small BPE vocabularies; every id is below the model vocabulary) with 224 px image processors.
The operators are constructed by their real classes (on a tiny model folder, so the path
check passes), the big model is injected into `op._model` as `setup()` would build it, and
each measured run is `op.run(Batch, Ledger)` as the executors call it: a fresh Batch (fresh
media cache) per run, so JPEG decode, preprocessing and batching are in the time.

Captions have a fixed length (min_new_tokens == max_new_tokens == 30, greedy). The
"Data-Juicer-style loop" opens, preprocesses and `generate`s one sample at a time. With
`--tiny`, the models are dj_synth.tools.tiny_models' (the ops load them with `setup()`),
fp32 on CPU: a smoke check of this script, not a performance figure.
Results go to a marked block of bench/RESULTS.md (`model_throughput:<device>[-tiny]`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image

from dj_synth.operators import Batch, SampleRef, get_operator
from dj_synth.operators.batch import EOC_TOKEN, IMAGE_TOKEN
from dj_synth.operators.clip_backends import HFClip
from dj_synth.operators.ledger import Ledger
from dj_synth.tools import tiny_models as tm

SYNTHESIS = ("mllm", "diffusion", "rewrite")

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
GEN = dict(max_new_tokens=30, min_new_tokens=30, num_beams=1, do_sample=False)
WORDS = (
    "a photo of the cat dog red blue car street tree house man woman child small big on in".split()
)


# ----------------------------------------------------------------------------- data
def make_images(folder: Path, n: int, seed: int) -> list[str]:
    """n JPEGs (quality 90), sides random in 224-1024 px: smooth colour field + noise."""

    def one(i: int) -> str:
        rng = np.random.default_rng(seed * 1_000_003 + i)
        w, h = (int(x) for x in rng.integers(224, 1025, size=2))
        base = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize(
            (w, h), Image.BICUBIC
        )
        px = np.asarray(base, dtype=np.float32) + rng.normal(0, 10, (h, w, 3))
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(px.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        return str(path)

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(n)))


def rows_for(paths: list[str], seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {"id": i, "text": f"{IMAGE_TOKEN} {' '.join(rng.choice(WORDS, rng.integers(8, 21)))} {EOC_TOKEN}",
         "images": [p]}
        for i, p in enumerate(paths)
    ]  # fmt: skip


def fresh_batch(rows: list[dict]) -> Batch:
    return Batch.from_rows(rows, [SampleRef(i, "bench.jsonl", i + 1) for i in range(len(rows))])


# ----------------------------------------------------------------------------- models
def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build(cls, config, device: str, dtype):
    with torch.device(device):
        model = cls._from_config(config, dtype=dtype)
    return model.eval()


def real_blip2(device: str, dtype):
    """BLIP-2 OPT-2.7B: Blip2Config defaults (EVA ViT-g, Q-Former, 32 queries) + OPT-2.7b."""
    tok = tm._opt_tokenizer()
    text = dict(model_type="opt", vocab_size=50272, hidden_size=2560, ffn_dim=10240,
                num_hidden_layers=32, num_attention_heads=32, max_position_embeddings=2048,
                word_embed_proj_dim=2560, pad_token_id=1, bos_token_id=2, eos_token_id=2)  # fmt: skip
    config = transformers.Blip2Config(
        text_config=text,
        num_query_tokens=32,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
    )
    v, q = config.vision_config, config.qformer_config
    assert (
        v.hidden_size,
        v.num_hidden_layers,
        v.num_attention_heads,
        v.image_size,
        v.patch_size,
    ) == (1408, 39, 16, 224, 14)
    assert (q.hidden_size, q.num_hidden_layers) == (768, 12)
    model = build(transformers.Blip2ForConditionalGeneration, config, device, dtype)
    for key, value in dict(pad_token_id=1, bos_token_id=2, eos_token_id=2).items():
        setattr(model.generation_config, key, value)
    image_processor = transformers.BlipImageProcessor(size={"height": 224, "width": 224})
    processor = transformers.Blip2Processor(image_processor, tok, num_query_tokens=32)
    return model, processor


def real_clip(name: str, device: str, dtype):
    vision, text, proj = {
        "ViT-L/14": ((1024, 24, 16, 14), (768, 12, 12), 768),
        "ViT-B/32": ((768, 12, 12, 32), (512, 12, 8), 512),
    }[name]
    tok = tm._clip_tokenizer()
    config = transformers.CLIPConfig(
        vision_config=dict(hidden_size=vision[0], intermediate_size=4 * vision[0],
                           num_hidden_layers=vision[1], num_attention_heads=vision[2],
                           patch_size=vision[3], image_size=224),
        text_config=dict(hidden_size=text[0], intermediate_size=4 * text[0],
                         num_hidden_layers=text[1], num_attention_heads=text[2], vocab_size=49408,
                         max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        projection_dim=proj,
    )  # fmt: skip
    clip = HFClip.__new__(HFClip)  # what HFClip.__init__ holds, without from_pretrained
    clip.device, clip.dtype, clip.max_length = device, dtype, 77
    clip.model = build(transformers.CLIPModel, config, device, dtype)
    clip.processor = transformers.CLIPProcessor(transformers.CLIPImageProcessor(), tok)
    return clip


def real_aesthetics(device: str, dtype):
    """LAION's predictor: CLIP ViT-L/14 vision tower with projection + the V2 MLP head."""
    from dj_synth.operators.aesthetics_predictor import AestheticsModel, build_head

    config = transformers.CLIPVisionConfig(hidden_size=1024, intermediate_size=4096,
                                           num_hidden_layers=24, num_attention_heads=16,
                                           patch_size=14, image_size=224, projection_dim=768)  # fmt: skip
    model = AestheticsModel.__new__(AestheticsModel)  # what __init__ holds, without the files
    model.tower = build(transformers.CLIPVisionModelWithProjection, config, device, dtype)
    model.head = build_head("linear", 768).to(device, dtype).eval()
    model.device, model.dtype = device, dtype
    return model, transformers.CLIPImageProcessor()


def real_qwen2_vl(device: str, dtype, max_pixels: int):
    """Qwen2-VL-2B-Instruct's config (vision: 32 blocks of 1280, patch 14, 2x2 merge; text:
    28 layers of 1536, 12 heads, 2 KV heads, vocabulary 151,936, tied embeddings)."""
    tok = tm._qwen_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in tm._QWEN_SPECIALS}
    text = dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768,
                tie_word_embeddings=True, bos_token_id=ids["<|endoftext|>"],
                eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                 "mrope_section": [16, 24, 24]})  # fmt: skip
    config = transformers.Qwen2VLConfig(
        vision_config=dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        text_config=text, image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )  # fmt: skip
    model = build(transformers.Qwen2VLForConditionalGeneration, config, device, dtype)
    fixed_length(model, ids["<|endoftext|>"], ids["<|im_end|>"])
    vision = dict(size={"shortest_edge": 56 * 56, "longest_edge": max_pixels})
    processor = transformers.Qwen2VLProcessor(
        image_processor=transformers.Qwen2VLImageProcessor(**vision), tokenizer=tok,
        video_processor=transformers.Qwen2VLVideoProcessor(**vision),
        chat_template=tm._QWEN_CHAT_TEMPLATE,
    )  # fmt: skip
    return model, processor


def fixed_length(model, pad: int, eos: int) -> None:
    """Answers of exactly GEN's length: random weights would stop at a random EOS."""
    for key, value in dict(pad_token_id=pad, eos_token_id=eos,
                           min_new_tokens=GEN["min_new_tokens"]).items():  # fmt: skip
        setattr(model.generation_config, key, value)


def real_sd15(device: str, dtype):
    """Stable Diffusion 1.5's components from their published configs (UNet 860M, VAE 84M,
    CLIP ViT-L/14 text encoder 123M), a DDIM scheduler, no safety checker."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline
    from diffusers import UNet2DConditionModel as UNet

    tok = tm._clip_tokenizer()
    with torch.device(device):
        unet = UNet(sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                    cross_attention_dim=768, attention_head_dim=8,
                    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)  # fmt: skip
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                            latent_channels=4, sample_size=512,
                            down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4)  # fmt: skip
        text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(
            vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
            num_attention_heads=12, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))  # fmt: skip
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)  # fmt: skip
    pipe = StableDiffusionPipeline(
        vae=vae.to(dtype).eval(), text_encoder=text_encoder.to(dtype).eval(), tokenizer=tok,
        unet=unet.to(dtype).eval(), scheduler=scheduler, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


def real_nsfw(device: str, dtype):
    """Falconsai/nsfw_image_detection's architecture: ViT-B/16 at 224 px, two labels."""
    config = transformers.ViTConfig(image_size=224, patch_size=16, num_labels=2,
                                    id2label={0: "normal", 1: "nsfw"},
                                    label2id={"normal": 0, "nsfw": 1})  # fmt: skip
    model = build(transformers.ViTForImageClassification, config, device, dtype)
    return model, transformers.ViTImageProcessor(size={"height": 224, "width": 224}), 1


# ----------------------------------------------------------------------------- timing
def rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_op(op, rows: list[dict], device: str, repeats: int, before=None) -> float:
    """Best wall seconds of op.run over a fresh batch (after warm-up runs on a slice);
    `before()` runs before each run (e.g. a fresh folder for generated images)."""
    for _ in range(2):  # generate() is slow on its first two calls
        if before:
            before()
        op.run(fresh_batch(rows[: max(2, op.gpu_batch_size)]), Ledger())
    best = float("inf")
    for _ in range(repeats):
        if before:
            before()
        ledger = Ledger()
        sync(device)
        start = time.perf_counter()
        op.run(fresh_batch(rows), ledger)
        sync(device)
        best = min(best, time.perf_counter() - start)
        if ledger.quarantined:  # the op isolates errors row by row: a silent slow path
            raise RuntimeError(f"{op.name} quarantined samples: {ledger.quarantined[0].error}")
    return best


def dj_loop(model, processor, device: str, dtype, paths: list[str]) -> float:
    """Data-Juicer's way: per sample open, preprocess, generate, decode."""

    def one(path: str) -> None:
        inputs = processor(images=[Image.open(path).convert("RGB")], return_tensors="pt").to(device)
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        with torch.inference_mode():
            processor.batch_decode(model.generate(**inputs, **GEN), skip_special_tokens=True)

    one(paths[0])
    one(paths[1])
    sync(device)
    start = time.perf_counter()
    for path in paths:
        one(path)
    sync(device)
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny random models (CPU smoke check)")
    ap.add_argument("--n-caption", type=int, help="images for captioning (default 512; tiny 32)")
    ap.add_argument("--n-clip", type=int, help="images for CLIP (default 2048; tiny 64)")
    ap.add_argument(
        "--n-loop", type=int, help="images for batch 1 and the per-sample loop (64; tiny 8)"
    )
    ap.add_argument(
        "--batch-sizes", type=int, nargs="+", help="captioning gpu_batch_size (1 8 32 64 128 256)"
    )
    ap.add_argument("--clip-batch-sizes", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per setting (best kept)")
    ap.add_argument(
        "--skip", choices=["caption", "clip", "aesthetics", "nsfw", *SYNTHESIS], action="append",
        default=[],
    )
    ap.add_argument("--only-synthesis", action="store_true",
                    help="only the synthesis mappers (mllm, diffusion, rewrite)")
    ap.add_argument("--n-synthesis", type=int, help="samples per synthesis run (64; tiny 16)")
    ap.add_argument("--mllm-batch-sizes", type=int, nargs="+", help="(1 8 32; tiny 1 8)")
    ap.add_argument("--diffusion-batch-sizes", type=int, nargs="+", help="(1 4 16; tiny 1 4)")
    ap.add_argument("--diffusion-steps", type=int, help="denoising steps (25; tiny 2)")
    ap.add_argument("--max-pixels", type=int, default=1280 * 28 * 28,
                    help="Qwen2-VL image budget in pixels (model card: 1280*28*28)")
    ap.add_argument("--block", help="RESULTS.md block name (default: DEVICE[-tiny])")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but torch.cuda.is_available() is False")
    tiny, dev = args.tiny, args.device
    if args.only_synthesis:
        args.skip += ["caption", "clip", "aesthetics", "nsfw"]
    n_cap = args.n_caption or (32 if tiny else 512)
    n_clip = args.n_clip or (64 if tiny else 2048)
    n_loop = max(2, args.n_loop or (8 if tiny else 64))
    sizes = args.batch_sizes or ([1, 8, 32] if tiny else [1, 8, 32, 64, 128, 256])
    dtype = (torch.float32 if dev == "cpu" else torch.bfloat16) if tiny else torch.bfloat16
    torch.manual_seed(args.seed)

    work = Path(tempfile.mkdtemp(prefix="dj_model_bench_"))
    t0 = time.perf_counter()
    (work / "images").mkdir()
    n_syn = args.n_synthesis or (16 if tiny else 64)
    wanted = [n_cap if "caption" not in args.skip else 0, n_syn]
    if not {"clip", "aesthetics", "nsfw"} <= set(args.skip):
        wanted.append(n_clip)
    paths = make_images(work / "images", max(wanted), args.seed)
    print(f"{len(paths)} JPEGs in {time.perf_counter() - t0:.1f} s under {work}", flush=True)
    rows_cap, rows_clip = (
        rows_for(paths[:n_cap], args.seed),
        rows_for(paths[:n_clip], args.seed + 1),
    )
    tiny_dirs = tm.make_tiny_models(work / "models")  # construction only, unless --tiny
    common = dict(accelerator=dev, dtype={torch.float32: "fp32", torch.bfloat16: "bf16"}[dtype])
    results: list[tuple] = []  # (model, run, gpu_batch_size, images, seconds)
    notes: list[str] = []

    if "caption" not in args.skip:
        cap = get_operator("image_captioning_mapper")(
            hf_img2seq=tiny_dirs["blip2"], seed=0, **GEN, **common
        )
        if tiny:
            cap.prepare(dev)
            name = "BLIP-2 (tiny)"
        else:
            t0 = time.perf_counter()
            model, processor = real_blip2(dev, dtype)
            n = n_params(model)
            print(
                f"BLIP-2 OPT-2.7B built on {dev} in {time.perf_counter() - t0:.1f} s: {n / 1e9:.3f}B parameters",
                flush=True,
            )
            assert 3.6e9 < n < 4.0e9, n
            notes.append(f"BLIP-2 OPT-2.7B (random weights): {n / 1e9:.3f}B parameters")
            cap.device, cap._prepared = dev, True  # what setup() records (run() skips it)
            cap._model, cap.hf_img2seq, name = (
                (model, processor),
                "blip2-opt-2.7b (random)",
                "BLIP-2 OPT-2.7B",
            )
        for bs in sizes:
            cap.gpu_batch_size = bs
            n = min(n_cap, max(n_loop, 4 * bs))
            s = time_op(cap, rows_cap[:n], dev, args.repeats)
            results.append((name, "op.run", bs, n, s))
            print(
                f"{name} op.run bs={bs}: {n} images in {s:.2f} s = {rate(n / s)} images/s",
                flush=True,
            )
        model, processor = cap._model
        s = dj_loop(model, processor, dev, dtype, paths[:n_loop])
        results.append((name, "per-sample loop", 1, n_loop, s))
        print(
            f"{name} per-sample loop: {n_loop} images in {s:.2f} s = {rate(n_loop / s)} images/s",
            flush=True,
        )
        best = max(r[3] / r[4] for r in results if r[1] == "op.run")
        notes.append(f"{name}: best op.run {rate(best)} images/s = {best / (n_loop / s):.1f}x the per-sample loop"
                     + ("" if tiny else " (targets: >= 300 images/s, >= 30x)"))  # fmt: skip
        cap._model = model = processor = None
        if dev == "cuda":
            torch.cuda.empty_cache()

    if "clip" not in args.skip:
        for arch in ["ViT-B/32"] if tiny else ["ViT-L/14", "ViT-B/32"]:
            op = get_operator("image_text_similarity_filter")(
                hf_clip=tiny_dirs["clip"], min_score=-1.0, **common
            )
            if tiny:
                op.prepare(dev)
                name = "CLIP (tiny)"
            else:
                op.device, op._prepared = dev, True
                op._model, name = real_clip(arch, dev, dtype), f"CLIP {arch}"
                notes.append(
                    f"{name} (random weights): {n_params(op._model.model) / 1e6:.0f}M parameters"
                )
            for bs in args.clip_batch_sizes:
                op.gpu_batch_size = bs
                s = time_op(op, rows_clip, dev, args.repeats)
                results.append((name, "op.run", bs, n_clip, s))
                print(
                    f"{name} op.run bs={bs}: {n_clip} images in {s:.2f} s = {rate(n_clip / s)} images/s",
                    flush=True,
                )
            if not tiny and arch == "ViT-L/14":
                best = max(r[3] / r[4] for r in results if r[0] == name)
                notes.append(f"{name}: best {rate(best)} images/s (target >= 2,000)")
            op._model = None

    for key, op_name, arg, label in (
        ("aesthetics", "image_aesthetics_filter", "hf_scorer_model", "Aesthetics ViT-L/14 + MLP"),
        ("nsfw", "image_nsfw_filter", "hf_nsfw_model", "NSFW ViT-B/16"),
    ):
        if key in args.skip:
            continue
        op = get_operator(op_name)(**{arg: tiny_dirs[key]}, min_score=-1e9, max_score=1e9, **common)
        if tiny:
            op.prepare(dev)
            name = f"{label} (tiny)"
        else:
            op.device, op._prepared, name = dev, True, f"{label} (random)"
            op._model = (real_aesthetics if key == "aesthetics" else real_nsfw)(dev, dtype)
            notes.append(
                f"{name}: {n_params(op._model[0].tower if key == 'aesthetics' else op._model[0]) / 1e6:.0f}M parameters (vision tower)"
            )
        for bs in args.clip_batch_sizes:
            op.gpu_batch_size = bs
            s = time_op(op, rows_clip, dev, args.repeats)
            results.append((name, "op.run", bs, n_clip, s))
            print(f"{name} op.run bs={bs}: {n_clip} images in {s:.2f} s = {rate(n_clip / s)} images/s",
                  flush=True)  # fmt: skip
        op._model = None

    synthesis(args, rows_for(paths[:n_syn], args.seed), tiny_dirs, work, common, dtype, results,
              notes)  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    block = render(args, results, notes, argv)
    print("\n" + block)
    if not args.no_write:
        write_block(args.out, block, args.block or (f"{dev}-tiny" if tiny else dev))
        print(f"\nwritten to {args.out}")
    return 0


def synthesis(args, rows, tiny_dirs, work, common, dtype, results, notes) -> None:
    """mllm_mapper, image_diffusion_mapper (text2image) and sentence_augmentation_mapper."""
    tiny, dev = args.tiny, args.device
    n = len(rows)

    def report(name: str, bs: int, count: int, seconds: float, unit: str = "images/s") -> None:
        results.append((name, "op.run", bs, count, seconds))
        print(f"{name} op.run bs={bs}: {count} in {seconds:.2f} s = {rate(count / seconds)} {unit}",
              flush=True)  # fmt: skip

    if "mllm" not in args.skip:
        op = get_operator("mllm_mapper")(
            hf_model=tiny_dirs["qwen2_vl"], temperature=0.0, max_new_tokens=GEN["max_new_tokens"],
            prompt="Describe the image in at most ten words.", **common,
        )  # fmt: skip
        if tiny:
            op.prepare(dev)
            config = op._model[0].generation_config
            fixed_length(op._model[0], config.pad_token_id, config.eos_token_id)
            name = "mllm_mapper Qwen2-VL (tiny)"
        else:
            t0 = time.perf_counter()
            model, processor = real_qwen2_vl(dev, dtype, args.max_pixels)
            count = n_params(model)
            print(f"Qwen2-VL-2B built in {time.perf_counter() - t0:.1f} s: {count / 1e9:.3f}B "
                  "parameters", flush=True)  # fmt: skip
            notes.append(f"Qwen2-VL-2B (random weights): {count / 1e9:.3f}B parameters, images "
                         f"<= {args.max_pixels:,} pixels, answers of {GEN['max_new_tokens']} tokens")  # fmt: skip
            op.device, op._model, op._prepared = dev, (model, processor), True
            name = "mllm_mapper Qwen2-VL-2B"
        for bs in args.mllm_batch_sizes or ([1, 8] if tiny else [1, 8, 32]):
            op.gpu_batch_size = bs
            report(name, bs, len(rows), time_op(op, rows, dev, args.repeats))
        op._model = None
        if dev == "cuda":
            torch.cuda.empty_cache()

    if "diffusion" not in args.skip:
        steps = args.diffusion_steps or (2 if tiny else 25)
        op = get_operator("image_diffusion_mapper")(
            hf_diffusion=tiny_dirs["stable_diffusion"], mode="text2image",
            num_inference_steps=steps, keep_original_sample=False, accelerator=dev,
            torch_dtype=common["dtype"],  # Data-Juicer's name for it
        )  # fmt: skip
        if tiny:
            op.prepare(dev)
            name = f"image_diffusion_mapper text2image SD (tiny, 32 px, {steps} steps)"
        else:
            t0 = time.perf_counter()
            pipe = real_sd15(dev, dtype)
            count = sum(n_params(m) for m in (pipe.unet, pipe.vae, pipe.text_encoder))
            print(f"SD 1.5 built in {time.perf_counter() - t0:.1f} s: {count / 1e9:.3f}B "
                  "parameters", flush=True)  # fmt: skip
            notes.append(f"Stable Diffusion 1.5 (random weights): {count / 1e9:.3f}B parameters, "
                         f"512 px, {steps} DDIM steps, guidance 7.5")  # fmt: skip
            op.device, op._model, op._prepared = dev, pipe, True
            name = f"image_diffusion_mapper text2image SD 1.5 ({steps} steps)"
        folders = iter(range(1_000_000))

        def fresh_folder() -> None:  # every run draws every image (none reused)
            op.save_dir = str(work / "generated" / str(next(folders)))

        m = min(n, 16 if tiny else 64)
        for bs in args.diffusion_batch_sizes or ([1, 4] if tiny else [1, 4, 16]):
            op.gpu_batch_size = bs
            report(name, bs, m, time_op(op, rows[:m], dev, args.repeats, fresh_folder))
        op._model = None
        if dev == "cuda":
            torch.cuda.empty_cache()

    if "rewrite" not in args.skip and tiny:  # the full-size LLM is not measured here
        op = get_operator("sentence_augmentation_mapper")(
            hf_model=tiny_dirs["causal_lm"], temperature=0.0, system_prompt="Be brief.",
            task_sentence="Rewrite it as one short caption.",
            max_new_tokens=GEN["max_new_tokens"], **common,
        )  # fmt: skip
        op.prepare(dev)
        lm = op._model[0]
        fixed_length(lm, lm.generation_config.pad_token_id, lm.generation_config.eos_token_id)
        for bs in (1, 16):
            op.gpu_batch_size = bs
            report("sentence_augmentation_mapper OPT (tiny)", bs, len(rows),
                   time_op(op, rows, dev, args.repeats), "captions/s")  # fmt: skip
    load = os.getloadavg()
    notes.append(f"synthesis runs: load average {load[0]:.1f} / {load[1]:.1f} (1 / 5 min) on "
                 f"{os.cpu_count()} cores at the end, a shared machine: the figures are noisy; "
                 "rewrites count as images (one caption each)")  # fmt: skip


def device_name(dev: str) -> str:
    if dev == "cuda":
        return f"{torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)"
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in open("/proc/cpuinfo")
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    import os

    return f"CPU, {os.cpu_count()} x {cpu}"


def render(args, results, notes, argv) -> str:
    dev, tiny = args.device, args.tiny
    cmd = "python bench/model_throughput.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    models = ("Qwen2-VL-2B / SD 1.5 synthesis" if args.only_synthesis
              else "BLIP-2 OPT-2.7B / CLIP")  # fmt: skip
    title = ("CPU smoke check with tiny random models — not a performance figure" if tiny
             else f"{models}, random weights, bf16")  # fmt: skip
    lines = [
        f"### Model throughput ({dev}{', tiny' if tiny else ''}): {title}",
        "",
        f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {device_name(dev)}; torch "
        f"{torch.__version__}, transformers {transformers.__version__}, Python {platform.python_version()}. "
        f"Command: `{cmd.strip()}`. Images/s = images / wall time of `op.run` on a fresh batch "
        f"(JPEG decode, preprocessing, generate/embed, best of {args.repeats}); captions 30 tokens, greedy.",
        "",
        "| model | run | gpu_batch_size | images | s | images/s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {m} | {r} | {b} | {n:,} | {s:.2f} | {rate(n / s)} |" for m, r, b, n, s in results]
    lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines).rstrip()


def write_block(path: Path, block: str, key: str) -> None:
    from results_block import write_marked_block

    begin, end = f"<!-- model_throughput:{key}:begin -->", f"<!-- model_throughput:{key}:end -->"
    write_marked_block(path, begin, end, f"{begin}\n{block}\n{end}")


if __name__ == "__main__":
    sys.exit(main())
