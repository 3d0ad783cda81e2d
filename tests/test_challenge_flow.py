"""dj-train end to end on tiny random models (CPU): seed DJ data -> recipe (with a synthesis op)
-> cap -> LLaVA JSON -> pretrain -> finetune -> TextVQA + MMBench -> scores -> dj-pack.

One run is shared by the module: the README's tiny-challenge commands, run verbatim from a
fresh folder (a relative output folder, as a new user types them). The tests after it read
that run, then change it step by step (redo, interrupt, edit the recipe), so their order
matters."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("open_clip")
pytest.importorskip("timm")
pytest.importorskip("accelerate")
pytest.importorskip("openpyxl")

from dj_synth.tools.challenge.cli import pack_main, train_main  # noqa: E402
from dj_synth.tools.challenge.config import ConfigError, load_flow_config  # noqa: E402
from dj_synth.tools.challenge.tiny import COLOURS, EXP, SPLIT  # noqa: E402

CKPT = f"MGM-2B-Finetune-{EXP}"
REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the console scripts of this environment


def readme_challenge_commands() -> str:
    """The README's tiny-challenge block (the ```bash block with `make-tiny-challenge`)."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    found = [b for b in blocks if "dj-synth make-tiny-challenge" in b]
    assert len(found) == 1, "README: one ```bash block with the tiny-challenge commands"
    return found[0]


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    """The README's commands, verbatim, in an empty folder."""
    if not (BIN / "dj-train").is_file():
        pytest.skip("console scripts not installed (pip install -e .)")
    cwd = tmp_path_factory.mktemp("readme")
    commands = readme_challenge_commands()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    began = time.time()
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", commands], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=900,
    )  # fmt: skip
    root = cwd / "outputs" / "tiny_challenge"
    return {
        "cwd": cwd, "root": root, "config": root / "flow.yaml", "code": proc.returncode,
        "stdout": proc.stdout, "stderr": proc.stderr, "out": root / "output",
        "commands": commands, "seconds": time.time() - began,
    }  # fmt: skip


def test_readme_commands_run_verbatim(flow):
    """A relative folder, as the README writes it: every path resolves from the flow's folder."""
    assert "make-tiny-challenge outputs/tiny_challenge" in flow["commands"]
    assert flow["code"] == 0, flow["stderr"][-3000:]
    assert (flow["root"] / "submit.zip").is_file()  # the block's last line, dj-pack --config
    recipe = yaml.safe_load((flow["root"] / "solution/recipe.yaml").read_text())
    assert not Path(recipe["dataset_path"]).is_absolute()  # relocatable: resolved from root
    # the scores path is printed whole on one line, not wrapped at 80 columns
    assert f"scores: {flow['out'] / 'eval_results' / CKPT / 'scores.json'}" in flow["stdout"]


def test_stage_logs_carry_no_library_noise(flow):
    """No transformers load reports, weight-loading bars or terminal colour codes in the logs."""
    logs = sorted(flow["out"].rglob("*.log"))
    assert len(logs) >= 8
    for log in logs:
        text = log.read_text()
        assert "LOAD REPORT" not in text and "Loading weights" not in text, log
        assert "\x1b" not in text, log
    upload = (flow["out"] / "logs/mmbench_upload.log").read_text()
    assert f"Upload file: {flow['out'] / 'eval_results' / CKPT}/mmbench/answers_upload" in upload
    assert "export TRANSFORMERS_VERBOSITY=" in (flow["out"] / "train.sh").read_text()


