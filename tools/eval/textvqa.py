"""TextVQA scoring, matching the upstream `eval_textvqa.py` + `m4c_evaluator.py` numbers.

The challenge toolkit writes answers but ships no TextVQA scorer, so a local
number is only useful if it is the *same* number: the answer normalisation and
the 10-annotator leave-one-out soft score follow the EvalAI/VQA evaluator rule
for rule, quirks included (documented where they look like bugs).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

PathT = str | PathLike[str]

# The VQA/EvalAI contraction table, kept verbatim as data (its odd entries too:
# capitalised keys never match after lowercasing, and "somebody'd" maps the
# "wrong" way round) because changing it would change scores.
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's",
    "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't",
    "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't",
    "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock",
    "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's",
    "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll",
    "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've",
    "whens": "when's", "whered": "where'd", "wheres": "where's", "whereve": "where've",
    "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll",
    "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all",
    "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}  # fmt: skip

NUMBER_MAP: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATIONS: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
    "@", "`", ",", "?", "!",
)  # fmt: skip
# `(?!<=\d)` is upstream's mistyped look-behind: in effect a period is removed
# unless a digit FOLLOWS it ("3.5" keeps its point, "end." loses it).
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
# Upstream calls `PERIOD_STRIP.sub("", text, re.UNICODE)`: the flag lands in the
# `count` slot, so at most 32 periods are stripped. Kept for identical scores.
_PERIOD_STRIP_COUNT = int(re.UNICODE)

ANSWER_SUFFIX = "Answer the question using a single word or phrase."
OCR_PREFIX = "Reference OCR token: "
_OCR_QA = re.compile(r"Question: (.*?) Short answer:", re.DOTALL)


def _word_tokenize(text: str) -> str:
    """Lowercase, drop commas/question marks, split off possessive 's (EvalAI step 1)."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's")
    return text.strip()


def _process_punctuation(text: str) -> str:
    """Delete or blank out punctuation; the test looks at the ORIGINAL text each time."""
    out = text
    has_digit_comma = COMMA_STRIP.search(text) is not None
    for p in PUNCTUATIONS:
        if p + " " in text or " " + p in text or has_digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return PERIOD_STRIP.sub("", out, count=_PERIOD_STRIP_COUNT)


