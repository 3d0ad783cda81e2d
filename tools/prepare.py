"""Training-data preparation: the challenge toolkit's sample cap and global-batch check.

`cap_samples` selects exactly what the toolkit's `check_sample_number.py` selects
(`random.seed(1024)` then `random.sample(lines, N)` when there are more than N
lines, else all of them in order) and writes them the way it writes them
(jsonlines: `json.dumps(ensure_ascii=False)` per line). `random.sample` only
draws indices, so sampling `range(len)` with the same seed picks the same
samples; we read the file twice instead of holding it, and keep only the N
chosen lines. `top_samples` is our quality-aware alternative: the N samples
with the highest value of a stats key.

With `fill`, fewer samples than N are repeated up to exactly N, as the published
solutions repeated their best data 2-4x: every sample `N // total` times, then
`N % total` of them once more -- the best first with a stats key, else in the order
the toolkit's seeded sampler draws them (`random.Random(1024).sample`). Copies are
written in whole passes over the input (input order), then the extra copies (input
order); training shuffles them anyway.
"""

from __future__ import annotations

import heapq
import json
import random
from collections.abc import Iterator
from typing import Any

from dj_synth.pipelines.dataset import open_lines
from dj_synth.pipelines.export import AtomicWriter

from .llava import ConversionError

TOOLKIT_SEED = 1024
CHALLENGE_CAP = 200_000
GLOBAL_BATCH = {"pretrain": 256, "finetune": 128}


class UnknownStatError(ConversionError):
    """``--by KEY`` names a stats key no sample has (a usage mistake, not bad data)."""


def _samples(path: str) -> Iterator[tuple[int, Any]]:
    for line_no, raw, _ in open_lines(path):
        if not raw.strip():
            raise ConversionError(
                f"{path}:{line_no}: blank line (the toolkit's reader stops on it)"
            )
        try:
            yield line_no, json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConversionError(f"{path}:{line_no}: not valid JSON ({exc})") from None


def _dump(sample: Any) -> bytes:
    return json.dumps(sample, ensure_ascii=False).encode()


def cap_samples(
    in_path: str, out_path: str, max_samples: int = CHALLENGE_CAP, fill: bool = False
) -> int:
    """At most `max_samples` samples, chosen and ordered as the toolkit's sampler does;
    with `fill`, exactly `max_samples` (repeats in the toolkit's seeded order)."""
    total = sum(1 for _ in _samples(in_path))
    if fill and total < max_samples:
        order = random.Random(TOOLKIT_SEED).sample(range(total), total)
        return _write_filled(in_path, out_path, total, max_samples, order)
    if max_samples < total:
        order = random.Random(TOOLKIT_SEED).sample(range(total), max_samples)
        position = {index: pos for pos, index in enumerate(order)}
        chosen: list[bytes | None] = [None] * max_samples
        for index, (_, sample) in enumerate(_samples(in_path)):
            if index in position:
                chosen[position[index]] = _dump(sample)
        lines: Iterator[bytes] = (line for line in chosen if line is not None)
    else:
        lines = (_dump(sample) for _, sample in _samples(in_path))
    count = 0
    with AtomicWriter(out_path) as out:
        for line in lines:
            out.write(line)
            count += 1
    return count


def _write_filled(
    in_path: str, out_path: str, total: int, target: int, preference: list[int]
) -> int:
    """`target` samples from `total`: whole passes over the input, then the first
    `target % total` samples of `preference` once more (each pass in input order)."""
    if total == 0:
        raise ConversionError(f"{in_path}: no samples to fill the cap with")
    passes, extra = divmod(target, total)
    extras = set(preference[:extra])
    count = 0
    with AtomicWriter(out_path) as out:
        for _ in range(passes):
            for _, sample in _samples(in_path):
                out.write(_dump(sample))
                count += 1
        if extras:
            for index, (_, sample) in enumerate(_samples(in_path)):
                if index in extras:
                    out.write(_dump(sample))
                    count += 1
    return count


