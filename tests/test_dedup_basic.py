"""document_deduplicator and image_deduplicator: keys and first-occurrence-wins decisions."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from helpers import dct_phash, decide_drops, read_jsonl, run_recipe, write_recipe
from PIL import Image

from dj_synth.operators import Batch, SampleRef, get_operator
from dj_synth.operators.base import DEDUP_KEY
from dj_synth.operators.ledger import Ledger

IMG, EOC = "<__dj__image>", "<|__dj__eoc|>"


def md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def dedup(name, rows, **args):
    """Keys per surviving row, the ids kept (first occurrence wins) and the ledger."""
    op = get_operator(name)(**args)
    batch = Batch.from_rows(rows, [SampleRef(i, "t.jsonl", i + 1) for i in range(len(rows))])
    ledger = Ledger()
    out = op.run(batch, ledger)
    keys = out.columns[DEDUP_KEY]
    drops = decide_drops(op, out)
    kept = [row.get("id") for row in out.rows() if row.get("id") not in drops]
    return keys, kept, ledger


def texts(*values):
    return [{"id": str(i), "text": t} for i, t in enumerate(values)]


# -- document_deduplicator -----------------------------------------------------------


def test_document_key_is_md5_of_stripped_text():
    keys, kept, _ = dedup("document_deduplicator", texts("Hello World", "  Hello World\n", ""))
    assert keys == [md5("Hello World"), md5("Hello World"), md5("")]
    assert keys[0] == "b10a8db164e0754105b7a99be72e3fe5"
    assert kept == ["0", "2"]


def test_document_defaults_are_case_and_punctuation_sensitive():
    rows = texts("Hello, World!", "hello world", "Hello World", "Hello, World!")
    _, kept, _ = dedup("document_deduplicator", rows)
    assert kept == ["0", "1", "2"]


def test_document_lowercase():
    rows = texts("Hello World", "HELLO WORLD", "hello  world")
    keys, kept, _ = dedup("document_deduplicator", rows, lowercase=True)
    assert keys[:2] == [md5("hello world")] * 2
    assert kept == ["0", "2"]


def test_document_ignore_non_character_data_juicer_example():
    # Data-Juicer's regex removes whitespace runs, digit runs and ASCII punctuation only
    keys, _, _ = dedup(
        "document_deduplicator", texts("Hello, World 123!\n  ¿Qué?"), ignore_non_character=True
    )
    assert keys == [md5("HelloWorld¿Qué")]


def test_document_ignore_non_character_groups_variants():
    rows = texts(
        "A cat, on 2 mats!", "A cat on mats", "Acatonmats", "a cat on mats", "A cat on mats ٣"
    )
    _, kept, _ = dedup("document_deduplicator", rows, ignore_non_character=True)
    assert kept == ["0", "3"]  # Arabic-Indic digit \u0663 is a Unicode digit: removed too
    _, kept, _ = dedup("document_deduplicator", rows, ignore_non_character=True, lowercase=True)
    assert kept == ["0"]


def test_document_ignore_non_character_unicode_space_not_separators():
    # \u3000 (ideographic space) and \xa0 are whitespace; \x1c is not (regex module's \s)
    keys, _, _ = dedup(
        "document_deduplicator", texts("a\u3000b\xa0c", "a\x1cb"), ignore_non_character=True
    )
    assert keys == [md5("abc"), md5("a\x1cb")]


def test_document_special_tokens_are_removed_before_hashing():
    rows = texts(
        f"{IMG} a dog on a beach {EOC}",
        "a dog on a beach",
        f"a dog on a beach {IMG}{IMG}",
        f"{IMG}{EOC}",
        "",
        f"{IMG} a cat {EOC}",
    )
    keys, kept, ledger = dedup("document_deduplicator", rows)
    assert keys[0] == keys[1] == keys[2] == md5("a dog on a beach")
    assert keys[3] == keys[4] == md5("")  # token-only text is empty: a duplicate of ""
    assert kept == ["0", "3", "5"]
    assert not ledger.quarantined


def test_document_tokens_removed_before_ignore_non_character():
    # left in, the tokens' letters ("djimage", "djeoc") would survive the punctuation removal
    keys, _, _ = dedup(
        "document_deduplicator", texts(f"{IMG}Nice pic!{EOC}"), ignore_non_character=True
    )
    assert keys == [md5("Nicepic")]


def test_document_custom_special_tokens():
    rows = texts("<image> two birds", "two birds")
    _, kept, _ = dedup("document_deduplicator", rows, image_special_token="<image>")
    assert kept == ["0"]
    _, kept, _ = dedup("document_deduplicator", rows)  # default token: "<image>" is text
    assert kept == ["0", "1"]


def test_document_unicode_not_normalised():
    rows = texts("café", "cafe\u0301", "café")  # NFC vs NFD stay distinct, as in Data-Juicer
    _, kept, _ = dedup("document_deduplicator", rows)
    assert kept == ["0", "1"]


def test_document_missing_text_is_quarantined_alone():
    rows = [{"id": "0", "text": "x"}, {"id": "1"}, {"id": "2", "text": "x"}]
    keys, kept, ledger = dedup("document_deduplicator", rows)
    assert kept == ["0"]
    assert [q.row["id"] for q in ledger.quarantined] == ["1"]
    assert "text field 'text' is missing" in ledger.quarantined[0].error


# -- image_deduplicator ----------------------------------------------------------------


def _pattern(seed: int, size=(96, 64)) -> Image.Image:
    """A smooth image with structure, so different seeds hash differently."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)


