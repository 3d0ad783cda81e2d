"""MGM inference for the benchmarks: chunking as MGM, batched greedy decoding equal to one-by-one
decoding, answer records (TextVQA / MMBench), unreadable images kept as error records."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("open_clip")
pytest.importorskip("accelerate")

from PIL import Image  # noqa: E402
from test_mgm_data import write_llava  # noqa: E402
from test_mgm_train import common_args  # noqa: E402

from dj_synth.tools.mgm import infer  # noqa: E402
from dj_synth.tools.mgm.tiny import make_tiny_mgm  # noqa: E402
from dj_synth.tools.mgm.train import train  # noqa: E402


def test_get_chunk_matches_mgm_split():
    items = list(range(10))
    assert [infer.get_chunk(items, 3, i) for i in range(3)] == [
        [0, 1, 2, 3], [4, 5, 6, 7], [8, 9],
    ]  # fmt: skip
    assert [infer.get_chunk([1, 2], 4, i) for i in range(4)] == [[1], [2], [], []]
    with pytest.raises(infer.InferenceError):
        infer.get_chunk(items, 2, 2)


def test_model_name_from_path():
    assert infer.model_name_from_path("out/training_dirs/MGM-2B-Finetune-x/") == (
        "MGM-2B-Finetune-x"
    )
    assert infer.model_name_from_path("runs/MGM-2B/checkpoint-100") == "MGM-2B_checkpoint-100"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A finetuned tiny MGM checkpoint whose weights are then scaled up so that greedy
    decoding produces varied tokens (a fresh tiny model mostly repeats one token)."""
    root = tmp_path_factory.mktemp("mgm_infer")
    tiny = make_tiny_mgm(root / "zoo", seed=0)
    data = write_llava(root / "data", n_images=2, broken=False, text_only=False)
    out = root / "MGM-2B-Finetune-infer"
    args = common_args(tiny, data, out) + [
        "--image_aspect_ratio", "pad", "--learning_rate", "2e-5", "--save_strategy", "no",
        "--max_steps", "1",
    ]  # fmt: skip
    train(args)
    from safetensors.torch import load_file, save_file

    gen = torch.Generator().manual_seed(0)
    for shard in out.glob("*.safetensors"):
        state = load_file(shard)
        state = {
            k: (torch.randn(v.shape, generator=gen) * 0.6).to(v.dtype)
            if ("layers" in k or "embed_tokens" in k) and v.dim() == 2 else v
            for k, v in state.items()
        }  # fmt: skip
        save_file(state, shard, metadata={"format": "pt"})
    return out


def _images() -> list[Image.Image]:
    return [
        Image.new("RGB", (40, 30), (220, 20, 20)),
        Image.new("RGB", (30, 50), (20, 220, 20)),
        Image.new("RGB", (36, 36), (20, 20, 220)),
    ]


def test_batched_greedy_equals_one_by_one(checkpoint):
    loaded = infer.load_model(checkpoint, device="cpu")
    items = list(zip(["What?", "Which colour is the big square here?", "Name it."], _images()))
    batched = infer.generate_answers(loaded, items, max_new_tokens=6)
    single = [infer.generate_answers(loaded, [it], max_new_tokens=6)[0] for it in items]
    assert batched == single
    assert any(batched) and len(set(batched)) > 1  # real, varied text


def _write_textvqa(root: Path) -> tuple[Path, Path]:
    (root / "imgs").mkdir(parents=True)
    lines = []
    for i, image in enumerate(_images()):
        image.save(root / "imgs" / f"q{i}.jpg")
        lines.append({"question_id": f"q{i}", "image": f"q{i}.jpg",
                      "text": f"question {i}?\nAnswer the question using a single word or phrase."})  # fmt: skip
    (root / "imgs" / "bad.jpg").write_bytes(b"not an image")
    lines.append({"question_id": "bad", "image": "bad.jpg", "text": "broken?"})
    qfile = root / "questions.jsonl"
    qfile.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return qfile, root / "imgs"


