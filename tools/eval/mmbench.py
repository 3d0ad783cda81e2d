"""MMBench (dev TSV) prompts, answer records, upload xlsx and circular accuracy.

Mirrors upstream `model_vqa_mmbench.py` (prompt/answer layout),
`convert_mmbench_for_submission.py` (xlsx) and `eval_mmbench.py` (circular
accuracy) so local numbers and files match what the challenge toolkit makes.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

PathT = str | PathLike[str]

DEFAULT_SPLIT = "mmbench_dev_20230712"  # the challenge's stage-1 MMBench file
OPTION_CHARS: tuple[str, ...] = ("A", "B", "C", "D")
REQUIRED_COLUMNS = ("index", "question", "answer")
# Columns the submission converter drops before inserting `prediction`.
UPLOAD_DROP = ("hint", "category", "source", "image", "comment", "l2-category")
PREDICTION_POS = 6
CIRCULAR_BASE = 1_000_000
SUFFIX = {
    "en": "Answer with the option's letter from the given choices directly.",
    "cn": "请直接回答选项字母。",
}


def load_mmbench(path: PathT) -> pd.DataFrame:
    """Read the MMBench TSV; only `index, question, answer` are required."""
    df = pd.read_table(path)
    # eval_mmbench lower-cases headers except the option letters; do the same.
    df.columns = [c if c in OPTION_CHARS else str(c).lower() for c in df.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: MMBench TSV lacks required column(s): {', '.join(missing)}")
    df["index"] = df["index"].astype("int64")
    return df


def is_none(value: Any) -> bool:
    """Upstream's empty-cell test: None, NaN, or the strings "nan"/"none"/"" in any case."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in {"nan", "none", ""}


def _get(row: Mapping[str, Any] | pd.Series, key: str) -> Any:
    """Column value or None when the column is absent (hand-made TSVs)."""
    return row[key] if key in row else None


def options_of(row: Mapping[str, Any] | pd.Series) -> list[str]:
    """Options A, B, C, D in order, stopping at the first empty one (as upstream)."""
    options: list[str] = []
    for char in OPTION_CHARS:
        value = _get(row, char)
        if is_none(value):
            break
        options.append(str(value))
    return options


def build_prompt(
    row: Mapping[str, Any] | pd.Series, lang: str = "en", with_instruction: bool = True
) -> tuple[str, list[str], list[str]]:
    """(text, options, option_chars) for one row, in upstream's `--single-pred-prompt` form.

    Upstream records `prompt` WITHOUT the answer instruction; pass
    `with_instruction=False` to reproduce that field.
    """
    if lang not in SUFFIX:
        raise ValueError(f"unknown MMBench language {lang!r} (expected 'en' or 'cn')")
    question = str(row["question"])
    hint = _get(row, "hint")
    if not is_none(hint):
        question = f"{hint}\n{question}"
    options = options_of(row)
    chars = list(OPTION_CHARS[: len(options)])
    for char, option in zip(chars, options):
        question += f"\n{char}. {option}"
    if with_instruction:
        question += "\n" + SUFFIX[lang]
    return question, options, chars


def decode_image(row: Mapping[str, Any] | pd.Series) -> Image.Image:
    """The row's base64 `image` cell as a PIL image (pixels loaded, file closed)."""
    data = _get(row, "image")
    if is_none(data):
        raise ValueError(f"MMBench row {_get(row, 'index')} has no image")
    image = Image.open(io.BytesIO(base64.b64decode(str(data))))
    image.load()
    return image


def answer_record(
    row: Mapping[str, Any] | pd.Series,
    prompt: str,
    text: str,
    model_id: str,
    round_id: int = 0,
    options: Sequence[str] | None = None,
    option_chars: Sequence[str] | None = None,
) -> dict[str, Any]:
    """One answers-jsonl line, keys in upstream order (the converter reads it back)."""
    if options is None:
        options = options_of(row)
    if option_chars is None:
        option_chars = OPTION_CHARS[: len(options)]
    return {
        "question_id": int(row["index"]),
        "round_id": round_id,
        "prompt": prompt,
        "text": text,
        "options": list(options),
        "option_char": list(option_chars),
        "answer_id": uuid.uuid4().hex,
        "model_id": model_id,
        "metadata": {},
    }


def load_predictions(answer_jsonls: Sequence[PathT]) -> dict[int, str]:
    """question_id -> raw answer text; later lines win, like the converter's `loc` writes."""
    preds: dict[int, str] = {}
    for path in answer_jsonls:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from exc
                preds[int(rec["question_id"])] = str(rec["text"])
    return preds


def _as_frame(annotation: PathT | pd.DataFrame) -> pd.DataFrame:
    return annotation if isinstance(annotation, pd.DataFrame) else load_mmbench(annotation)


def write_upload_xlsx(
    annotation_tsv: PathT | pd.DataFrame, answer_jsonls: Sequence[PathT], xlsx_path: PathT
) -> Path:
    """The submission xlsx: TSV minus the bulky/meta columns, raw `prediction` at column 6."""
    df = _as_frame(annotation_tsv)
    preds = load_predictions(answer_jsonls)
    out = df.drop(columns=[c for c in UPLOAD_DROP if c in df.columns])
    values = [preds.get(int(i)) for i in df["index"]]
    out.insert(min(PREDICTION_POS, len(out.columns)), "prediction", values)
    xlsx = Path(xlsx_path)
    xlsx.parent.mkdir(parents=True, exist_ok=True)
    out.to_excel(xlsx, engine="openpyxl", index=False)
    return xlsx


