"""document_simhash_deduplicator: near-duplicate texts found, distinct and short texts spared."""

from __future__ import annotations

import hashlib
import json
import random
import re

import pytest
from helpers import dedup_drops, run_op, run_recipe, write_recipe

from dj_synth.operators import get_operator
from dj_synth.operators.base import DEDUP_KEY
from dj_synth.pipelines.recipe import RecipeError, load_recipe

NAME = "document_simhash_deduplicator"
WORDS = ("red blue green small large old new happy quiet bright dark cat dog bird horse tree river "
         "mountain house street car boat sits runs walks stands near under over beside the a on in "
         "with at city field forest beach sky cloud sun moon child woman man").split()  # fmt: skip
# 40-64 shingles a caption: 12 bits of 64 separate one-word edits from distinct captions
ARGS = {"tokenization": "punctuation", "window_size": 2, "hamming_distance": 12, "num_blocks": 13}


def _corpus(seed: int = 0):
    rng = random.Random(seed)
    rows, truth = [], {}
    for i in range(60):
        words = [rng.choice(WORDS) for _ in range(rng.randint(25, 40))]
        rows.append({"id": f"b{i}", "text": f"<__dj__image>\n{' '.join(words)} <|__dj__eoc|>"})
        # one word replaced, case and punctuation changed: the same caption
        words[rng.randrange(len(words))] = rng.choice(WORDS)
        variant = " ".join(words).capitalize() + "."
        rows.append({"id": f"v{i}", "text": f"<__dj__image> {variant} <|__dj__eoc|>"})
        truth[f"v{i}"] = f"b{i}"
    shorts = ["a cat", "a dog", "red car", "the sky", "a cat"]  # only the repeated one collides
    for j, s in enumerate(shorts):
        rows.append({"id": f"s{j}", "text": f"<__dj__image> {s} <|__dj__eoc|>"})
    truth["s4"] = "s0"
    rows.append({"id": "empty", "text": "<__dj__image> <|__dj__eoc|>"})
    rows.append({"id": "empty2", "text": "<__dj__image><|__dj__eoc|>"})
    return rows, truth


def _keys(rows, **args) -> dict:
    out, _ = run_op(NAME, rows, **args)
    return {row["id"]: key for row, key in zip(out.rows(), out.columns[DEDUP_KEY])}


def _dedup(rows, **args) -> dict[str, str]:
    """{id: reason} of the samples dropped, decided as every engine decides."""
    return dedup_drops(NAME, rows, **args)


def _distance(a: tuple[str], b: tuple[str]) -> int:
    return (int(a[0], 16) ^ int(b[0], 16)).bit_count()


def test_arguments_are_validated():
    op = get_operator(NAME)
    assert (op().window_size, op().num_blocks, op().hamming_distance) == (6, 6, 4)  # Data-Juicer's
    with pytest.raises(ValueError, match="less than num_blocks"):
        op(hamming_distance=6, num_blocks=6)
    with pytest.raises(ValueError, match="positive"):
        op(hamming_distance=0)
    with pytest.raises(ValueError, match="positive"):
        op(num_blocks=-1)
    with pytest.raises(ValueError, match="at most 64"):
        op(hamming_distance=4, num_blocks=65)
    with pytest.raises(ValueError, match="window_size"):
        op(window_size=0)
    with pytest.raises(ValueError, match="tokenization"):
        op(tokenization="sentencepiece")


def test_bad_arguments_fail_the_recipe_at_load(tmp_path):
    recipe = write_recipe(
        tmp_path / "r.yaml", dataset_path=str(tmp_path / "d.jsonl"),
        export_path=str(tmp_path / "o" / "res.jsonl"),
        process=[{NAME: {"hamming_distance": 8, "num_blocks": 6}}],
    )  # fmt: skip
    with pytest.raises(RecipeError, match="less than num_blocks"):
        load_recipe(recipe, [])


def test_simhash_is_the_majority_of_md5_bits():
    """Bit i is set iff more than half of the shingles' hashes (md5[:8], big-endian) set it."""
    rows, _ = _corpus()
    op = get_operator(NAME)(**ARGS)
    for row, key in zip(rows[:20], _keys(rows[:20], **ARGS).values()):
        text = row["text"].replace("<__dj__image>", " ").replace("<|__dj__eoc|>", " ")
        hashes = [
            int.from_bytes(hashlib.md5(s.encode()).digest()[:8], "big") for s in op.shingles(text)
        ]
        votes = [sum(h >> i & 1 for h in hashes) for i in range(64)]
        expected = sum(1 << i for i, v in enumerate(votes) if 2 * v > len(hashes))
        assert key == (f"{expected:016x}",)


