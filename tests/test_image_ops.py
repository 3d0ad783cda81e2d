"""image_size_filter (and its size parser) and image_aspect_ratio_filter."""

from __future__ import annotations

import pytest
from helpers import run_op
from PIL import Image

from dj_synth.operators import get_operator
from dj_synth.operators.image_size_filter import size_to_bytes

# -- size_to_bytes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("0", 0),
        ("123", 123),
        ("1KB", 1024),
        ("1kib", 1024),
        ("10 MB", 10 * 2**20),
        ("2GiB", 2 * 2**30),
        ("1TB", 2**40),
        ("1tb", 2**40),
        ("3PB", 3 * 2**50),
        ("1EiB", 2**60),
        ("1ZB", 2**70),
        ("1YB", 2**80),
        # Data-Juicer drops the point ("1.5MB" -> 15 MiB); we do not.
        ("1.5MB", 3 * 2**19),
        ("0.5KB", 512),
        (".25 KiB", 256),
        ("2.MB", 2 * 2**20),
        ("1.0001KB", 1024),  # fractions of a byte are floored
        ("1000.7", 1000),
        (2048, 2048),
        (0, 0),
    ],
)
def test_size_to_bytes(size, expected):
    assert size_to_bytes(size) == expected


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ("MB", "does not contain a number"),
        ("", "does not contain a number"),
        ("100B", "unknown unit 'b'"),  # as Data-Juicer: a bare B is not a unit
        ("5 lightyears", "unknown unit"),
        ("1.2.3MB", "not a number"),
    ],
)
def test_size_to_bytes_rejects(size, message):
    with pytest.raises(ValueError, match=message):
        size_to_bytes(size)


@pytest.mark.parametrize("size", [1.5, None, True, [1]])
def test_size_to_bytes_rejects_other_types(size):
    with pytest.raises(TypeError):
        size_to_bytes(size)


def test_size_filter_converts_its_arguments():
    op = get_operator("image_size_filter")()
    assert (op.min_size, op.max_size, op.any_or_all) == (0, 2**40, "any")
    op = get_operator("image_size_filter")(min_size="1.5KB", max_size=4096)
    assert (op.min_size, op.max_size) == (1536, 4096)
    with pytest.raises(ValueError, match="any_or_all"):
        get_operator("image_size_filter")(any_or_all="most")


# -- image_size_filter -------------------------------------------------------------


@pytest.fixture
def sized(tmp_path):
    """Files of exactly 100, 1024, 2048 and 5000 bytes (sizes are stat'ed, never decoded)."""
    paths = {}
    for n in (100, 1024, 2048, 5000):
        path = tmp_path / f"f{n}.jpg"
        path.write_bytes(b"\xff" * n)  # not a decodable image: proves no decode happens
        paths[n] = str(path)
    return paths


def _kept(out):
    return [row["id"] for row in out.rows()]


def test_size_filter_stats_and_keep(sized):
    rows = [
        {"id": "a", "images": [sized[100]]},
        {"id": "b", "images": [sized[1024]]},
        {"id": "c", "images": [sized[2048]]},
        {"id": "d", "images": [sized[5000]]},
        {"id": "e", "images": []},  # no images: kept
        {"id": "f", "images": [sized[100], sized[2048]]},
    ]
    out, ledger = run_op("image_size_filter", rows, min_size="1KB", max_size="2KB")
    assert _kept(out) == ["b", "c", "e", "f"]  # closed interval: 1024 and 2048 pass
    stats = {row["id"]: row["__dj__stats__"]["image_sizes"] for row in out.rows()}
    assert stats == {"b": [1024], "c": [2048], "e": [], "f": [100, 2048]}
    dropped = {rec.row["id"]: rec.reason for rec in ledger.filtered}
    assert set(dropped) == {"a", "d"}
    assert "image_sizes=[100]" in dropped["a"]
    assert not ledger.quarantined


def test_size_filter_all_and_repeated_paths(sized):
    rows = [
        {"id": "mixed", "images": [sized[100], sized[2048]]},
        {"id": "both", "images": [sized[1024], sized[2048]]},
        {"id": "twice", "images": [sized[1024], sized[1024]]},
    ]
    out, _ = run_op("image_size_filter", rows, min_size="1KB", max_size="2KB", any_or_all="all")
    assert _kept(out) == ["both", "twice"]
    assert out.rows()[1]["__dj__stats__"]["image_sizes"] == [1024, 1024]


def test_size_filter_decimal_units(sized):
    rows = [{"id": str(n), "images": [p]} for n, p in sized.items()]
    out, _ = run_op("image_size_filter", rows, min_size="0.5KB", max_size="1.5KB")
    assert _kept(out) == ["1024"]  # Data-Juicer would read [5 KiB, 15 KiB] and keep only 5000


def test_size_filter_open_interval_and_reversed(sized):
    rows = [{"id": str(n), "images": [p]} for n, p in sized.items()]
    out, _ = run_op(
        "image_size_filter", rows, min_size=1024, max_size=2048, min_closed_interval=False
    )
    assert _kept(out) == ["2048"]
    # reversed_range keeps the outside, endpoints included (Data-Juicer's get_keep_boolean)
    out, _ = run_op("image_size_filter", rows, min_size=1024, max_size=2048, reversed_range=True)
    assert _kept(out) == ["100", "1024", "2048", "5000"]
    out, _ = run_op("image_size_filter", rows, min_size=1025, max_size=2047, reversed_range=True)
    assert _kept(out) == ["100", "1024", "2048", "5000"]
    out, _ = run_op("image_size_filter", rows, min_size=1000, max_size=3000, reversed_range=True)
    assert _kept(out) == ["100", "5000"]


