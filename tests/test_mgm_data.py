"""MGM training data: lazy LLaVA dataset, bad images, collator, modality-grouped sampler."""

from __future__ import annotations

import json
import logging

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from dj_synth.tools.mgm.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX  # noqa: E402
from dj_synth.tools.mgm.data import (  # noqa: E402
    DataCollatorForSupervisedDataset,
    LazySupervisedDataset,
    modality_length_grouped_indices,
)
from dj_synth.tools.mgm.image_processing import MGMImageProcessor  # noqa: E402
from dj_synth.tools.mgm.tiny import AUX_IMAGE, build_clip, gemma_tokenizer  # noqa: E402


def write_llava(folder, n_images: int = 3, broken: bool = True, text_only: bool = True):
    (folder / "images").mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(n_images):
        Image.new("RGB", (40 + 10 * i, 30), (50 * i, 100, 200)).save(folder / f"images/{i}.jpg")
        samples.append(
            {
                "id": f"img{i}",
                "image": f"images/{i}.jpg",
                "conversations": [
                    {"from": "human", "value": "<image>\nDescribe."},
                    {"from": "gpt", "value": f"picture {i}"},
                ],
            }
        )
    if broken:
        (folder / "images/bad.jpg").write_bytes(b"not a jpeg")
        samples.append(
            {
                "id": "bad",
                "image": "images/bad.jpg",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat?"},
                    {"from": "gpt", "value": "broken"},
                ],
            }
        )
    if text_only:
        samples.append(
            {
                "id": "txt",
                "conversations": [
                    {"from": "human", "value": "Say hi"},
                    {"from": "gpt", "value": "hi there"},
                ],
            }
        )
    path = folder / "data.json"
    path.write_text(json.dumps(samples))
    return path


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    clip = tmp_path_factory.mktemp("clip")
    build_clip(clip)
    return MGMImageProcessor.from_pretrained(clip, AUX_IMAGE, "pad")


def test_dataset_items_and_bad_image_replaced(tmp_path, processor, caplog):
    data = write_llava(tmp_path)
    tok = gemma_tokenizer()
    ds = LazySupervisedDataset(data, tok, processor, tmp_path)
    assert len(ds) == 5
    item = ds[0]
    assert item["image"].shape == (1, 3, 28, 28)
    assert item["image_aux"].shape == (1, 3, AUX_IMAGE, AUX_IMAGE)
    assert int((item["input_ids"] == IMAGE_TOKEN_INDEX).sum()) == 1
    text = tok.decode([i for i in item["labels"].tolist() if i != IGNORE_INDEX])
    assert text == "picture 0<end_of_turn>\n<eos>"
    # text-only sample in a multimodal set: zero image placeholders, no -200
    txt = ds[4]
    assert txt["image"].abs().sum() == 0 and not (txt["input_ids"] == IMAGE_TOKEN_INDEX).any()
    # the unreadable image is reported with its path and replaced by another sample
    with caplog.at_level(logging.WARNING):
        bad = ds[3]
    assert str(tmp_path / "images/bad.jpg") in caplog.text
    assert "broken" not in tok.decode([i for i in bad["labels"].tolist() if i != IGNORE_INDEX])
    assert ds.failures >= 1
    assert ds.lengths == [2 + 2 + 128] * 3 + [2 + 1 + 128, 2 + 2]
    assert ds.modality_lengths == [4, 4, 4, 3, -4]


