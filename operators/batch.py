"""The columnar batch every operator sees, under every executor.

A batch is a dict of equal-length lists (Ray Data's `map_batches` idiom) plus a
`BatchContext` that carries the dataset's key names, special tokens and one
per-batch media cache, so operators that look at the same image share one read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .media import MediaCache

if TYPE_CHECKING:
    from .base import Op

STATS = "__dj__stats__"


class _Missing:
    """Marks a field a row never had, so pass-through keeps rows exactly as they came."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __reduce__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()
IMAGE_TOKEN = "<__dj__image>"
EOC_TOKEN = "<|__dj__eoc|>"


@dataclass
class BatchContext:
    """Dataset-wide settings an operator may need, and the shared media cache."""

    text_key: str = "text"
    image_key: str = "images"
    image_token: str = IMAGE_TOKEN
    eoc_token: str = EOC_TOKEN
    op_timeout_s: float | None = None  # CPU operators: seconds per batch, then per sample
    media: MediaCache = field(default_factory=MediaCache)


@dataclass(frozen=True)
class SampleRef:
    """Where a sample came from: its position in the input and its source line."""

    ordinal: int
    source: str
    line: int


class Batch:
    """Columns (dict of lists) plus one `SampleRef` per row.

    Operators read and write columns; they never need the refs, which the base
    classes use for accounting (which input line was filtered or quarantined).
    """

    def __init__(
        self,
        columns: dict[str, list[Any]],
        refs: list[SampleRef],
        ctx: BatchContext | None = None,
    ) -> None:
        self.columns = columns
        self.refs = refs
        self.ctx = ctx or BatchContext()
        for name, values in columns.items():
            if len(values) != len(refs):
                raise ValueError(f"column {name!r} has {len(values)} rows, expected {len(refs)}")

    # -- construction -------------------------------------------------
    @classmethod
    def from_rows(
        cls, rows: list[dict[str, Any]], refs: list[SampleRef], ctx: BatchContext | None = None
    ) -> Batch:
        """Columnar view of row dicts; a key missing from a row becomes MISSING."""
        keys: dict[str, None] = {}
        for row in rows:
            keys.update(dict.fromkeys(row))
        columns = {k: [row.get(k, MISSING) for row in rows] for k in keys}
        return cls(columns, list(refs), ctx)

    def rows(self) -> list[dict[str, Any]]:
        """Row dicts in column order; fields a row never had stay out."""
        cols = list(self.columns.items())
        return [{k: v[i] for k, v in cols if v[i] is not MISSING} for i in range(len(self.refs))]

    # -- access -------------------------------------------------------
    def __len__(self) -> int:
        return len(self.refs)

    def column(self, name: str) -> list[Any]:
        """The column, created (filled with MISSING) if absent."""
        if name not in self.columns:
            self.columns[name] = [MISSING] * len(self)
        return self.columns[name]

    @property
    def texts(self) -> list[str]:
        return self.column(self.ctx.text_key)

    @texts.setter
    def texts(self, values: list[str]) -> None:
        self.columns[self.ctx.text_key] = list(values)

    @property
    def images(self) -> list[list[str]]:
        """Image paths per sample (an empty list where a sample has none)."""
        col = self.column(self.ctx.image_key)
        return [paths or [] for paths in col]

    @property
    def stats(self) -> list[dict[str, Any]]:
        """Per-sample stats dicts (`__dj__stats__`), created on first use."""
        col = self.column(STATS)
        for i, value in enumerate(col):
            if not isinstance(value, dict):
                col[i] = {}
        return col

    # -- reshaping ----------------------------------------------------
    def take(self, indices: list[int]) -> Batch:
        """A new batch with the given rows, in the given order."""
        columns = {k: [v[i] for i in indices] for k, v in self.columns.items()}
        return Batch(columns, [self.refs[i] for i in indices], self.ctx)

    def slices(self, size: int) -> list[Batch]:
        """Split into consecutive batches of at most `size` rows."""
        if size <= 0 or len(self) <= size:
            return [self]
        return [
            self.take(list(range(s, min(s + size, len(self))))) for s in range(0, len(self), size)
        ]

    @staticmethod
    def concat(batches: list[Batch], ctx: BatchContext | None = None) -> Batch:
        """Rows of all batches in order; a column missing from one batch is MISSING there."""
        if not batches:
            return Batch({}, [], ctx)
        names: dict[str, None] = {}
        for b in batches:
            names.update(dict.fromkeys(b.columns))
        columns: dict[str, list[Any]] = {k: [] for k in names}
        refs: list[SampleRef] = []
        for b in batches:
            for k in names:
                columns[k].extend(b.columns.get(k) or [MISSING] * len(b))
            refs.extend(b.refs)
        return Batch(columns, refs, ctx or batches[0].ctx)


def special_tokens(op: Op, batch: Batch) -> tuple[str, str]:
    """The image and end-of-chunk tokens: the op's own, else the dataset's."""
    ctx = batch.ctx
    return (op.image_special_token or ctx.image_token, op.eoc_special_token or ctx.eoc_token)


def image_chunks(
    text: str, images: list[str], image_token: str, eoc_token: str
) -> list[tuple[str, list[str]]]:
    """The sample's chunks as (text without special tokens, the chunk's image paths).

    Data-Juicer's grammar: the text splits into chunks at the end-of-chunk token,
    and image tokens take `images` in order. A text that holds images but no
    image token at all (a plain caption) is one chunk owning every image.
    """
    if images and image_token not in text:
        clean = text.replace(eoc_token, "").strip()
        return [(clean, list(images))]
    out = []
    offset = 0
    for chunk in text.split(eoc_token):
        count = chunk.count(image_token)
        paths = images[offset : offset + count]
        offset += count
        if chunk.strip() or paths:
            out.append((chunk.replace(image_token, "").strip(), paths))
    return out
