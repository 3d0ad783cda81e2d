"""dj-pack: the submission packager refuses unfinished/invalid runs and zips a good one."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest
import yaml

from dj_synth.tools.challenge.cli import pack_main
from dj_synth.tools.challenge.pack import (
    PackError,
    arcname_problem,
    format_manifest,
    pack_submission,
    plan_package,
    write_package,
)

EXP = "default"
CKPT = f"MGM-2B-Finetune-{EXP}"
SPLIT = "mmbench_dev_20230712"
SUMMARY = (
    "{'train_runtime': 4467.7, 'train_samples_per_second': 44.7, "
    "'train_steps_per_second': 0.175, 'train_loss': 3.999, 'epoch': 1.0}\n"
)
RECIPE = {
    "project_name": "synth",
    "dataset_path": "input/pretrain_stage_1/mgm_pretrain_stage_1.jsonl",
    "export_path": "output/pretrain.jsonl",
    "process": [
        {"image_captioning_mapper": {"keep_original_sample": False}},
        {"text_length_filter": {"min_len": 10}},
    ],
}
FILTERS_ONLY = {"process": [{"text_length_filter": {"min_len": 10}}, "words_num_filter"]}


def make_tree(root: Path) -> dict[str, Path]:
    """A complete finished run: output/ as the toolkit leaves it, plus solution/."""
    out = root / "output"
    pre = out / "training_dirs" / f"MGM-2B-Pretrain-{EXP}"
    fin = out / "training_dirs" / CKPT
    ev = out / "eval_results" / CKPT
    for d in (pre, fin, ev / "textvqa", ev / "mmbench/answers" / SPLIT):
        d.mkdir(parents=True)
    (ev / "mmbench/answers_upload" / SPLIT).mkdir(parents=True)
    (out / "train.sh").write_text("#!/bin/bash\nEXP_NAME=default\n")
    (pre / "pretrain.log").write_text("  Num examples = 3\n{'loss': 5.1}\n" + SUMMARY)
    (pre / "mm_projector.bin").write_bytes(b"weights")  # must NOT be packaged
    (fin / "finetuning.log").write_text("{'loss': 2.0}\n" + SUMMARY)
    (fin / "model.safetensors").write_bytes(b"weights")
    (ev / "textvqa/bm1.jsonl").write_text('{"question_id": 1, "text": "a"}\n')
    (ev / "textvqa/2_0.jsonl").write_text('{"question_id": 1, "text": "a"}\n')
    (ev / "mmbench/answers" / SPLIT / f"{CKPT}.jsonl").write_text('{"index": 0, "text": "A"}\n')
    (ev / "mmbench/answers_upload" / SPLIT / f"{CKPT}.xlsx").write_bytes(b"PK\x03\x04fake xlsx")
    (ev / "scores.json").write_text('{"textvqa": 0.1}')
    (out / "other.txt").write_text("not packaged")

    pretrain = root / "data" / "pretrain.json"
    pretrain.parent.mkdir()
    pretrain.write_text(json.dumps([{"id": str(i), "conversations": []} for i in range(3)]))
    (out / "dj_train_state.json").write_text(json.dumps({"pretrain_data": str(pretrain)}))

    sol = root / "solution"
    (sol / "recipes").mkdir(parents=True)
    (sol / "recipes/synth.yaml").write_text(yaml.safe_dump(RECIPE, sort_keys=False))
    (sol / "run.py").write_text("print('hi')\n")
    (sol / "__pycache__").mkdir()
    (sol / "__pycache__/run.cpython-311.pyc").write_bytes(b"\0")
    (sol / ".git").mkdir()
    (sol / ".git/HEAD").write_text("ref: refs/heads/main\n")
    readme = root / "README.md"
    readme.write_text("# team\n")
    return {"root": root, "out": out, "sol": sol, "readme": readme, "pretrain": pretrain}


EXPECTED = sorted(
    [
        "output/train.sh",
        f"output/training_dirs/MGM-2B-Pretrain-{EXP}/pretrain.log",
        f"output/training_dirs/{CKPT}/finetuning.log",
        f"output/eval_results/{CKPT}/textvqa/bm1.jsonl",
        f"output/eval_results/{CKPT}/textvqa/2_0.jsonl",
        f"output/eval_results/{CKPT}/mmbench/answers/{SPLIT}/{CKPT}.jsonl",
        f"output/eval_results/{CKPT}/mmbench/answers_upload/{SPLIT}/{CKPT}.xlsx",
        f"output/eval_results/{CKPT}/scores.json",
        "solution/recipes/synth.yaml",
        "solution/run.py",
        "solution/README.md",
    ]
)


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    return make_tree(tmp_path)


def refusal(tree: dict[str, Path], **kwargs) -> str:
    args = {"output_dir": tree["out"], "exp": EXP, "solution": [tree["sol"], tree["readme"]]}
    args.update(kwargs)
    with pytest.raises(PackError) as info:
        plan_package(**args)
    return str(info.value)


def test_good_package_has_expected_files_and_manifest(tree):
    zip_path = tree["root"] / "dist" / "submit.zip"
    entries = pack_submission(tree["out"], EXP, [tree["sol"], tree["readme"]], zip_path)
    assert [e.path for e in entries] == EXPECTED
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        assert names == EXPECTED + ["MANIFEST.json"]
        manifest = json.loads(zf.read("MANIFEST.json"))
        assert [m["path"] for m in manifest] == EXPECTED
        for m in manifest:
            data = zf.read(m["path"])
            assert m["size"] == len(data)
            assert m["sha256"] == hashlib.sha256(data).hexdigest()
        assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in zf.infolist())
    assert not list(zip_path.parent.glob(".*tmp"))  # temp file renamed away
    table = format_manifest(entries)
    assert "solution/README.md" in table and entries[0].sha256[:12] in table
    assert f"{len(EXPECTED)} files" in table


def test_same_inputs_give_identical_bytes(tree):
    a, b = tree["root"] / "a.zip", tree["root"] / "b.zip"
    pack_submission(tree["out"], EXP, [tree["sol"], tree["readme"]], a)
    os.utime(tree["out"] / "train.sh", (1_000_000_000, 1_000_000_000))  # mtime must not matter
    pack_submission(tree["out"], EXP, [tree["sol"], tree["readme"]], b)
    assert a.read_bytes() == b.read_bytes()


def test_missing_finetuning_log(tree):
    (tree["out"] / "training_dirs" / CKPT / "finetuning.log").unlink()
    msg = refusal(tree)
    assert "missing finetuning.log" in msg and "finetuning.log" in msg


def test_all_problems_reported_at_once(tree):
    (tree["out"] / "train.sh").unlink()
    (tree["out"] / "training_dirs" / CKPT / "finetuning.log").unlink()
    ans = tree["out"] / "eval_results" / CKPT / "mmbench/answers" / SPLIT / f"{CKPT}.jsonl"
    ans.write_text("")
    lines = refusal(tree).splitlines()
    assert len(lines) == 3
    assert any("missing train.sh" in line for line in lines)
    assert any("empty mmbench answers" in line for line in lines)


def test_pretrain_log_without_summary(tree):
    log = tree["out"] / "training_dirs" / f"MGM-2B-Pretrain-{EXP}" / "pretrain.log"
    log.write_text("  Num examples = 3\n{'loss': 5.1, 'epoch': 0.5}\n")
    msg = refusal(tree)
    assert "pretrain.log" in msg and "did not finish" in msg


def test_summary_with_double_quotes_is_accepted(tree):
    log = tree["out"] / "training_dirs" / f"MGM-2B-Pretrain-{EXP}" / "pretrain.log"
    log.write_text('{"train_runtime": 12.0, "train_loss": 3.0}\n')
    plan_package(tree["out"], EXP, [tree["sol"]])


def test_traceback_after_summary(tree):
    log = tree["out"] / "training_dirs" / CKPT / "finetuning.log"
    log.write_text(
        SUMMARY + "Traceback (most recent call last):\n  File x\nRuntimeError: CUDA OOM\n"
    )
    msg = refusal(tree)
    assert "finetuning.log" in msg and "traceback" in msg


def test_traceback_before_summary_is_fine(tree):
    log = tree["out"] / "training_dirs" / CKPT / "finetuning.log"
    log.write_text("Traceback (most recent call last):\nOSError\n" + SUMMARY)
    assert plan_package(tree["out"], EXP, [tree["sol"]])


def test_recipe_with_only_filters(tree):
    (tree["sol"] / "recipes/synth.yaml").write_text(yaml.safe_dump(FILTERS_ONLY))
    msg = refusal(tree)
    assert "no synthesis operator" in msg and "recipes/synth.yaml" in msg
    assert "text_length_filter" in msg and "synthesis step" in msg


def test_custom_synthesis_operator_in_solution_counts(tree):
    """A participant's own generator (registered in solution/*.py, `synthesizes = True`) is
    recognised from the source, without running it; the same class unmarked is not."""
    recipe = {"custom_operator_paths": ["ops"], "process": [{"my_caption_mapper": {}}]}
    (tree["sol"] / "recipes/synth.yaml").write_text(yaml.safe_dump(recipe))
    (tree["sol"] / "ops").mkdir()
    code = (
        "from dj_synth.operators.base import Mapper\n"
        "from dj_synth.operators.registry import register\n\n"
        "raise SystemExit('never executed')\n\n"
        '@register("my_caption_mapper")\n'
        "class MyCaptionMapper(Mapper):\n"
        "    synthesizes = {flag}\n"
    )
    (tree["sol"] / "ops/my_op.py").write_text(code.format(flag="False"))
    assert "no synthesis operator" in refusal(tree)
    (tree["sol"] / "ops/my_op.py").write_text(code.format(flag="True"))
    plan_package(tree["out"], EXP, [tree["sol"]])


def test_data_juicer_synthesis_op_counts(tree):
    recipe = {"process": [{"image_tagging_mapper": {}}, {"optimize_qa_mapper": None}]}
    (tree["sol"] / "recipes/synth.yaml").write_text(yaml.safe_dump(recipe))
    plan_package(tree["out"], EXP, [tree["sol"]])
    recipe["process"] = [{"image_tagging_mapper": {}}]  # tagging is not synthesis
    (tree["sol"] / "recipes/synth.yaml").write_text(yaml.safe_dump(recipe))
    assert "no synthesis operator" in refusal(tree)


def test_no_recipe(tree):
    (tree["sol"] / "recipes/synth.yaml").unlink()
    msg = refusal(tree)
    assert "requires the data recipe in solution/" in msg


def test_no_solution_path(tree):
    assert "no solution path given" in refusal(tree, solution=[])
    msg = refusal(tree, solution=[tree["sol"], tree["root"] / "nope"])
    assert "nope does not exist" in msg


def test_pretrain_data_over_cap(tree):
    msg = refusal(tree, cap=2)
    assert "3 samples" in msg and "cap of 2" in msg


def test_pretrain_data_argument_wins(tree):
    jsonl = tree["root"] / "data" / "p.jsonl"
    jsonl.write_text('{"id": 1}\n\n{"id": 2}\n')
    plan_package(tree["out"], EXP, [tree["sol"]], pretrain_data=jsonl, cap=2)


def test_no_pretrain_data_source(tree):
    (tree["out"] / "dj_train_state.json").unlink()
    log = tree["out"] / "training_dirs" / f"MGM-2B-Pretrain-{EXP}" / "pretrain.log"
    log.write_text(SUMMARY)
    assert "pass --pretrain-data" in refusal(tree)


def test_pretrain_count_from_log(tree):
    (tree["out"] / "dj_train_state.json").unlink()
    log = tree["out"] / "training_dirs" / f"MGM-2B-Pretrain-{EXP}" / "pretrain.log"
    log.write_text("***** Running training *****\n  Num examples = 1,234\n" + SUMMARY)
    plan_package(tree["out"], EXP, [tree["sol"]], cap=1234)
    msg = refusal(tree, cap=1000)
    assert "1,234 samples" in msg and "Num examples" in msg


def test_symlink_outside_solution_refused(tree):
    secret = tree["root"] / "secret.txt"
    secret.write_text("token")
    os.symlink(secret, tree["sol"] / "leak.txt")
    msg = refusal(tree)
    assert "leak.txt" in msg and "outside" in msg


def test_symlink_inside_tree_is_read(tree):
    os.symlink(tree["sol"] / "run.py", tree["sol"] / "recipes" / "run_link.py")
    os.symlink(tree["sol"] / "recipes", tree["sol"] / "loop")  # a dir link: followed once
    plan = plan_package(tree["out"], EXP, [tree["sol"]])
    arcnames = [a for _, a in plan]
    assert "solution/recipes/run_link.py" in arcnames
    assert not any("/loop/" in a for a in arcnames)  # its target is packaged once, as recipes/


def test_output_symlink_outside_refused(tree):
    outside = tree["root"] / "elsewhere.log"
    outside.write_text(SUMMARY)
    log = tree["out"] / "training_dirs" / CKPT / "finetuning.log"
    log.unlink()
    os.symlink(outside, log)
    msg = refusal(tree)
    assert "finetuning.log" in msg and "outside" in msg


def test_zip_inside_solution_refused(tree):
    zip_path = tree["sol"] / "submit.zip"
    with pytest.raises(PackError, match="inside"):
        pack_submission(tree["out"], EXP, [tree["sol"]], zip_path)
    assert not zip_path.exists()


def test_arcname_safety():
    for bad in ["/etc/passwd", "../x", "a/../b", "C:/x", "a\\b", "", "a//b"]:
        assert arcname_problem(bad), bad
    assert arcname_problem("solution/a.yaml") is None
    with pytest.raises(PackError):
        write_package([(Path(__file__), "../evil.py")], Path("/nonexistent/never.zip"))


def test_pack_main_refusal(tree, capsys):
    (tree["out"] / "train.sh").unlink()
    code = pack_main(
        ["--output-dir", str(tree["out"]), "--solution", str(tree["sol"]), "--cap", "2"]
        + ["-o", str(tree["root"] / "s.zip")]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert all(line.startswith("dj-pack: refused: ") for line in err)
    assert any("train.sh" in line for line in err) and any("cap" in line for line in err)
    assert not (tree["root"] / "s.zip").exists()


def test_pack_main_success(tree, capsys):
    zip_path = tree["root"] / "s.zip"
    code = pack_main(
        ["--output-dir", str(tree["out"]), "--exp", EXP, "--solution", str(tree["sol"])]
        + ["--solution", str(tree["readme"]), "-o", str(zip_path)]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "MANIFEST.json" in out and f"{CKPT}.xlsx" in out and "wrote" in out
    assert zipfile.ZipFile(zip_path).namelist()[-1] == "MANIFEST.json"


def test_eval_dir_link_to_elsewhere_in_output_is_followed(tree):
    extra = tree["out"] / "extra_eval"
    extra.mkdir()
    (extra / "notes.txt").write_text("x")
    os.symlink(extra, tree["out"] / "eval_results" / CKPT / "extra")
    arcnames = [a for _, a in plan_package(tree["out"], EXP, [tree["sol"]])]
    assert f"output/eval_results/{CKPT}/extra/notes.txt" in arcnames


def test_zip_in_output_dir_is_fine_and_not_packaged(tree):
    zip_path = tree["out"] / "submit.zip"
    pack_submission(tree["out"], EXP, [tree["sol"]], zip_path)
    entries = pack_submission(tree["out"], EXP, [tree["sol"]], zip_path)  # rerun overwrites
    assert "output/submit.zip" not in [e.path for e in entries]


def test_invalid_yaml_is_named(tree):
    (tree["sol"] / "recipes/broken.yml").write_text("process: [\n")
    msg = refusal(tree)
    assert "recipes/broken.yml" in msg and "not valid YAML" in msg


# ---------------------------------------------------------------------------- dj-train's record


def _write_state(tree: dict[str, Path]) -> dict:
    """A dj-train state for the tree: convert -> pretrain -> finetune -> textvqa, each stage
    consuming what the one before it produced, finished in order."""
    from dj_synth.tools.challenge.fingerprint import Fingerprints

    fp = Fingerprints()
    out = tree["out"]
    pre = out / f"training_dirs/MGM-2B-Pretrain-{EXP}"
    fin = out / f"training_dirs/{CKPT}"
    answers = out / f"eval_results/{CKPT}/textvqa/bm1.jsonl"

    def digests(*paths: Path) -> dict[str, str]:
        return {str(p): fp.of(p) for p in paths}

    def stage(minute: int, inputs: dict, outputs: dict) -> dict:
        return {
            "status": "done", "started": f"2025-01-01T10:{minute:02d}:00+00:00",
            "finished": f"2025-01-01T10:{minute + 1:02d}:00+00:00",
            "inputs": {"commands": "sha256:x", "paths": inputs}, "outputs": outputs,
        }  # fmt: skip

    state = {
        "pretrain_data": str(tree["pretrain"]),
        "stages": {
            "convert": stage(0, {}, digests(tree["pretrain"])),
            "pretrain": stage(
                2,
                digests(tree["pretrain"]),
                digests(pre / "mm_projector.bin", pre / "pretrain.log"),
            ),
            "finetune": stage(
                4, digests(pre / "mm_projector.bin"), digests(fin, fin / "finetuning.log")
            ),
            "textvqa": stage(6, digests(fin), digests(answers)),
        },
    }
    (out / "dj_train_state.json").write_text(json.dumps(state))
    return state


def test_state_of_a_consistent_run_packs(tree):
    _write_state(tree)
    assert [a for _, a in plan_package(tree["out"], EXP, [tree["sol"], tree["readme"]])] == EXPECTED


def test_checkpoint_replaced_after_eval_refused(tree):
    """Eval results older than the checkpoint they claim: the finetune output changed since."""
    _write_state(tree)
    weights = tree["out"] / f"training_dirs/{CKPT}/model.safetensors"
    weights.write_bytes(b"new weights, longer than before")
    msg = refusal(tree)
    assert f"training_dirs/{CKPT} changed after stage finetune wrote it" in msg


def test_eval_not_derived_from_the_checkpoint_refused(tree):
    """textvqa recorded a different checkpoint than finetune's last one (finetune reran)."""
    state = _write_state(tree)
    fin = str(tree["out"] / f"training_dirs/{CKPT}")
    state["stages"]["textvqa"]["inputs"]["paths"][fin] = "folder:an-older-finetune"
    (tree["out"] / "dj_train_state.json").write_text(json.dumps(state))
    msg = refusal(tree)
    assert f"stage textvqa consumed a different {fin} than stage finetune last produced" in msg


def test_eval_started_before_finetune_finished_refused(tree):
    state = _write_state(tree)
    state["stages"]["textvqa"]["started"] = "2025-01-01T10:03:00+00:00"
    (tree["out"] / "dj_train_state.json").write_text(json.dumps(state))
    assert "stage textvqa started (2025-01-01T10:03:00+00:00) before stage finetune finished" in (
        refusal(tree)
    )


def test_stale_or_unfingerprinted_stage_refused(tree):
    state = _write_state(tree)
    state["stages"]["finetune"].update(status="stale", reason="an earlier stage (pretrain) reruns")
    del state["stages"]["convert"]["inputs"]
    (tree["out"] / "dj_train_state.json").write_text(json.dumps(state))
    msg = refusal(tree)
    assert "stage finetune is stale (an earlier stage (pretrain) reruns)" in msg
    assert "stage convert has no input fingerprints" in msg
