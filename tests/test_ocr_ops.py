"""OCR operators with the real RapidOCR models (shipped in the rapidocr-onnxruntime wheel)."""

from __future__ import annotations

import pytest
from helpers import run_op
from PIL import Image, ImageDraw, ImageFont

pytest.importorskip("rapidocr_onnxruntime")
pytest.importorskip("skimage")

from dj_synth.operators import get_operator  # noqa: E402
from dj_synth.operators.batch import BatchContext  # noqa: E402
from dj_synth.tools.ocr_samples import OcrScore, render_samples, save_samples  # noqa: E402

TOK, EOC = "<__dj__image>", "<|__dj__eoc|>"
N_RENDERED = 12
# First measurements: bench/ocr_quality.py (60 images, 229 words) recall / precision with
# spaces ignored 0.95 / 0.95, exact words 0.92 / 0.94; this set of 12 (47 words) 0.87 /
# 0.93 and 0.74 / 0.85 (the recognizer drops some spaces between Latin words and misreads
# a few small words on photos). The thresholds allow three more misread words here and
# fail for a broken engine, a wrong colour order, lost lines or a wrong confidence cut.
MIN_RECALL, MIN_PRECISION = 0.8, 0.85
MIN_EXACT_RECALL, MIN_EXACT_PRECISION = 0.65, 0.75


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """12 rendered images with known words, 2 text-free photos, a sign, a broken file."""
    import skimage.data

    folder = tmp_path_factory.mktemp("ocr")
    samples = render_samples(N_RENDERED, seed=7)
    rendered = save_samples(samples, folder)
    photos = []
    for name in ("coffee", "chelsea"):
        Image.fromarray(getattr(skimage.data, name)()).save(folder / f"{name}.jpg", quality=90)
        photos.append(str(folder / f"{name}.jpg"))
    sign = Image.new("RGB", (400, 200), (250, 250, 250))
    font = ImageFont.load_default(size=48)
    draw = ImageDraw.Draw(sign)
    draw.text((40, 60), "BAKERY", font=font, fill=(20, 20, 20))
    box = draw.textbbox((40, 60), "BAKERY", font=font)
    sign.save(folder / "sign.png")
    (folder / "broken.png").write_bytes((folder / "sign.png").read_bytes()[:300])
    return {"samples": samples, "rendered": rendered, "photos": photos,
            "sign": str(folder / "sign.png"), "sign_box": box, "broken": str(folder / "broken.png")}  # fmt: skip


@pytest.fixture(scope="module")
def annotated(images):
    """The mapper's output over every image, one sample per image (mode none)."""
    paths = images["rendered"] + images["photos"] + [images["sign"]]
    rows = [{"id": str(i), "text": f"{TOK} x", "images": [p]} for i, p in enumerate(paths)]
    out, ledger = run_op("image_ocr_mapper", rows)
    assert not ledger.quarantined and [r["text"] for r in out.rows()] == [r["text"] for r in rows]
    return [r["__dj__meta__"]["ocr"][0] for r in out.rows()]


def test_reads_rendered_words(images, annotated):
    score = OcrScore()
    for sample, lines in zip(images["samples"], annotated):
        score.add(sample.words, " ".join(line["text"] for line in lines))
        for line in lines:
            assert line["confidence"] >= 0.5 and len(line["box"]) == 4
    got = score.figures()
    print(f"OCR on {N_RENDERED} rendered images ({score.words} words): {got}")
    assert score.words >= 25
    assert got["recall"] >= MIN_RECALL and got["precision"] >= MIN_PRECISION, got
    assert got["recall_exact_words"] >= MIN_EXACT_RECALL, got
    assert got["precision_exact_words"] >= MIN_EXACT_PRECISION, got


def test_photos_without_text_read_nothing(images, annotated):
    n = N_RENDERED
    assert annotated[n : n + len(images["photos"])] == [[] for _ in images["photos"]]


def test_sign_box_covers_the_drawn_text(images, annotated):
    (line,) = annotated[-1]
    assert line["text"] == "BAKERY"
    xs, ys = [p[0] for p in line["box"]], [p[1] for p in line["box"]]
    left, top, right, bottom = images["sign_box"]
    assert min(xs) <= left + 4 and max(xs) >= right - 4
    assert min(ys) <= top + 4 and max(ys) >= bottom - 4
    assert max(xs) - min(xs) < 1.5 * (right - left)  # a box around the word, not the image


