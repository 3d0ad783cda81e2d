"""Data-Juicer <-> LLaVA conversion, byte-compatible with Data-Juicer 1.6.1's tools.

`dj_to_llava` reproduces `tools/fmt_conversion/multimodal/.../dj_to_llava.py` and
`llava_to_dj` its `llava_to_dj.py`: same options, same defaults, the same bytes
out for the same input (checked against golden files made by Data-Juicer itself,
tests/golden/llava/). Where Data-Juicer crashes (KeyError, IndexError, a blank
line, an id missing from the original file) we stop with a `ConversionError`
naming the file, line and id, and saying what to do. Both directions stream:
JSON Lines in, and the LLaVA JSON array is written element by element (and read
with ijson), so memory does not grow with the dataset.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dj_synth.pipelines.dataset import expand_dataset_path, open_lines
from dj_synth.pipelines.export import AtomicWriter

DJ_EOC = "<|__dj__eoc|>"
LLAVA_IMAGE = "<image>"
# "[[human]]: " -- letters only, as Data-Juicer's pattern (so "[[gpt4]]: " is not a role)
ROLE = re.compile(r"\[\[([a-zA-Z]*?)\]\]: ")
BROADCAST_POSITIONS = ("random", "before", "after", "follow")


class ConversionError(ValueError):
    """Input the converter cannot turn into the target format; says where and what to do."""


@dataclass
class DjToLlavaOptions:
    keep_only_first_image: bool = True
    eoc_special_token: str = DJ_EOC
    image_special_token: str = LLAVA_IMAGE
    sent_separator: str = "\n"
    restore_questions: bool = False
    original_llava_ds_path: str | None = None

    def check(self) -> None:
        if self.restore_questions and not self.original_llava_ds_path:
            raise ConversionError(
                "restore_questions needs original_llava_ds_path: the original LLaVA JSON whose "
                "questions are restored by id (e.g. input/pretrain_stage_1/stage_1.json)"
            )
        for name in ("eoc_special_token", "image_special_token", "sent_separator"):
            if not getattr(self, name):
                # Data-Juicer would silently turn every sentence into "" (s[:-0])
                raise ConversionError(f"{name} must not be empty")


@dataclass
class LlavaToDjOptions:
    str_id: bool = True
    split_chunk: bool = False
    image_broadcast: bool = False
    image_broadcast_pos: str = "random"
    eoc_special_token: str = DJ_EOC
    image_special_token: str = LLAVA_IMAGE
    add_eoc_at_last: bool = True
    sent_separator: str = "\n"
    only_keep_caption: bool = False
    seed: int | None = 0  # ours: Data-Juicer's "random" broadcast is unseeded

    def check(self) -> None:
        if self.image_broadcast and not self.split_chunk:
            raise ConversionError("image_broadcast needs split_chunk (one chunk per round)")
        if self.image_broadcast and self.image_broadcast_pos not in BROADCAST_POSITIONS:
            raise ConversionError(
                f"image_broadcast_pos must be one of {', '.join(BROADCAST_POSITIONS)}, "
                f"got {self.image_broadcast_pos!r}"
            )


# ---------------------------------------------------------------------------
# dj -> llava


def clean_sentence(sentence: str, round_index: int, opts: DjToLlavaOptions) -> str:
    """Data-Juicer's `clean_sentence`: strip, drop one trailing separator and one eoc, and
    after the first sentence (`round_index > 0`) an image token at either edge."""
    sep, eoc, image = opts.sent_separator, opts.eoc_special_token, opts.image_special_token
    sentence = sentence.strip()
    if sentence.endswith(sep):
        sentence = sentence[: -len(sep)].strip()
    if sentence.endswith(eoc):
        sentence = sentence[: -len(eoc)].strip()
    if round_index > 0 and opts.keep_only_first_image:
        if sentence.startswith(image):
            sentence = sentence[len(image) :].strip()
            if sentence.startswith(sep):
                sentence = sentence[len(sep) :].strip()
        if sentence.endswith(image):
            sentence = sentence[: -len(image)].strip()
            if sentence.endswith(sep):
                sentence = sentence[: -len(sep)].strip()
    return sentence


@dataclass
class _Question:
    id: Any  # the original id, with its original type
    first_turn: Any  # the original first conversation turn, verbatim
    answer_role: Any


class OriginalIndex:
    """id -> the original sample's id, first turn and answer role (what restoring needs).

    Built by streaming the original LLaVA JSON; as in Data-Juicer, ids compare as
    strings and the last sample with a repeated id wins.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._by_id: dict[str, _Question | str] = {}
        for index, sample in enumerate(_iter_json_array(path)):
            if not isinstance(sample, dict) or "id" not in sample:
                raise ConversionError(f"{path}: sample #{index} has no 'id'")
            convs = sample.get("conversations")
            if not isinstance(convs, list) or len(convs) < 2 or not isinstance(convs[1], dict):
                # kept as a problem, raised only if a DJ sample needs this id
                self._by_id[str(sample["id"])] = (
                    f"original sample #{index} (id {sample['id']!r}) has no question/answer "
                    "pair in 'conversations' to restore from"
                )
                continue
            self._by_id[str(sample["id"])] = _Question(sample["id"], convs[0], convs[1].get("from"))

    def lookup(self, sid: Any) -> _Question | str | None:
        if isinstance(sid, str) and sid in self._by_id:
            return self._by_id[sid]
        return self._by_id.get(str(sid))


