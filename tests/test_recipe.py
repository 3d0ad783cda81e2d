"""Recipes are validated before any work, with messages that say what to fix."""

from __future__ import annotations

import logging
import os

import pytest
from helpers import write_recipe
from typer.testing import CliRunner

from dj_synth.pipelines.cli import app
from dj_synth.pipelines.recipe import RecipeError, load_recipe


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"id": "1", "text": "a sample caption that is long enough", "images": []}\n')
    return path


def _recipe(tmp_path, data, process, **extra):
    settings = {"dataset_path": str(data), "export_path": str(tmp_path / "out" / "x.jsonl")}
    settings.update(extra)
    return write_recipe(tmp_path / "r.yaml", **settings, process=process)


def test_unknown_operator_names_the_closest(tmp_path, data):
    path = _recipe(tmp_path, data, [{"text_lenght_filter": {"min_len": 3}}])
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    msg = str(err.value)
    assert "process[0]" in msg and "'text_lenght_filter'" in msg
    assert "text_length_filter" in msg


def test_unknown_argument_names_op_and_argument(tmp_path, data):
    path = _recipe(tmp_path, data, [{"image_shape_filter": {"min_widht": 10}}])
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    msg = str(err.value)
    assert "image_shape_filter" in msg and "'min_widht'" in msg and "'min_width'" in msg


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"min_len": "ten"}, "argument 'min_len' expects int, got str 'ten'"),
        ({"max_len": 3.5}, "argument 'max_len' expects int"),
        ({"min_len": [1]}, "argument 'min_len' expects int, got list"),
    ],
)
def test_mistyped_argument_names_expected_type(tmp_path, data, args, expected):
    path = _recipe(tmp_path, data, [{"text_length_filter": args}])
    with pytest.raises(RecipeError, match="text_length_filter") as err:
        load_recipe(path)
    assert expected in str(err.value)


def test_literal_argument_lists_choices(tmp_path, data):
    path = _recipe(tmp_path, data, [{"image_shape_filter": {"any_or_all": "most"}}])
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert "one of 'any', 'all'" in str(err.value)


def test_unknown_global_key_suggests(tmp_path, data):
    path = _recipe(tmp_path, data, [], export_pth="x")
    with pytest.raises(RecipeError, match="unknown recipe key 'export_pth'.*'export_path'"):
        load_recipe(path)


def test_mistyped_global_key(tmp_path, data):
    path = _recipe(tmp_path, data, [], np="two")
    with pytest.raises(RecipeError, match="'np'"):
        load_recipe(path)


def test_dj_keys_we_ignore_warn_not_fail(tmp_path, data, caplog):
    path = _recipe(
        tmp_path, data, [{"text_length_filter": {"mem_required": "1GB"}}],
        ds_cache_dir="/tmp/x", open_monitor=True, op_fusion=False,
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="dj_synth"):
        recipe = load_recipe(path)
    assert {"ds_cache_dir", "open_monitor", "op_fusion"} <= {
        w.split("'")[1] for w in recipe.warnings if w.startswith("recipe key")
    }
    assert any("mem_required" in w for w in recipe.warnings)
    assert "ignores" in caplog.text


def test_null_args_and_bare_names_are_accepted(tmp_path, data):
    path = tmp_path / "r.yaml"
    path.write_text(
        f"dataset_path: {data}\nexport_path: {tmp_path}/o.jsonl\n"
        "process:\n  - text_length_filter:\n  - image_shape_filter\n"
    )
    recipe = load_recipe(path)
    assert [s.name for s in recipe.ops] == ["text_length_filter", "image_shape_filter"]


def test_missing_dataset_path(tmp_path):
    path = write_recipe(tmp_path / "r.yaml", process=[])
    with pytest.raises(RecipeError, match="'dataset_path' is required"):
        load_recipe(path)