def _process_digit_article(text: str) -> str:
    """Number words -> digits, drop articles, then restore contractions."""
    words = [NUMBER_MAP.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(answer: str) -> str:
    """EvalAI answer normalisation, so "Two", "2" and "the two." all compare equal."""
    text = _word_tokenize(answer)
    text = text.replace("\n", " ").replace("\t", " ").strip()
    text = _process_punctuation(text)
    return _process_digit_article(text)


def soft_score(pred: str, gt_answers: Sequence[str]) -> float:
    """VQA soft accuracy: mean over the 10 leave-one-out subsets of min(1, matches/3).

    Exactly 10 human answers are required (upstream asserts it); with another
    count the leave-one-out average would not be the published metric.
    """
    if len(gt_answers) != 10:
        raise ValueError(f"TextVQA soft score needs exactly 10 answers, got {len(gt_answers)}")
    normed = [normalize_answer(a) for a in gt_answers]
    target = normalize_answer(pred)
    hits = [a == target for a in normed]
    total_hits = sum(hits)
    accs = [min(1.0, (total_hits - int(hit)) / 3) for hit in hits]
    return sum(accs) / len(accs)


def prompt_processor(prompt: str) -> str:
    """Recover the lowercased question from a recorded prompt (the annotation lookup key)."""
    lines = prompt.split("\n")
    if prompt.startswith("OCR tokens: "):
        match = _OCR_QA.search(prompt)
        if match is None:
            raise ValueError(f"unrecognised 'OCR tokens:' prompt: {prompt[:80]!r}")
        question = match.group(1)
    elif OCR_PREFIX in prompt and len(lines) == 3:
        question = lines[1] if prompt.startswith(OCR_PREFIX.rstrip()) else lines[0]
    elif len(lines) == 2:
        question = lines[0]
    else:
        raise ValueError(f"unrecognised TextVQA prompt shape: {prompt[:80]!r}")
    return question.lower()


def question_text(question: str, ocr_tokens: Sequence[str]) -> str:
    """The question file's `text` field (LLaVA's llava_textvqa_val_v051_ocr.jsonl layout).

    With no OCR tokens the reference line is omitted, giving the 2-line form
    that `prompt_processor` also understands.
    """
    if ocr_tokens:
        return f"{question}\n{OCR_PREFIX}{', '.join(ocr_tokens)}\n{ANSWER_SUFFIX}"
    return f"{question}\n{ANSWER_SUFFIX}"


def load_annotations(path: PathT) -> dict[tuple[str, str], list[str]]:
    """TextVQA_0.5.1_val.json -> {(image_id, question.lower()): 10 answers}."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict) or "data" not in data:
        raise ValueError(f"{path}: not a TextVQA annotation file (no top-level 'data')")
    return {
        (str(item["image_id"]), str(item["question"]).lower()): list(item["answers"])
        for item in data["data"]
    }


def read_jsonl(path: PathT) -> list[dict[str, Any]]:
    """Read a JSON-lines file, skipping blank lines (chunk concatenation leaves none, users may)."""
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from exc
    return rows


def merge_answer_chunks(
    folder: PathT, num_chunks: int, out_name: str = "bm1.jsonl", out: PathT | None = None
) -> Path:
    """Concatenate `<N>_<i>.jsonl` chunk answers in order, as textvqa.sh does, into
    `folder/out_name` (or `out`); written atomically, so a reader never sees half a merge."""
    folder = Path(folder)
    chunks = [folder / f"{num_chunks}_{i}.jsonl" for i in range(num_chunks)]
    missing = [c for c in chunks if not c.is_file()]
    if missing:
        raise FileNotFoundError(f"missing answer chunk file: {missing[0]}")
    target = Path(out) if out is not None else folder / out_name
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as dst:
        for chunk in chunks:
            text = chunk.read_text(encoding="utf-8")
            if text and not text.endswith("\n"):
                text += "\n"
            dst.write(text)
    os.replace(tmp, target)
    return target


def per_question(
    annotations: dict[tuple[str, str], list[str]], results: Iterable[dict[str, Any]]
) -> tuple[list[dict[str, Any]], int]:
    """Each matched answer's soft score, keyed as upstream looks it up (``question_id`` -- the
    TextVQA image_id -- and the lowercased question; an image has several questions), and the
    number of results that matched no annotation. ``dj-eval compare`` pairs runs by this key."""
    rows: list[dict[str, Any]] = []
    unmatched = 0
    for result in results:
        key = (str(result["question_id"]), prompt_processor(str(result["prompt"])))
        answers = annotations.get(key)
        if answers is None:
            unmatched += 1
            continue
        score = soft_score(str(result["text"]), answers)
        rows.append({"question_id": key[0], "question": key[1], "score": score})
    return rows, unmatched


def score_results(
    annotations: dict[tuple[str, str], list[str]], results: Iterable[dict[str, Any]]
) -> dict[str, float | int]:
    """Score answer records against loaded annotations (upstream lookup key)."""
    return summarize_rows(*per_question(annotations, results))


def summarize_rows(rows: Sequence[dict[str, Any]], unmatched: int) -> dict[str, float | int]:
    """Accuracy (percent) of ``per_question`` rows."""
    if not rows:
        raise ValueError(
            "no result matched an annotation: question_id must be the TextVQA image_id "
            "and the prompt must carry the annotation's question"
        )
    scores = [row["score"] for row in rows]
    return {
        "accuracy": 100.0 * sum(scores) / len(scores),
        "samples": len(scores),
        "unmatched": unmatched,
    }


def score_textvqa(annotation_file: PathT, result_files: Sequence[PathT]) -> dict[str, float | int]:
    """Accuracy (percent) of answer jsonl files pooled together against the val annotations.

    Unlike upstream (KeyError on the first stray result) unmatched results are
    counted and reported, so a partial run can still be judged.
    """
    return summarize_rows(*textvqa_per_question(annotation_file, result_files))


def textvqa_per_question(
    annotation_file: PathT, result_files: Sequence[PathT]
) -> tuple[list[dict[str, Any]], int]:
    """``per_question`` of answer jsonl files pooled together (what ``score_textvqa`` scores)."""
    annotations = load_annotations(annotation_file)
    results: list[dict[str, Any]] = []
    for path in result_files:
        results.extend(read_jsonl(path))
    return per_question(annotations, results)