def test_textvqa_answers_and_bad_image(checkpoint, tmp_path):
    qfile, imgs = _write_textvqa(tmp_path)
    out = tmp_path / "eval" / "textvqa"
    code = infer.main([
        "textvqa", "--model-path", str(checkpoint), "--question-file", str(qfile),
        "--image-folder", str(imgs), "--gpus", "cpu", "--out-dir", str(out),
        "--answers-file", str(out / "bm1.jsonl"), "--fidelity", "fast", "--batch-size", "2",
        "--max-new-tokens", "4", "--no-progress",
    ])  # fmt: skip
    assert code == 0
    assert (out / "1_0.jsonl").read_bytes() == (out / "bm1.jsonl").read_bytes()
    recs = [json.loads(x) for x in (out / "bm1.jsonl").read_text().splitlines()]
    assert [r["question_id"] for r in recs] == ["q0", "q1", "q2", "bad"]
    assert list(recs[0]) == ["question_id", "prompt", "text", "answer_id", "model_id", "metadata"]
    assert recs[1]["prompt"] == "question 1?\nAnswer the question using a single word or phrase."
    assert recs[0]["model_id"] == "MGM-2B-Finetune-infer"
    assert recs[3]["text"] == "" and "error" in recs[3]["metadata"]
    assert all("error" not in r["metadata"] for r in recs[:3])
    # the same answers as a one-by-one run of chunk 1 of 2 (MGM's chunking)
    code = infer.main([
        "textvqa", "--model-path", str(checkpoint), "--question-file", str(qfile),
        "--image-folder", str(imgs), "--num-chunks", "2", "--chunk-idx", "1",
        "--answers-file", str(tmp_path / "2_1.jsonl"), "--batch-size", "1",
        "--max-new-tokens", "4", "--no-progress",
    ])  # fmt: skip
    assert code == 0
    part = [json.loads(x) for x in (tmp_path / "2_1.jsonl").read_text().splitlines()]
    assert [(r["question_id"], r["text"]) for r in part] == [
        (r["question_id"], r["text"]) for r in recs[2:]
    ]


def test_mmbench_answers(checkpoint, tmp_path):
    header = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image"]
    rows = []
    for i, image in enumerate(_images()[:2]):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        rows.append([str(i), f"q{i}?", "hint" if i == 0 else "", "x", "y", "", "", "A", "c",
                     base64.b64encode(buf.getvalue()).decode()])  # fmt: skip
    tsv = tmp_path / "mmb.tsv"
    tsv.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n")
    answers = tmp_path / "answers" / "ckpt.jsonl"
    code = infer.main([
        "mmbench", "--model-path", str(checkpoint), "--question-file", str(tsv),
        "--answers-file", str(answers), "--single-pred-prompt", "--max-new-tokens", "3",
        "--no-progress",
    ])  # fmt: skip
    assert code == 0
    recs = [json.loads(x) for x in answers.read_text().splitlines()]
    assert [r["question_id"] for r in recs] == [0, 1]
    assert recs[0]["prompt"] == "hint\nq0?\nA. x\nB. y"
    assert recs[1]["options"] == ["x", "y"] and recs[1]["option_char"] == ["A", "B"]
    assert recs[0]["round_id"] == 0


def test_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    code = infer.main([
        "textvqa", "--model-path", str(tmp_path / "nope"), "--question-file", "q.jsonl",
        "--image-folder", ".", "--answers-file", str(tmp_path / "a.jsonl"),
    ])  # fmt: skip
    assert code == 2
    assert "no config.json" in capsys.readouterr().err


def test_one_process_per_gpu_chunks_are_merged_in_order(checkpoint, tmp_path):
    """--gpus a,b: one subprocess per (here: nonexistent, so CPU) GPU, chunk files <N>_<i>,
    merged in order -- the same records as one process answering everything."""
    qfile, imgs = _write_textvqa(tmp_path)
    out = tmp_path / "textvqa"
    common = [
        "textvqa", "--model-path", str(checkpoint), "--question-file", str(qfile),
        "--image-folder", str(imgs), "--max-new-tokens", "4", "--no-progress",
        "--batch-size", "1",
    ]  # fmt: skip
    code = infer.main(common + ["--gpus", "98,99", "--out-dir", str(out),
                                "--answers-file", str(out / "bm1.jsonl")])  # fmt: skip
    assert code == 0
    first = [json.loads(x) for x in (out / "2_0.jsonl").read_text().splitlines()]
    second = [json.loads(x) for x in (out / "2_1.jsonl").read_text().splitlines()]
    assert [r["question_id"] for r in first] == ["q0", "q1"]
    assert [r["question_id"] for r in second] == ["q2", "bad"]
    merged = (out / "bm1.jsonl").read_text().splitlines()
    assert (
        merged
        == (out / "2_0.jsonl").read_text().splitlines()
        + (out / "2_1.jsonl").read_text().splitlines()
    )
    code = infer.main(common + ["--answers-file", str(tmp_path / "single.jsonl")])
    single = [json.loads(x) for x in (tmp_path / "single.jsonl").read_text().splitlines()]
    assert [(r["question_id"], r["text"]) for r in single] == [
        (json.loads(x)["question_id"], json.loads(x)["text"]) for x in merged
    ]


# ----------------------------------------------------------------------------- fidelity modes