def stat_value(sample: dict[str, Any], key: str, stats: dict[str, Any] | None = None) -> float:
    """A sample's stat (a list, e.g. one score per chunk, is averaged); -inf if absent."""
    source = stats if stats is not None else sample.get("__dj__stats__") or {}
    value = source.get(key)
    if isinstance(value, list):
        value = sum(value) / len(value) if value else None
    return float(value) if isinstance(value, (int, float)) else float("-inf")


def top_samples(
    in_path: str, out_path: str, key: str, max_samples: int = CHALLENGE_CAP,
    stats_path: str | None = None, fill: bool = False,
) -> int:  # fmt: skip
    """The `max_samples` samples with the highest `key`, written in input order.

    Stats come from each sample's `__dj__stats__` (`keep_stats_in_res_ds: true`) or
    from the export's side file `<export>_stats.jsonl` (line-aligned). Ties keep
    the earlier sample; a sample without the key ranks last. Memory holds the N best
    (value, index) pairs only. With `fill`, fewer samples are repeated up to exactly
    `max_samples`, the extra copies going to the best first.
    """
    stats_iter = (s for _, s in _samples(stats_path)) if stats_path else None
    best: list[tuple[float, int]] = []  # min-heap of (value, -index)
    total = 0
    known: set[str] = set()  # the stats keys seen, for the message when `key` is not one
    found = False
    for index, (_, sample) in enumerate(_samples(in_path)):
        stats = next(stats_iter, None) if stats_iter is not None else None
        if stats_iter is not None:
            if stats is None:
                raise ConversionError(f"{stats_path} has fewer lines than {in_path}")
            stats = stats.get("__dj__stats__", stats)
        source = stats if stats is not None else sample.get("__dj__stats__")
        if isinstance(source, dict):
            found = found or key in source
            if not found:
                known.update(source)
        item = (stat_value(sample, key, stats), -index)
        if len(best) < max_samples:
            heapq.heappush(best, item)
        elif item > best[0]:
            heapq.heapreplace(best, item)
        total += 1
    if total and not found:
        where = stats_path or f"{in_path} (__dj__stats__)"
        keys = ", ".join(sorted(known)) or (
            "none; set keep_stats_in_res_ds: true in the recipe, or pass --stats-file "
            "<export>_stats.jsonl"
        )
        raise UnknownStatError(
            f"--by {key!r}: no sample has this stats key; the keys in {where}: {keys}"
        )
    if fill and total < max_samples:
        ranked = [-neg for _, neg in sorted(best, reverse=True)]  # best first, ties earlier
        return _write_filled(in_path, out_path, total, max_samples, ranked)
    keep = {-neg for _, neg in best}
    count = 0
    with AtomicWriter(out_path) as out:
        for index, (_, sample) in enumerate(_samples(in_path)):
            if index in keep:
                out.write(_dump(sample))
                count += 1
    return count


def check_global_batch(per_device: int, grad_accum: int, num_gpus: int, stage: str) -> str:
    """The toolkit's rule: per-device batch x accumulation x GPUs = 256 / 128. Raises if not."""
    if min(per_device, grad_accum, num_gpus) < 1:
        raise ConversionError(
            f"{stage}: per-device batch ({per_device}), gradient accumulation ({grad_accum}) "
            f"and GPUs ({num_gpus}) must all be at least 1"
        )
    target = GLOBAL_BATCH[stage]
    total = per_device * grad_accum * num_gpus
    shown = f"{per_device} (per-device batch) x {grad_accum} (gradient accumulation) x {num_gpus} (GPUs) = {total}"
    if total != target:
        need = target / (per_device * num_gpus)
        hint = (
            f"; with this batch and GPU count use gradient accumulation {int(need)}"
            if need == int(need) and need >= 1
            else ""
        )
        raise ConversionError(f"{stage} global batch must be {target}: {shown}{hint}")
    return f"{stage} global batch OK: {shown}"
