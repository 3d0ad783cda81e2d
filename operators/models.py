"""What every model operator needs: finding weights offline, one resident model per process,
batches sized to the accelerator, and pixels decoded ahead of it.

Model operators keep only picklable configuration on the object; the loaded
model lives in `self._model` (dropped on pickling), created by `setup()` once
per worker process or Ray actor.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth")


class ModelNotFoundError(FileNotFoundError):
    """The model's files are not where the recipe says; the message says what to put there."""


def resolve_model_path(name_or_path: str, required: Sequence[str] = ("config.json",)) -> str:
    """A local directory holding the model: the path itself, or the Hugging Face cache entry.

    Nothing is downloaded. Raises `ModelNotFoundError` naming the paths tried, the
    files missing and how to provide them.
    """
    tried = []
    candidates = [os.path.expanduser(name_or_path)]
    if not os.path.isabs(name_or_path) and name_or_path.count("/") <= 1:
        cached = _hf_cache_dir(name_or_path)
        if cached:
            candidates.append(cached)
    for path in candidates:
        tried.append(path)
        if os.path.isdir(path):
            missing = [f for f in required if not os.path.exists(os.path.join(path, f))]
            has_weights = any(glob.glob(os.path.join(path, p)) for p in WEIGHT_PATTERNS)
            if not missing and has_weights:
                return path
            detail = ", ".join(
                missing + ([] if has_weights else ["model weights (*.safetensors / *.bin)"])
            )
            raise ModelNotFoundError(
                f"model directory {path} is incomplete: missing {detail}. Put the complete "
                f"Hugging Face snapshot of {name_or_path!r} there."
            )
    raise ModelNotFoundError(
        f"model {name_or_path!r} not found (tried: {', '.join(tried)}; nothing is downloaded). "
        f"On a machine with internet: `huggingface-cli download {name_or_path} --local-dir "
        f"/models/{os.path.basename(name_or_path.rstrip('/'))}` (or `hf download ...`), copy the "
        "folder here and point the recipe at it. To try the pipeline without weights: "
        "`dj-synth make-tiny-models DIR` (random weights, meaningless output)."
    )


def _hf_cache_dir(repo_id: str) -> str | None:
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo_id, local_files_only=True)
    except Exception:
        return None


def quiet_transformers() -> None:
    """No per-load progress bars in worker logs."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def pick_device(accelerator: str, rank: int = 0) -> str:
    """`cuda:<worker rank mod GPUs>` (one model per worker, spread over the GPUs), else cpu.

    Executors call it once per worker and pass the result to `Op.setup`.
    """
    if accelerator != "cuda":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return f"cuda:{rank % torch.cuda.device_count()}"
    return "cpu"


def pick_dtype(dtype: str | None, device: str):
    """bf16 (or the asked dtype) on GPU, fp32 on CPU."""
    import torch

    names = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
             "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}  # fmt: skip
    if dtype and dtype != "auto":
        if dtype not in names:
            raise ValueError(f"dtype must be one of {sorted(names)} or 'auto', got {dtype!r}")
        return names[dtype]
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def run_in_batches(fn: Callable[[list[T]], list[R]], items: list[T], batch_size: int) -> list[R]:
    """`fn` over consecutive slices of `items`; a CUDA out-of-memory error halves the slice.

    The smaller size is kept for the rest of the call. At size 1 the error propagates.
    """
    import torch

    out: list[R] = []
    i, size = 0, max(1, batch_size)
    while i < len(items):
        chunk = items[i : i + size]
        try:
            out.extend(fn(chunk))
        except torch.cuda.OutOfMemoryError:
            if size == 1:
                raise
            torch.cuda.empty_cache()
            size = max(1, len(chunk) // 2)
            continue
        i += len(chunk)
    return out


def prefetched(fn: Callable[[T], R], items: Sequence[T], workers: int = 4) -> Iterator[R]:
    """`fn(item)` for each item in order, computed by a thread pool ahead of the consumer.

    Used to decode and preprocess the next micro-batch while the accelerator runs
    this one (PIL decoding and tensor conversion release the GIL).
    """
    if len(items) <= 1 or workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(fn, items)


def flip_image(image: Any, horizontal: bool, vertical: bool) -> Any:
    """Data-Juicer's `horizontal_flip` / `vertical_flip` options of the image-text filters."""
    from PIL import ImageOps

    if horizontal:
        image = ImageOps.mirror(image)
    if vertical:
        image = ImageOps.flip(image)
    return image


def decode_threads() -> int:
    return max(2, min(16, os.cpu_count() or 2))


class ModelOp:
    """Mixin for operators that hold a model: per-process state, dropped when pickled."""

    _model: Any = None
    fork_safe = False

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_model"] = None
        return state