def test_flow_runs_to_scores(flow):
    assert flow["code"] == 0, (flow["out"] / "dj_train_state.json").read_text()
    out = flow["out"]
    pre_log = out / f"training_dirs/MGM-2B-Pretrain-{EXP}/pretrain.log"
    ft_log = out / f"training_dirs/{CKPT}/finetuning.log"
    for log in (pre_log, ft_log):
        assert "train_runtime" in log.read_text()
    state = json.loads((out / "dj_train_state.json").read_text())
    assert list(state["stages"]) == [
        "recipe", "cap", "convert", "pretrain", "finetune", "textvqa", "mmbench", "scores",
    ]  # fmt: skip
    assert all(s["status"] == "done" for s in state["stages"].values())

    # the recipe's synthesis doubled the seed samples (originals + recaptions), ids restored
    llava = json.loads(Path(state["pretrain_data"]).read_text())
    assert len(llava) == 2 * len(COLOURS)
    assert {s["id"] for s in llava} == {f"{i:09d}" for i in range(len(COLOURS))}
    assert all(s["conversations"][0]["value"].startswith("Write a short caption") for s in llava)

    ev = out / "eval_results" / CKPT
    tv = [json.loads(x) for x in (ev / "textvqa/bm1.jsonl").read_text().splitlines()]
    assert (ev / "textvqa/1_0.jsonl").read_text() == (ev / "textvqa/bm1.jsonl").read_text()
    assert [r["question_id"] for r in tv] == ["tv000", "tv001", "tv002", "tv003"]
    assert set(tv[0]) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
    assert tv[0]["model_id"] == CKPT
    mm = [
        json.loads(x)
        for x in (ev / f"mmbench/answers/{SPLIT}/{CKPT}.jsonl").read_text().splitlines()
    ]
    assert sorted(r["question_id"] for r in mm) == [0, 1, 2, 1_000_000, 1_000_001, 1_000_002]
    assert mm[0]["prompt"].startswith("a hint\ncolour 0?\nA. red")
    assert "Answer with the option" not in mm[0]["prompt"]

    import pandas as pd

    xlsx = pd.read_excel(ev / f"mmbench/answers_upload/{SPLIT}/{CKPT}.xlsx")
    assert list(xlsx.columns)[6] == "prediction"
    assert not {"hint", "category", "image", "source", "comment", "l2-category"} & set(xlsx)

    # scores.json: what the scorers give on the written answers
    from dj_synth.tools.eval.mmbench import load_predictions, score_mmbench
    from dj_synth.tools.eval.textvqa import score_textvqa

    scores = json.loads((ev / "scores.json").read_text())
    tv_ann = flow["root"] / "toolkit/training/data/eval_stage_1/textvqa/TextVQA_0.5.1_val.json"
    assert scores["textvqa"] == score_textvqa(tv_ann, [ev / "textvqa/bm1.jsonl"])
    assert scores["textvqa"]["samples"] == 4
    tsv = flow["root"] / f"toolkit/training/data/eval_stage_1/mmbench/{SPLIT}.tsv"
    preds = load_predictions([ev / f"mmbench/answers/{SPLIT}/{CKPT}.jsonl"])
    assert scores["mmbench"] == score_mmbench(tsv, preds)
    assert 0 <= scores["mmbench"]["circular_accuracy"] <= scores["mmbench"]["accuracy"] <= 100


def test_train_sh_is_the_runnable_record(flow):
    script = (flow["out"] / "train.sh").read_text()
    assert subprocess.run(["bash", "-n", str(flow["out"] / "train.sh")]).returncode == 0
    assert "#   exp_name: tiny" in script
    for needle in (
        "dj_synth.pipelines.cli", "convert_cli cap", "--restore_questions True",
        "--tune_mm_mlp_adapter True", "--pretrain_mm_mlp_adapter", "--image_aspect_ratio pad",
        "| tee", "pretrain.log", "finetuning.log", "dj_synth.tools.mgm.infer textvqa",
        "--upload-xlsx", "scores.json",
    ):  # fmt: skip
        assert needle in script, needle


def test_pack_from_flow_config(flow, capsys):
    assert pack_main(["--config", str(flow["config"])]) == 0
    with zipfile.ZipFile(flow["root"] / "submit.zip") as zf:
        names = set(zf.namelist())
    assert {
        "solution/recipe.yaml", "solution/notes.py", "output/train.sh",
        f"output/training_dirs/MGM-2B-Pretrain-{EXP}/pretrain.log",
        f"output/training_dirs/{CKPT}/finetuning.log",
        f"output/eval_results/{CKPT}/textvqa/bm1.jsonl",
        f"output/eval_results/{CKPT}/mmbench/answers/{SPLIT}/{CKPT}.jsonl",
        f"output/eval_results/{CKPT}/mmbench/answers_upload/{SPLIT}/{CKPT}.xlsx",
        f"output/eval_results/{CKPT}/scores.json", "MANIFEST.json",
    } <= names  # fmt: skip
    assert not any(n.endswith((".safetensors", ".bin")) for n in names)
    assert "solution/recipe.yaml" in capsys.readouterr().out  # the printed manifest


