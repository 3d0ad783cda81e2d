"""The local executor: determinism, input formats, export layout, stats placement."""

from __future__ import annotations

import gzip
import json
import os
import random

import pytest
import zstandard
from helpers import read_jsonl, run_recipe, write_recipe
from PIL import Image

WORDS = "a red blue cat dog sits on the mat under bright sun near old tree by river".split()


def make_dataset(root, n=300, seed=0, image_every=3):
    rng = random.Random(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    sizes = [(64, 64), (200, 100), (30, 300), (500, 400)]
    for i, (w, h) in enumerate(sizes):
        Image.new("RGB", (w, h), (i * 60, 100, 200)).save(root / "images" / f"{i}.jpg")
    lines = []
    for i in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))
        row = {"id": f"s{i}", "text": f"<__dj__image>\n{words} <|__dj__eoc|>", "images": []}
        if i % image_every == 0:
            row["images"] = [f"images/{rng.randrange(len(sizes))}.jpg"]
        else:
            row["text"] = words
        lines.append(json.dumps(row))
    return lines


PROCESS = [
    {"whitespace_normalization_mapper": {}},
    {"text_length_filter": {"min_len": 12}},
    {"image_shape_filter": {"min_width": 50, "min_height": 50}},
    {"document_deduplicator": {}},
    {"image_aspect_ratio_filter": {"min_ratio": 0.5, "max_ratio": 2.0}},
]


def _run(tmp_path, name, data, **settings):
    recipe = write_recipe(
        tmp_path / f"{name}.yaml",
        dataset_path=str(data),
        export_path=str(tmp_path / name / "res.jsonl"),
        **{"process": PROCESS, "io_batch_size": 17, **settings},
    )
    return run_recipe(recipe)


def test_output_is_byte_identical_across_np_and_runs(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(make_dataset(tmp_path)) + "\n")
    a = _run(tmp_path, "a", data, np=1)
    b = _run(tmp_path, "b", data, np=2)
    c = _run(tmp_path, "c", data, np=2, io_batch_size=64)
    texts = [open(s["export_files"][0], "rb").read() for s in (a, b, c)]
    assert texts[0] == texts[1] == texts[2]
    assert 0 < a["exported_samples"] < a["input_samples"]
    for key in ("exported_samples", "filtered", "quarantined_samples"):
        assert a[key] == b[key] == c[key]
    for name in ("a", "b"):
        stats = sorted(os.listdir(tmp_path / name / "filtered"))
        assert stats == sorted(os.listdir(tmp_path / "a" / "filtered"))
    for f in os.listdir(tmp_path / "a" / "filtered"):
        assert (tmp_path / "a" / "filtered" / f).read_bytes() == (
            tmp_path / "b" / "filtered" / f
        ).read_bytes()
    # input order is preserved
    ids = [int(r["id"][1:]) for r in read_jsonl(a["export_files"][0])]
    assert ids == sorted(ids)


