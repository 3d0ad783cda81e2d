"""Marked blocks of bench/RESULTS.md: each benchmark rewrites its own block, leaves the rest."""

from __future__ import annotations

from pathlib import Path


def write_marked_block(path: Path, begin: str, end: str, block: str) -> None:
    """Replace the text from `begin` to `end` (markers included in `block`), or append it."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