# Only the word "answer" is case-insensitive: "the answer is a cat" names no option.
_ANSWER_IS = re.compile(r"(?i:answer)\s*(?:is|:)\s*\(?([A-Z])\b")
_LEADING = re.compile(r"^\(?([A-Z])(?:\)|\.|:|,|\s*$)")


def extract_letter(
    prediction: str, options: Sequence[str], option_chars: Sequence[str] | None = None
) -> str | None:
    """Best-effort option letter from a free-form reply (only for `match="letter"`).

    Accepts "A", "A.", "A)", "(A)", "A: ...", "The answer is A", or the exact text
    of one option; a reply like "A dog" is NOT read as option A.
    """
    chars = list(option_chars) if option_chars is not None else list(OPTION_CHARS)
    text = prediction.strip()
    for pattern in (_LEADING, _ANSWER_IS):
        m = pattern.search(text)
        if m and m.group(1).upper() in chars:
            return m.group(1).upper()
    norm = text.rstrip(".").strip().lower()
    for char, option in zip(chars, options):
        if norm and norm == str(option).strip().rstrip(".").lower():
            return char
    return None


def _pct(num: int, den: int) -> float:
    return 100.0 * num / den if den else 0.0


def mmbench_outcomes(
    annotation: PathT | pd.DataFrame, predictions: Mapping[int, str], match: str = "exact"
) -> list[dict[str, Any]]:
    """One row per TSV row: ``index``, its circular ``group`` (``index % 1e6``: a main question
    and its shifted copies), ``answered``, ``correct`` (False when unanswered) and
    ``category``. ``score_mmbench`` aggregates these; ``dj-eval compare`` resamples by group."""
    if match not in {"exact", "letter"}:
        raise ValueError(f"match must be 'exact' or 'letter', not {match!r}")
    df = _as_frame(annotation)
    has_cat = "category" in df.columns
    rows: list[dict[str, Any]] = []
    for _, row in df.iterrows():
        idx = int(row["index"])
        answer = str(row["answer"]).strip()
        pred = predictions.get(idx)
        if pred is None:
            correct = False
        elif match == "letter":
            options = options_of(row)
            got = extract_letter(str(pred), options, OPTION_CHARS[: max(len(options), 1)])
            correct = got is not None and got == answer
        else:
            correct = str(pred).strip() == answer
        category = None
        if has_cat:
            category = "" if is_none(row["category"]) else str(row["category"])
        rows.append(
            {"index": idx, "group": idx % CIRCULAR_BASE, "answered": pred is not None,
             "correct": correct, "category": category}
        )  # fmt: skip
    return rows


def score_mmbench(
    annotation: PathT | pd.DataFrame, predictions: Mapping[int, str], match: str = "exact"
) -> dict[str, Any]:
    """Plain and circular accuracy (percent), overall and per category.

    Plain accuracy counts every row that has a prediction. Circular accuracy
    follows eval_mmbench.py: a main question (index < 1e6) is a hit only if it
    and all its shifted copies (index % 1e6 == main index) are right; a missing
    prediction counts as wrong there.
    """
    return summarize_outcomes(mmbench_outcomes(annotation, predictions, match))


def summarize_outcomes(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``score_mmbench``'s numbers from ``mmbench_outcomes`` rows."""
    correct = {int(r["index"]): bool(r["correct"]) for r in rows}
    base_of = {int(r["index"]): int(r["group"]) for r in rows}
    category = {int(r["index"]): r["category"] for r in rows}
    has_cat = any(r["category"] is not None for r in rows)
    scored = list(dict.fromkeys(int(r["index"]) for r in rows if r["answered"]))
    if not scored:
        raise ValueError("no MMBench row has a prediction (question_id must equal the TSV index)")

    groups: dict[int, list[int]] = {}
    for idx, base in base_of.items():
        groups.setdefault(base, []).append(idx)
    mains = [i for i in base_of if i < CIRCULAR_BASE]
    circ_hit = {m: all(correct[i] for i in groups[m]) for m in mains}

    per_category: dict[str, dict[str, float | int]] = {}
    if has_cat:
        for cat in sorted(set(category.values())):
            cat_rows = [i for i in scored if category[i] == cat]
            cat_mains = [m for m in mains if category[m] == cat]
            per_category[cat] = {
                "accuracy": _pct(sum(correct[i] for i in cat_rows), len(cat_rows)),
                "circular_accuracy": _pct(sum(circ_hit[m] for m in cat_mains), len(cat_mains)),
                "questions": len(cat_rows),
            }
    return {
        "accuracy": _pct(sum(correct[i] for i in scored), len(scored)),
        "circular_accuracy": _pct(sum(circ_hit.values()), len(mains)),
        "questions": len(scored),
        "main_questions": len(mains),
        "per_category": per_category,
        "missing": len(correct) - len(scored),
    }
