"""Operators by their Data-Juicer name, so Data-Juicer recipes find them unchanged."""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from .base import Op

OPERATORS: dict[str, type[Op]] = {}

T = TypeVar("T", bound="type[Op]")


def register(name: str):
    """Class decorator: `@register("text_length_filter")`."""

    def wrap(cls: T) -> T:
        if name in OPERATORS and OPERATORS[name] is not cls:
            raise KeyError(f"operator {name!r} is already registered by {OPERATORS[name]!r}")
        cls.name = name
        OPERATORS[name] = cls
        return cls

    return wrap


def get_operator(name: str) -> type[Op]:
    if name not in OPERATORS:
        close = difflib.get_close_matches(name, OPERATORS, n=3, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown operator {name!r}.{hint} (`dj-run --list-ops` lists all)")
    return OPERATORS[name]


def load_custom_operators(paths: list[str]) -> None:
    """Import user operator files (or folders of them) so their @register calls run."""
    for entry in paths:
        path = Path(entry)
        files = sorted(path.glob("*.py")) if path.is_dir() else [path]
        for file in files:
            if not file.is_file():
                raise FileNotFoundError(f"custom operator file not found: {file}")
            digest = hashlib.md5(str(file.resolve()).encode()).hexdigest()[:8]
            mod_name = f"dj_synth_custom_{file.stem}_{digest}"
            if mod_name in sys.modules:  # already loaded (e.g. inherited by a forked worker)
                continue
            spec = importlib.util.spec_from_file_location(mod_name, file)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            spec.loader.exec_module(module)