def dj_to_llava(
    dj_ds_path: str | list[str], target_llava_ds_path: str, opts: DjToLlavaOptions | None = None
) -> int:
    """Convert Data-Juicer JSONL (a file, folder or glob) to one LLaVA JSON file; returns the count."""
    opts = opts or DjToLlavaOptions()
    opts.check()
    if not target_llava_ds_path.endswith(".json"):
        raise ConversionError(f"the LLaVA target must be a .json file, got {target_llava_ds_path}")
    inputs = expand_dataset_path(dj_ds_path)
    index = OriginalIndex(opts.original_llava_ds_path) if opts.restore_questions else None
    with AtomicWriter(target_llava_ds_path) as out:
        out.write_raw(b"[")  # json.dump's list layout: "[a, b]", no newline at the end
        count = 0
        for path in inputs:
            for line_no, raw, _ in open_lines(path):
                sample = _parse_dj_line(path, line_no, raw)
                converted = _convert_dj_sample(sample, opts, index, f"{path}:{line_no}")
                out.write_raw(((", " if count else "") + json.dumps(converted)).encode())
                count += 1
        out.write_raw(b"]")
    return count


def _parse_dj_line(path: str, line_no: int, raw: bytes) -> dict[str, Any]:
    where = f"{path}:{line_no}"
    if not raw.strip():
        raise ConversionError(
            f"{where}: blank line. Data-Juicer's converter stops on it too; remove blank lines "
            "(e.g. `sed -i '/^[[:space:]]*$/d' FILE`) and retry"
        )
    try:
        sample = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConversionError(f"{where}: not valid JSON ({exc}); fix or remove the line") from None
    if not isinstance(sample, dict):
        raise ConversionError(f"{where}: a sample must be a JSON object")
    return sample


