"""The checkpoint of a sharded run: its plan, one committed file per (stage, shard), and the
fingerprint that decides whether `--resume` may continue it.

Layout under `work_dir/checkpoint/`: `plan.json` (fingerprint, shards, blank lines) and
`stage<k>/<shard>.out`, each written to a temp name and renamed: the rename is the
commit. A `.out` file holds a JSON head (counters), the survivors (frames), then the
filtered and quarantine records.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from typing import Any

import dj_synth.operators as operators_package
import dj_synth.pipelines as pipelines_package
from dj_synth.operators import get_operator
from dj_synth.operators.ledger import OpMetrics
from dj_synth.operators.model_cache import code_identity

from .export import AtomicWriter
from .frames import loads, read_survivors, write_survivors
from .recipe import Recipe
from .shards import ShardSpec, input_fingerprint
from .stages import StageOutput, dumps

PLAN_VERSION = 3
# Settings that change how a run is executed or where its results go, not what they are:
# a checkpoint stays valid when only these change.
EXECUTION_KEYS = frozenset(
    {
        "np", "executor_type", "ray_address", "use_checkpoint", "process", "project_name",
        "export_path", "export_shard_size", "export_format", "llava_export_path",
        "llava_options", "work_dir", "max_quarantine_ratio",
    }
)  # fmt: skip


class ResumeError(RuntimeError):
    """`--resume` cannot continue this run, or a fresh run would discard a checkpoint."""


class Checkpoint:
    def __init__(self, work_dir: str) -> None:
        self.root = os.path.join(work_dir, "checkpoint")
        self.plan_path = os.path.join(self.root, "plan.json")

    def path(self, stage: int, shard: int) -> str:
        return os.path.join(self.root, f"stage{stage}", f"{shard:06d}.out")

    def done(self, stage: int, shard: int) -> bool:
        return os.path.exists(self.path(stage, shard))

    def committed(self) -> int:
        """How many (stage, shard) results are committed."""
        if not os.path.isdir(self.root):
            return 0
        return sum(
            len([f for f in os.listdir(os.path.join(self.root, d)) if f.endswith(".out")])
            for d in os.listdir(self.root)
            if d.startswith("stage") and os.path.isdir(os.path.join(self.root, d))
        )

    def exists(self) -> bool:
        return os.path.exists(self.plan_path)

    def remove(self) -> None:
        if os.path.exists(self.root):
            shutil.rmtree(self.root)

    # -- the plan -------------------------------------------------------------------
    def save_plan(self, fingerprint: dict, shards: list[ShardSpec], blank: int) -> None:
        os.makedirs(self.root, exist_ok=True)
        plan = {"fingerprint": fingerprint, "blank_lines": blank,
                "shards": [sh.to_dict() for sh in shards]}  # fmt: skip
        with AtomicWriter(self.plan_path) as w:
            w.write(json.dumps(plan, indent=1).encode())

    def load_plan(self, fingerprint: dict) -> tuple[list[ShardSpec], int]:
        """The interrupted run's shards, if it ran the same recipe on the same input."""
        if not self.exists():
            raise ResumeError(
                f"nothing to resume: {self.plan_path} does not exist (the last run finished, "
                "or none ran with use_checkpoint); run without --resume"
            )
        with open(self.plan_path, encoding="utf-8") as fh:
            plan = json.load(fh)
        if plan.get("fingerprint") != fingerprint:
            raise ResumeError(
                "the recipe, its operators' code or the input changed since the interrupted run; "
                "run with --fresh "
                f"to start over (this removes {self.root})"
            )
        return [ShardSpec(**d) for d in plan["shards"]], plan["blank_lines"]

    # -- one (stage, shard) ----------------------------------------------------------
    def write(self, stage: int, shard: int, out: StageOutput) -> None:
        head = {
            "n_items": out.n_items,
            "read_seconds": out.read_seconds,
            "metrics": {str(i): vars(m) for i, m in out.metrics.items()},
            "kinds": dict(out.quarantine_kinds),
            "survivors": len(out.survivors),
            "filtered": len(out.filtered),
            "quarantined": len(out.quarantined),
            "traced": len(out.traced),
        }
        with AtomicWriter(self.path(stage, shard)) as w:
            w.write(dumps(head))
            write_survivors(w.file, out.survivors)
            for op_index, line in out.filtered:
                w.write(dumps([op_index, len(line)]))
                w.write_raw(line)
            for line in out.quarantined:
                w.write(dumps([len(line)]))
                w.write_raw(line)
            for op_index, line in out.traced:
                w.write(dumps([op_index, len(line)]))
                w.write_raw(line)

    def read(self, stage: int, shard: int) -> StageOutput:
        with open(self.path(stage, shard), "rb") as fh:
            head = loads(fh.readline())
            out = StageOutput(n_items=head["n_items"], read_seconds=head["read_seconds"])
            out.survivors = list(read_survivors(fh, head["survivors"]))
            for _ in range(head["filtered"]):
                op_index, n = loads(fh.readline())
                out.filtered.append((op_index, fh.read(n)))
            for _ in range(head["quarantined"]):
                (n,) = loads(fh.readline())
                out.quarantined.append(fh.read(n))
            for _ in range(head["traced"]):
                op_index, n = loads(fh.readline())
                out.traced.append((op_index, fh.read(n)))
        out.metrics = {int(i): OpMetrics(**m) for i, m in head["metrics"].items()}
        out.quarantine_kinds = Counter(head["kinds"])
        return out


def fingerprint(recipe: Recipe, files: list[str]) -> dict[str, Any]:
    """What a checkpoint's results depend on: operators, result-shaping settings, input."""
    s = recipe.settings.model_dump()
    for key in EXECUTION_KEYS:
        s.pop(key, None)
    body = json.dumps([s, [(op.name, op.args) for op in recipe.ops]], sort_keys=True, default=str)
    return {
        "version": PLAN_VERSION,
        "recipe": hashlib.sha256(body.encode()).hexdigest(),
        "code": code_fingerprint(recipe),
        "input": input_fingerprint(files),
    }


def code_fingerprint(recipe: Recipe) -> str:
    """dj-synth's operators and engine, and each operator class the recipe names (custom
    ones too): shards made before an upgrade or an edit (another hash, another rule) must
    not be mixed with shards made after it."""
    h = hashlib.blake2b(digest_size=16)
    for package in (operators_package, pipelines_package):
        root = os.path.dirname(os.path.abspath(package.__file__))
        for name in sorted(os.listdir(root)):
            if name.endswith(".py"):
                with open(os.path.join(root, name), "rb") as fh:
                    h.update(name.encode() + b"\0" + fh.read())
    for op in recipe.ops:
        h.update(code_identity(get_operator(op.name)).encode())
    return h.hexdigest()
