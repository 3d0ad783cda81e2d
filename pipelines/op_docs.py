"""Operator documentation from the code itself: `dj-run --list-ops [NAME]`.

Arguments, types and defaults come from the constructors' signatures (over the class
and its bases, as `**kwargs` forwards them), stats keys from the class, the text
from the docstring: what is printed is what the recipe loader checks against.
"""

from __future__ import annotations

import inspect
import shutil
import textwrap
from dataclasses import dataclass
from typing import Any

from dj_synth.operators import OPERATORS, get_operator
from dj_synth.operators.base import Deduplicator, Filter, Mapper, Selector

from .recipe import NO_DEFAULT, operator_signature
from .recipe import _type_name as type_name

# Arguments every operator takes (listed once, not per operator).
COMMON = {
    "text_key", "image_key", "image_special_token", "eoc_special_token", "batch_size",
    "num_proc", "accelerator", "min_closed_interval", "max_closed_interval", "reversed_range",
}  # fmt: skip


@dataclass
class Argument:
    name: str
    type: str
    default: Any  # NO_DEFAULT when required

    def show(self) -> str:
        if self.default is NO_DEFAULT:
            return f"{self.name}: {self.type} (required)"
        return f"{self.name}: {self.type} = {self.default!r}"


def operator_arguments(cls: type) -> list[Argument]:
    """The constructor arguments with their types and defaults."""
    return [
        Argument(name, type_name(hint), default)
        for name, (hint, default) in operator_signature(cls).items()
    ]


def kind(cls: type) -> str:
    kinds = ((Filter, "filter"), (Mapper, "mapper"), (Deduplicator, "deduplicator"),
             (Selector, "selector"))  # fmt: skip
    for base, name in kinds:
        if issubclass(cls, base):
            return name
    return "op"


def _summary_line(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    return doc.split("\n\n", 1)[0].replace("\n", " ")


def list_operators() -> str:
    """Every operator: name, kind, its own arguments with defaults, and its first sentence."""
    width = min(shutil.get_terminal_size((100, 20)).columns, 120)
    lines = []
    for name in sorted(OPERATORS):
        cls = OPERATORS[name]
        args = [a for a in operator_arguments(cls) if a.name not in COMMON]
        lines.append(f"{name}  [{kind(cls)}]")
        shown = ", ".join(
            a.name if a.default is NO_DEFAULT else f"{a.name}={a.default!r}" for a in args
        )
        for text in (shown, _summary_line(cls)):
            if text:
                lines.extend(textwrap.wrap(text, width, initial_indent="    ",
                                           subsequent_indent="    "))  # fmt: skip
    lines.append("")
    lines.append("`dj-run --list-ops NAME` documents one operator in full.")
    return "\n".join(lines)


def describe_operator(name: str) -> str:
    """One operator's full documentation: arguments, types, defaults, stats keys, docstring."""
    try:
        cls = get_operator(name)
    except KeyError as exc:
        return f"error: {exc.args[0]}"
    out = [f"{name}  [{kind(cls)}]", ""]
    out.append(inspect.getdoc(cls) or "(no description)")
    out += ["", "Arguments:"]
    args = operator_arguments(cls)
    out += [f"  {a.show()}" for a in args if a.name not in COMMON]
    common = [a.name for a in args if a.name in COMMON]
    out.append(f"  (also the common arguments: {', '.join(common)})")
    stats = getattr(cls, "stats_keys", ()) or (
        (cls.stats_key,) if isinstance(getattr(cls, "stats_key", None), str) else ()
    )
    if stats:
        out += ["", f"Stats keys: {', '.join(stats)}"]
    return "\n".join(out)
