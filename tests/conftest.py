"""Shared pytest fixtures."""

from __future__ import annotations

import os
import tempfile

import pytest

# The model-output cache of the runs under test lives in a folder of this session, never in
# the user's ~/.cache (and Ray workers started by a test inherit it).
os.environ["DJ_SYNTH_CACHE_DIR"] = tempfile.mkdtemp(prefix="dj-synth-test-cache-")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Tiny RANDOM models (blip2, clip, blip_itm, open_clip), built once per session.

    Skips where the model stack (torch, transformers, open_clip) is not installed.
    """
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("open_clip")
    from dj_synth.tools.tiny_models import make_tiny_models

    return make_tiny_models(tmp_path_factory.mktemp("tiny_models"), seed=0)