@pytest.fixture
def pics(tmp_path):
    paths = {}
    for name, seed in [("a", 1), ("b", 2), ("c", 3)]:
        path = tmp_path / f"{name}.png"
        _pattern(seed).save(path)
        paths[name] = str(path)
    # byte-identical copy of a, and a re-encoded (JPEG, larger) version of a
    paths["a_copy"] = str(tmp_path / "a_copy.png")
    (tmp_path / "a_copy.png").write_bytes((tmp_path / "a.png").read_bytes())
    paths["a_jpg"] = str(tmp_path / "a.jpg")
    _pattern(1, (192, 128)).save(paths["a_jpg"], quality=95)
    return paths


def test_image_key_is_tuple_of_phash_hex(pics):
    rows = [{"id": "0", "images": [pics["a"], pics["b"]]}]
    keys, _, _ = dedup("image_deduplicator", rows)
    expected = tuple(dct_phash(np.asarray(Image.open(pics[k]).convert("RGB"))) for k in "ab")
    assert keys == [expected]
    assert all(len(h) == 16 for h in keys[0])


@pytest.mark.parametrize("method", ["phash", "dhash", "whash", "ahash"])
def test_image_dedup_methods(pics, method):
    rows = [
        {"id": "a", "images": [pics["a"]]},
        {"id": "b", "images": [pics["b"]]},
        {"id": "a_copy", "images": [pics["a_copy"]]},
        {"id": "c", "images": [pics["c"]]},
        {"id": "none", "images": []},
        {"id": "none2", "images": []},
    ]
    keys, kept, ledger = dedup("image_deduplicator", rows, method=method)
    assert kept == ["a", "b", "c", "none", "none2"]  # samples without images are never dupes
    assert keys[4] is None and keys[5] is None
    assert len({keys[0], keys[1], keys[3]}) == 3
    assert not ledger.quarantined


def test_image_dedup_perceptual_match_across_encodings(pics):
    rows = [{"id": "png", "images": [pics["a"]]}, {"id": "jpg", "images": [pics["a_jpg"]]}]
    _, kept, _ = dedup("image_deduplicator", rows, method="ahash")
    assert kept == ["png"]


def test_image_dedup_unique_paths_in_order(pics):
    a, b = pics["a"], pics["b"]
    rows = [
        {"id": "ab", "images": [a, b]},
        {"id": "aab", "images": [a, a, b]},  # a repeated path counts once: same key as ab
        {"id": "ba", "images": [b, a]},  # order matters
        {"id": "a", "images": [a]},
        {"id": "aa", "images": [a, a]},
    ]
    keys, kept, _ = dedup("image_deduplicator", rows)
    assert keys[0] == keys[1] and keys[3] == keys[4] and keys[0] != keys[2]
    assert kept == ["ab", "ba", "a"]


def test_image_dedup_ignores_text_by_default(pics):
    rows = [
        {"id": "0", "text": "one caption", "images": [pics["a"]]},
        {"id": "1", "text": "another caption", "images": [pics["a"]]},
        {"id": "2", "text": "same", "images": []},
        {"id": "3", "text": "same", "images": []},
    ]
    _, kept, _ = dedup("image_deduplicator", rows)
    assert kept == ["0", "2", "3"]