def test_shards_folder_glob_and_compression(tmp_path):
    lines = make_dataset(tmp_path, n=90)
    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    # each shard sits in its own folder with its own images: relative paths resolve per file
    parts = [lines[:30], lines[30:60], lines[60:]]
    for i, part in enumerate(parts):
        sub = shard_dir / f"p{i}"
        (sub / "images").mkdir(parents=True)
        for img in (tmp_path / "images").iterdir():
            (sub / "images" / img.name).write_bytes(img.read_bytes())
        payload = ("\n".join(part) + "\n").encode()
        if i == 0:
            (sub / "part.jsonl").write_bytes(payload)
        elif i == 1:
            (sub / "part.jsonl.gz").write_bytes(gzip.compress(payload))
        else:
            (sub / "part.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(payload))
    plain = tmp_path / "all.jsonl"
    plain.write_text("\n".join(lines) + "\n")
    ref = _run(tmp_path, "ref", plain, np=1)
    folder = _run(tmp_path, "folder", shard_dir, np=2)
    globbed = _run(tmp_path, "glob", str(shard_dir / "p*" / "part.jsonl*"), np=2)
    assert folder["input_samples"] == globbed["input_samples"] == 90
    strip = lambda rows: [(r["id"], r["text"]) for r in rows]  # noqa: E731
    assert strip(read_jsonl(folder["export_files"][0])) == strip(read_jsonl(ref["export_files"][0]))
    for row in read_jsonl(folder["export_files"][0]):
        for p in row["images"]:
            assert os.path.isabs(p) and os.path.exists(p) and "/shards/p" in p


def test_parquet_input(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in make_dataset(tmp_path, n=40)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    s = _run(tmp_path, "pq", tmp_path / "d.parquet", np=2)
    assert s["input_samples"] == 40
    assert s["input_samples"] == s["exported_samples"] + sum(s["filtered"].values())


def test_export_shards_and_stats_side_file(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(make_dataset(tmp_path, n=200)) + "\n")
    s = _run(tmp_path, "sh", data, np=2, export_shard_size=2000)
    files = s["export_files"]
    n = len(files)
    assert n > 1 and all(f.endswith(f"-of-{n}.jsonl") for f in files)
    assert [os.path.basename(f) for f in files] == [f"res-{i}-of-{n}.jsonl" for i in range(n)]
    rows = [r for f in files for r in read_jsonl(f)]
    assert len(rows) == s["exported_samples"]
    assert all(os.path.getsize(f) <= 2000 for f in files)
    assert all("__dj__stats__" not in r for r in rows)
    (stats_file,) = s["stats_files"]
    assert stats_file.endswith("res_stats.jsonl")
    stats = read_jsonl(stats_file)
    assert len(stats) == len(rows)
    assert all(st["__dj__stats__"]["text_len"] == len(r["text"]) for st, r in zip(stats, rows))
    # no temp files left behind
    assert not [f for f in os.listdir(tmp_path / "sh") if f.endswith(".tmp")]


def test_keep_stats_in_result(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(make_dataset(tmp_path, n=30)) + "\n")
    s = _run(tmp_path, "ks", data, np=1, keep_stats_in_res_ds=True)
    rows = read_jsonl(s["export_files"][0])
    assert rows and all("text_len" in r["__dj__stats__"] for r in rows)
    assert s["stats_files"] == []


def test_filtered_records_say_which_op_and_why(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(
        json.dumps({"id": "short", "text": "tiny"}) + "\n"
        + json.dumps({"id": "ok", "text": "long enough to keep"}) + "\n"
    )  # fmt: skip
    recipe = write_recipe(
        tmp_path / "r.yaml", dataset_path=str(data), export_path=str(tmp_path / "o" / "r.jsonl"),
        process=[{"text_length_filter": {"min_len": 10, "max_len": 100}}],
    )  # fmt: skip
    s = run_recipe(recipe)
    (path,) = s["filtered_files"]
    assert path.endswith("filtered/00_text_length_filter.jsonl")
    (rec,) = read_jsonl(path)
    assert rec["op"] == "text_length_filter" and rec["line"] == 1
    assert rec["reason"] == "text_len=4 outside [10, 100]"
    assert rec["sample"]["id"] == "short" and rec["sample"]["__dj__stats__"]["text_len"] == 4
    ops = {o["name"]: o for o in s["ops"]}
    assert ops["text_length_filter"]["in"] == 2 and ops["text_length_filter"]["out"] == 1


def test_failed_run_leaves_no_partial_export(tmp_path, monkeypatch):
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(make_dataset(tmp_path, n=50)) + "\n")
    from dj_synth.pipelines import output

    def boom(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(output.RunOutput, "absorb", boom)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "fail", data, np=1)
    assert not (tmp_path / "fail" / "res.jsonl").exists()
    assert not [f for f in os.listdir(tmp_path / "fail") if f.endswith(".tmp")]