def _convert_dj_sample(
    sample: dict[str, Any], opts: DjToLlavaOptions, index: OriginalIndex | None, where: str
) -> dict[str, Any]:
    if "id" not in sample:
        raise ConversionError(
            f"{where}: the sample has no 'id'. LLaVA samples need one (and restore_questions "
            "finds the question by it): add the id of the sample it came from"
        )
    sid = sample["id"]
    text = sample.get("text")
    if not isinstance(text, str):
        raise ConversionError(f"{where} (id {sid!r}): 'text' is missing or not a string")
    images = sample.get("images", [])
    if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
        raise ConversionError(f"{where} (id {sid!r}): 'images' must be a list of paths")
    distinct = list(dict.fromkeys(images))
    if len(distinct) > 1:
        raise ConversionError(
            f"{where} (id {sid!r}): {len(distinct)} distinct images, but a LLaVA sample holds "
            "one: split the sample or keep one image"
        )
    if index is not None:
        found = index.lookup(sid)
        if found is None:
            raise ConversionError(
                f"{where}: id {sid!r} is not in the original dataset {index.path}. Every id, "
                "synthetic samples' included, must exist there: give a generated sample the id "
                "of the sample it was made from"
            )
        if isinstance(found, str):
            raise ConversionError(f"{where} (id {sid!r}): {found}")
        sid = found.id
        conversations = [
            found.first_turn,
            {"from": found.answer_role, "value": clean_sentence(text, 1, opts)},
        ]
    else:
        parts = ROLE.split(text)
        if parts[0] == "":
            parts = parts[1:]
        if len(parts) % 4 != 0:
            raise ConversionError(
                f"{where} (id {sid!r}): the text is not a sequence of complete "
                "'[[human]]: ...' / '[[gpt]]: ...' rounds (found "
                f"{len(parts)} role/sentence parts; text before the first role counts too). "
                "Caption-only text needs restore_questions with the original LLaVA file"
            )
        conversations = [
            {"from": parts[2 * i], "value": clean_sentence(parts[2 * i + 1], i, opts)}
            for i in range(len(parts) // 2)
        ]
    converted: dict[str, Any] = {"id": sid, "conversations": conversations}
    if len(distinct) == 1:
        converted["image"] = distinct[0]
    return converted


# ---------------------------------------------------------------------------
# llava -> dj


def llava_to_dj(
    llava_ds_path: str, target_ds_path: str, opts: LlavaToDjOptions | None = None
) -> int:
    """Convert a LLaVA JSON file to Data-Juicer JSONL; returns the count."""
    opts = opts or LlavaToDjOptions()
    opts.check()
    if not target_ds_path.endswith(".jsonl"):
        raise ConversionError(f"the Data-Juicer target must be a .jsonl file, got {target_ds_path}")
    if not os.path.exists(llava_ds_path):
        raise ConversionError(f"input LLaVA dataset {llava_ds_path} does not exist")
    rng = random.Random(opts.seed)
    count = 0
    with AtomicWriter(target_ds_path) as out:
        for index, sample in enumerate(_iter_json_array(llava_ds_path)):
            where = f"{llava_ds_path}: sample #{index}"
            converted = _convert_llava_sample(sample, opts, rng, where)
            try:
                out.write(json.dumps(converted, ensure_ascii=False).encode())
            except UnicodeEncodeError as exc:  # Data-Juicer crashes here, half-written
                raise ConversionError(
                    f"{where} (id {converted['id']!r}): a lone UTF-16 surrogate "
                    f"({exc.object[exc.start : exc.end]!r}) cannot be written as UTF-8; fix the text"
                ) from None
            count += 1
    return count


def _convert_llava_sample(
    sample: Any, opts: LlavaToDjOptions, rng: random.Random, where: str
) -> dict[str, Any]:
    if not isinstance(sample, dict) or "id" not in sample:
        raise ConversionError(f"{where}: the sample has no 'id'")
    sid = str(sample["id"]) if opts.str_id else sample["id"]
    image = sample.get("image", "")
    convs = sample.get("conversations")
    if not isinstance(convs, list) or not all(isinstance(c, dict) for c in convs):
        raise ConversionError(f"{where} (id {sid!r}): 'conversations' must be a list of turns")
    if len(convs) % 2:
        raise ConversionError(
            f"{where} (id {sid!r}): {len(convs)} turns; conversations must be (human, gpt) pairs"
        )
    sep, token = opts.sent_separator, opts.image_special_token
    images: list[Any] = []
    first_pos = ""
    rounds = []
    for i in range(len(convs) // 2):
        human, robot = convs[2 * i], convs[2 * i + 1]
        try:
            q, a = human["value"], robot["value"]
            q_role, a_role = human["from"], robot["from"]
        except KeyError as exc:
            raise ConversionError(f"{where} (id {sid!r}): turn without {exc}") from None
        if image == "":
            pass
        elif i == 0:
            if q.startswith(token):
                first_pos = "before"
            elif q.endswith(token):
                first_pos = "after"
            else:
                raise ConversionError(
                    f"{where} (id {sid!r}): the first question must start or end with {token!r} "
                    "(where the image goes); fix the sample or its image_special_token"
                )
            images.append(image)
        elif opts.image_broadcast:
            pos = opts.image_broadcast_pos
            if pos == "random":
                pos = "before" if rng.random() < 0.5 else "after"
            elif pos == "follow":
                pos = "before" if first_pos == "before" else "after"
            q = token + sep + q if pos == "before" else q + sep + token
            images.append(image)
        if opts.only_keep_caption:
            rounds.append(token + sep + a)
        else:
            rounds.append(f"[[{q_role}]]: " + q + sep + f"[[{a_role}]]: " + a)
    join = f" {opts.eoc_special_token}{sep}" if opts.split_chunk else sep
    text = join.join(rounds)
    if opts.add_eoc_at_last:
        text += f" {opts.eoc_special_token}"
    return {"id": sid, "text": text, "images": images}


# ---------------------------------------------------------------------------
# shared I/O


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _has_surrogate_escapes(path: str) -> bool:
    with open(path, "rb") as fh:
        tail = b""
        while chunk := fh.read(1 << 20):
            if _SURROGATE_ESCAPE.search(tail + chunk):
                return True
            tail = chunk[-5:]
    return False


def _iter_json_array(path: str) -> Iterator[Any]:
    """Elements of a top-level JSON array, streamed (ijson), values as json.load gives them.

    ijson's fast C backend turns a lone UTF-16 surrogate escape into "?"; files that
    hold surrogate escapes at all are read with its exact pure-Python backend.
    """
    import ijson

    try:
        items = ijson.items
        if _has_surrogate_escapes(path):
            from ijson.backends import python as exact

            items = exact.items
        with open(path, "rb") as fh:
            yield from items(fh, "item", use_float=True)
    except FileNotFoundError:
        raise ConversionError(f"{path} does not exist") from None
    except ijson.JSONError as exc:
        raise ConversionError(f"{path}: not a valid JSON array of samples ({exc})") from None