def test_toolkit_and_fast_modes_answer_alike(checkpoint, tmp_path):
    """(e) batch-1 and batched greedy decoding agree (fast, batch 1 vs 3); toolkit differs from
    fast only by its stop rule: it keeps what the model writes after <end_of_turn> (up to
    <eos>), as MGM does, where fast stops. This tiny model does that on the third question."""
    import dataclasses

    qfile, imgs = _write_textvqa(tmp_path)
    loaded = infer.load_model(checkpoint, device="cpu")
    questions = infer.textvqa_questions(qfile, imgs, loaded.name)
    texts = {}
    for name, mode, batch in (
        ("toolkit", "toolkit", 1),
        ("fast-1", "fast", 1),
        ("fast-3", "fast", 3),
    ):
        answers = tmp_path / f"{name}.jsonl"
        run = dataclasses.replace(loaded, fidelity=mode)
        infer.answer_questions(run, questions, answers, batch, max_new_tokens=6, progress=False)
        texts[name] = [json.loads(x)["text"] for x in answers.read_text().splitlines()]
    assert texts["fast-1"] == texts["fast-3"]
    assert len(set(texts["fast-1"][:3])) > 1
    assert all(t.startswith(f) for t, f in zip(texts["toolkit"], texts["fast-1"]))
    assert [t == f for t, f in zip(texts["toolkit"], texts["fast-1"])] == [True, True, False, True]


def test_toolkit_mode_refuses_a_batch_size(checkpoint, tmp_path, capsys):
    code = infer.main([
        "textvqa", "--model-path", str(checkpoint), "--question-file", "q.jsonl",
        "--image-folder", ".", "--answers-file", str(tmp_path / "a.jsonl"), "--batch-size", "8",
    ])  # fmt: skip
    assert code == 2
    assert "--fidelity fast" in capsys.readouterr().err