def _weights(checkpoint: Path) -> dict:
    """Every tensor of a saved checkpoint (all its safetensors shards)."""
    from safetensors.torch import load_file

    tensors: dict = {}
    for shard in sorted(checkpoint.glob("*.safetensors")):
        tensors.update(load_file(shard))
    assert tensors, checkpoint
    return tensors


def _first_loss(train_dir: Path) -> float:
    history = json.loads((train_dir / "trainer_state.json").read_text())["log_history"]
    return next(h["loss"] for h in history if "loss" in h)


def test_second_seed_runs_beside_the_first(flow, capsys):
    """`--seeds 2` on the finished README run: seed 42 (the toolkit's, which that run used) is
    current, so only seed 43 trains, in output/seeds/seed-43/, and its batches differ (another
    first loss). The tiny challenge's one optimizer step runs at warmup learning rate 0, so its
    weights cannot show a seed: test_seeds_change_finetune_weights trains two steps."""
    from typer.testing import CliRunner

    from dj_synth.tools.eval.cli import app as eval_app

    out = flow["out"]
    ev = out / "eval_results" / CKPT
    same = CliRunner().invoke(eval_app, ["compare", str(out), str(ev), "--json", "--n-boot", "200"])
    assert same.exit_code == 0, same.output
    metrics = json.loads(same.stdout)["metrics"]
    assert [(m["units"], m["diff"], m["distinguishable"]) for m in metrics.values()] == [
        (4, 0.0, False), (3, 0.0, False), (3, 0.0, False),
    ]  # fmt: skip

    args = [str(flow["config"]), "--seeds", "2", "--resume", "--until", "pretrain", "--quiet"]
    assert train_main(args) == 0
    said = capsys.readouterr().out
    for name in ("recipe", "cap", "convert", "pretrain"):
        assert f"[dj-train] {name}: done earlier, skipped" in said
    assert "[dj-train] pretrain/seed-43: pretrain (projector)" in said
    pre42 = out / f"training_dirs/MGM-2B-Pretrain-{EXP}"
    pre43 = out / f"seeds/seed-43/training_dirs/MGM-2B-Pretrain-{EXP}"
    assert "train_runtime" in (pre43 / "pretrain.log").read_text()
    assert (pre43 / "mm_projector.bin").is_file()
    assert _first_loss(pre43) != _first_loss(pre42)
    state = _state(flow)
    assert state["stages"]["pretrain/seed-43"]["status"] == "done"
    assert state["seeds"] == [
        {"seed": 42, "scores": f"eval_results/{CKPT}/scores.json"},
        {"seed": 43, "scores": f"seeds/seed-43/eval_results/{CKPT}/scores.json"},
    ]
    flags = _train_flags((out / "train.sh").read_text())
    assert [f["--seed"] for f in flags] == ["42", "42", "43", "43"]
    assert flags[2]["--output_dir"] == str(pre43)
    # the first seed keeps the toolkit's tree: dj-pack packs it as before
    assert pack_main(["--config", str(flow["config"])]) == 0
    capsys.readouterr()
    # seed 43 has no scores yet: a comparison of the whole run says so
    partial = CliRunner().invoke(eval_app, ["compare", str(out), str(ev)])
    assert partial.exit_code == 2 and "no scores yet" in partial.stderr


def test_seeds_change_finetune_weights(flow, tmp_path):
    """The flow's finetune command, trained two steps (the second past warmup) on one sample
    each: --seed 43 gives other weights than --seed 42, and --seed 42 again the same ones."""
    import torch

    from dj_synth.tools.challenge.flow import _finetune
    from dj_synth.tools.mgm.train import train

    argv = _finetune(load_flow_config(flow["config"]))[0].argv
    base = argv[argv.index("dj_synth.tools.mgm.train") + 1 :]

    def finetune(seed: int, name: str) -> dict:
        args = list(base)
        for flag, value in (("--seed", seed), ("--output_dir", tmp_path / name),
                            ("--per_device_train_batch_size", 1),
                            ("--gradient_accumulation_steps", 1)):  # fmt: skip
            args[args.index(flag) + 1] = str(value)
        train([*args, "--max_steps", "2", "--disable_tqdm", "True"])
        return _weights(tmp_path / name)

    first, other, again = finetune(42, "a"), finetune(43, "b"), finetune(42, "c")
    assert first.keys() == other.keys() == again.keys()
    assert any(not torch.equal(first[k], other[k]) for k in first)
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_rerun_skips_finished_stages(flow, capsys):
    out = flow["out"]
    ft_log = out / f"training_dirs/{CKPT}/finetuning.log"
    before = ft_log.stat().st_mtime_ns
    assert train_main([str(flow["config"]), "--quiet"]) == 1
    assert "--resume" in capsys.readouterr().err
    assert train_main([str(flow["config"]), "--resume", "--quiet"]) == 0
    said = capsys.readouterr().out
    assert said.count("done earlier, skipped") == 8
    assert said.count("(1 steps)") == 2  # pretrain and finetune losses in the summary table
    assert "TextVQA" in said and "MMBench" in said
    assert ft_log.stat().st_mtime_ns == before

    scores = out / f"eval_results/{CKPT}/scores.json"
    scores_before = scores.stat().st_mtime_ns
    assert train_main([str(flow["config"]), "--from-stage", "scores", "--quiet"]) == 0
    said = capsys.readouterr().out
    assert said.count("done earlier, skipped") == 7 and "scores: local scores" in said
    assert scores.stat().st_mtime_ns != scores_before
    assert ft_log.stat().st_mtime_ns == before


