"""Reading Data-Juicer-format datasets as a stream, and checking each sample on entry.

Input: a JSONL file, a folder or glob of shards, `.gz` / `.zst` compressed
JSONL, or Parquet. Lines are read lazily in batches that never cross files (so
relative image paths resolve against one folder per batch); memory does not grow
with the dataset. Parsing and checking happen in the workers (`ingest`), so the
reading process only moves bytes.
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
class RawItem:
    ref: SampleRef
    payload: bytes | dict[str, Any]  # a JSON line, or a row already decoded (Parquet)


def expand_dataset_path(spec: str | list[str]) -> list[str]:
    """Files named by a path, folder, glob, or a list of those; sorted for determinism."""
    specs = [spec] if isinstance(spec, str) else list(spec)
    files: list[str] = []
    for item in specs:
        if os.path.isdir(item):
            found = sorted(
                os.path.join(root, f)
                for root, _, names in os.walk(item)
                for f in names
                if f.endswith(SUFFIXES)
            )
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


def open_lines(path: str) -> Iterator[tuple[int, bytes, int]]:
    """(line number, line bytes, compressed bytes read so far) of a JSONL file, .gz/.zst too.

    Blank lines are yielded (callers decide); a UTF-8 BOM on line 1 is removed.
    """
    with open(path, "rb") as raw:
        if path.endswith(".gz"):
            stream: Any = gzip.GzipFile(fileobj=raw)
        elif path.endswith(".zst"):
            import zstandard

            stream = io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw))
        else:
            stream = raw
        for line_no, line in enumerate(stream, start=1):
            if line_no == 1 and line.startswith(BOM):
                line = line[len(BOM) :]
            yield line_no, line, raw.tell()


class DatasetReader:
    """Streams `RawItem` batches; `bytes_done / total_bytes` drives progress and ETA."""

    def __init__(self, spec: str | list[str]) -> None:
        self.files = expand_dataset_path(spec)
        self.total_bytes = sum(os.path.getsize(f) for f in self.files)
        self.bytes_done = 0
        self.blank_lines = 0
        self._ordinal = 0

    def batches(self, size: int) -> Iterator[list[RawItem]]:
        for path in self.files:
            done_before = self.bytes_done
            items: list[RawItem] = []
            for line_no, payload, pos in self._records(path):
                self.bytes_done = done_before + pos
                items.append(RawItem(SampleRef(self._ordinal, path, line_no), payload))
                self._ordinal += 1
                if len(items) >= size:
                    yield items
                    items = []
            self.bytes_done = done_before + os.path.getsize(path)
            if items:
                yield items

    def _records(self, path: str) -> Iterator[tuple[int, bytes | dict[str, Any], int]]:
        if path.endswith(".parquet"):
            yield from self._parquet(path)
            return
        for line_no, line, pos in open_lines(path):
            if not line.strip():
                self.blank_lines += 1
                continue
            yield line_no, line, pos

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


def parse_line(payload: bytes | dict[str, Any]) -> dict[str, Any]:
    if isinstance(payload, dict):
        return payload
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
