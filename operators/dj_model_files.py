"""Data-Juicer's own model files (KenLM `{lang}.arpa.bin`, SentencePiece `{lang}.sp.model`),
found where Data-Juicer looks for them, so a user's existing cache works unchanged.

Data-Juicer's `check_model(name)` order: the name itself as a path (relative to the
working directory), then each folder of `DATA_JUICER_EXTERNAL_MODELS_HOME`
(os.pathsep-separated), then the models cache `DATA_JUICER_MODELS_CACHE` (default
`$DATA_JUICER_CACHE_HOME/models`, i.e. `~/.cache/data_juicer/models`). Data-Juicer
downloads a missing file; we never download: a missing file fails the recipe before
any work, with what to put where.
"""

from __future__ import annotations

import os

from .models import ModelNotFoundError

# Where Data-Juicer downloads these files from when its own server fails (its
# BACKUP_MODEL_LINKS): the Hugging Face repository edugp/kenlm, folder wikipedia/.
_SOURCE = "the Hugging Face repository edugp/kenlm (folder wikipedia/)"


def dj_models_cache() -> str:
    """Data-Juicer's models cache folder, from the same environment variables."""
    cache_home = os.getenv("CACHE_HOME", "~/.cache")
    dj_home = os.getenv("DATA_JUICER_CACHE_HOME", os.path.join(cache_home, "data_juicer"))
    models = os.getenv("DATA_JUICER_MODELS_CACHE", os.path.join(dj_home, "models"))
    return os.path.expanduser(models)


def dj_model_candidates(name: str) -> list[str]:
    """The paths Data-Juicer tries for `name`, in its order."""
    paths = [name]
    for folder in os.getenv("DATA_JUICER_EXTERNAL_MODELS_HOME", "").split(os.pathsep):
        if folder.strip():
            paths.append(os.path.join(os.path.expanduser(folder.strip()), name))
    paths.append(os.path.join(dj_models_cache(), name))
    return paths


def require_dj_model(
    name: str, op: str, kind: str, explicit: str | None = None, arg: str | None = None
) -> str:
    """The path of Data-Juicer model file `name` (or of `explicit`, when given).

    Raises `ModelNotFoundError` saying where the file was looked for and where to put it.
    """
    if explicit:
        path = os.path.expanduser(explicit)
        if os.path.isfile(path):
            return path
        raise ModelNotFoundError(f"{op}: {arg} {explicit!r} is not a file ({kind} model)")
    candidates = dj_model_candidates(name)
    for path in candidates:
        if os.path.isfile(path):
            return path
    hint = f", or give its path with `{arg}`" if arg else ""
    raise ModelNotFoundError(
        f"{op}: Data-Juicer's {kind} model file {name!r} not found (tried: "
        f"{', '.join(candidates)}; nothing is downloaded). Put {name} in "
        f"{dj_models_cache()} (Data-Juicer's models cache; DATA_JUICER_MODELS_CACHE sets "
        f"another folder){hint}. Data-Juicer downloads it from {_SOURCE}."
    )