def test_redo_clears_stale_checkpoints(flow, capsys):
    """--from-stage finetune must not let HF resume an old run's checkpoint, and the eval
    results of the old checkpoint are stale at once: dj-pack refuses them."""
    stale = flow["out"] / f"training_dirs/{CKPT}/checkpoint-999"
    stale.mkdir()
    (stale / "trainer_state.json").write_text("{}")
    args = [str(flow["config"]), "--from-stage", "finetune", "--until", "finetune", "--quiet"]
    assert train_main(args) == 0
    said = capsys.readouterr().out
    assert "rerun, removing" in said and "checkpoint-999" in said
    assert not stale.exists()
    assert "train_runtime" in (flow["out"] / f"training_dirs/{CKPT}/finetuning.log").read_text()
    stages = _state(flow)["stages"]
    assert stages["finetune"]["status"] == "done"
    assert [stages[s]["status"] for s in ("textvqa", "mmbench", "scores")] == ["stale"] * 3
    assert pack_main(["--config", str(flow["config"])]) == 2
    err = capsys.readouterr().err
    assert "stage textvqa is stale (an earlier stage (finetune) reruns)" in err


def _state(flow) -> dict:
    return json.loads((flow["out"] / "dj_train_state.json").read_text())


def test_interrupted_redo_never_ships_old_stages(flow, capsys):
    """The issue's sequence: --from-stage pretrain, Ctrl-C during pretrain, --resume, dj-pack.
    The finetune and eval results of the old pretrain must not count as done, nor be packed."""
    proc = subprocess.Popen(
        [str(BIN / "dj-train"), str(flow["config"]), "--from-stage", "pretrain"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if "[dj-train] pretrain: pretrain" in line:
            break
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
    rest = proc.stdout.read()
    assert proc.wait(timeout=120) == 130, rest[-2000:]
    assert "interrupted during stage pretrain" in rest and "run_flow" not in rest  # no traceback
    stages = _state(flow)["stages"]
    assert stages["pretrain"]["status"] == "interrupted"
    assert {stages[s]["status"] for s in ("finetune", "textvqa", "mmbench", "scores")} == {"stale"}

    assert train_main([str(flow["config"]), "--resume", "--until", "pretrain", "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "[dj-train] pretrain: out of date (interrupted last time)" in said
    stages = _state(flow)["stages"]
    assert stages["pretrain"]["status"] == "done" and stages["finetune"]["status"] == "stale"
    assert pack_main(["--config", str(flow["config"])]) == 2
    assert "stage finetune is stale" in capsys.readouterr().err


def test_resume_notices_an_edited_recipe(flow, capsys):
    """An edited solution/recipe.yaml makes the recipe stage, and everything after it, stale."""
    recipe = flow["root"] / "solution/recipe.yaml"
    data = yaml.safe_load(recipe.read_text())
    data["process"][1]["text_length_filter"]["min_len"] = 2  # still keeps every sample
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    assert train_main([str(flow["config"]), "--resume", "--until", "cap", "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "recipe: done earlier, skipped" not in said
    assert "[dj-train] recipe: out of date (solution/recipe.yaml changed since it ran)" in said
    stages = _state(flow)["stages"]
    assert stages["recipe"]["status"] == stages["cap"]["status"] == "done"
    assert stages["convert"]["status"] == "stale"
    # a redo further on would train on data the new recipe did not make: refused
    assert train_main([str(flow["config"]), "--from-stage", "pretrain", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "the earlier stage convert is out of date" in err and "start from convert" in err


# ----------------------------------------------------------------------------- fast checks


def _minimal(root: Path, **over) -> Path:
    """A config whose inputs exist (empty placeholders) for validation tests."""
    for d in ("data", "zoo/gemma", "zoo/OpenAI/clip", "zoo/OpenAI/openclip-x", "ft"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "zoo/gemma/config.json").write_text("{}")
    for f in ("data/dj.jsonl", "data/stage_1.json", "ft/ft.json"):
        (root / f).write_text("[]" if f.endswith(".json") else "")
    cfg = {
        "pretrain": {"dataset": "data/dj.jsonl", "image_folder": "data",
                     "original_llava": "data/stage_1.json",
                     "per_device_train_batch_size": 8, "gradient_accumulation_steps": 32},
        "finetune": {"data_path": "ft/ft.json", "image_folder": "ft",
                     "per_device_train_batch_size": 8, "gradient_accumulation_steps": 16},
        "model_zoo": {"llm": "zoo/gemma", "vision_tower": "zoo/OpenAI/clip",
                      "vision_tower_aux": "zoo/OpenAI/openclip-x"},
        "launcher": "python",
    }  # fmt: skip
    for key, value in over.items():
        section, _, name = key.partition("__")
        if name:
            cfg[section][name] = value
        else:
            cfg[section] = value
    path = root / "flow.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_valid_config_loads(tmp_path):
    rc = load_flow_config(_minimal(tmp_path))
    assert rc.pretrain_dir == tmp_path / "output/training_dirs/MGM-2B-Pretrain-default"
    assert rc.capped == tmp_path / "data/dj.jsonl-200k.jsonl"
    assert rc.llava_json == tmp_path / "data/dj.jsonl-200k.jsonl.json"


def test_global_batch_checked_before_any_work(tmp_path, capsys):
    cfg = _minimal(tmp_path, pretrain__gradient_accumulation_steps=16)
    assert train_main([str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "pretrain global batch must be 256: 8 (per-device batch) x 16" in err
    assert "x 1 (GPUs) = 128" in err and "use gradient accumulation 32" in err
    assert "pretrain.gradient_accumulation_steps" in err and "finetune" not in err
    assert not (tmp_path / "output").exists()


def test_config_problems_listed_together(tmp_path):
    cfg = _minimal(tmp_path, pretrain__dataset="data/missing.jsonl", unknown_key=1)
    with pytest.raises(ConfigError) as err:
        load_flow_config(cfg)
    assert "unknown_key: unknown key" in str(err.value)
    with pytest.raises(ConfigError, match="did you mean 'per_device_train_batch_size'"):
        load_flow_config(_minimal(tmp_path, pretrain__per_device_batch_size=8))
    with pytest.raises(ConfigError, match="did you mean 'question_file'"):
        load_flow_config(_minimal(tmp_path, eval={"mmbench": {"question_files": "x.tsv"}}))
    cfg = _minimal(tmp_path, pretrain__dataset="data/missing.jsonl",
                   finetune__image_folder="nowhere")  # fmt: skip
    with pytest.raises(ConfigError) as err:
        load_flow_config(cfg)
    msg = str(err.value)
    assert "pretrain.dataset: file not found" in msg and "finetune.image_folder" in msg
    with pytest.raises(ConfigError, match="exp_name"):
        load_flow_config(_minimal(tmp_path, exp_name="../escape"))
    with pytest.raises(ConfigError, match="le|less than or equal"):
        load_flow_config(_minimal(tmp_path, pretrain__cap=300_000))


def test_failed_stage_is_named(tmp_path, capsys):
    cfg = _minimal(tmp_path)
    (tmp_path / "data/dj.jsonl").write_text(
        json.dumps({"id": "x1", "images": ["a.jpg"], "text": "<__dj__image>\ncap <|__dj__eoc|>"})
        + "\n"
    )
    assert train_main([str(cfg), "--until", "convert", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "stage convert failed" in err and "convert.log" in err
    assert "  | error:" in err and "x1" in err  # the log's last lines say why
    state = json.loads((tmp_path / "output/dj_train_state.json").read_text())
    assert state["stages"]["cap"]["status"] == "done"
    assert state["stages"]["convert"]["status"] == "failed"
    assert "x1" in (tmp_path / "output/logs/convert.log").read_text()
    # fixed input: --resume goes on from the failed stage, skipping the finished cap
    (tmp_path / "data/stage_1.json").write_text(json.dumps([
        {"id": "x1", "image": "a.jpg", "conversations": [
            {"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "x"}]}
    ]))  # fmt: skip
    assert train_main([str(cfg), "--until", "convert", "--resume", "--quiet"]) == 0
    assert "cap: done earlier, skipped" in capsys.readouterr().out
    assert (tmp_path / "data/dj.jsonl-200k.jsonl.json").is_file()


def _llava_original(path: Path, question: str) -> None:
    path.write_text(json.dumps([
        {"id": "x1", "image": "a.jpg", "conversations": [
            {"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": "x"}]}
    ]))  # fmt: skip


def test_resume_reruns_exactly_the_stages_whose_inputs_changed(tmp_path, capsys):
    """Per-stage fingerprints: an input file changed reruns its stage and the later ones only;
    a config value changes the stage's command line, which counts as a changed input."""
    cfg = _minimal(tmp_path)
    (tmp_path / "data/dj.jsonl").write_text(
        json.dumps({"id": "x1", "images": ["a.jpg"], "text": "<__dj__image>\ncap <|__dj__eoc|>"})
        + "\n"
    )
    _llava_original(tmp_path / "data/stage_1.json", "Describe.")
    run = [str(cfg), "--until", "convert", "--quiet"]
    assert train_main(run) == 0
    capsys.readouterr()
    assert train_main([*run, "--resume"]) == 0
    said = capsys.readouterr().out
    assert "cap: done earlier, skipped" in said and "convert: done earlier, skipped" in said

    _llava_original(tmp_path / "data/stage_1.json", "Caption it.")  # convert's input only
    assert train_main([*run, "--resume"]) == 0
    said = capsys.readouterr().out
    assert "cap: done earlier, skipped" in said
    assert "convert: out of date (data/stage_1.json changed since it ran)" in said
    llava = json.loads((tmp_path / "data/dj.jsonl-200k.jsonl.json").read_text())
    assert llava[0]["conversations"][0]["value"] == "<image>\nCaption it."  # restored as is

    data = yaml.safe_load(cfg.read_text())
    data["pretrain"]["cap"] = 5  # cap's command line changes; convert follows it
    cfg.write_text(yaml.safe_dump(data))
    assert train_main([*run, "--resume"]) == 0
    said = capsys.readouterr().out
    assert "[dj-train] cap: out of date (its command line changed" in said
    assert "done earlier" not in said
    state = json.loads((tmp_path / "output/dj_train_state.json").read_text())
    assert [s["status"] for s in state["stages"].values()] == ["done", "done"]


def test_shipped_config_is_valid_for_8_gpus(tmp_path):
    """recipes/challenge_flow.yaml: schema-valid, and its batches fit the rule on 8 GPUs."""
    from dj_synth.tools.challenge.config import FlowConfig, ResolvedConfig, check_global_batches

    shipped = Path(__file__).resolve().parent.parent / "recipes" / "challenge_flow.yaml"
    data = yaml.safe_load(shipped.read_text())
    cfg = FlowConfig.model_validate({**data, "launcher": "deepspeed", "num_gpus": 8})
    assert check_global_batches(ResolvedConfig(cfg, shipped)) == []
    cfg = FlowConfig.model_validate({**data, "launcher": "deepspeed", "num_gpus": 4})
    problems = check_global_batches(ResolvedConfig(cfg, shipped))
    assert len(problems) == 2 and "use gradient accumulation 8" in problems[0]
    assert "use gradient accumulation 4" in problems[1]


def test_quality_aware_cap_command(tmp_path):
    cfg = _minimal(
        tmp_path,
        pretrain__select="top",
        pretrain__select_by="image_text_similarity",
    )
    from dj_synth.tools.challenge.flow import _cap

    rc = load_flow_config(cfg)
    argv = _cap(rc)[0].argv
    assert argv[argv.index("--by") + 1] == "image_text_similarity"
    assert argv[argv.index("--max-samples") + 1] == "200000"
    with pytest.raises(ConfigError, match="select_by"):
        load_flow_config(_minimal(tmp_path, pretrain__select="top", pretrain__select_by=None))


def test_cap_stage_fills_the_cap_when_asked(tmp_path):
    """pretrain.fill: the cap stage repeats 2 samples to exactly 5 (2 passes + 1, best first)."""
    cfg = _minimal(tmp_path, pretrain__cap=5, pretrain__fill=True, pretrain__select="top",
                   pretrain__select_by="image_text_similarity")  # fmt: skip
    rows = [{"id": f"x{i}", "images": ["a.jpg"], "text": f"<__dj__image>\ncap {i} <|__dj__eoc|>",
             "__dj__stats__": {"image_text_similarity": [0.2, 0.3][i]}} for i in range(2)]  # fmt: skip
    (tmp_path / "data/dj.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert train_main([str(cfg), "--until", "cap", "--quiet"]) == 0
    capped = (tmp_path / "data/dj.jsonl-200k.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in capped] == ["x0", "x1", "x0", "x1", "x1"]
    assert "--fill" in (tmp_path / "output/train.sh").read_text()


def test_deepspeed_commands_carry_the_toolkits_arguments(tmp_path):
    """On GPUs the stages are the toolkit's `deepspeed train_mem.py` lines (reference §4)."""
    from dj_synth.tools.challenge.flow import _finetune, _pretrain

    cfg = _minimal(tmp_path, launcher="deepspeed", num_gpus=8,
                   pretrain__gradient_accumulation_steps=4,
                   finetune__gradient_accumulation_steps=2)  # fmt: skip
    rc = load_flow_config(cfg, check_inputs=False)
    if shutil.which("deepspeed") is None:  # validation says how to get it, before any work
        with pytest.raises(ConfigError, match="no `deepspeed` command"):
            load_flow_config(cfg)

    def as_dict(argv: list[str]) -> dict[str, str]:
        i = argv.index("--deepspeed")
        flags = argv[i:]
        return {flags[j]: flags[j + 1] for j in range(0, len(flags), 2)}

    pre_cmd, ft_cmd = _pretrain(rc)[0], _finetune(rc)[0]
    assert pre_cmd.argv[:5] == [
        "deepspeed",
        "--num_gpus",
        "8",
        "--module",
        "dj_synth.tools.mgm.train",
    ]
    pre, ft = as_dict(pre_cmd.argv), as_dict(ft_cmd.argv)
    assert pre["--deepspeed"].endswith("zero2_offload.json") and Path(pre["--deepspeed"]).is_file()
    common = {
        "--version": "gemma", "--mm_projector_type": "mlp2x_gelu",
        "--mm_vision_select_layer": "-2", "--mm_use_im_start_end": "False",
        "--mm_use_im_patch_token": "False", "--image_size_aux": "768", "--bf16": "True",
        "--num_train_epochs": "1", "--per_device_train_batch_size": "8",
        "--per_device_eval_batch_size": "4", "--evaluation_strategy": "no",
        "--save_strategy": "steps", "--save_steps": "100", "--save_total_limit": "1",
        "--weight_decay": "0.", "--warmup_ratio": "0.03", "--lr_scheduler_type": "cosine",
        "--logging_steps": "1", "--tf32": "True", "--model_max_length": "2048",
        "--gradient_checkpointing": "True", "--dataloader_num_workers": "4",
        "--lazy_preprocess": "True", "--report_to": "none",
    }  # fmt: skip
    for flags in (pre, ft):
        assert {k: flags[k] for k in common} == common
    assert pre["--tune_mm_mlp_adapter"] == "True" and pre["--learning_rate"] == "1e-3"
    assert pre["--gradient_accumulation_steps"] == "4"
    assert pre["--data_path"] == str(tmp_path / "data/dj.jsonl-200k.jsonl.json")
    assert pre["--output_dir"].endswith("output/training_dirs/MGM-2B-Pretrain-default")
    assert "--tune_mm_mlp_adapter" not in ft and ft["--learning_rate"] == "2e-5"
    assert ft["--pretrain_mm_mlp_adapter"].endswith("MGM-2B-Pretrain-default/mm_projector.bin")
    assert ft["--image_aspect_ratio"] == "pad" and ft["--group_by_modality_length"] == "True"
    assert ft["--gradient_accumulation_steps"] == "2"
    assert pre_cmd.log.name == "pretrain.log" and ft_cmd.log.name == "finetuning.log"


def test_recipe_must_export_one_jsonl(tmp_path):
    cfg = _minimal(tmp_path, recipe="r.yaml", pretrain__dataset=None)
    recipe = {"dataset_path": "data/dj.jsonl", "export_path": "out/x.jsonl",
              "export_shard_size": 1000, "process": [{"text_length_filter": {"min_len": 1}}]}  # fmt: skip
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(ConfigError, match="export_shard_size: 0"):
        load_flow_config(cfg)
    recipe["export_shard_size"] = 0
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    assert load_flow_config(cfg).dataset == tmp_path / "out/x.jsonl"
    (tmp_path / "r.yaml").write_text("process: [{nonexistent_op: {}}]\ndataset_path: a.jsonl\n")
    with pytest.raises(ConfigError, match="recipe: .*nonexistent_op"):
        load_flow_config(cfg)


def _train_flags(script: str) -> list[dict[str, str]]:
    """The flags of each training command in a train.sh, in order."""
    import shlex

    found = []
    for line in script.splitlines():
        if "dj_synth.tools.mgm.train" in line:
            argv = shlex.split(line.split(" 2>&1 | tee ")[0])
            flags = argv[argv.index("dj_synth.tools.mgm.train") + 1 :]
            found.append(dict(zip(flags[::2], flags[1::2])))
    return found


def test_seeds_plan_and_train_sh(tmp_path, capsys):
    """seeds: [5, 6]: the data stages once; each seed's training and evaluation with its
    --seed, the first in the toolkit's tree and the second under output/seeds/seed-6/; a
    summary over both. --seeds N means 42, 43, ... and overrides the config."""
    from dj_synth.tools.challenge.flow import plan_units

    cfg = _minimal(tmp_path, seeds=[5, 6])
    assert train_main([str(cfg), "--dry-run"]) == 0
    script = capsys.readouterr().out
    assert re.findall(r"^# --- stage (\S+):", script, re.M) == [
        "cap", "convert", "pretrain", "finetune", "scores",
        "pretrain/seed-6", "finetune/seed-6", "scores/seed-6", "summary",
    ]  # fmt: skip
    out = tmp_path / "output"
    pre5, ft5, pre6, ft6 = _train_flags(script)
    assert [f["--seed"] for f in (pre5, ft5, pre6, ft6)] == ["5", "5", "6", "6"]
    assert pre5["--data_path"] == pre6["--data_path"]  # one capped dataset for every seed
    assert pre5["--output_dir"] == str(out / "training_dirs/MGM-2B-Pretrain-default")
    assert pre6["--output_dir"] == str(out / "seeds/seed-6/training_dirs/MGM-2B-Pretrain-default")
    assert ft6["--pretrain_mm_mlp_adapter"] == f"{pre6['--output_dir']}/mm_projector.bin"
    scores6 = out / "seeds/seed-6/eval_results/MGM-2B-Finetune-default/scores.json"
    assert f"--out {scores6} --fidelity toolkit --seed 6" in script
    summary = next(x for x in script.splitlines() if "eval.cli summarize" in x)
    assert str(out / "seed_scores.json") in summary and str(scores6) in summary
    assert str(out / "eval_results/MGM-2B-Finetune-default/scores.json") in summary

    units = {u.key: u for u in plan_units(load_flow_config(cfg))}
    ft6_unit = units["finetune/seed-6"]
    assert ft6_unit.depends_on(units["convert"]) and ft6_unit.depends_on(units["pretrain/seed-6"])
    assert not ft6_unit.depends_on(units["pretrain"])  # seed 5's: a rerun there leaves it be
    assert all(units["summary"].depends_on(u) for k, u in units.items() if k != "summary")

    assert train_main([str(cfg), "--dry-run", "--seeds", "3"]) == 0
    script = capsys.readouterr().out
    assert [f["--seed"] for f in _train_flags(script)] == ["42", "42", "43", "43", "44", "44"]
    assert "stage finetune/seed-44" in script and "seed-5" not in script
    # without seeds: the toolkit's seed, written out; no summary
    assert train_main([str(_minimal(tmp_path / "plain")), "--dry-run"]) == 0
    script = capsys.readouterr().out
    assert [f["--seed"] for f in _train_flags(script)] == ["42", "42"]
    assert "summary" not in script and "seeds/" not in script
    for bad, msg in (([1, 1], "distinct"), ([], "at least one seed"), ([-1], "distinct")):
        with pytest.raises(ConfigError, match=msg):
            load_flow_config(_minimal(tmp_path, seeds=bad))
