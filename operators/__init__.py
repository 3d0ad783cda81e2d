"""Operators, registered by their Data-Juicer names. Importing this package registers them all."""

from importlib import import_module
from pathlib import Path

from .base import Deduplicator, Filter, GlobalOp, Mapper, Op, RangeFilter, Selector
from .batch import Batch, BatchContext, SampleRef
from .registry import OPERATORS, get_operator, load_custom_operators, register

# One module per operator (or small family); importing each runs its @register.
for _module in sorted(Path(__file__).parent.glob("*.py")):
    if _module.stem not in {"__init__", "base", "batch", "ledger", "media", "registry"}:
        import_module(f"{__name__}.{_module.stem}")

__all__ = [
    "OPERATORS",
    "Batch",
    "BatchContext",
    "Deduplicator",
    "Filter",
    "GlobalOp",
    "Mapper",
    "Op",
    "RangeFilter",
    "SampleRef",
    "Selector",
    "get_operator",
    "load_custom_operators",
    "register",
]