def test_size_filter_missing_file_quarantines_only_that_sample(sized, tmp_path):
    rows = [
        {"id": "ok", "images": [sized[1024]]},
        {"id": "gone", "images": [str(tmp_path / "nope.jpg")]},
    ]
    out, ledger = run_op("image_size_filter", rows)
    assert _kept(out) == ["ok"]
    assert len(ledger.quarantined) == 1
    assert "missing image" in ledger.quarantined[0].error


# -- image_aspect_ratio_filter -----------------------------------------------------


@pytest.fixture
def shaped(tmp_path):
    paths = {}
    for w, h in [(300, 100), (100, 300), (200, 200), (400, 100), (99, 300), (30, 10)]:
        path = tmp_path / f"{w}x{h}.png"
        Image.new("RGB", (w, h), (10, 20, 30)).save(path)
        paths[(w, h)] = str(path)
    return paths


def test_aspect_ratio_defaults(shaped):
    op = get_operator("image_aspect_ratio_filter")()
    assert (op.min_ratio, op.max_ratio, op.any_or_all) == (0.333, 3.0, "any")
    rows = [{"id": f"{w}x{h}", "images": [p]} for (w, h), p in shaped.items()]
    rows.append({"id": "none", "images": []})
    out, ledger = run_op("image_aspect_ratio_filter", rows)
    # 100/300 = 0.3333.. >= 0.333; 99/300 = 0.33 < 0.333; 3.0 == max is kept
    assert _kept(out) == ["300x100", "100x300", "200x200", "30x10", "none"]
    ratios = {row["id"]: row["__dj__stats__"]["aspect_ratios"] for row in out.rows()}
    assert ratios["300x100"] == [3.0]
    assert ratios["100x300"] == [100 / 300]
    assert ratios["200x200"] == [1.0]
    assert ratios["none"] == []
    assert sorted(rec.row["id"] for rec in ledger.filtered) == ["400x100", "99x300"]


def test_aspect_ratio_any_all(shaped):
    rows = [
        {"id": "mixed", "images": [shaped[(400, 100)], shaped[(200, 200)]]},
        {"id": "bad", "images": [shaped[(400, 100)], shaped[(99, 300)]]},
    ]
    out, _ = run_op("image_aspect_ratio_filter", rows)
    assert _kept(out) == ["mixed"]
    assert out.rows()[0]["__dj__stats__"]["aspect_ratios"] == [4.0, 1.0]
    out, _ = run_op("image_aspect_ratio_filter", rows, any_or_all="all")
    assert _kept(out) == []


def test_aspect_ratio_bounds_and_reversed(shaped):
    rows = [{"id": f"{w}x{h}", "images": [p]} for (w, h), p in shaped.items()]
    out, _ = run_op("image_aspect_ratio_filter", rows, min_ratio=1.0, max_ratio=3.0)
    assert _kept(out) == ["300x100", "200x200", "30x10"]
    out, _ = run_op(
        "image_aspect_ratio_filter", rows, min_ratio=1.0, max_ratio=3.0, max_closed_interval=False
    )
    assert _kept(out) == ["200x200"]
    out, _ = run_op(
        "image_aspect_ratio_filter", rows, min_ratio=1.0, max_ratio=3.0, reversed_range=True
    )
    # outside (1, 3) with both endpoints kept
    assert _kept(out) == ["300x100", "100x300", "200x200", "400x100", "99x300", "30x10"]
    out, _ = run_op(
        "image_aspect_ratio_filter", rows, min_ratio=0.5, max_ratio=2.0, reversed_range=True
    )
    assert _kept(out) == ["300x100", "100x300", "400x100", "99x300", "30x10"]


def test_aspect_ratio_uses_exif_rotation_without_decoding(tmp_path, monkeypatch):
    path = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 400x100, displayed 100x400
    Image.new("RGB", (400, 100)).save(path, exif=exif.tobytes())
    from dj_synth.operators import media

    def no_decode(*args, **kwargs):
        raise AssertionError("aspect ratio must not decode pixels")

    monkeypatch.setattr(media, "decode_rgb", no_decode)
    out, _ = run_op("image_aspect_ratio_filter", [{"id": "r", "images": [str(path)]}])
    assert out.rows() == []  # 0.25 < 0.333


def test_aspect_ratio_bad_image_quarantined(shaped, tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    rows = [
        {"id": "ok", "images": [shaped[(200, 200)]]},
        {"id": "junk", "images": [shaped[(200, 200)], str(junk)]},
    ]
    out, ledger = run_op("image_aspect_ratio_filter", rows)
    assert _kept(out) == ["ok"]
    assert [q.row["id"] for q in ledger.quarantined] == ["junk"]
    with pytest.raises(ValueError, match="any_or_all"):
        get_operator("image_aspect_ratio_filter")(any_or_all="none")