def test_image_dedup_consider_text(pics):
    a, b = pics["a"], pics["b"]
    rows = [
        {"id": "0", "text": f"{IMG} a red thing", "images": [a]},
        {"id": "1", "text": "a red thing", "images": [a]},  # same words, tokens aside
        {"id": "2", "text": "a blue thing", "images": [a]},
        {"id": "3", "text": "a red thing", "images": [b]},
        {"id": "4", "text": "no image", "images": []},
        {"id": "5", "text": "no image ", "images": []},  # image-less: deduplicated by text
        {"id": "6", "text": "other", "images": []},
    ]
    keys, kept, _ = dedup("image_deduplicator", rows, consider_text=True)
    hash_a = dct_phash(np.asarray(Image.open(a).convert("RGB")))
    assert keys[0] == ((hash_a,), md5("a red thing"))
    assert keys[4] == ((), md5("no image"))
    assert kept == ["0", "2", "3", "4", "6"]


def test_image_dedup_arguments():
    op = get_operator("image_deduplicator")()
    assert (op.method, op.consider_text, op.hamming_threshold) == ("phash", False, 0)
    with pytest.raises(ValueError, match="method"):
        get_operator("image_deduplicator")(method="md5")
    assert get_operator("image_deduplicator")(hamming_threshold=4).hamming_threshold == 4
    with pytest.raises(ValueError, match="hamming_threshold must be in 0..63"):
        get_operator("image_deduplicator")(hamming_threshold=-1)
    with pytest.raises(ValueError, match="hamming_threshold must be in 0..63"):
        get_operator("image_deduplicator")(hamming_threshold=64)


def test_image_dedup_bad_image_quarantined_alone(pics, tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8\xff\xe0 nope")
    rows = [
        {"id": "0", "images": [pics["a"]]},
        {"id": "1", "images": [str(junk)]},
        {"id": "2", "images": [str(tmp_path / "missing.png")]},
        {"id": "3", "images": [pics["a_copy"]]},
    ]
    _, kept, ledger = dedup("image_deduplicator", rows)
    assert kept == ["0"]
    assert [q.row["id"] for q in ledger.quarantined] == ["1", "2"]


def test_image_dedup_hashes_a_small_decode(tmp_path, monkeypatch):
    from dj_synth.operators import media

    path = tmp_path / "big.jpg"
    _pattern(7, (1600, 1200)).save(path)
    sizes = []
    real = media.decode_reduced

    def spy(p, side):
        img = real(p, side)
        sizes.append(img.pixels.shape[:2])
        return img

    monkeypatch.setattr(media, "decode_reduced", spy)
    dedup("image_deduplicator", [{"id": "0", "images": [str(path)]}])
    assert sizes == [(150, 200)]  # 1/8 DCT scale, not the 1600x1200 full decode
    sizes.clear()
    dedup("image_deduplicator", [{"id": "0", "images": [str(path)]}], method="dhash")
    assert sizes == [(150, 200)]  # imagehash's methods: the same 1/8 scale (>= 64 px)


# -- through the executor ----------------------------------------------------------------


@pytest.mark.parametrize("np_", [1, 2])
def test_dedups_in_a_recipe_keep_first_in_input_order(tmp_path, pics, np_):
    rows = [
        {"id": "0", "text": f"{IMG} Sunset over water {EOC}", "images": [pics["a"]]},
        {"id": "1", "text": "sunset over water", "images": [pics["b"]]},
        {"id": "2", "text": "A different caption", "images": [pics["a_copy"]]},
        {"id": "3", "text": "Yet another caption", "images": [pics["c"]]},
        {"id": "4", "text": "Text only", "images": []},
        {"id": "5", "text": "text only!", "images": []},
    ]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out" / "x.jsonl"
    recipe = write_recipe(
        tmp_path / "r.yaml",
        dataset_path=str(data),
        export_path=str(out),
        np=np_,
        process=[
            {"document_deduplicator": {"lowercase": True, "ignore_non_character": True}},
            {"image_deduplicator": {"method": "phash"}},
        ],
    )
    run_recipe(recipe)
    assert [r["id"] for r in read_jsonl(out)] == ["0", "3", "4"]