class _RecordingModel(torch.nn.Module):
    """Stands in for the model: records generate()'s keyword arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.calls: list[dict] = []

    def generate(self, ids, **kwargs):
        self.calls.append(kwargs)
        return torch.zeros((ids.shape[0], 1), dtype=torch.long)


@pytest.mark.parametrize(
    "mode, stops", [("toolkit", ["<eos>"]), ("fast", ["<eos>", "<end_of_turn>"])]
)
def test_stop_tokens_per_mode(mode, stops):
    """toolkit stops at <eos> only (MGM's terminator); fast also at <end_of_turn>."""
    from dj_synth.tools.mgm.tiny import gemma_tokenizer

    tok = gemma_tokenizer()
    model = _RecordingModel()
    loaded = infer.LoadedModel(model, tok, None, "m", "cpu", mode)
    pixels = [(torch.zeros(3, 4, 4), torch.zeros(3, 8, 8))]
    infer.generate_from_pixels(loaded, ["q?"], pixels, max_new_tokens=2)
    assert model.calls[0]["eos_token_id"] == tok.convert_tokens_to_ids(stops)
    assert model.calls[0]["do_sample"] is False


def test_default_dtype_per_mode(checkpoint):
    """toolkit: float16 on CUDA, float32 on CPU; fast: bfloat16 on CUDA."""
    from dj_synth.tools.mgm.fidelity import INFERENCE

    assert (INFERENCE["toolkit"].cuda_dtype, INFERENCE["toolkit"].batch_size) == ("float16", 1)
    assert INFERENCE["fast"].cuda_dtype == "bfloat16"
    loaded = infer.load_model(checkpoint, device="cpu", fidelity="toolkit")
    assert next(loaded.model.parameters()).dtype == torch.float32


# ----------------------------------------------------------------------------- MGM's loading rule


def rewrite_checkpoint(src: Path, dst: Path, edit, config_edit=None) -> Path:
    """Copy a checkpoint with its weights merged into one model.safetensors, edited."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    state = {}
    for shard in sorted(dst.glob("*.safetensors")):
        state.update(load_file(shard))
        shard.unlink()
    (dst / "model.safetensors.index.json").unlink(missing_ok=True)
    save_file(edit(state), dst / "model.safetensors", metadata={"format": "pt"})
    if config_edit:
        cfg = json.loads((dst / "config.json").read_text())
        (dst / "config.json").write_text(json.dumps(config_edit(cfg)))
    return dst


def _tower_state(prefix: str, state: dict) -> dict:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


CLIP_KEY = "model.vision_tower.vision_tower."
AUX_KEY = "model.vision_tower_aux."


def test_checkpoint_without_towers_loads_them_from_their_folders(checkpoint, tmp_path):
    """(d) no tower weights and no preprocessor_config.json in the checkpoint: both towers come
    from the config's folders and the answers are those of the complete checkpoint."""
    from dj_synth.tools.mgm.encoders import CLIPVisionTower, OpenCLIPConvNeXtTower

    bare = rewrite_checkpoint(
        checkpoint, tmp_path / "MGM-2B-bare",
        lambda s: {k: v for k, v in s.items() if not k.startswith(("model.vision_tower",))},
    )  # fmt: skip
    (bare / "preprocessor_config.json").unlink()
    config = json.loads((bare / "config.json").read_text())
    loaded = infer.load_model(bare, device="cpu")
    state = loaded.model.state_dict()
    clip = CLIPVisionTower.from_path(config["mm_vision_tower"]).vision_tower.state_dict()
    aux = OpenCLIPConvNeXtTower.from_path(config["mm_vision_tower_aux"]).state_dict()
    assert _tower_state(CLIP_KEY, state).keys() == clip.keys()
    assert all(torch.equal(_tower_state(CLIP_KEY, state)[k], v) for k, v in clip.items())
    assert all(torch.equal(_tower_state(AUX_KEY, state)[k], v) for k, v in aux.items())
    # the same answers as a complete checkpoint holding the folders' tower weights
    complete = rewrite_checkpoint(
        checkpoint, tmp_path / "MGM-2B-complete",
        lambda s: {**s, **{CLIP_KEY + k: v for k, v in clip.items()},
                   **{AUX_KEY + k: v for k, v in aux.items()}},
    )  # fmt: skip
    full = infer.load_model(complete, device="cpu")
    items = list(zip(["What?", "Which colour?"], _images()[:2]))
    answers = infer.generate_answers(loaded, items, 5)
    assert answers == infer.generate_answers(full, items, 5) and any(answers)


def test_missing_tower_folder_is_an_error_naming_it(checkpoint, tmp_path, capsys):
    """(d) neither in the checkpoint nor in a folder: an error with the path, never random."""
    gone = tmp_path / "model_zoo" / "OpenAI" / "openclip-gone"
    bare = rewrite_checkpoint(
        checkpoint, tmp_path / "MGM-2B-bare",
        lambda s: {k: v for k, v in s.items() if not k.startswith(AUX_KEY)},
        lambda c: {**c, "mm_vision_tower_aux": str(gone)},
    )  # fmt: skip
    with pytest.raises(infer.InferenceError, match=str(gone)):
        infer.load_model(bare, device="cpu")
    code = infer.main([
        "textvqa", "--model-path", str(bare), "--question-file", "q.jsonl",
        "--image-folder", ".", "--answers-file", str(tmp_path / "a.jsonl"),
    ])  # fmt: skip
    assert code == 2 and str(gone) in capsys.readouterr().err
    # the folder can be given where it now lives
    config = json.loads((checkpoint / "config.json").read_text())
    loaded = infer.load_model(bare, device="cpu", vision_tower_aux=config["mm_vision_tower_aux"])
    assert loaded.model.config.mm_vision_tower_aux == config["mm_vision_tower_aux"]


def test_mgm_rule_checkpoint_clip_folder_aux(checkpoint, tmp_path):
    """MGM reads CLIP back from the checkpoint but the ConvNeXt from its folder, unless the run
    had optimize_vision_tower_aux; other weights missing from the checkpoint are an error."""
    from dj_synth.tools.mgm.encoders import OpenCLIPConvNeXtTower

    def shift_towers(state):
        return {k: v + 1 if k.startswith(("model.vision_tower",)) and v.is_floating_point()
                else v for k, v in state.items()}  # fmt: skip

    config = json.loads((checkpoint / "config.json").read_text())
    folder_aux = OpenCLIPConvNeXtTower.from_path(config["mm_vision_tower_aux"]).state_dict()
    original = infer.load_model(checkpoint, device="cpu").model.state_dict()
    for optimize_aux in (False, True):
        ckpt = rewrite_checkpoint(
            checkpoint, tmp_path / f"MGM-2B-{optimize_aux}", shift_towers,
            lambda c, o=optimize_aux: {**c, "optimize_vision_tower_aux": o},
        )  # fmt: skip
        state = infer.load_model(ckpt, device="cpu").model.state_dict()
        w = "vision_model.embeddings.patch_embedding.weight"
        assert torch.equal(state[CLIP_KEY + w], original[CLIP_KEY + w] + 1)
        stem = "vision_stem.0.weight"
        expected = folder_aux[stem] + 1 if optimize_aux else folder_aux[stem]
        assert torch.equal(state[AUX_KEY + stem], expected)
    broken = rewrite_checkpoint(
        checkpoint, tmp_path / "MGM-2B-broken",
        lambda s: {k: v for k, v in s.items() if "vlm_uni_val_projector" not in k},
    )  # fmt: skip
    with pytest.raises(infer.InferenceError, match="vlm_uni_val_projector"):
        infer.load_model(broken, device="cpu")
