"""The run's account: every input sample exported, filtered or quarantined, and per-op figures.

`summary.json` is the contract other tools (and tests) read; `render` prints
the same facts as a table a person can take in at a glance.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dj_synth.operators import Op
from dj_synth.operators.ledger import OpMetrics


class AccountingError(RuntimeError):
    """input != exported + filtered + quarantined (+ generated): a bug, never a data problem."""


@dataclass
class RunAccount:
    ops: list[Op]
    input_samples: int = 0
    exported_samples: int = 0
    quarantined_samples: int = 0
    blank_lines: int = 0
    read_seconds: float = 0.0
    quarantine_kinds: Counter[str] = field(default_factory=Counter)
    metrics: dict[int, OpMetrics] = field(default_factory=dict)

    def op(self, index: int) -> OpMetrics:
        if index not in self.metrics:
            self.metrics[index] = OpMetrics()
        return self.metrics[index]

    def merge_metrics(self, metrics: dict[int, OpMetrics]) -> None:
        for index, m in metrics.items():
            self.op(index).add(m)

    @property
    def generated_samples(self) -> int:
        return sum(self.op(op.index).generated for op in self.ops)

    def op_keys(self) -> list[str]:
        """Unique keys per op: the name, with `#k` added when a name repeats."""
        seen: Counter[str] = Counter()
        keys = []
        for op in self.ops:
            seen[op.name] += 1
            keys.append(op.name if seen[op.name] == 1 else f"{op.name}#{seen[op.name]}")
        return keys

    def filtered(self) -> dict[str, int]:
        return {k: self.op(op.index).filtered for k, op in zip(self.op_keys(), self.ops)}

    def check(self) -> None:
        lhs = self.input_samples + self.generated_samples
        rhs = self.exported_samples + sum(self.filtered().values()) + self.quarantined_samples
        if lhs != rhs:
            raise AccountingError(
                f"accounting mismatch: input {self.input_samples} + generated "
                f"{self.generated_samples} != exported {self.exported_samples} + filtered "
                f"{sum(self.filtered().values())} + quarantined {self.quarantined_samples}"
            )

    def to_dict(self, **extra: Any) -> dict[str, Any]:
        ops = []
        for key, op in zip(self.op_keys(), self.ops):
            m = self.op(op.index)
            ops.append(
                {
                    "name": key,
                    "in": m.n_in,
                    "out": m.n_out,
                    "seconds": round(m.seconds, 4),
                    "filtered": m.filtered,
                    "quarantined": m.quarantined,
                    "generated": m.generated,
                    **(
                        {"cache_hits": m.cache_hits, "cache_misses": m.cache_misses}
                        if m.cache_hits or m.cache_misses else {}
                    ),
                }
            )
        return {
            "input_samples": self.input_samples,
            "exported_samples": self.exported_samples,
            "filtered": self.filtered(),
            "quarantined_samples": self.quarantined_samples,
            "quarantine_reasons": dict(self.quarantine_kinds.most_common()),
            "generated_samples": self.generated_samples,
            "skipped_blank_lines": self.blank_lines,
            "read_seconds": round(self.read_seconds, 4),
            "ops": ops,
            **extra,
        }


def write_summary(path: str, summary: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2, ensure_ascii=False)
        fh.write("\n")
    os.replace(tmp, path)


def machine() -> str:
    return f"{platform.node()} {platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}"


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def render(summary: dict[str, Any]) -> None:
    """A per-operator table and the sample account, on stderr."""
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)
    table = Table(title=f"dj-synth: {summary.get('project_name', '')}", title_justify="left")
    for col, justify in [("#", "right"), ("operator", "left"), ("in", "right"), ("out", "right"),
                         ("dropped", "right"), ("errors", "right"), ("seconds", "right"),
                         ("samples/s", "right")]:  # fmt: skip
        table.add_column(col, justify=justify)
    read_rate = summary["input_samples"] / max(summary["read_seconds"], 1e-9)
    table.add_row(
        "", "(read + entry checks)", f"{summary['input_samples']:,}", "", "-",
        f"{summary['quarantined_samples'] - sum(o['quarantined'] for o in summary['ops']):,}",
        f"{summary['read_seconds']:.2f}", f"{read_rate:,.0f}" if summary["read_seconds"] >= 1e-3 else "-",
    )  # fmt: skip
    for i, row in enumerate(summary["ops"]):
        dropped = row["filtered"]
        share = f" ({100 * dropped / row['in']:.1f}%)" if row["in"] else ""
        rate = f"{row['in'] / row['seconds']:,.0f}" if row["seconds"] >= 1e-3 else "-"
        table.add_row(
            str(i), row["name"], f"{row['in']:,}", f"{row['out']:,}",
            f"{dropped:,}{share}" if dropped else "-",
            f"{row['quarantined']:,}" if row["quarantined"] else "-",
            f"{row['seconds']:.2f}", rate,
        )  # fmt: skip
    console.print(table)
    q = summary["quarantined_samples"]
    console.print(
        f"[bold]{summary['input_samples']:,}[/] input -> [bold green]{summary['exported_samples']:,}[/]"
        f" exported, {sum(summary['filtered'].values()):,} filtered, "
        f"[{'red' if q else 'green'}]{q:,} quarantined[/]"
        + (f", {summary['generated_samples']:,} generated" if summary["generated_samples"] else "")
        + f" in {summary['elapsed_seconds']:.1f}s ({summary['samples_per_second']:,.0f} samples/s)"
    )
    for reason, count in list(summary["quarantine_reasons"].items())[:8]:
        console.print(f"  quarantined {count:,} x {reason}")
    console.print(
        f"export: {', '.join(summary['export_files'][:3])}"
        + (" ..." if len(summary["export_files"]) > 3 else "")
    )
    console.print(f"work_dir: {summary['work_dir']} (summary.json, filtered/, quarantine.jsonl)")
