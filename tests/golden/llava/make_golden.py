#!/usr/bin/env python3
"""Regenerate the LLaVA-converter golden corpus from Data-Juicer 1.6.1 itself.

Setup (once, throwaway venv; Data-Juicer is never imported into dj-synth):

    python3 -m venv /tmp/djbench && /tmp/djbench/bin/pip install py-data-juicer==1.6.1 aiohttp fire

Usage:

    python tests/golden/llava/make_golden.py            # write case inputs + run DJ for every case
    python tests/golden/llava/make_golden.py CASE ...   # only these cases
    DJ_PYTHON=/path/to/venv/bin/python python tests/golden/llava/make_golden.py

What it does:
  1. Materialises the built-in cases below (CASES): writes <case>/case.json and the input
     files (input.jsonl / input.json / original.json) with exact bytes.
  2. For every directory under tests/golden/llava/ holding a case.json (built-in or
     hand-written), copies the non-expected files into a temp dir, runs Data-Juicer's
     tool script there as a subprocess (fire CLI, cwd = temp dir, bare file names) and
     stores what DJ produced:
       expected.json / expected.jsonl   exact bytes DJ wrote (success)
       expected_error.txt               "<ExcClass>: <message>\n" (DJ raised; bare class name)
       expected_partial.jsonl           bytes DJ had already written when it raised
                                        (llava_to_dj streams its output; only when the file exists)
       expected_warnings.txt            loguru WARNING messages, one per line, in order (if any)
     Roundtrip cases (tool "roundtrip") run llava_to_dj (args) -> expected_dj.jsonl, then
     dj_to_llava (args2) on that file -> expected.json.

Argument passing: every option is passed as `--name=<python literal>` (strings via repr(),
booleans as True/False) so that python-fire does not re-interpret string values (fire would
e.g. turn a raw `[EOC]` into the list ['EOC']).
"""

import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DJ_PYTHON = os.environ.get("DJ_PYTHON", "/tmp/djbench/bin/python")

EXPECTED_NAMES = {
    "expected.json",
    "expected.jsonl",
    "expected_dj.jsonl",
    "expected_error.txt",
    "expected_partial.jsonl",
    "expected_warnings.txt",
}