def test_not_yaml_mapping(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(RecipeError, match="must be a mapping"):
        load_recipe(path)


def test_unsafe_yaml_is_refused(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("dataset_path: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(path)


def test_overrides(tmp_path, data):
    path = _recipe(tmp_path, data, [{"text_length_filter": {"min_len": 3}}, "text_length_filter"])
    recipe = load_recipe(
        path, ["np=1", "export_path=out/y.jsonl", "text_length_filter.max_len=50",
               "process.0.text_length_filter.min_len=7"],
    )  # fmt: skip
    assert recipe.settings.np == 1 and recipe.settings.export_path == "out/y.jsonl"
    assert recipe.ops[0].args["min_len"] == 7 and recipe.ops[0].args["max_len"] == 50
    assert recipe.ops[1].args["max_len"] == 50 and "min_len" not in recipe.ops[1].args
    with pytest.raises(RecipeError, match="no 'image_shape_filter'"):
        load_recipe(path, ["image_shape_filter.min_width=3"])
    with pytest.raises(RecipeError, match="KEY=VALUE"):
        load_recipe(path, ["np"])
    with pytest.raises(RecipeError, match="expects int"):
        load_recipe(path, ["text_length_filter.min_len=abc"])


def test_globals_are_injected_into_ops(tmp_path, data):
    path = _recipe(
        tmp_path, data, [{"text_length_filter": {}}],
        text_keys=["caption", "other"], image_special_token="<image>",
    )  # fmt: skip
    spec = load_recipe(path).ops[0]
    assert spec.args["text_key"] == "caption" and spec.args["image_special_token"] == "<image>"


def test_data_juicer_recipe_runs_unchanged(tmp_path):
    """A recipe in Data-Juicer's own style (its keys, comments, ops, op args) runs as is."""
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    Image.new("RGB", (300, 200), "blue").save(images / "a.jpg")
    Image.new("RGB", (20, 10), "red").save(images / "b.jpg")
    (tmp_path / "demo.jsonl").write_text(
        '{"text": "<__dj__image> A blue square on a plain white background. <|__dj__eoc|>", '
        '"images": ["images/a.jpg"]}\n'
        '{"text": "<__dj__image> tiny <|__dj__eoc|>", "images": ["images/b.jpg"]}\n'
    )
    (tmp_path / "dj.yaml").write_text(
        """# Process config example for dataset

# global parameters
project_name: 'demo-process'
dataset_path: './demo.jsonl'  # path to your dataset directory or file
np: 2  # number of subprocess to process your dataset
text_keys: 'text'

export_path: './outputs/demo-process/demo-processed.jsonl'
use_cache: false
open_tracer: false

# process schedule
# a list of several process operators with their arguments
process:
  - text_length_filter:
      min_len: 16
      max_len: 10000
  - image_shape_filter:
      min_width: 100
      min_height: 100
      any_or_all: any
"""
    )
    cwd = os.getcwd()
    os.chdir(tmp_path)  # Data-Juicer resolves dataset_path against the working directory
    try:
        result = CliRunner().invoke(app, ["dj.yaml", "-q"])
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    out = tmp_path / "outputs" / "demo-process"
    lines = (out / "demo-processed.jsonl").read_text().splitlines()
    assert len(lines) == 1 and "blue square" in lines[0]
    assert (out / "summary.json").exists()


def test_cli_exit_codes(tmp_path, data):
    runner = CliRunner()
    bad = _recipe(tmp_path, data, [{"no_such_filter": {}}])
    result = runner.invoke(app, [str(bad)])
    assert result.exit_code == 2 and "unknown operator" in result.output

    blocker = tmp_path / "file"
    blocker.write_text("x")  # export dir under a file: cannot be created
    ok = _recipe(tmp_path, data, [], export_path=str(blocker / "sub" / "x.jsonl"))
    result = runner.invoke(app, [str(ok)])
    assert result.exit_code == 2 and "cannot create export directory" in result.output

    result = runner.invoke(app, [str(ok), "--dry-run", "--set", f"export_path={tmp_path}/o.jsonl"])
    assert result.exit_code == 0 and "recipe OK" in result.output

    missing = _recipe(tmp_path, tmp_path / "nope.jsonl", [])
    result = runner.invoke(app, [str(missing), "-q"])
    assert result.exit_code == 2 and "does not exist" in result.output
