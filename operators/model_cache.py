"""The model-output cache: what a model computed for an input, kept across runs.

Content-addressed: an entry's key is the hash of (the operator, the identity of its
model: config and weights, the arguments that change its output, the call it was
made in, the device kind and dtype) and of the input itself (image files by their
bytes, texts by their characters). A rerun after a threshold change, an added CPU
filter or reordered cheap operators finds every caption, score and embedding it
computed before; a changed model, argument, image or text misses.

Stored with `diskcache` (SQLite metadata, files for large values): process-safe for
local workers and Ray actors on one machine or on a file system with working locks,
bounded in size with least-recently-used eviction. Values are tagged JSON (arrays as
raw bytes), never pickles, each with a checksum: a damaged entry is dropped and
recomputed, never returned.
"""

from __future__ import annotations

import base64
import glob
import hashlib
import os
from collections.abc import Iterable
from typing import Any

import orjson

from .media import content_digest

# Arguments that decide what to keep, where to read or how to batch: not the model's output
# (with a filter's `min_*` / `max_*` thresholds; an operator adds its own in `cache_ignore`).
NOT_OUTPUT_ARGS = frozenset(
    {
        "text_key", "image_key", "image_special_token", "eoc_special_token", "batch_size",
        "num_proc", "accelerator", "gpu_batch_size", "index", "trace_num", "stats_only",
        "any_or_all", "reduce_mode", "reversed_range", "min_closed_interval",
        "max_closed_interval", "keep_original_sample", "keep_candidate_mode", "device",
        "model_cache",
    }
)  # fmt: skip
DEFAULT_SIZE_GB = 4.0


def default_cache_dir() -> str:
    """`$DJ_SYNTH_CACHE_DIR`, else `$XDG_CACHE_HOME/dj_synth/model_outputs` (~/.cache)."""
    if os.environ.get("DJ_SYNTH_CACHE_DIR"):
        return os.environ["DJ_SYNTH_CACHE_DIR"]
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "dj_synth", "model_outputs")