def tool_paths():
    site = subprocess.run(
        [DJ_PYTHON, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    base = os.path.join(site, "tools", "fmt_conversion", "multimodal")
    paths = {
        "dj_to_llava": os.path.join(base, "data_juicer_format_to_target_format", "dj_to_llava.py"),
        "llava_to_dj": os.path.join(base, "source_format_to_data_juicer_format", "llava_to_dj.py"),
    }
    for p in paths.values():
        if not os.path.exists(p):
            sys.exit(f"Data-Juicer tool not found: {p} (see setup at top of this file)")
    return paths


# --------------------------------------------------------------------------- inputs


def jsonl(*objs, raw_lines=None, newline="\n", trailing=True):
    """Build input.jsonl bytes; ensure_ascii=False, one object per line."""
    lines = [json.dumps(o, ensure_ascii=False) for o in objs]
    if raw_lines is not None:
        lines = raw_lines
    s = newline.join(lines) + (newline if trailing else "")
    return s.encode("utf-8")


def js(obj):
    return json.dumps(obj, ensure_ascii=False, indent=2).encode("utf-8")


def conv(*pairs):
    """conv("human", "q", "gpt", "a", ...) -> LLaVA conversations list."""
    return [{"from": pairs[i], "value": pairs[i + 1]} for i in range(0, len(pairs), 2)]


def llava(id, convs, image="__none__", **extra):
    s = {"id": id}
    if image != "__none__":
        s["image"] = image
    s["conversations"] = convs
    s.update(extra)
    return s


DJI = "<__dj__image>"
EOC = "<|__dj__eoc|>"

ORIG_CAP = [
    llava("0", conv("human", "<image>\nDescribe the image.", "gpt", "A dog."), "img/0.jpg"),
    llava("1", conv("human", "What is this?\n<image>", "gpt", "A bird."), "img/1.jpg"),
]

MT_TEXT_A = (
    "[[human]]: <image>\nWhat is in the picture?\n"
    "[[gpt]]: <image>\nA red bus.\n"
    "[[human]]: <image>\nWhere is it?\n"
    "[[gpt]]: On a street <image>\n"
    "[[human]]: Any people? <image> near it\n"
    "[[gpt]]: Yes, several. <image> <|__dj__eoc|>"
)
MT_TEXT_B = (
    "[[human]]: Describe this.\n<image>\n"
    "[[gpt]]: A cat on a mat.\n"
    "[[human]]: What colour?\n<image>\n"
    "[[gpt]]: Grey <|__dj__eoc|>"
)
MT_INPUT = jsonl(
    {"id": "mt-a", "text": MT_TEXT_A, "images": ["bus.jpg"]},
    {"id": "mt-b", "text": MT_TEXT_B, "images": ["cat.jpg", "cat.jpg"]},
)

BASIC_LLAVA = [
    llava(
        "000000033471",
        conv(
            "human",
            "<image>\nWhat are the colors of the bus in the image?",
            "gpt",
            "The bus in the image is white and red.",
            "human",
            "What feature can be seen on the back of the bus?",
            "gpt",
            "The back of the bus features an advertisement.",
        ),
        "coco/train2017/000000033471.jpg",
    ),
]

THREE_ROUND = [
    llava(
        "s1",
        conv(
            "human",
            "<image>\nQ1?",
            "gpt",
            "A1.",
            "human",
            "Q2?",
            "gpt",
            "A2.",
            "human",
            "Q3?",
            "gpt",
            "A3.",
        ),
        "one.jpg",
    ),
    llava(
        "s2",
        conv(
            "human",
            "Q1?\n<image>",
            "gpt",
            "A1.",
            "human",
            "Q2?",
            "gpt",
            "A2.",
        ),
        "two.jpg",
    ),
    llava("s3", conv("human", "Only one round\n<image>", "gpt", "Yes."), "three.jpg"),
]

RT_LLAVA = [
    llava(
        17,
        conv(
            "human",
            "<image>\nWhat is shown?",
            "gpt",
            "  A lighthouse at dusk.  ",
            "human",
            "Is it lit?",
            "gpt",
            "Yes, the lamp is on.\n",
        ),
        "lh.jpg",
    ),
    llava("b", conv("human", "Caption this.\n<image>", "gpt", "Two dogs playing."), "dogs.jpg"),
    llava("c", conv("human", "<image>\nQ1", "gpt", "A1", "human", "Q2", "gpt", "A2"), "c.jpg"),
]


def case(tool, args, description, inputs, **extra):
    d = {"tool": tool, "args": args, "description": description}
    d.update(extra)
    return d, inputs


CASES = {}


def add(name, tool, args, description, inputs, **extra):
    assert name not in CASES, name
    CASES[name] = case(tool, args, description, inputs, **extra)


RESTORE = {"restore_questions": True, "original_llava_ds_path": "original.json"}

# ------------------------------------------------------------------ dj_to_llava
add(
    "d2l_restore_caption_dj_image_token",
    "dj_to_llava",
    dict(RESTORE, image_special_token=DJI),
    "Challenge call: caption-only DJ text '<__dj__image>\\nA cat. <|__dj__eoc|>' restored with the "
    "original questions and image_special_token='<__dj__image>'; token and eoc are stripped.",
    {
        "input.jsonl": jsonl(
            {"id": "0", "text": f"{DJI}\nA cat. {EOC}", "images": ["img/0.jpg"]},
            {"id": "1", "text": f"{DJI}\nA small bird on a branch. {EOC}", "images": ["img/1.jpg"]},
        ),
        "original.json": js(ORIG_CAP),
    },
)

add(
    "d2l_restore_caption_token_mismatch",
    "dj_to_llava",
    dict(RESTORE),
    "Same caption-only data but default image_special_token '<image>': the '<__dj__image>' token "
    "is NOT stripped and stays in the restored answer.",
    {
        "input.jsonl": jsonl(
            {"id": "0", "text": f"{DJI}\nA cat. {EOC}", "images": ["img/0.jpg"]},
            {"id": "1", "text": f"{DJI}\nA small bird on a branch. {EOC}", "images": ["img/1.jpg"]},
        ),
        "original.json": js(ORIG_CAP),
    },
)

add(
    "d2l_restore_mapper_captions",
    "dj_to_llava",
    dict(RESTORE, image_special_token=DJI),
    "Captions as produced by image_captioning_mapper ('<__dj__image> cap <|__dj__eoc|>') and variants: "
    "no spaces, token at the end, double eoc (only one removed), leading/trailing whitespace.",
    {
        "input.jsonl": jsonl(
            {"id": "c0", "text": f"{DJI} a cat sitting on a sofa {EOC}", "images": ["c0.jpg"]},
            {"id": "c1", "text": f"{DJI}a dog{EOC}", "images": ["c1.jpg"]},
            {"id": "c2", "text": f"a horse in a field {DJI} {EOC}", "images": ["c2.jpg"]},
            {"id": "c3", "text": f"  {DJI}\n\n two birds \n{EOC} {EOC}  ", "images": ["c3.jpg"]},
            {"id": "c4", "text": f"{DJI}\n{DJI}\nstacked tokens {EOC}", "images": ["c4.jpg"]},
        ),
        "original.json": js(
            [
                llava(f"c{i}", conv("human", f"<image>\nQ{i}", "gpt", f"A{i}"), f"c{i}.jpg")
                for i in range(5)
            ]
        ),
    },
)

add(
    "d2l_restore_int_ids",
    "dj_to_llava",
    dict(RESTORE),
    "Original LLaVA file has integer ids, DJ data has string ids: output ids take the original's "
    "value and type (int).",
    {
        "input.jsonl": jsonl(
            {"id": "1", "text": f"<image>\nfirst caption {EOC}", "images": ["a.jpg"]},
            {"id": "42", "text": f"<image>\nsecond caption {EOC}", "images": ["b.jpg"]},
        ),
        "original.json": js(
            [
                llava(1, conv("human", "<image>\nQ?", "gpt", "x"), "a.jpg"),
                llava(42, conv("human", "<image>\nQ42?", "gpt", "y"), "b.jpg"),
            ]
        ),
    },
)

add(
    "d2l_restore_mixed_id_types",
    "dj_to_llava",
    dict(RESTORE),
    "Mixed id types: DJ '1' vs original 1 -> 1; DJ int 2 vs original '2' -> '2'; DJ int 3 vs original 3 -> 3.",
    {
        "input.jsonl": jsonl(
            {"id": "1", "text": "cap one", "images": ["a.jpg"]},
            {"id": 2, "text": "cap two", "images": ["b.jpg"]},
            {"id": 3, "text": "cap three", "images": ["c.jpg"]},
        ),
        "original.json": js(
            [
                llava(1, conv("human", "<image>\nQ1", "gpt", "x"), "a.jpg"),
                llava("2", conv("human", "<image>\nQ2", "gpt", "y"), "b.jpg"),
                llava(3, conv("human", "<image>\nQ3", "gpt", "z"), "c.jpg"),
            ]
        ),
    },
)

add(
    "d2l_restore_original_extra_keys",
    "dj_to_llava",
    dict(RESTORE),
    "Original first turn has extra keys and unusual key order (copied verbatim); the answer role is "
    "taken from the original's second turn ('assistant'); original has 4 turns but only 2 are emitted; "
    "the DJ image path (absolute) is used, not the original's.",
    {
        "input.jsonl": jsonl(
            {"id": "k", "text": f"<image>\nnew caption {EOC}", "images": ["/abs/path/k.jpg"]}
        ),
        "original.json": js(
            [
                {
                    "conversations": [
                        {
                            "value": "<image>\nWhat is it?",
                            "weight": 0.5,
                            "from": "user",
                            "meta": {"lang": "en", "tags": [1, 2.5, None, True]},
                        },
                        {"from": "assistant", "value": "old answer", "extra": 1},
                        {"from": "user", "value": "more?"},
                        {"from": "assistant", "value": "more."},
                    ],
                    "image": "rel/k.jpg",
                    "source": "x",
                    "id": "k",
                }
            ]
        ),
    },
)

add(
    "d2l_restore_duplicate_dj_ids",
    "dj_to_llava",
    dict(RESTORE),
    "Duplicate ids in the DJ data (e.g. original caption + generated captions): every sample is emitted, "
    "in input order, each with the same restored question.",
    {
        "input.jsonl": jsonl(
            {"id": "d", "text": f"<image>\ncaption A {EOC}", "images": ["d.jpg"]},
            {"id": "d", "text": f"<image>\ncaption B {EOC}", "images": ["d.jpg"]},
            {"id": "e", "text": f"<image>\ncaption E {EOC}", "images": ["e.jpg"]},
            {"id": "d", "text": f"<image>\ncaption C {EOC}", "images": ["d.jpg"]},
        ),
        "original.json": js(
            [
                llava("d", conv("human", "<image>\nQd", "gpt", "x"), "d.jpg"),
                llava("e", conv("human", "<image>\nQe", "gpt", "y"), "e.jpg"),
            ]
        ),
    },
)

add(
    "d2l_restore_duplicate_original_ids",
    "dj_to_llava",
    dict(RESTORE),
    "Duplicate ids in the original file: the LAST occurrence wins (dict comprehension over "
    "str(id)); int 5 and '5' collide too and the last one's id type is used.",
    {
        "input.jsonl": jsonl(
            {"id": "d", "text": "cap d", "images": ["d.jpg"]},
            {"id": "5", "text": "cap 5", "images": ["5.jpg"]},
        ),
        "original.json": js(
            [
                llava("d", conv("human", "<image>\nFIRST question", "human2", "x"), "d.jpg"),
                llava(5, conv("human", "<image>\nint five", "gpt", "y"), "5.jpg"),
                llava("d", conv("human", "<image>\nLAST question", "gpt", "x"), "d.jpg"),
                llava("5", conv("human", "<image>\nstr five", "bot", "y"), "5.jpg"),
            ]
        ),
    },
)

add(
    "d2l_multiturn_image_tokens",
    "dj_to_llava",
    {},
    "Multi-turn [[human]]/[[gpt]] text with image tokens at start/end/middle of turns. Stripping uses "
    "the SENTENCE index: only sentence 0 keeps edge tokens; the round-0 gpt answer (sentence 1) loses "
    "them; middle tokens always stay. Duplicate images collapse to one 'image'.",
    {"input.jsonl": MT_INPUT},
)

add(
    "d2l_keep_all_images",
    "dj_to_llava",
    {"keep_only_first_image": False},
    "Same as d2l_multiturn_image_tokens with keep_only_first_image=False: all image tokens are kept.",
    {"input.jsonl": MT_INPUT},
)

add(
    "d2l_multi_chunk",
    "dj_to_llava",
    {},
    "Several chunks: eoc tokens in the middle (after gpt answers and after a human turn) are removed "
    "from the end of each sentence; inner eoc stays; duplicated images collapse.",
    {
        "input.jsonl": jsonl(
            {
                "id": "ch",
                "text": f"[[human]]: <image>\nq1\n[[gpt]]: a1 {EOC}\n[[human]]: <image>\nq2\n"
                f"[[gpt]]: a2 {EOC}\n[[human]]: q3 {EOC}\n[[gpt]]: a3 {EOC} tail {EOC}",
                "images": ["ch.jpg", "ch.jpg", "ch.jpg"],
            }
        )
    },
)

add(
    "d2l_duplicate_images",
    "dj_to_llava",
    {},
    "Same image repeated in 'images' collapses to a single 'image' key.",
    {
        "input.jsonl": jsonl(
            {
                "id": "x",
                "text": f"[[human]]: <image>\nq\n[[gpt]]: a {EOC}",
                "images": ["p/x.jpg"] * 4,
            }
        )
    },
)

add(
    "d2l_no_images",
    "dj_to_llava",
    {},
    "No 'images' key / empty images list: output has no 'image' key (key order id, conversations[, image]).",
    {
        "input.jsonl": jsonl(
            {"id": "n1", "text": f"[[human]]: hello\n[[gpt]]: hi {EOC}"},
            {"id": "n2", "text": f"[[human]]: <image>\nhello\n[[gpt]]: hi {EOC}", "images": []},
            {"id": "n3", "text": f"[[human]]: <image>\nq\n[[gpt]]: a {EOC}", "images": ["y.jpg"]},
        )
    },
)

add(
    "d2l_non_ascii",
    "dj_to_llava",
    {},
    "Non-ASCII, emoji, control and separator characters: json.dump default ensure_ascii=True -> \\uXXXX "
    "escapes, emoji as surrogate pairs, \\t/\\u0000 escaped, DEL (0x7f) raw, '/' not escaped, no "
    "trailing newline, single line.",
    {
        "input.jsonl": jsonl(
            {
                "id": "é-1",
                "text": f"[[human]]: <image>\n  Café — naïve ¿qué? 日本語  \n[[gpt]]: 😀 👍🏽 ok\u2028line\u00a0nbsp {EOC}",
                "images": ["imgs/ü/ß.jpg"],
            },
            {
                "id": "ctl",
                "text": '[[human]]: tab\there\u0000nul\u007fdel a/b "q" \\ back\n[[gpt]]: \U0001f600',
                "images": [],
            },
        )
    },
)

add(
    "d2l_extra_fields_dropped",
    "dj_to_llava",
    {},
    "Extra fields (numbers, floats, nested, __dj__stats__) are dropped; non-string ids (float, null, "
    "list) pass through verbatim.",
    {
        "input.jsonl": jsonl(
            {
                "id": 3.0,
                "text": f"[[human]]: <image>\nq\n[[gpt]]: a {EOC}",
                "images": ["f.jpg"],
                "score": 0.75,
                "count": 3,
                "big": 12345678901234567890,
                "nested": {"a": [1, {"b": None}]},
                "__dj__stats__": {"lang_score": 0.9},
                "__dj__meta__": {},
            },
            {"id": None, "text": "[[human]]: q\n[[gpt]]: a", "images": []},
            {"id": [1, "x"], "text": "[[human]]: q\n[[gpt]]: a", "other": True},
        )
    },
)

add(
    "d2l_custom_sent_separator",
    "dj_to_llava",
    {"sent_separator": "||"},
    "Custom sent_separator '||': trailing separators are cut, and separators next to stripped image tokens "
    "in rounds>0 are cut.",
    {
        "input.jsonl": jsonl(
            {
                "id": "s",
                "text": f"[[human]]: <image>||q1||[[gpt]]: <image>||a1||[[human]]: q2||<image>||"
                f"[[gpt]]: a2|| {EOC}",
                "images": ["s.jpg"],
            }
        )
    },
)

add(
    "d2l_custom_sent_separator_spaces",
    "dj_to_llava",
    {"sent_separator": " | "},
    "Separator with surrounding spaces ' | ': sentences are strip()ped first, so endswith(' | ') never "
    "matches and the '|' stays.",
    {
        "input.jsonl": jsonl(
            {
                "id": "s",
                "text": "[[human]]: <image> | q1 | [[gpt]]: <image> | a1 | [[human]]: q2 | "
                f"[[gpt]]: a2 | {EOC}",
                "images": ["s.jpg"],
            }
        )
    },
)

add(
    "d2l_empty_sent_separator",
    "dj_to_llava",
    {"sent_separator": ""},
    "Quirk: sent_separator='' makes endswith('') always true, so sentence[:-0] wipes every value to ''.",
    {
        "input.jsonl": jsonl(
            {"id": "e", "text": f"[[human]]: <image>\nq\n[[gpt]]: a {EOC}", "images": ["e.jpg"]}
        )
    },
)

add(
    "d2l_custom_tokens",
    "dj_to_llava",
    {"eoc_special_token": "<EOC>", "image_special_token": "<img>"},
    "Custom eoc '<EOC>' and image '<img>' tokens (warning logged for non-default image token); the "
    "default DJ eoc is then not removed.",
    {
        "input.jsonl": jsonl(
            {
                "id": "t",
                "text": "[[human]]: <img>\nq1\n[[gpt]]: <img> a1 <EOC>\n[[human]]: q2 <img>\n"
                f"[[gpt]]: a2 {EOC}",
                "images": ["t.jpg"],
            }
        )
    },
)

add(
    "d2l_role_names",
    "dj_to_llava",
    {},
    "Role names are taken verbatim from [[...]] (letters only): user/assistant, empty role [[]], "
    "mixed case.",
    {
        "input.jsonl": jsonl(
            {"id": "r1", "text": "[[user]]: <image>\nq\n[[assistant]]: a", "images": ["r.jpg"]},
            {"id": "r2", "text": "[[]]: q\n[[GPT]]: a\n[[Human]]: q2\n[[x]]: a2"},
        )
    },
)

add(
    "d2l_input_line_quirks",
    "dj_to_llava",
    {},
    "Input bytes quirks that still parse: UTF-8 BOM, CRLF line endings, no trailing newline.",
    {
        "input.jsonl": b"\xef\xbb\xbf"
        + jsonl(
            {"id": "q1", "text": "[[human]]: <image>\nq\n[[gpt]]: a", "images": ["q.jpg"]},
            {"id": "q2", "text": "[[human]]: q\n[[gpt]]: a"},
            newline="\r\n",
            trailing=False,
        )
    },
)

# errors
add(
    "d2l_err_missing_id",
    "dj_to_llava",
    {},
    "Sample without 'id' -> KeyError (no fallback). No output file is written.",
    {
        "input.jsonl": jsonl(
            {"id": "ok", "text": "[[human]]: q\n[[gpt]]: a"},
            {"text": "[[human]]: q\n[[gpt]]: a", "images": ["a.jpg"]},
        )
    },
)

add(
    "d2l_err_missing_text",
    "dj_to_llava",
    {},
    "Sample without 'text' -> KeyError.",
    {"input.jsonl": jsonl({"id": "nt", "images": ["a.jpg"]})},
)

add(
    "d2l_err_id_not_in_original",
    "dj_to_llava",
    dict(RESTORE),
    "restore_questions with an id missing from the original -> ValueError.",
    {
        "input.jsonl": jsonl({"id": "0", "text": "cap"}, {"id": "zzz", "text": "cap"}),
        "original.json": js(ORIG_CAP),
    },
)

add(
    "d2l_err_multiple_images",
    "dj_to_llava",
    {},
    "More than one distinct image -> ValueError (after a good first sample; nothing written).",
    {
        "input.jsonl": jsonl(
            {"id": "g", "text": "[[human]]: <image>\nq\n[[gpt]]: a", "images": ["a.jpg"]},
            {
                "id": "m",
                "text": "[[human]]: <image>\nq\n[[gpt]]: a",
                "images": ["a.jpg", "b.jpg", "a.jpg"],
            },
        )
    },
)

add(
    "d2l_err_images_is_string",
    "dj_to_llava",
    {},
    "'images' given as a string: set() of its characters -> >1 distinct 'images' -> ValueError.",
    {"input.jsonl": jsonl({"id": "s", "text": "[[human]]: q\n[[gpt]]: a", "images": "ab.jpg"})},
)

add(
    "d2l_err_images_null",
    "dj_to_llava",
    {},
    "'images': null -> TypeError from set(None).",
    {"input.jsonl": jsonl({"id": "s", "text": "[[human]]: q\n[[gpt]]: a", "images": None})},
)

add(
    "d2l_err_unbalanced",
    "dj_to_llava",
    {},
    "Odd number of turns (human, gpt, human) -> 'unbalance' ValueError with number of parts 6.",
    {
        "input.jsonl": jsonl(
            {
                "id": "u",
                "text": "[[human]]: <image>\nq\n[[gpt]]: a\n[[human]]: q2",
                "images": ["u.jpg"],
            }
        )
    },
)

add(
    "d2l_err_text_before_first_role",
    "dj_to_llava",
    {},
    "Text before the first [[role]]: parts[0] is not '' so the parts count is odd -> ValueError.",
    {
        "input.jsonl": jsonl(
            {"id": "p", "text": "<image>\n[[human]]: q\n[[gpt]]: a", "images": ["p.jpg"]}
        )
    },
)

add(
    "d2l_err_caption_without_restore",
    "dj_to_llava",
    {},
    "Caption-only text without restore_questions -> 'unbalance' ValueError (1 part).",
    {"input.jsonl": jsonl({"id": "0", "text": f"<image>\nA cat. {EOC}", "images": ["img/0.jpg"]})},
)

add(
    "d2l_err_role_with_digits",
    "dj_to_llava",
    {},
    "[[gpt4]] is not a role (regex is letters only), so the text has 2 parts -> ValueError.",
    {"input.jsonl": jsonl({"id": "g4", "text": "[[human]]: q\n[[gpt4]]: a"})},
)

add(
    "d2l_err_blank_line_middle",
    "dj_to_llava",
    {},
    "Blank line in the middle of the JSONL -> jsonlines InvalidLineError.",
    {
        "input.jsonl": jsonl(
            raw_lines=[
                json.dumps({"id": "a", "text": "[[human]]: q\n[[gpt]]: a"}),
                "",
                json.dumps({"id": "b", "text": "[[human]]: q\n[[gpt]]: a"}),
            ]
        )
    },
)

add(
    "d2l_err_trailing_blank_line",
    "dj_to_llava",
    {},
    "Even a trailing blank line (file ends with '\\n\\n') is an InvalidLineError.",
    {"input.jsonl": jsonl({"id": "a", "text": "[[human]]: q\n[[gpt]]: a"}) + b"\n"},
)

add(
    "d2l_err_null_line",
    "dj_to_llava",
    {},
    "A 'null' line -> jsonlines InvalidLineError 'line contains null value'.",
    {
        "input.jsonl": jsonl(
            raw_lines=[json.dumps({"id": "a", "text": "[[human]]: q\n[[gpt]]: a"}), "null"]
        )
    },
)

add(
    "d2l_err_restore_without_original",
    "dj_to_llava",
    {"restore_questions": True},
    "restore_questions=True without original_llava_ds_path -> ValueError.",
    {"input.jsonl": jsonl({"id": "0", "text": "cap"})},
)

add(
    "d2l_err_original_single_turn",
    "dj_to_llava",
    dict(RESTORE),
    "Original sample with a single conversation turn: ori_convs[1] -> IndexError.",
    {
        "input.jsonl": jsonl({"id": "0", "text": "cap"}),
        "original.json": js([llava("0", conv("human", "<image>\nQ"), "a.jpg")]),
    },
)

add(
    "d2l_err_target_not_json",
    "dj_to_llava",
    {},
    "Target path not ending with '.json' -> ValueError (output_name overrides the target file name).",
    {"input.jsonl": jsonl({"id": "0", "text": "[[human]]: q\n[[gpt]]: a"})},
    output_name="output.jsonl",
)

# ------------------------------------------------------------------ llava_to_dj
add(
    "l2d_basic_2round",
    "llava_to_dj",
    {},
    "Basic 2-round LLaVA sample (reference test vector).",
    {"input.json": js(BASIC_LLAVA)},
)

INT_IDS = [
    llava(1, conv("human", "<image>\nq", "gpt", "a"), "1.jpg"),
    llava("2", conv("human", "<image>\nq", "gpt", "a"), "2.jpg"),
    llava(3.5, conv("human", "<image>\nq", "gpt", "a"), "3.jpg"),
    llava(-7, conv("human", "<image>\nq", "gpt", "a"), "4.jpg"),
]
add(
    "l2d_int_ids_str_id_true",
    "llava_to_dj",
    {"str_id": True},
    "Integer/float ids with str_id=True -> str(id) ('3.5', '-7').",
    {"input.json": js(INT_IDS)},
)
add(
    "l2d_int_ids_str_id_false",
    "llava_to_dj",
    {"str_id": False},
    "Integer/float ids with str_id=False -> types preserved.",
    {"input.json": js(INT_IDS)},
)

add(
    "l2d_no_image",
    "llava_to_dj",
    {},
    "Samples without an image (missing key, empty string): warning logged, text kept without token "
    "checks, images []. 'image': null is NOT treated as missing: token check runs and images == [null].",
    {
        "input.json": js(
            [
                llava("n1", conv("human", "hello there", "gpt", "hi")),
                llava("n2", conv("human", "q", "gpt", "a"), ""),
                llava("n3", conv("human", "<image>\nq", "gpt", "a"), None),
            ]
        )
    },
)

add(
    "l2d_image_token_at_end",
    "llava_to_dj",
    {},
    "Image token at the end of the first human turn is accepted ('after'); token exactly equal to the "
    "whole turn also accepted.",
    {
        "input.json": js(
            [
                llava(
                    "e1",
                    conv("human", "Describe.\n<image>", "gpt", "ok", "human", "More?", "gpt", "no"),
                    "e.jpg",
                ),
                llava("e2", conv("human", "<image>", "gpt", "only token"), "f.jpg"),
            ]
        )
    },
)

add(
    "l2d_err_image_token_middle",
    "llava_to_dj",
    {},
    "Image token in the middle of the first human turn -> ValueError; the first (good) sample was already "
    "written (see expected_partial.jsonl).",
    {
        "input.json": js(
            [
                llava("ok", conv("human", "<image>\nq", "gpt", "a"), "ok.jpg"),
                llava("mid", conv("human", "Look at <image> please", "gpt", "a"), "m.jpg"),
            ]
        )
    },
)

add(
    "l2d_err_odd_turns",
    "llava_to_dj",
    {},
    "Odd number of turns -> 'unbalance' ValueError (partial output kept).",
    {
        "input.json": js(
            [
                llava("ok", conv("human", "<image>\nq", "gpt", "a"), "ok.jpg"),
                llava("odd", conv("human", "<image>\nq", "gpt", "a", "human", "q2"), "o.jpg"),
            ]
        )
    },
)

add(
    "l2d_err_missing_conversations",
    "llava_to_dj",
    {},
    "Sample without 'conversations' -> KeyError.",
    {"input.json": js([{"id": "x", "image": "x.jpg"}])},
)

add(
    "l2d_err_missing_id",
    "llava_to_dj",
    {},
    "Sample without 'id' -> KeyError.",
    {
        "input.json": js(
            [{"image": "x.jpg", "conversations": conv("human", "<image>\nq", "gpt", "a")}]
        )
    },
)

add(
    "l2d_split_chunk",
    "llava_to_dj",
    {"split_chunk": True},
    "split_chunk: rounds joined by ' <|__dj__eoc|>\\n'; images listed once (no broadcast).",
    {"input.json": js(THREE_ROUND)},
)

for pos in ["before", "after", "follow"]:
    add(
        f"l2d_broadcast_{pos}",
        "llava_to_dj",
        {"split_chunk": True, "image_broadcast": True, "image_broadcast_pos": pos},
        f"split_chunk + image_broadcast pos={pos}: token added to each later human turn; 'images' repeats "
        "the image once per round.",
        {"input.json": js(THREE_ROUND)},
    )

add(
    "l2d_broadcast_random",
    "llava_to_dj",
    {"split_chunk": True, "image_broadcast": True, "image_broadcast_pos": "random"},
    "split_chunk + image_broadcast pos=random: unseeded random.random() per round; output is one DJ run.",
    {"input.json": js(THREE_ROUND)},
    nondeterministic=True,
)

add(
    "l2d_err_broadcast_without_split",
    "llava_to_dj",
    {"image_broadcast": True},
    "image_broadcast without split_chunk -> ValueError.",
    {"input.json": js(THREE_ROUND)},
)

add(
    "l2d_err_broadcast_bad_pos",
    "llava_to_dj",
    {"split_chunk": True, "image_broadcast": True, "image_broadcast_pos": "middle"},
    "Invalid image_broadcast_pos -> ValueError.",
    {"input.json": js(THREE_ROUND)},
)

add(
    "l2d_bad_pos_without_broadcast",
    "llava_to_dj",
    {"image_broadcast_pos": "middle"},
    "Invalid image_broadcast_pos is NOT checked when image_broadcast is False.",
    {"input.json": js(THREE_ROUND[2:])},
)

add(
    "l2d_only_keep_caption",
    "llava_to_dj",
    {"only_keep_caption": True},
    "only_keep_caption: each round becomes '<image>\\n' + answer (questions dropped); multi-turn samples "
    "warn; a sample without image still gets the image token.",
    {
        "input.json": js(
            [
                llava("c1", conv("human", "<image>\nDescribe.", "gpt", "A cat."), "c1.jpg"),
                llava(
                    "c2",
                    conv("human", "Q\n<image>", "gpt", "A.", "human", "Q2", "gpt", "B."),
                    "c2.jpg",
                ),
                llava("c3", conv("human", "no image here", "gpt", "Text only.")),
            ]
        )
    },
)

add(
    "l2d_only_keep_caption_split_broadcast",
    "llava_to_dj",
    {
        "only_keep_caption": True,
        "split_chunk": True,
        "image_broadcast": True,
        "image_broadcast_pos": "after",
    },
    "only_keep_caption + split_chunk + broadcast: broadcast token in the (dropped) question is lost, but "
    "'images' still repeats per round.",
    {"input.json": js(THREE_ROUND[:1])},
)

add(
    "l2d_no_eoc_at_last",
    "llava_to_dj",
    {"add_eoc_at_last": False},
    "add_eoc_at_last=False: no trailing eoc (warning logged).",
    {"input.json": js(THREE_ROUND)},
)

add(
    "l2d_no_eoc_at_last_split",
    "llava_to_dj",
    {"add_eoc_at_last": False, "split_chunk": True},
    "add_eoc_at_last=False with split_chunk: inner eocs kept, none at the end.",
    {"input.json": js(THREE_ROUND)},
)

add(
    "l2d_non_ascii",
    "llava_to_dj",
    {},
    "Non-ASCII/emoji/control chars: jsonlines writes ensure_ascii=False (raw UTF-8, emoji raw), control chars "
    "escaped, U+2028 raw; values are not stripped.",
    {
        "input.json": js(
            [
                llava(
                    "日本-1",
                    conv(
                        "human",
                        "<image>\n  Café — naïve ¿qué?  ",
                        "gpt",
                        '😀 👍🏽\u2028x\tTab\u0000\u007f "q" \\ a/b',
                    ),
                    "imgs/ü/ß.jpg",
                )
            ]
        )
    },
)

add(
    "l2d_err_lone_surrogate",
    "llava_to_dj",
    {},
    "A lone surrogate (\\ud800 escape in the input JSON) cannot be encoded as UTF-8 by the writer -> "
    "UnicodeEncodeError (partial output: previous lines).",
    {
        "input.json": b'[{"id": "ok", "image": "a.jpg", "conversations": [{"from": "human", "value": "<image>\\nq"}, '
        b'{"from": "gpt", "value": "a"}]}, {"id": "bad", "image": "b.jpg", "conversations": '
        b'[{"from": "human", "value": "<image>\\nq"}, {"from": "gpt", "value": "x\\ud800y"}]}]'
    },
)

add(
    "l2d_err_bom",
    "llava_to_dj",
    {},
    "UTF-8 BOM in the LLaVA json -> json.JSONDecodeError (json.load with utf-8, not utf-8-sig).",
    {"input.json": b"\xef\xbb\xbf" + js(THREE_ROUND[2:])},
)

add(
    "l2d_err_target_not_jsonl",
    "llava_to_dj",
    {},
    "Target not ending with '.jsonl' -> ValueError.",
    {"input.json": js(THREE_ROUND[2:])},
    output_name="output.json",
)

add(
    "l2d_custom_tokens",
    "llava_to_dj",
    {
        "eoc_special_token": "<EOC>",
        "image_special_token": "<img>",
        "split_chunk": True,
        "image_broadcast": True,
        "image_broadcast_pos": "follow",
    },
    "Custom eoc '<EOC>' and image '<img>' tokens with split_chunk + broadcast follow (warning for the "
    "non-default image token); a literal '<image>' in the text is just text.",
    {
        "input.json": js(
            [
                llava(
                    "t1",
                    conv("human", "<img>\nq1 <image>", "gpt", "a1", "human", "q2", "gpt", "a2"),
                    "t.jpg",
                ),
                llava(
                    "t2",
                    conv("human", "q1\n<img>", "gpt", "a1", "human", "q2", "gpt", "a2"),
                    "u.jpg",
                ),
            ]
        )
    },
)

add(
    "l2d_custom_sep",
    "llava_to_dj",
    {
        "sent_separator": " || ",
        "split_chunk": True,
        "image_broadcast": True,
        "image_broadcast_pos": "before",
    },
    "Custom sent_separator ' || ' used between turns, between rounds and after broadcast tokens.",
    {"input.json": js(THREE_ROUND[:2])},
)

add(
    "l2d_empty_conversations",
    "llava_to_dj",
    {},
    "Empty conversations list: text is just ' <|__dj__eoc|>' and images is [] even though the sample has "
    "an image (images are only collected per round).",
    {"input.json": js([llava("empty", [], "e.jpg")])},
)

add(
    "l2d_extra_fields_dropped",
    "llava_to_dj",
    {},
    "Extra top-level keys and extra keys inside turns are dropped; output key order id, text, images; "
    "roles are used verbatim.",
    {
        "input.json": js(
            [
                {
                    "source": "x",
                    "conversations": [
                        {"value": "<image>\nq", "from": "user", "weight": 1},
                        {"from": "assistant", "value": "a", "meta": {"k": [1, 2]}},
                    ],
                    "image": "x.jpg",
                    "id": "x",
                    "score": 0.5,
                }
            ]
        )
    },
)

# ------------------------------------------------------------------ round trips
add(
    "rt_default",
    "roundtrip",
    {},
    "llava -> dj -> llava with default options: int id becomes str, answers get strip()ped.",
    {"input.json": js(RT_LLAVA)},
    args2={},
)

add(
    "rt_split_broadcast_before",
    "roundtrip",
    {"split_chunk": True, "image_broadcast": True, "image_broadcast_pos": "before"},
    "llava -> dj (split_chunk + broadcast before) -> llava (defaults): duplicate images collapse and "
    "broadcast tokens in rounds > 0 are stripped.",
    {"input.json": js(RT_LLAVA)},
    args2={},
)

add(
    "rt_split_broadcast_follow",
    "roundtrip",
    {"split_chunk": True, "image_broadcast": True, "image_broadcast_pos": "follow"},
    "llava -> dj (split_chunk + broadcast follow) -> llava (defaults).",
    {"input.json": js(RT_LLAVA)},
    args2={},
)

add(
    "rt_only_keep_caption_restore",
    "roundtrip",
    {"only_keep_caption": True},
    "llava -> dj (only_keep_caption) -> llava (restore_questions with the original file = input.json): "
    "single-round samples come back (ids restored to int); multi-round ones keep an inner '<image>' and "
    "lose the later questions.",
    {"input.json": js(RT_LLAVA)},
    args2={"restore_questions": True, "original_llava_ds_path": "input.json"},
)


# --------------------------------------------------------------------------- running


def fire_value(v):
    if isinstance(v, bool) or v is None or isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return repr(v)
    raise TypeError(f"unsupported arg value {v!r}")


def run_tool(tools, tool, inp, out, args, cwd):
    cmd = [DJ_PYTHON, tools[tool], inp, out] + [f"--{k}={fire_value(v)}" for k, v in args.items()]
    env = dict(os.environ, PYTHONHASHSEED="0", NO_COLOR="1", TQDM_DISABLE="1")
    p = subprocess.run(
        cmd,
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        encoding="utf-8",
        errors="backslashreplace",
    )
    warnings = re.findall(r"^\S+ \S+ \| WARNING\s+\| \S+ - (.*)$", p.stderr, flags=re.M)
    error = None
    if p.returncode != 0:
        idx = p.stderr.rfind("Traceback (most recent call last):")
        if idx < 0:
            raise RuntimeError(f"{tool} failed without traceback:\n{p.stderr}")
        for line in p.stderr[idx:].splitlines()[1:]:
            if line and not line[0].isspace():
                m = re.match(r"^([\w.]+)(?:: (.*))?$", line)
                error = f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2) or ''}".rstrip()
                if not m.group(2):
                    error = m.group(1).rsplit(".", 1)[-1]
                break
        if error is None:
            raise RuntimeError(f"cannot parse exception:\n{p.stderr}")
    return error, warnings