def _insert(text, sentences, mode):
    op = get_operator("image_ocr_mapper")(mode=mode)
    return op._insert(text, sentences, BatchContext())


def test_text_goes_after_its_own_image():
    one, two = 'Text in the image: "A".', 'Text in the image: "B".'
    text = f"{TOK} {TOK} two dogs {EOC} {TOK}\na cat {EOC}"
    assert _insert(text, [one, "", two], "append") == (
        f"{TOK} {TOK} two dogs {one} {EOC} {TOK}\na cat {two} {EOC}"
    )
    assert _insert(text, [one, "", two], "prepend") == (
        f"{TOK} {one} {TOK} two dogs {EOC} {TOK} {two}\na cat {EOC}"
    )
    assert _insert(text, ["", one, ""], "prepend") == f"{TOK} {TOK} {one} two dogs {EOC} {TOK}\na cat {EOC}"
    assert _insert("a plain caption", [one, two], "append") == f"a plain caption {one} {two}"
    assert _insert("a plain caption", [one], "prepend") == f"{one} a plain caption"
    assert _insert(text, ["", "", ""], "append") == text


def test_mapper_writes_meta_and_caption(images):
    sign, photo = images["sign"], images["photos"][0]
    rows = [{"id": "s", "text": f"{TOK} a shop {EOC}", "images": [photo, sign][1:]},
            {"id": "m", "text": f"{TOK} {TOK} both {EOC}", "images": [photo, sign]},
            {"id": "n", "text": "no image", "__dj__meta__": {"keep": 1}}]  # fmt: skip
    out, _ = run_op("image_ocr_mapper", rows, mode="append", template="[{ocr}]", max_chars=4)
    s, m, n = out.rows()
    assert s["text"] == f"{TOK} a shop [BAKE] {EOC}"  # cut to max_chars
    assert m["text"] == f"{TOK} {TOK} both [BAKE] {EOC}"
    assert m["__dj__meta__"]["ocr"][0] == [] and m["__dj__meta__"]["ocr"][1][0]["text"] == "BAKERY"
    assert n == rows[2]
    with pytest.raises(ValueError, match="template must hold"):
        get_operator("image_ocr_mapper")(template="no field")
    with pytest.raises(ValueError, match="mode must be"):
        get_operator("image_ocr_mapper")(mode="replace")


def test_area_ratio_and_keep_rule(images, annotated):
    (line,) = annotated[-1]
    (ax, ay), (bx, by), (cx, cy), (dx, dy) = line["box"]
    # the quadrilateral as two triangles (half cross products), over 400 x 200 pixels
    triangles = abs((bx - ax) * (cy - ay) - (cx - ax) * (by - ay)) + abs(
        (cx - ax) * (dy - ay) - (dx - ax) * (cy - ay)
    )
    expected = triangles / 2 / (400 * 200)
    rows = [{"id": "sign", "text": "x", "images": [images["sign"]]},
            {"id": "photo+sign", "text": "x", "images": [images["photos"][1], images["sign"]]},
            {"id": "bad", "text": "x", "images": [images["broken"]]},
            {"id": "none", "text": "x"}]  # fmt: skip
    out, ledger = run_op("image_ocr_area_ratio_filter", rows, max_ratio=1.0)
    stats = {r["id"]: r["__dj__stats__"]["image_ocr_area_ratio"] for r in out.rows()}
    assert stats["sign"][0] == pytest.approx(expected, abs=1e-5)
    assert stats["photo+sign"] == [0.0, stats["sign"][0]] and stats["none"] == []
    (q,) = ledger.quarantined
    assert q.row["id"] == "bad" and q.stage == "image_ocr_area_ratio_filter"
    cut = stats["sign"][0] / 2
    for mode, kept in (("any", {"photo+sign", "none"}), ("all", {"none"})):
        out, _ = run_op("image_ocr_area_ratio_filter", rows[:2] + rows[3:], max_ratio=cut, any_or_all=mode)
        assert {r["id"] for r in out.rows()} == kept
    out, _ = run_op("image_ocr_area_ratio_filter", rows[:2] + rows[3:], min_ratio=cut)
    assert {r["id"] for r in out.rows()} == {"sign", "photo+sign", "none"}
