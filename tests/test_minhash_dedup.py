"""document_minhash_deduplicator: near-duplicate texts found, distinct and short texts spared."""

from __future__ import annotations

import random

import pytest
from helpers import dedup_drops

from dj_synth.operators import get_operator
from dj_synth.operators.document_minhash_deduplicator import optimal_param

WORDS = ("red blue green small large old new happy quiet bright dark cat dog bird horse tree river "
         "mountain house street car boat sits runs walks stands near under over beside the a on in "
         "with at city field forest beach sky cloud sun moon child woman man").split()  # fmt: skip


def _corpus(seed: int = 0):
    rng = random.Random(seed)
    rows, truth = [], {}
    for i in range(60):
        words = [rng.choice(WORDS) for _ in range(rng.randint(25, 40))]
        base = " ".join(words)
        rows.append({"id": f"b{i}", "text": f"<__dj__image>\n{base} <|__dj__eoc|>"})
        # one word replaced, case and punctuation changed: the same caption
        edited = list(words)
        edited[rng.randrange(len(edited))] = rng.choice(WORDS)
        variant = " ".join(edited).capitalize() + "."
        rows.append({"id": f"v{i}", "text": f"<__dj__image> {variant} <|__dj__eoc|>"})
        truth[f"v{i}"] = f"b{i}"
    shorts = ["a cat", "a dog", "red car", "the sky", "a cat"]  # only the repeated one collides
    for j, s in enumerate(shorts):
        rows.append({"id": f"s{j}", "text": f"<__dj__image> {s} <|__dj__eoc|>"})
    truth["s4"] = "s0"
    rows.append({"id": "empty", "text": "<__dj__image> <|__dj__eoc|>"})
    rows.append({"id": "empty2", "text": "<__dj__image><|__dj__eoc|>"})
    return rows, truth


def _dedup(rows, **args):
    return dedup_drops("document_minhash_deduplicator", rows, **args)


def test_recall_precision_and_short_texts():
    rows, truth = _corpus()
    dropped = _dedup(rows, tokenization="punctuation", window_size=3)
    assert set(dropped) <= set(truth)  # precision 100%: no distinct caption dropped
    assert len(dropped) >= 0.9 * len(truth)  # recall >= 90% at one word edit in 25-40 words
    for rid, reason in dropped.items():
        assert reason.startswith(f"near-duplicate of id='{truth[rid]}'")
    assert "s4" in dropped and not {"s0", "s1", "s2", "s3"} & set(dropped)
    assert "empty" not in dropped and "empty2" not in dropped  # empty texts never collide


def test_special_tokens_do_not_make_texts_alike():
    rows = [{"id": "1", "text": "<__dj__image> a cat <|__dj__eoc|>"},
            {"id": "2", "text": "<__dj__image> a dog <|__dj__eoc|>"}]  # fmt: skip
    assert _dedup(rows, window_size=5) == {}


def test_parameters():
    assert optimal_param(0.7, 256) == optimal_param(0.7, 256)
    b, r = optimal_param(0.7, 256)
    assert b * r <= 256 and 10 <= b <= 60
    with pytest.raises(ValueError, match="sentencepiece"):
        get_operator("document_minhash_deduplicator")(tokenization="sentencepiece")
    with pytest.raises(ValueError, match="both"):
        get_operator("document_minhash_deduplicator")(num_bands=4)


def test_same_result_for_any_np(tmp_path):
    import json

    from helpers import run_recipe, write_recipe

    rows, _ = _corpus(seed=3)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    outs = []
    for np_ in (1, 2):
        recipe = write_recipe(
            tmp_path / f"r{np_}.yaml", dataset_path=str(data), io_batch_size=16,
            export_path=str(tmp_path / f"o{np_}" / "res.jsonl"), np=np_,
            process=[{"document_minhash_deduplicator": {"tokenization": "punctuation", "window_size": 3}}],
        )  # fmt: skip
        s = run_recipe(recipe)
        outs.append((open(s["export_files"][0], "rb").read(), s["filtered"]))
    assert outs[0] == outs[1] and outs[0][1]["document_minhash_deduplicator"] > 40
