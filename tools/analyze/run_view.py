"""What a finished run did, for the report: the per-operator funnel from `summary.json` and
a few dropped samples per operator from `filtered/NN_<op>.jsonl`, with small thumbnails.

Only the first few lines of each filtered file are read, so this costs the same for a run
of a thousand samples or of a million.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from PIL import Image, ImageOps

THUMB_SIDE = 136
_FILTERED_NAME = re.compile(r"^(\d+)_(.+)\.jsonl$")


class RunViewError(ValueError):
    """The folder is not the work_dir of a finished run."""


@dataclass
class DroppedSample:
    text: str
    thumbs: list[str | None]  # data: URIs (None: the image cannot be read any more)
    reason: str
    stats: dict[str, Any]
    where: str  # source file and line


@dataclass
class OpRun:
    index: int
    name: str
    n_in: int
    n_out: int
    filtered: int
    quarantined: int
    seconds: float
    samples: list[DroppedSample] = field(default_factory=list)
    file: str | None = None


@dataclass
class RunView:
    work_dir: str
    summary: dict[str, Any]
    ops: list[OpRun]

    @property
    def filtered_files(self) -> list[str]:
        return [op.file for op in self.ops if op.file]

    def stats_files(self) -> list[str]:
        """Where the kept samples' stats are: the side file, or the export itself."""
        return list(self.summary.get("stats_files") or self.summary.get("export_files") or [])


def read_run(
    work_dir: str, per_op: int = 6, text_key: str = "text", image_key: str = "images"
) -> RunView:
    path = os.path.join(work_dir, "summary.json")
    try:
        with open(path, encoding="utf-8") as fh:
            summary = json.load(fh)
        rows = summary["ops"]
    except (OSError, ValueError, KeyError) as exc:
        raise RunViewError(
            f"--run {work_dir}: no readable summary.json ({exc}); give the work_dir of a "
            "finished dj-run"
        ) from None
    files: dict[int, str] = {}
    for f in summary.get("filtered_files") or {}:
        m = _FILTERED_NAME.match(os.path.basename(f))
        if m and os.path.isfile(f):
            files[int(m.group(1))] = f
    ops = []
    for index, row in enumerate(rows):
        op = OpRun(
            index, row["name"], row["in"], row["out"], row["filtered"], row["quarantined"],
            row["seconds"], file=files.get(index),
        )  # fmt: skip
        if op.file:
            op.samples = _first_dropped(op.file, per_op, text_key, image_key)
        ops.append(op)
    return RunView(work_dir, summary, ops)


def _first_dropped(path: str, n: int, text_key: str, image_key: str) -> list[DroppedSample]:
    out: list[DroppedSample] = []
    with open(path, "rb") as fh:
        for line in fh:
            if len(out) >= n:
                break
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            sample = rec.get("sample") or {}
            if not isinstance(sample, dict):
                continue
            images = sample.get(image_key) or []
            text = sample.get(text_key)
            out.append(
                DroppedSample(
                    text=text if isinstance(text, str) else json.dumps(text),
                    thumbs=[thumbnail(p) for p in images[:3] if isinstance(p, str)],
                    reason=str(rec.get("reason", "")),
                    stats=sample.get("__dj__stats__") or {},
                    where=f"{os.path.basename(str(rec.get('source', '')))}:{rec.get('line', '?')}",
                )
            )
    return out


def thumbnail(path: str, side: int = THUMB_SIDE) -> str | None:
    """A small JPEG of the image as a data: URI (JPEGs decode at a reduced scale)."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (side * 2, side * 2))
            im = ImageOps.exif_transpose(im)
            im = im.convert("RGB")
            im.thumbnail((side, side))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=72, optimize=True)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