def test_short_texts_do_not_all_collide():
    """Data-Juicer hashes texts shorter than the window to 0, so they all collide."""
    rows = [{"id": str(i), "text": t}
            for i, t in enumerate(["a cat", "a dog", "red car", "sun", "A\tCAT ", "a red", "red a"])]  # fmt: skip
    keys = _keys(rows)  # default window_size 6: every text here is one shingle
    assert len(set(keys.values())) == 6 and ("0" * 16,) not in keys.values()
    dropped = _dedup(rows)
    assert list(dropped) == ["4"] and "id='0'" in dropped["4"] and "distance 0" in dropped["4"]


def test_special_tokens_do_not_make_texts_alike():
    img, eoc = "<__dj__image>", "<|__dj__eoc|>"
    rows = [{"id": "1", "text": f"{img}{img}{img} a cat {eoc}"},
            {"id": "2", "text": f"{img}{img}{img} a dog {eoc}"},
            {"id": "3", "text": f"{img} {eoc}"}, {"id": "4", "text": f"{img}{eoc}"}]  # fmt: skip
    args = {"tokenization": "character", "hamming_distance": 12, "num_blocks": 13}
    assert _dedup(rows, **args) == {}  # and texts empty without the tokens never collide
    assert _keys(rows, **args)["3"] is None
    # control: the same texts with the tokens taken as words are within 12 bits
    as_words = {"image_special_token": "<unused>", "eoc_special_token": "<unused too>"}
    assert set(_dedup(rows, **args, **as_words)) == {"2"}


def test_recall_precision_and_reasons():
    rows, truth = _corpus()
    keys = _keys(rows, **ARGS)
    dropped = _dedup(rows, **ARGS)
    assert set(dropped) <= set(truth)  # precision 100%: no distinct caption dropped
    # recall, measured: 59 of the 60 one-word edits (the 60th is 14 bits off) + the short repeat
    assert len(dropped) >= 60 and len(truth) == 61  # recall >= 98%
    position = {row["id"]: i for i, row in enumerate(rows)}
    for rid, reason in dropped.items():  # names the kept original and the distance to it
        kept, distance = truth[rid], _distance(keys[rid], keys[truth[rid]])
        assert reason == (
            f"near-duplicate of id='{kept}' (input sample #{position[kept]}), "
            f"hamming distance {distance}"
        )
        assert distance <= ARGS["hamming_distance"]
    assert "s4" in dropped and not {"s0", "s1", "s2", "s3"} & set(dropped)
    assert "empty" not in dropped and "empty2" not in dropped  # empty texts never collide
    # the threshold matters: the nearest distinct captions are 17 bits apart
    ids = [r["id"] for r in rows if keys[r["id"]] and r["id"] not in truth]
    assert min(_distance(keys[a], keys[b]) for i, a in enumerate(ids) for b in ids[i + 1 :]) == 17


def test_num_blocks_changes_speed_not_result():
    rows, _ = _corpus(seed=1)
    base = _dedup(rows, **ARGS)
    assert len(base) > 50
    for blocks in (16, 32, 64):
        assert _dedup(rows, **{**ARGS, "num_blocks": blocks}) == base


def test_same_result_for_any_np(tmp_path):
    rows, _ = _corpus(seed=3)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    outs = []
    for np_ in (1, 2):
        recipe = write_recipe(
            tmp_path / f"r{np_}.yaml", dataset_path=str(data), io_batch_size=16,
            export_path=str(tmp_path / f"o{np_}" / "res.jsonl"), np=np_, process=[{NAME: ARGS}],
        )  # fmt: skip
        s = run_recipe(recipe)
        outs.append((open(s["export_files"][0], "rb").read(), s["filtered"]))
    assert outs[0] == outs[1] and outs[0][1][NAME] > 50
    kept = [json.loads(line)["id"] for line in outs[0][0].decode().splitlines()]
    assert re.fullmatch(r"b\d+", kept[0]) and "empty" in kept and "empty2" in kept
