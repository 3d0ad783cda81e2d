"""How synthesis operators write what they make: Data-Juicer's text format and the origin.

Shared by the mappers that generate captions, rewrites or images, so every generated
sample looks the same: per chunk `<__dj__image> {caption} <|__dj__eoc|>` (each caption
right after its own image token), the original `id` kept, stats dropped (they described
the old text), and `__dj__meta__` saying which operator and model made it, with the text
it came from (`source_text`: the first one, kept through later rewrites).
"""

from __future__ import annotations

from typing import Any

from .batch import STATS

META = "__dj__meta__"


def captions_text(captions: list[list[str]], image_token: str, eoc_token: str) -> str:
    """Chunks of images, each image's caption after its own token: `captions` holds, per
    chunk with images, one caption per image."""
    parts = []
    for chunk in captions:
        body = " ".join(f"{image_token} {caption}" for caption in chunk)
        parts.append(f"{body} {eoc_token}")
    return " ".join(parts)


def generated_row(
    row: dict[str, Any], text_key: str, text: Any, origin: dict[str, Any]
) -> dict[str, Any]:
    """A new sample made from `row`: its fields, the new text, no stats, and `origin`
    (at least `generated_by` and `model`) merged into its `__dj__meta__`."""
    new = dict(row)
    new[text_key] = text
    new.pop(STATS, None)
    new[META] = with_origin(row, text_key, origin)
    return new


def add_generated(
    out_rows: list[dict[str, Any]],
    out_refs: list[Any],
    row: dict[str, Any],
    ref: Any,
    new: list[dict[str, Any]],
    keep_original: bool,
) -> None:
    """Append a sample's output: itself (when kept, or when nothing was generated from it:
    a sample never vanishes), then what was generated from it, each under its ref."""
    if keep_original or not new:
        out_rows.append(row)
        out_refs.append(ref)
    out_rows.extend(new)
    out_refs.extend([ref] * len(new))


def with_origin(row: dict[str, Any], text_key: str, origin: dict[str, Any]) -> dict[str, Any]:
    """`row`'s `__dj__meta__` plus `origin`, keeping the first `source_text` of the chain."""
    meta = dict(row.get(META) or {})
    source = row.get(text_key)
    if isinstance(source, str):
        meta.setdefault("source_text", source)
    meta.update(origin)
    return meta


def without_tokens(text: str, *tokens: str) -> str:
    """The words of `text` with the special tokens removed and whitespace collapsed."""
    for token in tokens:
        text = text.replace(token, " ")
    return " ".join(text.split())
