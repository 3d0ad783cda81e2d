"""clean_html_mapper: replace HTML in the text by its plain text content."""

from __future__ import annotations

from typing import Any

from selectolax.lexbor import LexborHTMLParser

from .base import Mapper
from .batch import Batch
from .registry import register


def clean_html(raw: Any) -> Any:
    """Data-Juicer 1.6.1's `_clean_html`: list bullets, then lexbor's `.text()`."""
    if not isinstance(raw, str):
        return raw
    raw = raw.replace("<li>", "\n*").replace("</li>", "").replace("<ol>", "\n*")
    raw = raw.replace("</ol>", "")
    return LexborHTMLParser(raw).text()


@register("clean_html_mapper")
class CleanHtmlMapper(Mapper):
    """Text = the HTML parse's text nodes concatenated with no separator (selectolax lexbor).

    As in Data-Juicer 1.6.1: the exact lowercase tags `<li>` and `<ol>` become
    "\\n*" first (`</li>`, `</ol>` are removed); entities are decoded; `<p>`,
    `<br>` and `<div>` add no newline; script/style/title content is kept as text.
    A non-string text is left unchanged.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)

    def process(self, batch: Batch) -> Batch:
        batch.texts = [clean_html(text) for text in batch.texts]
        return batch