class ModelCache:
    def __init__(self, directory: str, size_gb: float = DEFAULT_SIZE_GB) -> None:
        import diskcache

        self.directory = directory
        self.store = diskcache.Cache(
            directory, size_limit=int(size_gb * 2**30), eviction_policy="least-recently-used"
        )
        self.hits = self.misses = self.damaged = 0

    # -- keys --------------------------------------------------------------------------
    def fingerprint(self, op: Any, call: str, device: str, dtype: Any) -> str:
        """The operator's part of every key: name, code, output-shaping arguments, model
        files, device kind and dtype (the recipe's: with the device kind it fixes the policy)."""
        from .base import Filter

        names = init_arguments(type(op)) | {"model_path"}
        names -= NOT_OUTPUT_ARGS | set(getattr(op, "cache_ignore", ()))
        if isinstance(op, Filter):  # a filter's min_*/max_* are its thresholds
            names = {n for n in names if not n.startswith(("min_", "max_"))}
        args = {k: _arg_identity(getattr(op, k)) for k in sorted(names) if hasattr(op, k)}
        body = [op.name, call, code_identity(type(op)), device.split(":")[0], str(dtype), args]
        return _digest(orjson.dumps(body, default=str))

    def key(self, fingerprint: str, item: Any) -> str:
        return _digest(fingerprint.encode() + b"|" + self._item_bytes(item))

    def _item_bytes(self, item: Any) -> bytes:
        if isinstance(item, (tuple, list)):
            return b"[" + b",".join(self._item_bytes(x) for x in item) + b"]"
        if isinstance(item, str) and os.path.isabs(item) and os.path.isfile(item):
            return b"file:" + content_digest(item).encode()
        return orjson.dumps(item, default=str)

    # -- values ------------------------------------------------------------------------
    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The values found for `keys` (a damaged value counts as a miss and is deleted).
        One SQLite transaction for the lot: each LRU read also writes its access time."""
        found = {}
        with self.store.transact():
            raws = [(key, self.store.get(key)) for key in keys]
        for key, raw in raws:
            if raw is None:
                self.misses += 1
                continue
            value = _decode(raw)
            if value is _DAMAGED:
                self.damaged += 1
                self.misses += 1
                self.store.delete(key)
                continue
            self.hits += 1
            found[key] = value
        return found

    def set_many(self, values: dict[str, Any]) -> None:
        encoded = [(key, _encode(value)) for key, value in values.items()]
        with self.store.transact():  # one commit per slice, not one per value
            for key, raw in encoded:
                self.store.set(key, raw)

    def close(self) -> None:
        self.store.close()


# -- tagged JSON with a checksum --------------------------------------------------------

_DAMAGED = object()


def _encode(value: Any) -> bytes:
    body = orjson.dumps(_to_json(value))
    return hashlib.blake2b(body, digest_size=8).digest() + body


def _decode(raw: bytes) -> Any:
    if not isinstance(raw, bytes) or len(raw) < 8:
        return _DAMAGED
    check, body = raw[:8], raw[8:]
    if hashlib.blake2b(body, digest_size=8).digest() != check:
        return _DAMAGED
    try:
        return _from_json(orjson.loads(body))
    except (ValueError, KeyError, TypeError):
        return _DAMAGED


def _to_json(value: Any) -> Any:
    import numpy as np

    if type(value).__module__.startswith("torch"):
        import torch

        if isinstance(value, torch.Tensor):
            dtype = str(value.dtype).removeprefix("torch.")
            array = value.detach().to("cpu", torch.float32 if dtype == "bfloat16" else value.dtype)
            return {"__tensor__": dtype, **_array(array.numpy())}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": 1, **_array(value)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        items = [_to_json(v) for v in value]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if isinstance(value, dict):
        return {"__dict__": [[_to_json(k), _to_json(v)] for k, v in value.items()]}
    return value


def _array(a: Any) -> dict[str, Any]:
    return {"dtype": str(a.dtype), "shape": list(a.shape),
            "data": base64.b64encode(a.tobytes()).decode()}  # fmt: skip


def _from_json(value: Any) -> Any:
    import numpy as np

    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tuple__" in value:
        return tuple(_from_json(v) for v in value["__tuple__"])
    if "__dict__" in value:
        return {_from_json(k): _from_json(v) for k, v in value["__dict__"]}
    array = np.frombuffer(base64.b64decode(value["data"]), dtype=value["dtype"])
    array = array.reshape(value["shape"]).copy()
    if "__tensor__" in value:
        import torch

        return torch.from_numpy(array).to(getattr(torch, value["__tensor__"]))
    return array


# -- identities ---------------------------------------------------------------------------


def _arg_identity(value: Any) -> Any:
    """An argument as the key sees it: a model folder or file by its content fingerprint,
    other objects by their type (their repr may hold a memory address)."""
    if isinstance(value, str):
        model_dir = os.path.isdir(value) and (
            os.path.exists(os.path.join(value, "config.json")) or _has_weights(value)
        )
        if model_dir or os.path.isfile(value):
            return {"path": os.path.basename(value.rstrip("/")), "content": model_identity(value)}
        return value
    if isinstance(value, (list, tuple)):
        return [_arg_identity(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _arg_identity(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return f"<{type(value).__name__}>"


def _has_weights(folder: str) -> bool:
    return any(
        glob.glob(os.path.join(folder, p)) for p in ("*.safetensors", "*.bin", "*.pt", "*.onnx")
    )


_IDENTITIES: dict[tuple[str, int, int], str] = {}


def init_arguments(cls: type) -> set[str]:
    """The names of the operator's constructor arguments (its settings, not its state)."""
    import inspect

    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None and klass is not object:
            names.update(
                p.name for p in inspect.signature(init).parameters.values()
                if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self"
            )  # fmt: skip
    return names


def code_identity(cls: type) -> str:
    """The source of the operator's class and its bases, and of the modules its outputs
    come from (`output_modules`, e.g. the CLIP backends): edited code misses the cache."""
    import importlib
    import inspect

    h = hashlib.blake2b(digest_size=16)
    modules = [importlib.import_module(m) for m in getattr(cls, "output_modules", ())]
    for klass in [*cls.__mro__, *modules]:
        try:
            path = inspect.getsourcefile(klass)
        except TypeError:  # builtins
            continue
        if path and os.path.isfile(path):
            st = os.stat(path)
            memo = (path, st.st_size, st.st_mtime_ns)  # an edit in a long-lived process counts
            if memo not in _IDENTITIES:
                with open(path, "rb") as fh:
                    _IDENTITIES[memo] = hashlib.blake2b(fh.read(), digest_size=16).hexdigest()
            h.update(_IDENTITIES[memo].encode())
    return h.hexdigest()


def model_identity(path: str) -> str:
    """A model folder's (or file's) fingerprint: its small files (configs, tokenizers) by
    content, its weight files by size and their first and last MiB (hashing gigabytes at
    every start would cost more than it saves)."""
    if path in _IDENTITIES:
        return _IDENTITIES[path]
    files = (
        sorted(glob.glob(os.path.join(path, "**", "*"), recursive=True))
        if os.path.isdir(path)
        else [path]
    )
    h = hashlib.blake2b(digest_size=16)
    for f in files:
        if not os.path.isfile(f):
            continue
        size = os.path.getsize(f)
        h.update(os.path.relpath(f, path).encode() + str(size).encode())
        with open(f, "rb") as fh:
            if size <= 4 << 20:
                h.update(fh.read())
            else:
                h.update(fh.read(1 << 20))
                fh.seek(-(1 << 20), os.SEEK_END)
                h.update(fh.read(1 << 20))
    _IDENTITIES[path] = h.hexdigest()
    return _IDENTITIES[path]


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=20).hexdigest()
