"""Bad input never crashes a run and never vanishes: every line is exported, filtered or quarantined."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from helpers import read_jsonl, run_recipe, write_recipe
from nasty import make_corpus


def _fates(summary: dict) -> dict[int, str]:
    """Line number -> 'export' | 'filtered:<op>' | 'quarantine:<stage>:<error>'."""
    fate: dict[int, str] = {}
    for path, _count in summary["filtered_files"].items():
        for rec in read_jsonl(path):
            fate[rec["line"]] = f"filtered:{rec['op']}"
    for rec in read_jsonl(summary["quarantine_file"]):
        fate[rec["line"]] = f"quarantine:{rec['stage']}:{rec['error']}"
    return fate


@pytest.mark.parametrize("image_check", ["header", "decode"])
@pytest.mark.parametrize("np_", [1, 2])
def test_every_line_accounted_for(tmp_path, image_check, np_):
    data, expected = make_corpus(tmp_path)
    recipe = write_recipe(
        tmp_path / "r.yaml",
        dataset_path=str(data),
        export_path=str(tmp_path / "out" / "res.jsonl"),
        np=np_,
        image_check=image_check,
        io_batch_size=4,  # several batches, so errors land mid-batch
        process=[
            {"text_length_filter": {"min_len": 1}},
            {"image_shape_filter": {"max_width": 30000, "max_height": 30000}},
        ],
    )
    summary = run_recipe(recipe)

    n_samples = sum(1 for line in data.read_bytes().split(b"\n") if line.strip())
    assert summary["input_samples"] == n_samples
    assert summary["skipped_blank_lines"] == 2
    assert summary["input_samples"] == (
        summary["exported_samples"]
        + sum(summary["filtered"].values())
        + summary["quarantined_samples"]
    )
    fates = _fates(summary)
    exported_ids = [row["id"] for row in read_jsonl(tmp_path / "out" / "res.jsonl")]
    # each input line has exactly one fate
    assert len(fates) + len(exported_ids) == n_samples

    for line, want in expected.items():
        got = fates.get(line, "export")
        if want.startswith("read:"):
            assert got.startswith("quarantine:read:" + want[5:]), (line, got)
        elif want == "export":
            assert got == "export", (line, got)
        elif want == "huge":
            if image_check == "decode":  # the pixel decode refuses a 40000x40000 image
                assert got.startswith("quarantine:read:image too large to decode"), got
            else:  # the header is fine; the shape filter drops it without decoding
                assert got == "filtered:image_shape_filter", got
        elif want == "truncated":  # the header is fine; the file's end is missing
            assert got.startswith("quarantine:read:undecodable image"), got
            assert "truncated" in got

    # the quarantine keeps the raw line and where it came from
    q = read_jsonl(summary["quarantine_file"])
    assert all(rec["source"] == str(data) and rec["line"] >= 1 for rec in q)
    broken = next(rec for rec in q if rec["error"].startswith("malformed JSON"))
    assert broken["raw"].startswith('{"id": "broken"')
    assert Counter(summary["quarantine_reasons"]) == Counter(
        rec["error"].split(":", 1)[0]
        if rec["stage"] == "read"
        else f"{rec['stage']}: {rec['error'].split(':', 1)[0]}"
        for rec in q
    )
    # pass-through: unknown fields survive untouched, ids are not deduplicated
    rows = {json.dumps(r["id"]): r for r in read_jsonl(tmp_path / "out" / "res.jsonl")}
    assert rows['"extra"']["meta"] == {"source": "web", "score": 0.5}
    assert exported_ids.count("dup-id") == 2
    assert 10**30 in exported_ids


def test_huge_header_is_quarantined_when_pixels_are_needed(tmp_path):
    """Without a size bound the 40000x40000 PNG reaches a decode, which refuses it."""
    data, _ = make_corpus(tmp_path)
    recipe = write_recipe(
        tmp_path / "r.yaml",
        dataset_path=str(data),
        export_path=str(tmp_path / "out" / "res.jsonl"),
        np=1,
        image_check="decode",
    )
    summary = run_recipe(recipe)
    errors = [r["error"] for r in read_jsonl(summary["quarantine_file"]) if r["line"] == 16]
    assert len(errors) == 1 and errors[0].startswith("image too large to decode")
    assert "40000x40000" in errors[0]


def test_operator_errors_quarantine_only_the_bad_sample(tmp_path):
    """With `image_check: exists` the truncated JPEG gets in; the hashing op's decode fails
    on it mid-batch, and only that sample is quarantined, by that op."""
    data, expected = make_corpus(tmp_path)
    recipe = write_recipe(
        tmp_path / "r.yaml",
        dataset_path=str(data),
        export_path=str(tmp_path / "out" / "res.jsonl"),
        np=2,
        image_check="exists",
        io_batch_size=64,  # the whole corpus in one batch
        process=[
            {"image_shape_filter": {"max_width": 30000}},
            {"image_deduplicator": {"method": "phash"}},
        ],
    )
    summary = run_recipe(recipe)
    truncated = next(line for line, want in expected.items() if want == "truncated")
    q = {rec["line"]: rec for rec in read_jsonl(summary["quarantine_file"])}
    assert q[truncated]["stage"] == "image_deduplicator"
    assert q[truncated]["error"].startswith("undecodable image")
    assert summary["quarantine_reasons"]["image_deduplicator: undecodable image"] == 1
    assert q[truncated]["sample"]["id"] == "truncated"
    ops = {o["name"]: o for o in summary["ops"]}
    assert ops["image_deduplicator"]["quarantined"] == 1
    # good.jpg appears in several samples: later ones are duplicates of the first
    dup = read_jsonl(tmp_path / "out" / "filtered" / "01_image_deduplicator.jsonl")
    assert dup and all(
        r["reason"].startswith("duplicate of id='bom'")
        for r in dup
        if r["sample"]["images"][0].endswith("good.jpg")
    )
    assert summary["input_samples"] == (
        summary["exported_samples"]
        + sum(summary["filtered"].values())
        + summary["quarantined_samples"]
    )
