"""The model-operator layer: what every operator holding a model shares.

- files: `resolve_model_path` finds the weights offline and checks their kind
  (`model_files`), when the recipe is validated;
- one resident model per worker: `ModelOp.setup(device, rank)` calls the operator's
  `load_model(device)` once, with the device the executor picked (`pick_device`) and
  the dtype policy (`pick_dtype`: bf16 on GPU, fp32 on CPU, or the recipe's `dtype`);
- `ModelOp.map_batched`: the one place where a model operator turns a list of distinct
  inputs into outputs: slices of `gpu_batch_size`, CPU preprocessing on threads ahead
  of the accelerator, and CUDA out-of-memory halving (`run_in_batches`);
- `stable_seed`: sampling seeded from the input, so outputs do not depend on batching,
  workers or runs; on CPU a fixed thread count (`cpu_threads`), so float results do not
  depend on the executor either.

Model operators keep only picklable configuration on the object; the loaded model
is `self._model`, loaded on first use (dropped on pickling).
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .model_files import (  # noqa: F401  (re-exported: the layer's public names)
    AESTHETICS,
    BLIP_ITM,
    CLIP,
    IMAGE_CLASSIFIER,
    IMG2SEQ,
    PROCESSOR_FILES,
    ModelKind,
    ModelNotFoundError,
    WrongModelError,
    read_config,
    resolve_model_path,
)

T = TypeVar("T")
R = TypeVar("R")
_LOAD_LOCK = threading.RLock()  # one model load at a time in a worker


def quiet_transformers() -> None:
    """No per-load progress bars or load reports in worker logs (a weight the model needs
    and the checkpoint lacks is an error of `load_hf_model`, not a log line)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


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


DTYPE_NAMES = ("fp32", "float32", "fp16", "float16", "bf16", "bfloat16")


def check_dtype(dtype: str | None) -> None:
    """Validate a recipe's `dtype` without importing torch (for `__init__`)."""
    if dtype and dtype != "auto" and dtype not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {sorted(DTYPE_NAMES)} or 'auto', got {dtype!r}")


