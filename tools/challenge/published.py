"""The published Better Synth recipes (recipes/better_synth/) as their headers document them.

Each header lists the `dj-run` commands that try the recipe on tiny random models (the
`--set` overrides) and the dj-train flow settings it needs (`recipe:`, `pretrain:` with the
cap fill). Reading them from the header means the tests and the benchmark run exactly what
the documentation says. `write_tiny_flow` puts a recipe, with its earlier steps, into a tiny
challenge folder (`dj-synth make-tiny-challenge`) with the tiny models, and writes the flow
config that runs it.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from dj_synth.pipelines.recipe import apply_override

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "better_synth"
PUBLISHED = ("bronze.yaml", "short_captions.yaml", "text_to_image.yaml", "kmeans_balanced.yaml")
# In the tiny challenge (5 seed samples), the cap of the recipes whose header fills 200000:
# bronze exports 8 (3 main + 5 recaptioned), text_to_image 2 (4x), kmeans_balanced 2 (2x).
TINY_CAP = {"bronze.yaml": 12, "text_to_image.yaml": 8, "kmeans_balanced.yaml": 4}
TINY_MODELS = "outputs/tiny_models/"  # how the headers name the tiny models' folder
# Overrides that place inputs and outputs for a run from the repository; in a challenge
# folder the recipe's own paths (relative to the challenge root) apply.
PATH_KEYS = ("dataset_path", "export_path", "save_dir")


def _header(recipe: Path) -> list[str]:
    lines = []
    for line in recipe.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[2:] if line.startswith("# ") else line[1:])
    return lines


def _block(recipe: Path, marker: str) -> list[str]:
    """The indented, non-empty lines after the header line containing `marker`."""
    lines = _header(recipe)
    found = [i for i, line in enumerate(lines) if marker.lower() in line.lower()]
    if not found:
        raise ValueError(f"{recipe}: the header has no line with {marker!r}")
    out = []
    for line in lines[found[0] + 1 :]:
        if line and not line.startswith("  "):
            break
        if line.strip():
            out.append(line)
    return out


def header_runs(recipe: Path) -> list[tuple[str, list[str]]]:
    """The header's tiny-model `dj-run` commands, in order: (recipe file name, ["K=V", ...])."""
    text = "\n".join(line.strip() for line in _block(recipe, "To try it on tiny RANDOM models"))
    runs = []
    for command in text.replace("\\\n", " ").splitlines():
        argv = shlex.split(command)
        if argv and argv[0] == "dj-run":
            sets = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--set"]
            runs.append((Path(argv[1]).name, sets))
    return runs


def header_flow(recipe: Path) -> dict[str, Any]:
    """The header's dj-train flow settings (`recipe:`, `pretrain:`)."""
    lines = [line[2:] for line in _block(recipe, "in the dj-train flow config")]
    return yaml.safe_load("\n".join(lines))


def tiny_recipe(name: str, sets: list[str], models: Mapping[str, str]) -> dict[str, Any]:
    """The recipe `name` with the header's overrides, tiny model folders from `models` (by
    name), and its own input and output paths."""
    data = yaml.safe_load((RECIPES / name).read_text(encoding="utf-8"))
    for item in sets:
        key, value = item.split("=", 1)
        if key.split(".")[-1] in PATH_KEYS:
            continue
        if value.startswith(TINY_MODELS):
            value = models[value[len(TINY_MODELS) :].split("/")[0]]
        apply_override(data, f"{key}={value}")
    return data


def write_tiny_flow(root: Path, recipe: str, models: Mapping[str, str]) -> tuple[list[Path], Path]:
    """Write `recipe` and its earlier steps, on the tiny models, to `root/solution/`, and
    `root/flow_<name>.yaml` (the tiny challenge's config with the header's flow settings,
    its own `exp_name` and `output_dir`, and `TINY_CAP` in place of a filled 200000).

    Returns the earlier steps (to `dj-run` in `root` first) and the flow config."""
    runs = header_runs(RECIPES / recipe)
    if not runs or runs[-1][0] != recipe:
        raise ValueError(f"{recipe}: the header's last dj-run must run the recipe itself")
    (root / "solution").mkdir(exist_ok=True)
    paths = []
    for name, sets in runs:
        path = root / "solution" / name
        path.write_text(yaml.safe_dump(tiny_recipe(name, sets, models), sort_keys=False))
        paths.append(path)
    flow = header_flow(RECIPES / recipe)
    base = yaml.safe_load((root / "flow.yaml").read_text(encoding="utf-8"))
    pretrain = {**base["pretrain"], **flow.get("pretrain", {})}
    if pretrain.get("fill"):
        pretrain["cap"] = TINY_CAP[recipe]
    stem = recipe.removesuffix(".yaml")
    config = {**base, "exp_name": stem, "output_dir": f"output_{stem}",
              "recipe": flow["recipe"], "pretrain": pretrain,
              "solution": [str(p.relative_to(root)) for p in paths]}  # fmt: skip
    path = root / f"flow_{stem}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return paths[:-1], path
