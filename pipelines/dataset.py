"""Reading Data-Juicer-format datasets as a stream, and checking each sample on entry.

Input: a JSONL file, a JSON file holding an array of samples (streamed), a folder or
glob of those, `.gz` / `.zst` compressed, or Parquet. Records are read lazily in
batches that never cross files (so relative image paths resolve against one folder
per batch); memory does not grow with the dataset. Parsing and checking happen in
the workers (`check_sample`), so the reading process only moves bytes.

A damaged file (a truncated `.gz`, a plain file named `.zst`, a broken JSON array)
is read up to the damage; the rest becomes one quarantine record that names the
file and where it broke, and the other files are read as usual. A folder written
by a dj-synth run is read as its export only (never `filtered/`, `*_stats.jsonl`,
`summary.json` or the quarantine).
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from dj_synth.operators.batch import SampleRef
from dj_synth.operators.media import MediaCache, MediaError, decode_rgb

SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json", ".json.gz", ".json.zst", ".parquet")
BOM = b"\xef\xbb\xbf"


class DatasetError(ValueError):
    """The dataset path names nothing readable."""


@dataclass
class Unreadable:
    """What was left of a damaged file: the error, and the bytes of a partial record."""

    error: str
    raw: bytes = b""


@dataclass
class RawItem:
    ref: SampleRef
    # a JSON line, a record already decoded (Parquet, JSON array), or a damaged remainder
    payload: bytes | dict[str, Any] | Unreadable


# Files and folders a dj-synth run writes beside its export: never read as data.
SIDE_FOLDERS = frozenset({"filtered", "checkpoint", "trace", "analysis"})
SIDE_FILES = ("summary.json", "quarantine.jsonl")


def _run_exports(folder: str) -> list[str] | None:
    """The export files of a dj-synth run whose `summary.json` is in `folder`, if any."""
    path = os.path.join(folder, "summary.json")
    try:
        with open(path, encoding="utf-8") as fh:
            summary = json.load(fh)
        listed = [os.path.abspath(f) for f in summary["export_files"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    inside = [f for f in listed if f.startswith(os.path.abspath(folder) + os.sep)]
    return [f for f in inside if os.path.isfile(f)] or None


def _walk_data_files(folder: str) -> list[str]:
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SIDE_FOLDERS)
        exports = _run_exports(root)
        if exports is not None:
            found.extend(exports)
            dirs[:] = []
            continue
        found.extend(
            os.path.join(root, f)
            for f in names
            if f.endswith(SUFFIXES) and not f.startswith(".") and f not in SIDE_FILES
            and not f.endswith(("_stats.jsonl", "_llava.json"))
        )  # fmt: skip
    return sorted(found)


def expand_dataset_path(spec: str | list[str]) -> list[str]:
    """Files named by a path, folder, glob, or a list of those; sorted for determinism."""
    specs = [spec] if isinstance(spec, str) else list(spec)
    files: list[str] = []
    for item in specs:
        if os.path.isdir(item):
            found = _walk_data_files(item)
            if not found:
                raise DatasetError(f"dataset folder {item} holds no {'/'.join(SUFFIXES)} files")
            files.extend(found)
        elif any(ch in item for ch in "*?["):
            found = sorted(f for f in glob.glob(item, recursive=True) if os.path.isfile(f))
            if not found:
                raise DatasetError(f"dataset glob {item!r} matches no files")
            files.extend(found)
        elif os.path.isfile(item):
            files.append(item)
        else:
            raise DatasetError(f"dataset_path {item!r} does not exist")
    for f in files:
        if not f.endswith(SUFFIXES):
            raise DatasetError(
                f"unsupported dataset file {f}: expected one of {', '.join(SUFFIXES)}"
            )
    return [os.path.abspath(f) for f in files]


def _open_stream(raw: Any, path: str) -> Any:
    """The decompressed byte stream of an open file (peekable)."""
    if path.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw)
    if path.endswith(".zst"):
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw))
    return raw


def _damage(exc: BaseException) -> bool:
    """Errors of a damaged compressed file (truncated, not compressed at all, corrupt)."""
    if isinstance(exc, (EOFError, gzip.BadGzipFile)):
        return True
    return type(exc).__name__ == "ZstdError"


def open_lines(path: str) -> Iterator[tuple[int, bytes, int]]:
    """(line number, line bytes, compressed bytes read so far) of a JSONL file, .gz/.zst too.

    Blank lines are yielded (callers decide); a UTF-8 BOM on line 1 is removed.
    """
    with open(path, "rb") as raw:
        stream = _open_stream(raw, path)
        for line_no, line in enumerate(stream, start=1):
            if line_no == 1 and line.startswith(BOM):
                line = line[len(BOM) :]
            yield line_no, line, raw.tell()


def is_json_array(path: str) -> bool:
    """A `.json` file whose content is one JSON array (LLaVA's format), not JSON Lines."""
    if not path.endswith((".json", ".json.gz", ".json.zst")):
        return False
    try:
        with open(path, "rb") as raw:
            head = _open_stream(raw, path).peek(4096)[:4096]
    except Exception:
        return False  # unreadable: the line reader reports the damage
    return head.removeprefix(BOM).lstrip()[:1] == b"["


class DatasetReader:
    """Streams `RawItem` batches; `bytes_done / total_bytes` drives progress and ETA."""

    def __init__(self, spec: str | list[str]) -> None:
        self.files = expand_dataset_path(spec)
        self.total_bytes = sum(os.path.getsize(f) for f in self.files)
        self.bytes_done = 0
        self.blank_lines = 0
        self.samples_read = 0  # also the next sample's ordinal

    def batches(self, size: int) -> Iterator[list[RawItem]]:
        for path in self.files:
            done_before = self.bytes_done
            items: list[RawItem] = []
            for line_no, payload, pos in self._records(path):
                self.bytes_done = done_before + pos
                items.append(RawItem(SampleRef(self.samples_read, path, line_no), payload))
                self.samples_read += 1
                if len(items) >= size:
                    yield items
                    items = []
            self.bytes_done = done_before + os.path.getsize(path)
            if items:
                yield items

    def _records(self, path: str) -> Iterator[tuple[int, Any, int]]:
        if path.endswith(".parquet"):
            yield from self._parquet(path)
        elif is_json_array(path):
            yield from self._json_array(path)
        else:
            yield from self._lines(path)

    def _lines(self, path: str) -> Iterator[tuple[int, bytes | Unreadable, int]]:
        line_no = pos = 0
        try:
            for line_no, line, pos in open_lines(path):
                if not line.strip():
                    self.blank_lines += 1
                    continue
                yield line_no, line, pos
        except Exception as exc:
            if not _damage(exc):
                raise
            where = f"after line {line_no}" if line_no else "at its start"
            yield line_no + 1, Unreadable(f"damaged compressed file {where}: {exc}"), pos

    def _json_array(self, path: str) -> Iterator[tuple[int, Any, int]]:
        import ijson

        item_no = pos = 0
        with open(path, "rb") as raw:
            try:
                stream = _open_stream(raw, path)
                for item_no, item in enumerate(ijson.items(stream, "item", use_float=True), 1):
                    pos = raw.tell()
                    yield item_no, item if isinstance(item, dict) else orjson.dumps(item), pos
            except Exception as exc:
                if not (_damage(exc) or isinstance(exc, ijson.JSONError)):
                    raise
                yield (
                    item_no + 1,
                    Unreadable(f"damaged JSON array after item {item_no}: {exc}"),
                    pos,
                )

    def _parquet(self, path: str) -> Iterator[tuple[int, dict[str, Any], int]]:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        size = os.path.getsize(path)
        total = max(pf.metadata.num_rows, 1)
        row = 0
        for record_batch in pf.iter_batches(batch_size=1024):
            for sample in record_batch.to_pylist():
                row += 1
                yield row, sample, size * row // total


# ---------------------------------------------------------------------------
# Checking samples on entry (runs in the workers)


class IngestError(Exception):
    """A sample that cannot enter the pipeline; the message goes to the quarantine."""


# orjson reads integers beyond 64 bits as floats (an id 10**30 would become 1e+30);
# lines with such long digit runs go through the stdlib parser, which keeps them exact.
_LONG_DIGITS = re.compile(rb"\d{20,}")


def parse_line(payload: bytes | dict[str, Any] | Unreadable) -> dict[str, Any]:
    if isinstance(payload, dict):
        return payload
    if isinstance(payload, Unreadable):
        raise IngestError(payload.error)
    try:
        if _LONG_DIGITS.search(payload):
            raise orjson.JSONDecodeError("long integer", "", 0)
        sample = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        try:  # the stdlib accepts a few things orjson refuses (huge ints, lone surrogates)
            sample = json.loads(payload.decode("utf-8"))
        except UnicodeDecodeError as uexc:
            raise IngestError(f"line is not valid UTF-8: {uexc}") from None
        except json.JSONDecodeError as jexc:
            first = exc if str(exc) != "long integer" else jexc
            raise IngestError(f"malformed JSON: {first}") from None
    if not isinstance(sample, dict):
        raise IngestError(f"a sample must be a JSON object, got {type(sample).__name__}")
    return sample


def check_sample(
    sample: dict[str, Any],
    base_dir: str,
    text_key: str,
    image_key: str,
    image_check: str,
    media: MediaCache,
) -> None:
    """Validate field types and images; make image paths absolute (as Data-Juicer does)."""
    if text_key not in sample:
        raise IngestError(f"missing field {text_key!r}")
    if not isinstance(sample[text_key], str):
        raise IngestError(f"field {text_key!r} must be a string, got {_type(sample[text_key])}")
    if image_key not in sample or sample[image_key] is None:
        return
    images = sample[image_key]
    if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
        raise IngestError(
            f"field {image_key!r} must be a list of path strings, got {_type(images)}"
        )
    resolved = [
        p if os.path.isabs(p) else os.path.normpath(os.path.join(base_dir, p)) for p in images
    ]
    sample[image_key] = resolved
    try:
        for p in resolved:
            if image_check == "exists":
                media.file_size(p)
            elif image_check == "header":
                media.verify(p)
            elif image_check == "decode":
                decode_rgb(p)
    except MediaError as exc:
        raise IngestError(str(exc)) from None


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__