def clear_expected(cdir):
    for n in EXPECTED_NAMES:
        p = os.path.join(cdir, n)
        if os.path.exists(p):
            os.remove(p)


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def run_case(tools, name):
    cdir = os.path.join(HERE, name)
    with open(os.path.join(cdir, "case.json"), encoding="utf-8") as f:
        spec = json.load(f)
    clear_expected(cdir)
    with tempfile.TemporaryDirectory(prefix=f"golden_{name}_") as tmp:
        for n in os.listdir(cdir):
            if n not in EXPECTED_NAMES and n != "case.json":
                shutil.copy(os.path.join(cdir, n), os.path.join(tmp, n))
        tool = spec["tool"]
        warnings = []
        if tool == "roundtrip":
            steps = [
                ("llava_to_dj", "input.json", "expected_dj.jsonl", spec.get("args", {})),
                ("dj_to_llava", "expected_dj.jsonl", "expected.json", spec.get("args2", {})),
            ]
        else:
            inp = "input.jsonl" if tool == "dj_to_llava" else "input.json"
            out = spec.get("output_name") or (
                "expected.json" if tool == "dj_to_llava" else "expected.jsonl"
            )
            steps = [(tool, inp, out, spec.get("args", {}))]
        status = "ok"
        for t, inp, out, args in steps:
            error, w = run_tool(tools, t, inp, out, args, tmp)
            warnings += w
            outp = os.path.join(tmp, out)
            if error is not None:
                write(os.path.join(cdir, "expected_error.txt"), (error + "\n").encode("utf-8"))
                if t == "llava_to_dj" and os.path.exists(outp):
                    shutil.copy(outp, os.path.join(cdir, "expected_partial.jsonl"))
                status = "error: " + error
                break
            shutil.copy(outp, os.path.join(cdir, out))
        if warnings:
            write(
                os.path.join(cdir, "expected_warnings.txt"),
                ("\n".join(warnings) + "\n").encode("utf-8"),
            )
    return name, status


def materialise(names):
    for name in names:
        spec, inputs = CASES[name]
        cdir = os.path.join(HERE, name)
        os.makedirs(cdir, exist_ok=True)
        for n in os.listdir(cdir):  # drop stale inputs
            if n not in EXPECTED_NAMES and n != "case.json" and n not in inputs:
                os.remove(os.path.join(cdir, n))
        with open(os.path.join(cdir, "case.json"), "w", encoding="utf-8") as f:
            json.dump(spec, f, indent=2, ensure_ascii=False)
            f.write("\n")
        for fn, data in inputs.items():
            write(os.path.join(cdir, fn), data)


def main(argv):
    tools = tool_paths()
    selected = argv or None
    materialise([n for n in CASES if selected is None or n in selected])
    names = sorted(
        n
        for n in os.listdir(HERE)
        if os.path.isfile(os.path.join(HERE, n, "case.json"))
        and (selected is None or n in selected)
    )
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as ex:
        for name, status in ex.map(lambda n: run_case(tools, n), names):
            print(f"{name:45s} {status}")
    print(f"{len(names)} cases")


if __name__ == "__main__":
    main(sys.argv[1:])
