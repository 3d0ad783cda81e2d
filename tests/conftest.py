"""Shared pytest fixtures."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

# The model-output cache of the runs under test lives in a folder of this session, never in
# the user's ~/.cache (and Ray workers started by a test inherit it).
os.environ["DJ_SYNTH_CACHE_DIR"] = tempfile.mkdtemp(prefix="dj-synth-test-cache-")


class LazyModels(Mapping):
    """name -> folder of every tiny model, each built on first access (once per session), so
    a test pays only for the models it uses."""

    def __init__(self, root: Path) -> None:
        from dj_synth.tools.tiny_models import TINY_MODEL_NAMES

        self.root, self.names, self.built = root, TINY_MODEL_NAMES, {}

    def __getitem__(self, name: str) -> str:
        if name not in self.names:
            raise KeyError(name)
        if name not in self.built:
            from dj_synth.tools.tiny_models import make_tiny_models

            self.built.update(make_tiny_models(self.root, seed=0, names=(name,)))
        return self.built[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Mapping[str, str]:
    """Tiny RANDOM models (blip2, clip, blip_itm, open_clip, ..., see tools/tiny_models.py),
    each built on first use, once per session.

    Skips where the model stack (torch, transformers, open_clip) is not installed.
    """
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("open_clip")
    return LazyModels(tmp_path_factory.mktemp("tiny_models"))
