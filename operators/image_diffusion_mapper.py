"""image_diffusion_mapper: new images from a diffusion model, from each image or its caption."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from typing import Any, Literal

from .base import Mapper
from .batch import Batch, image_chunks
from .image_captioning_mapper import ImageCaptioningMapper
from .media import content_digest
from .model_files import DIFFUSION
from .models import ModelOp, check_dtype, quiet_transformers, resolve_model_path, stable_seed
from .registry import register
from .synthesis import add_generated, generated_row, without_tokens

PRODUCED_DIR = "__dj__produced_data__"  # Data-Juicer's folder for generated media
CAPTION_PROMPT = "A photo of a "  # Data-Juicer's prompt when it captions the images itself
NSFW_ATTEMPTS = 3


@register("image_diffusion_mapper")
class ImageDiffusionMapper(ModelOp, Mapper):
    """`aug_num` new samples per input, each image replaced by one a diffusion model made.

    `mode: image2image` (Data-Juicer's only mode): each image, resized to the model's
    native square size, is redrawn guided by its caption (`strength`: how far from the
    original, `guidance_scale`) and resized back. `mode: text2image` (ours; SD3 in a
    published solution): a new image is drawn from the caption alone at the model's
    native size. Any diffusers pipeline folder (`hf_diffusion`: Stable Diffusion 1.x/2.x,
    SDXL, SD3, ...) loads through diffusers' auto pipelines.

    Captions, as Data-Juicer: the field `caption_key` (one string for every image, or a
    list with one per image); unset, `hf_img2seq` (BLIP-2) captions each image, prefixed
    "A photo of a ". Ours: with `mode: text2image`, or with `caption_key` naming the text
    field, each image's caption is its own chunk text (special tokens removed).

    Files: `save_dir`/<digest>.png, the digest over (model, mode, caption, source image
    for image2image, seed, index, strength, guidance, steps; in text2image also the
    image's rank among the sample's images with that caption): a rerun names the same files
    and reuses those already there (a resume generates only what is missing); each file
    is written to a temporary name and renamed, so no sample ever references a
    half-written image. `save_dir` unset: as Data-Juicer, `$DJ_PRODUCED_DATA_DIR/
    image_diffusion_mapper` or `__dj__produced_data__/image_diffusion_mapper/` next to
    each source image (operators do not know the run's `work_dir`: set `save_dir` to put
    them there). A relative `save_dir` is taken from the current directory.

    Generated samples keep the text and `id`, drop their stats and record in
    `__dj__meta__` `generated_by`, `model`, `mode`, `aug_index`, `seed`, `source_images`
    and the `prompts` used. The noise of each image is seeded from its digest and `seed`,
    so images do not depend on batching, `np` or the executor.

    Differences from Data-Juicer, on purpose: images of the whole batch go to the model in
    batches of `gpu_batch_size`; a pipeline's safety checker flagging an image makes up to
    three seeded attempts, then that generated sample is left out (Data-Juicer retries
    forever); `torch_dtype` defaults to our policy (bf16 on GPU, fp32 on CPU; Data-Juicer
    fp32); `revision` is accepted but the local snapshot is what loads (nothing is
    downloaded); a sample without images (or, in text2image mode, with an empty caption)
    passes through unchanged.
    """

    synthesizes = True

    accelerator = "cuda"
    needs_pixels = True
    default_batch_size = 64

    def __init__(
        self,
        hf_diffusion: str = "CompVis/stable-diffusion-v1-4",
        trust_remote_code: bool = False,
        torch_dtype: str = "auto",
        revision: str = "main",
        strength: float = 0.8,
        guidance_scale: float = 7.5,
        aug_num: int = 1,
        keep_original_sample: bool = True,
        caption_key: str | None = None,
        hf_img2seq: str = "Salesforce/blip2-opt-2.7b",
        save_dir: str | None = None,
        mode: Literal["image2image", "text2image"] = "image2image",
        num_inference_steps: int = 50,
        seed: int = 0,
        image_format: Literal["png", "jpg"] = "png",
        gpu_batch_size: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if mode not in ("image2image", "text2image"):
            raise ValueError(f"{self.name}: mode must be image2image or text2image, got {mode!r}")
        if not 0 <= strength <= 1:
            raise ValueError(f"{self.name}: strength must be in [0, 1], got {strength}")
        for arg, value in (("aug_num", aug_num), ("num_inference_steps", num_inference_steps),
                           ("gpu_batch_size", gpu_batch_size)):  # fmt: skip
            if value < 1:
                raise ValueError(f"{self.name}: {arg} must be >= 1, got {value}")
        if image_format not in ("png", "jpg"):
            raise ValueError(f"{self.name}: image_format must be png or jpg, got {image_format!r}")
        check_dtype(torch_dtype)
        self.hf_diffusion, self.trust_remote_code = hf_diffusion, trust_remote_code
        self.torch_dtype = self.dtype = torch_dtype
        self.revision, self.strength, self.guidance_scale = revision, strength, guidance_scale
        self.aug_num, self.keep_original_sample = aug_num, keep_original_sample
        self.caption_key, self.hf_img2seq, self.mode = caption_key, hf_img2seq, mode
        self.save_dir = os.path.abspath(save_dir) if save_dir else None
        self.num_inference_steps, self.seed = num_inference_steps, seed
        self.image_format, self.gpu_batch_size = image_format, gpu_batch_size
        self.needs_pixels = mode == "image2image"  # text2image never looks at the source
        self.model_path = resolve_model_path(
            hf_diffusion, required=("model_index.json",), kind=DIFFUSION, arg="hf_diffusion",
            trust_remote_code=trust_remote_code,
        )  # fmt: skip
        self.captioner = None
        if mode == "image2image" and caption_key is None:
            self.captioner = ImageCaptioningMapper(
                hf_img2seq=hf_img2seq, trust_remote_code=trust_remote_code,
                keep_original_sample=False, prompt=CAPTION_PROMPT, seed=seed,
                accelerator=self.accelerator, dtype=torch_dtype,
            )  # fmt: skip

    # Generated images live in files named by their inputs: a rerun finds them there, so
    # the run's model-output cache is not used (it would hold a path, not the image).
    @property
    def model_cache(self) -> None:
        return None

    @model_cache.setter
    def model_cache(self, value: Any) -> None:
        pass

    # -- model ------------------------------------------------------------
    def load_model(self, device: str) -> Any:
        import diffusers

        quiet_transformers()
        diffusers.utils.logging.disable_progress_bar()  # no per-load bars in worker logs
        auto = (diffusers.AutoPipelineForImage2Image if self.mode == "image2image"
                else diffusers.AutoPipelineForText2Image)  # fmt: skip
        pipe = auto.from_pretrained(
            self.model_path, dtype=self.model_dtype(device), local_files_only=True
        )
        pipe.set_progress_bar_config(disable=True)
        if self.captioner is not None:
            self.captioner.setup(device)
        return pipe.to(device)

    def native_side(self) -> int:
        """The square side the pipeline generates by default (512 for SD 1.x)."""
        pipe = self._model
        side = getattr(pipe, "default_sample_size", None)
        if side is None:
            denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
            side = denoiser.config.sample_size
        return int(side) * int(pipe.vae_scale_factor)

    # -- generation -------------------------------------------------------
    def job_name(self, prompt: str, source: str, index: int, slot: int) -> str:
        """The file name of one generated image: a digest of everything that shapes it.

        `source` is the image redrawn (image2image, by its content; '' in text2image), `index` the
        `aug_num` index, `slot` how many images of the sample came before with the same
        caption (text2image: two images of one chunk get two different images).
        """
        source = content_digest(source) if source else ""  # the image, wherever it lies
        fields = [self.hf_diffusion, self.mode, prompt, source, self.seed, index, slot,
                  self.guidance_scale, self.num_inference_steps]  # fmt: skip
        if self.mode == "image2image":
            fields.append(self.strength)
        digest = hashlib.blake2b(json.dumps(fields).encode(), digest_size=16).hexdigest()
        return f"{digest}.{self.image_format}"

    def target(self, name: str, source: str) -> str:
        """Where the image `name` made from `source` goes (see the class docstring)."""
        if self.save_dir:
            return os.path.join(self.save_dir, name)
        produced = os.environ.get("DJ_PRODUCED_DATA_DIR")
        if produced:
            return os.path.join(produced, self.name, name)
        return os.path.join(os.path.dirname(os.path.abspath(source)), PRODUCED_DIR, self.name, name)

    def draw(self, jobs: list[tuple[str, str, int, int]], media: Any) -> dict[tuple, str | None]:
        """The file of each (source image, prompt, index, slot), generated unless it
        exists; None where the safety checker flagged every attempt."""
        files: dict[tuple, str | None] = {}
        todo = []
        for job in jobs:
            source, prompt, index, slot = job
            key = source if self.mode == "image2image" else ""
            path = self.target(self.job_name(prompt, key, index, slot), source)
            files[job] = path
            if not _valid_image(path):
                todo.append((job, path))
        if not todo:
            return files

        def prepare(part: list[tuple[tuple, str]]) -> list[Any]:
            if self.mode != "image2image":
                return [None] * len(part)
            return [self.pixels(media, job[0]) for job, _ in part]

        images = self.map_batched(todo, self._forward, prepare)
        for (job, path), image in zip(todo, images):
            if image is None:
                files[job] = None
                continue
            if self.mode == "image2image":
                image = image.resize(self.pixels(media, job[0]).size)
            _save_atomically(image, path, self.image_format)
        return files

    def _forward(self, sources: list[Any], part: list[tuple[tuple, str]]) -> list[Any]:
        """Images for one slice; those the safety checker flags are drawn again (new seed)."""
        out: list[Any] = [None] * len(part)
        pending = list(range(len(part)))
        for attempt in range(NSFW_ATTEMPTS):
            if not pending:
                break
            images, flagged = self._run_pipeline(
                [part[i][0][1] for i in pending],
                [sources[i] for i in pending],
                [stable_seed(self.seed, os.path.basename(part[i][1]), attempt) for i in pending],
            )
            still = []
            for i, image, bad in zip(pending, images, flagged):
                if bad:
                    still.append(i)
                else:
                    out[i] = image
            pending = still
        return out

    def _run_pipeline(self, prompts: list[str], sources: list[Any], seeds: list[int]):
        import torch
        from PIL import Image

        pipe = self._model
        kwargs: dict[str, Any] = dict(
            prompt=prompts, guidance_scale=self.guidance_scale, output_type="pil",
            num_inference_steps=self.num_inference_steps,
            # CPU generators: the same noise on any device, one per image
            generator=[torch.Generator().manual_seed(s) for s in seeds],
        )  # fmt: skip
        if self.mode == "image2image":
            side = self.native_side()
            kwargs["image"] = [im.resize((side, side), Image.BILINEAR) for im in sources]
            kwargs["strength"] = self.strength
        with torch.inference_mode():
            result = pipe(**kwargs)
        flagged = getattr(result, "nsfw_content_detected", None) or [False] * len(prompts)
        return result.images, [bool(f) for f in flagged]

    # -- samples ----------------------------------------------------------
    def captions(self, batch: Batch, i: int, chunks: list[tuple[str, list[str]]]) -> list[str]:
        """One caption per image of sample `i` (before the model captions, if it does)."""
        paths = batch.images[i]
        ctx = batch.ctx
        if self.caption_key and self.caption_key != ctx.text_key:
            value = batch.column(self.caption_key)[i]
            if isinstance(value, list):
                if len(value) != len(paths):
                    raise ValueError(
                        f"caption_key {self.caption_key!r} holds {len(value)} captions for "
                        f"{len(paths)} images"
                    )
                return [without_tokens(str(v), ctx.image_token, ctx.eoc_token) for v in value]
            if not isinstance(value, str):
                raise KeyError(f"caption_key {self.caption_key!r}: the sample has no caption there")
            return [without_tokens(value, ctx.image_token, ctx.eoc_token)] * len(paths)
        return [text for text, chunk_paths in chunks for _ in chunk_paths]

    def process(self, batch: Batch) -> Batch:
        ctx = batch.ctx
        rows, images = batch.rows(), batch.images
        chunks = [
            image_chunks(text if isinstance(text, str) else "", paths, ctx.image_token,
                         ctx.eoc_token)
            for text, paths in zip(batch.texts, images)
        ]  # fmt: skip
        if self.captioner is not None:
            prompts = self._model_captions(images, ctx)
        else:
            prompts = [self.captions(batch, i, cs) for i, cs in enumerate(chunks)]
        wanted = [bool(paths) and all(prompts[i]) for i, paths in enumerate(images)]
        slots = [self._slots(qs) for qs in prompts]
        jobs = sorted({(p, q, k, s) for i, paths in enumerate(images) if wanted[i]
                       for p, q, s in zip(paths, prompts[i], slots[i])
                       for k in range(self.aug_num)})  # fmt: skip
        files = self.draw(jobs, ctx.media) if jobs else {}
        out_rows, out_refs = [], []
        for i, (row, ref) in enumerate(zip(rows, batch.refs)):
            new = []
            paths = images[i]
            for k in range(self.aug_num if wanted[i] else 0):
                made = [files[(p, q, k, s)] for p, q, s in zip(paths, prompts[i], slots[i])]
                if any(m is None for m in made):
                    continue  # flagged by the safety checker on every attempt
                sample = generated_row(row, ctx.text_key, row.get(ctx.text_key), {
                    "generated_by": self.name, "model": self.hf_diffusion, "mode": self.mode,
                    "aug_index": k, "seed": self.seed, "source_images": list(paths),
                    "prompts": prompts[i],
                })  # fmt: skip
                sample[ctx.image_key] = made
                new.append(sample)
            add_generated(out_rows, out_refs, row, ref, new, self.keep_original_sample)
        return Batch.from_rows(out_rows, out_refs, ctx)

    def _slots(self, prompts: list[str]) -> list[int]:
        if self.mode == "image2image":
            return [0] * len(prompts)  # the source image tells them apart
        return [prompts[:j].count(q) for j, q in enumerate(prompts)]

    def _model_captions(self, images: list[list[str]], ctx: Any) -> list[list[str]]:
        """Data-Juicer's captions: "A photo of a " + the image-to-text model's caption."""
        jobs = sorted({(p, CAPTION_PROMPT) for paths in images for p in paths})
        found = self.captioner.caption(jobs, ctx.media) if jobs else {}
        return [[CAPTION_PROMPT + found[(p, CAPTION_PROMPT)][0] for p in paths]
                for paths in images]  # fmt: skip


def _valid_image(path: str) -> bool:
    """A complete image file at `path` (written by an earlier run)."""
    from PIL import Image

    if not os.path.exists(path):
        return False
    try:
        with Image.open(path) as img:
            img.verify()
        return True
    except Exception:
        return False


def _save_atomically(image: Any, path: str, image_format: str) -> None:
    """Write to a temporary file in the same folder, then rename: all or nothing."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as fh:
            if image_format == "jpg":
                image.convert("RGB").save(fh, format="JPEG", quality=95)
            else:
                image.save(fh, format="PNG")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