def pick_dtype(dtype: str | None, device: str):
    """bf16 (or the asked dtype) on GPU, fp32 on CPU."""
    import torch

    check_dtype(dtype)
    names = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
             "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}  # fmt: skip
    if dtype and dtype != "auto":
        return names[dtype]
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def stable_seed(seed: int, key: str, extra: int) -> int:
    """A 63-bit seed from the recipe's seed and the input: the same input, the same draw."""
    digest = hashlib.blake2b(f"{seed}|{key}|{extra}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


# -- batches that can be split -------------------------------------------------------


def batch_len(items: Any) -> int:
    """Rows in a list, a tensor, a tuple of aligned batches or a dict of tensors."""
    if isinstance(items, Mapping):
        return batch_len(next(iter(items.values()))) if items else 0
    if isinstance(items, tuple):
        return batch_len(items[0])
    return len(items)


def take(items: Any, start: int, stop: int) -> Any:
    """Rows `start:stop` of what `batch_len` measures, in the same container type."""
    if isinstance(items, Mapping):
        return type(items)({k: take(v, start, stop) for k, v in items.items()})
    if isinstance(items, tuple):
        return tuple(take(part, start, stop) for part in items)
    return items[start:stop]


def run_in_batches(
    fn: Callable[[Any], list[R]], items: Any, batch_size: int, fit: list[int] | None = None
) -> list[R]:
    """`fn` over consecutive slices of `items`; a CUDA out-of-memory error halves the slice.

    The one out-of-memory retry of the code base. `items` is anything `take` slices
    (a list of inputs, or prepared tensors, so a retry does not preprocess again).
    The smaller size is kept for the rest of the call, and in `fit[0]` when given
    (the caller's memory of what fits). At size 1 the error propagates.
    """
    import torch

    out: list[R] = []
    n, i = batch_len(items), 0
    size = max(1, min(batch_size, fit[0] if fit else batch_size))
    while i < n:
        part = take(items, i, i + size)
        try:
            out.extend(fn(part))
        except torch.cuda.OutOfMemoryError:
            if size == 1:
                raise
            torch.cuda.empty_cache()
            size = max(1, min(size, batch_len(part)) // 2)
            if fit is not None:
                fit[0] = size
            continue
        i += batch_len(part)
    return out


def prefetched(fn: Callable[[T], R], items: Sequence[T], workers: int = 4) -> Iterator[R]:
    """`fn(item)` for each item in order, computed by `workers` threads ahead of the consumer.

    Used to decode and preprocess the next slices while the accelerator runs this one
    (PIL decoding and tensor conversion release the GIL). At most `workers` results
    wait at a time, so memory stays bounded.
    """
    if len(items) <= 1 or workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def decode_threads() -> int:
    return max(2, min(16, os.cpu_count() or 2))


def cpu_threads() -> int:
    """Threads of a model running on CPU: fixed per machine, whatever the executor."""
    return max(1, min(4, os.cpu_count() or 1))


def flip_image(image: Any, horizontal: bool, vertical: bool) -> Any:
    """Data-Juicer's `horizontal_flip` / `vertical_flip` options of the image-text filters."""
    from PIL import ImageOps

    if horizontal:
        image = ImageOps.mirror(image)
    if vertical:
        image = ImageOps.flip(image)
    return image


# -- loading -------------------------------------------------------------------------


def load_hf_model(
    path: str, cls: Any, device: str, dtype: Any, trust_remote_code: bool = False, **kwargs: Any
):
    """`cls.from_pretrained` (a transformers class or its name) on `device` in `dtype`, eval.

    Weights the model expects but the checkpoint lacks are an error (transformers would
    leave them random with a warning).
    """
    import transformers

    quiet_transformers()
    if isinstance(cls, str):
        cls = getattr(transformers, cls)
    model, info = cls.from_pretrained(
        path, dtype=dtype, local_files_only=True, trust_remote_code=trust_remote_code,
        output_loading_info=True, **kwargs,
    )  # fmt: skip
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise ValueError(
            f"{path}: the checkpoint lacks {len(missing)} weight(s) of {cls.__name__}, e.g. "
            f"{', '.join(missing[:3])}: not a complete {cls.__name__} checkpoint"
        )
    return model.to(device).eval()


def load_causal_lm(
    path: str, device: str, dtype: Any, trust_remote_code: bool = False
) -> tuple[Any, Any]:
    """(model, tokenizer) of a local causal LM folder, the model as `load_hf_model` loads it."""
    from transformers import AutoTokenizer

    quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(
        path, local_files_only=True, trust_remote_code=trust_remote_code
    )
    model = load_hf_model(path, "AutoModelForCausalLM", device, dtype, trust_remote_code)
    return model, tokenizer


def load_hf_processor(path: str, trust_remote_code: bool = False, image_only: bool = False):
    """The folder's processor (or only its image processor), from either file layout."""
    import transformers

    quiet_transformers()
    cls = transformers.AutoImageProcessor if image_only else transformers.AutoProcessor
    return cls.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)


# -- the operator mixin --------------------------------------------------------------


class ModelOp:
    """Mixin for operators that hold a model: loaded once per worker, dropped when pickled.

    A subclass implements `load_model(device)` and calls `map_batched` with its
    `prepare` (CPU) and `forward` (accelerator) steps. It sets `gpu_batch_size` and
    `dtype` (recipe arguments) in `__init__`, and resolves its files there
    (`resolve_model_path`), so a missing or wrong model fails the recipe before work.
    """

    fork_safe = False
    gpu_batch_size: int = 32
    dtype: str | None = "auto"
    device: str = "cpu"
    # The run's model-output cache (`model_cache.ModelCache`), set by the engine per worker;
    # None: every output is computed.
    model_cache: Any = None

    @property
    def defers_pixels(self) -> bool:
        """With a cache, images are decoded only for inputs the cache does not hold."""
        return self.model_cache is not None

    def setup(self, device: str = "cpu", rank: int = 0) -> None:
        """Note the device; load the model now, or with a cache on its first miss (a rerun
        that finds everything never loads it)."""
        self.device = device
        if self.model_cache is None:
            self._model  # noqa: B018 - loads it: a model that cannot load fails the run here

    @property
    def _model(self) -> Any:
        """The loaded model (whatever `load_model` returned), loaded on first use, once
        (preprocessing threads may ask for it at the same time)."""
        loaded = self.__dict__.get("_loaded")
        if loaded is None:
            with _LOAD_LOCK:
                loaded = self.__dict__.get("_loaded")
                if loaded is None:
                    loaded = self.__dict__["_loaded"] = self.load_model(self.device)
                    if self.device == "cpu" and "torch" in sys.modules:
                        # float sums depend on the thread count: the same count in every
                        # executor (Ray gives an actor one thread, a local worker all cores)
                        sys.modules["torch"].set_num_threads(cpu_threads())
        return loaded

    @_model.setter
    def _model(self, value: Any) -> None:
        """A model built elsewhere (benchmarks inject full-size random-weight models)."""
        self.__dict__["_loaded"] = value

    def load_model(self, device: str) -> Any:
        """The model (and whatever else `forward` needs) on `device`; called once."""
        raise NotImplementedError

    def model_dtype(self, device: str | None = None) -> Any:
        """The torch dtype for this operator's model on `device` (the dtype policy)."""
        return pick_dtype(self.dtype, device or self.device)

    def map_batched(
        self,
        items: Sequence[T],
        forward: Callable[[Any, list[T]], list[R]],
        prepare: Callable[[list[T]], Any] | None = None,
    ) -> list[R]:
        """One output per input, in order: the one place a model turns inputs into outputs.

        `items` are distinct inputs (paths, (path, text) pairs, ...), gathered across
        the samples of a batch. They go in slices of `gpu_batch_size`; `prepare(slice)`
        (decode, resize, tokenize; CPU) runs on threads ahead of `forward(prepared,
        slice)` (the accelerator), which returns one output per input. A CUDA
        out-of-memory error in `forward` splits the prepared slice in halves (the
        size that fits is remembered for this worker).
        """
        items = list(items)
        cache = self.model_cache
        if cache is None:
            return self._compute(items, forward, prepare)
        code = getattr(forward, "__func__", forward).__code__
        call = f"{code.co_name}:{code.co_firstlineno}"  # two calls of one op never mix
        fingerprint = cache.fingerprint(self, call, self.device, self.dtype)  # no torch import
        keys = [cache.key(fingerprint, item) for item in items]
        found = cache.get_many(keys)
        todo = [i for i, k in enumerate(keys) if k not in found]
        counts = self.__dict__.setdefault("cache_counts", [0, 0])
        counts[0] += len(keys) - len(todo)
        counts[1] += len(todo)

        def keep(done: list[int], outputs: list[R]) -> None:  # stored slice by slice
            cache.set_many({keys[i]: v for i, v in zip(done, outputs)})
            found.update((keys[i], v) for i, v in zip(done, outputs))

        self._compute([items[i] for i in todo], forward, prepare, todo, keep)
        return [found[k] for k in keys]

    def _compute(
        self,
        items: list[T],
        forward: Callable[[Any, list[T]], list[R]],
        prepare: Callable[[list[T]], Any] | None,
        positions: list[int] | None = None,
        keep: Callable[[list[int], list[R]], None] | None = None,
    ) -> list[R]:
        if items:
            self._model  # noqa: B018 - loaded here, not in a preprocessing thread
        size = max(1, self.gpu_batch_size)
        slices = [items[i : i + size] for i in range(0, len(items), size)]
        fit = self.__dict__.setdefault("_fit", [size])
        ready = prefetched(prepare, slices, decode_threads()) if prepare else iter(slices)
        out: list[R] = []
        for part, prepared in zip(slices, ready):
            done = run_in_batches(lambda both: forward(*both), (prepared, part), size, fit)
            if keep is not None and positions is not None:
                keep(positions[len(out) : len(out) + len(done)], done)
            out.extend(done)
        if len(out) != len(items):
            raise RuntimeError(f"{self}: {len(out)} outputs for {len(items)} inputs")
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_loaded", None)
        state.pop("model_cache", None)
        state.pop("cache_counts", None)
        state.pop("_fit", None)
        state.pop("_prepared", None)
        return state