def test_collator_pads_truncates_and_stacks_images(tmp_path, processor):
    data = write_llava(tmp_path, broken=False)
    tok = gemma_tokenizer()
    ds = LazySupervisedDataset(data, tok, processor, tmp_path)
    items = [ds[0], ds[3]]
    batch = DataCollatorForSupervisedDataset(tok, model_max_length=2048)(items)
    n0, n1 = len(items[0]["input_ids"]), len(items[1]["input_ids"])
    assert batch["input_ids"].shape == (2, max(n0, n1))
    short = 0 if n0 < n1 else 1
    n_short = min(n0, n1)
    assert (batch["input_ids"][short, n_short:] == tok.pad_token_id).all()
    assert (batch["labels"][short, n_short:] == IGNORE_INDEX).all()
    assert batch["attention_mask"].sum().item() == n0 + n1
    assert batch["images"].shape == (2, 3, 28, 28)
    assert batch["images_aux"].shape == (2, 3, AUX_IMAGE, AUX_IMAGE)
    cut = DataCollatorForSupervisedDataset(tok, model_max_length=5)(items)
    assert cut["input_ids"].shape == (2, 5)


def test_collator_masks_labels_the_models_cut_drops():
    """With 4 features per image, ids [2, 5, <image>, 7, 8, 9] become 9 rows: 7, 8, 9 land on
    rows 6, 7, 8; a cut at 8 rows drops 9, so its label is -100 already (and counts nowhere)."""
    tok = gemma_tokenizer()
    item = {
        "input_ids": torch.tensor([2, 5, IMAGE_TOKEN_INDEX, 7, 8, 9]),
        "labels": torch.tensor([IGNORE_INDEX] * 3 + [7, 8, 9]),
    }
    text = {"input_ids": torch.tensor([2, 5, 7, 8, 9, 10, 11]), "labels": torch.arange(7) + 5}
    batch = DataCollatorForSupervisedDataset(tok, model_max_length=8, image_tokens=4)([item, text])
    assert batch["labels"][0].tolist() == [IGNORE_INDEX] * 3 + [7, 8, IGNORE_INDEX, IGNORE_INDEX]
    assert batch["labels"][1].tolist() == list(range(5, 12))  # no image: nothing moves
    plain = DataCollatorForSupervisedDataset(tok, model_max_length=8)([item])
    assert plain["labels"][0].tolist() == [IGNORE_INDEX] * 3 + [7, 8, 9]


def test_modality_grouping_never_mixes_a_megabatch():
    torch.manual_seed(0)
    lengths = [5, 7, -3, 9, -4, 2, -6, 8, -1, 3, 4, -2, 6, -5]
    batch, world = 2, 2
    order = modality_length_grouped_indices(lengths, batch, world)
    assert sorted(order) == list(range(len(lengths)))
    mega = batch * world
    n_mm, n_txt = sum(n > 0 for n in lengths), sum(n < 0 for n in lengths)
    # MGM keeps each modality's last megabatch aside (merged, at the end); the rest are pure
    full = (-(-n_mm // mega) - 1) + (-(-n_txt // mega) - 1)
    assert full == 2
    for k in range(full):
        signs = {lengths[i] > 0 for i in order[k * mega : (k + 1) * mega]}
        assert len(signs) == 1, order


def test_mgm_image_path_conventions(tmp_path):
    from dj_synth.tools.mgm.data import resolve_image_file

    (tmp_path / "ocr_vqa/images").mkdir(parents=True)
    (tmp_path / "ocr_vqa/images/1.png").write_bytes(b"x")
    (tmp_path / "vg/images").mkdir(parents=True)
    (tmp_path / "vg/images/2.jpg").write_bytes(b"x")
    (tmp_path / "vg/VG_100K").mkdir(parents=True)
    (tmp_path / "vg/VG_100K/3.jpg").write_bytes(b"x")
    assert resolve_image_file(tmp_path, "ocr_vqa/images/1.jpg") == tmp_path / "ocr_vqa/images/1.png"
    assert resolve_image_file(tmp_path, "vg/VG_100K_2/2.jpg") == tmp_path / "vg/images/2.jpg"
    assert resolve_image_file(tmp_path, "vg/VG_100K/3.jpg") == tmp_path / "vg/VG_100K/3.jpg"
    assert resolve_image_file(tmp_path, "coco/4.jpg") == tmp_path / "coco/4.jpg"  # missing: as is
