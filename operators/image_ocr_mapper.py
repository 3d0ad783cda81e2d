"""image_ocr_mapper: the text found in each image, into the sample's meta and optionally its caption."""

from __future__ import annotations

from typing import Any, Literal

from .base import Mapper
from .batch import Batch
from .ocr import OcrOp
from .registry import register

META = "__dj__meta__"


@register("image_ocr_mapper")
class ImageOcrMapper(OcrOp, Mapper):
    """OCR of every image (ours: no Data-Juicer image operator reads text; TextVQA rewards it).

    `__dj__meta__.ocr` gets, per image in `images` order, its text lines in reading
    order: `{"text", "box" (4 corner points, pixels), "confidence"}`, lines below
    `min_confidence` left out. With `mode: append | prepend`, an image's text (its
    lines joined by spaces, cut at a word boundary to `max_chars`) is written into
    the caption through `template` after that image's own token (`prepend`) or at the
    end of that image's chunk (`append`), as the captioning mapper places captions;
    images without text leave the caption unchanged. `mode: none` only annotates.
    """

    def __init__(
        self,
        mode: Literal["append", "prepend", "none"] = "none",
        template: str = 'Text in the image: "{ocr}".',
        min_confidence: float = 0.5,
        max_chars: int = 200,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if mode not in ("append", "prepend", "none"):
            raise ValueError(f"mode must be append, prepend or none, got {mode!r}")
        try:
            template.format(ocr="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"template must hold {{ocr}} and no other field: {exc}") from None
        if "{ocr}" not in template:
            raise ValueError(f"template must hold {{ocr}}, got {template!r}")
        if max_chars < 1:
            raise ValueError(f"max_chars must be >= 1, got {max_chars}")
        self.mode, self.template = mode, template
        self.min_confidence, self.max_chars = min_confidence, max_chars
        self.check_installed()

    def process(self, batch: Batch) -> Batch:
        ctx = batch.ctx
        found = self.ocr(batch)
        metas = batch.column(META)
        texts = batch.texts
        new_texts = []
        for i, (text, paths) in enumerate(zip(texts, batch.images)):
            per_image = [found[p] for p in paths]
            if paths:
                metas[i] = {**(metas[i] or {}), "ocr": per_image}
            sentences = [self._sentence(lines, ctx) for lines in per_image]
            if self.mode != "none" and isinstance(text, str):
                text = self._insert(text, sentences, ctx)
            new_texts.append(text)
        batch.columns[META] = metas
        batch.texts = new_texts
        return batch

    def _sentence(self, lines: list[dict[str, Any]], ctx: Any) -> str:
        """The template filled with the image's text ('' when it has none)."""
        words = " ".join(line["text"] for line in lines)
        for token in (ctx.image_token, ctx.eoc_token):
            words = words.replace(token, " ")
        words = " ".join(words.split())
        if len(words) > self.max_chars:
            cut = words[: self.max_chars + 1].rsplit(" ", 1)[0]
            words = cut if cut and len(cut) <= self.max_chars else words[: self.max_chars]
        return self.template.format(ocr=words) if words else ""

    def _insert(self, text: str, sentences: list[str], ctx: Any) -> str:
        if not any(sentences):
            return text
        token, eoc = ctx.image_token, ctx.eoc_token
        if token not in text:  # a plain caption owning every image: one chunk
            return _add(text, " ".join(s for s in sentences if s), self.mode == "append")
        chunks, k = [], 0
        for chunk in text.split(eoc):
            mine = sentences[k : k + chunk.count(token)]
            k += len(mine)
            if self.mode == "append":
                chunk = _add(chunk, " ".join(s for s in mine if s), True)
            else:
                pieces = chunk.split(token)
                for j, sentence in enumerate(mine):
                    if sentence:
                        after = pieces[j + 1]
                        pieces[j + 1] = f" {sentence}" + (after if after[:1].isspace() or not after else f" {after}")  # fmt: skip
                chunk = token.join(pieces)
            chunks.append(chunk)
        return eoc.join(chunks)


def _add(text: str, sentence: str, at_end: bool) -> str:
    """`sentence` after (or before) the words of `text`, keeping its outer whitespace."""
    if not sentence:
        return text
    body = text.strip()
    lead, trail = text[: len(text) - len(text.lstrip())], text[len(text.rstrip()) :]
    if not body:
        return f"{lead}{sentence}{trail or ''}"
    joined = f"{body} {sentence}" if at_end else f"{sentence} {body}"
    return f"{lead}{joined}{trail}"
