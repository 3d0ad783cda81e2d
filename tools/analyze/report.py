"""`report.html`: one self-contained page (figures and thumbnails inlined, no script, no
network) that shows, per filter of the recipe, its stats' distributions with the current
thresholds, what each threshold drops, suggested thresholds and, given a run, the funnel
and a few dropped samples per operator.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
from dataclasses import dataclass, field
from typing import Any

import jinja2
import numpy as np

from dj_synth.operators import Filter, Op
from dj_synth.tools.cli_common import package_version

from . import plots
from .analysis import Analysis, describe_cells
from .run_view import RunView
from .thresholds import FilterWhatIf, filter_bounds

# Arguments every operator gets from the recipe's globals: not worth a line in the report.
_GLOBAL_ARGS = {"text_key", "image_key", "image_special_token", "eoc_special_token"}


@dataclass
class ReportInput:
    """Everything the page is made of; `analysis` and `run` are each optional (not both)."""

    project: str
    meta: list[str]
    analysis: Analysis | None = None
    ops: list[Op] = field(default_factory=list)
    op_args: dict[int, dict[str, Any]] = field(default_factory=dict)  # as the recipe wrote them
    run: RunView | None = None
    input_samples: int | None = None  # of the analysis run
    quarantined: int = 0
    auto_num: int | None = None
    notes: list[str] = field(default_factory=list)
    tokens: tuple[str, ...] = ("<__dj__image>", "<|__dj__eoc|>")  # shown dimmed in sample texts
    footer: list[str] = field(default_factory=list)


def fmt(value: Any) -> str:
    """A number as a person reads it: thousands separated, 4 significant digits."""
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    x = float(value)
    if x == int(x) and abs(x) < 1e15:
        return f"{int(x):,}"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.4g}"


def yaml_number(value: float) -> str:
    """A threshold as a recipe line takes it (no thousands separators)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def pct(share: float) -> str:
    if share <= 0:
        return "0%"
    if share < 0.001:
        return f"{100 * share:.2f}%"
    return f"{100 * share:.1f}%"


def _bar(share: float) -> str:
    return f"{min(100.0, 100 * share):.1f}"


def _csv_text(value: Any) -> str:
    """A cell as pandas' `to_csv` writes it (so the page and overall.csv can be compared)."""
    return str(value) if isinstance(value, str) else repr(float(value))


def _b64(png: bytes | None) -> str | None:
    return base64.b64encode(png).decode("ascii") if png else None


class _Page:
    def __init__(self, inp: ReportInput) -> None:
        self.inp = inp
        self.a = inp.analysis
        self.by_op = {f.op.index: f for f in self.a.whatif.filters} if self.a else {}
        self.shown_stats: set[str] = set()
        self.run_ops = list(inp.run.ops) if inp.run else []

    # -- the pieces --------------------------------------------------------
    def stat_block(self, name: str, op: Op | None, f: FilterWhatIf | None) -> dict[str, Any]:
        a = self.a
        block: dict[str, Any] = {
            "name": name, "png": None, "bounds": [], "suggestions": [], "describe": [],
            "categories": None, "per_image": False,
        }  # fmt: skip
        if a is None:
            return block
        self.shown_stats.add(name)
        dist = a.dists.get(name)
        block["per_image"] = bool(dist and dist.per_image)
        block["png"] = _b64(a.figures.get(name))
        cells = describe_cells(a.frame, name)
        block["describe"] = [
            {"label": c["label"], "raw": _csv_text(c["value"]), "shown": fmt(c["value"])}
            for c in cells
        ]
        if name in a.categories:
            total = sum(n for _, n in a.categories[name]) or 1
            column_total = int(a.frame.at["count", name]) if "count" in a.frame.index else total
            allowed = set(getattr(op, "lang", None) or []) if op is not None else set()
            block["categories"] = [
                {"value": v, "count": f"{n:,}", "share": pct(n / column_total),
                 "bar": _bar(n / column_total), "allowed": v in allowed}
                for v, n in a.categories[name]
            ]  # fmt: skip
        if f is None or f.judged == 0:
            return block
        for b in f.bounds:
            if b.bound.stat != name:
                continue
            if b.bound.active:
                share = f.share(b.alone)
                block["bounds"].append(
                    {"arg": b.bound.arg, "value": fmt(b.bound.value), "share": pct(share),
                     "bar": _bar(share)}
                )  # fmt: skip
            for rule, v in b.suggested:
                share = f.share(v)
                block["suggestions"].append(
                    {"arg": b.bound.arg, "value": yaml_number(getattr(v.op, b.bound.arg)), "rule": rule,
                     "share": pct(share), "bar": _bar(share)}
                )  # fmt: skip
        return block

    def samples(self, op: Op | None, index: int | None, name: str) -> tuple[list[Any], str]:
        run_op = None
        for r in self.run_ops:
            if r.name.split("#")[0] == name and (index is None or r.index == index):
                run_op = r
                break
        if run_op is None:
            return [], ""
        self.run_ops.remove(run_op)
        keys = list(getattr(op, "stats_keys", ()) or [])
        out = []
        for d in run_op.samples:
            ordered = [k for k in keys if k in d.stats] + [k for k in d.stats if k not in keys]
            out.append(
                {"thumbs": d.thumbs or [], "reason": d.reason, "text": self.text_parts(d.text),
                 "stats": [(k, _short(d.stats[k])) for k in ordered[:8]], "where": d.where}
            )  # fmt: skip
        n = run_op.filtered
        note = f"{n:,} sample{'s' if n != 1 else ''}"
        if len(out) < n:
            note += f", the first {len(out)} shown"
        return out, note

    def text_parts(self, text: str) -> list[tuple[bool, str]]:
        """(is a special token, piece): the page shows the tokens dimmed."""
        tokens = [t for t in self.inp.tokens if t]
        if not tokens:
            return [(False, text[:600])]
        pattern = "(" + "|".join(re.escape(t) for t in tokens) + ")"
        parts = [p for p in re.split(pattern, text[:600]) if p]
        return [(p in tokens, p.strip("\n") if p not in tokens else p) for p in parts]

    def filter_section(self, op: Op) -> dict[str, Any]:
        f = self.by_op.get(op.index)
        stats = []
        for b in filter_bounds(op):
            if b.stat not in stats:
                stats.append(b.stat)
        for key in f.needs if f else getattr(op, "stats_keys", ()):
            if key not in stats:
                stats.append(key)
        if self.a is not None:
            stats = [s for s in stats if s in self.a.table.kinds]
        section: dict[str, Any] = {
            "anchor": f"op-{op.index}", "index": op.index, "name": op.name,
            "args": _args_text(self.inp.op_args.get(op.index, {})),
            "stats": [self.stat_block(s, op, f) for s in stats],
            "drops": False, "pill": None, "chip": None, "error": f.error if f else None,
        }  # fmt: skip
        if f is not None and f.judged:
            share = f.share(f.configured)
            section.update(
                drops=share > 0, pill=f"drops {pct(share)} as configured", chip=pct(share)
            )
        section["samples"], section["samples_note"] = self.samples(op, op.index, op.name)
        return section

    def other_section(self, op: Op | None, index: int | None, name: str) -> dict[str, Any] | None:
        samples, note = self.samples(op, index, name)
        if not samples:
            return None
        return {
            "anchor": f"op-{index if index is not None else name}", "index": index, "name": name,
            "args": _args_text(self.inp.op_args.get(index, {})) if index is not None else "",
            "stats": [], "drops": True, "pill": f"dropped {note.split(',')[0]} in the run",
            "chip": None, "error": None,
            "samples": samples, "samples_note": note,
        }  # fmt: skip

    def sections(self) -> list[dict[str, Any]]:
        out = []
        for op in self.inp.ops:
            if isinstance(op, Filter):
                out.append(self.filter_section(op))
            else:
                sec = self.other_section(op, op.index, op.name)
                if sec:
                    out.append(sec)
        for r in list(self.run_ops):  # no recipe given: the run's operators by name
            sec = self.other_section(None, r.index, r.name)
            if sec:
                out.append(sec)
        if self.a is not None:
            rest = [s for s in self.a.table.kinds if s not in self.shown_stats]
            if rest:
                out.append(
                    {"anchor": "other-stats", "index": None,
                     "name": "stats" if not self.inp.ops else "other stats",
                     "args": "", "drops": False, "pill": None, "chip": None, "error": None,
                     "stats": [self.stat_block(s, None, None) for s in rest], "samples": [],
                     "samples_note": ""}
                )  # fmt: skip
        return out

    def cards(self) -> list[dict[str, Any]]:
        inp, a, cards = self.inp, self.a, []

        def card(
            id_: str, label: str, raw: Any, value: str, note: str = "", tone: str = ""
        ) -> None:
            cards.append({"id": id_, "label": label, "raw": raw, "value": value, "note": note,
                          "tone": tone})  # fmt: skip

        if a is not None and inp.input_samples is not None:
            n = a.table.rows
            note = (f"the first {n:,} (--auto)" if inp.auto_num
                    else f"of {inp.input_samples:,} input samples")  # fmt: skip
            card("analysed", "samples analysed", n, f"{n:,}", note)
            card("quarantined", "quarantined", inp.quarantined, f"{inp.quarantined:,}",
                 "broken input, not analysed", "bad" if inp.quarantined else "")  # fmt: skip
            n_filters = len(a.whatif.filters)
            card("filters", "filters", n_filters, str(n_filters), f"{len(a.table.kinds)} stats")
            w = a.whatif
            if w.sampled and w.sequential and w.filters:
                keep = w.remaining[-1] / w.sampled
                card("keep", "would keep", round(keep, 6), pct(keep),
                     "filters as configured, in order", "good")  # fmt: skip
        run = inp.run
        if run is not None:
            s = run.summary
            n_in, n_out = s.get("input_samples", 0), s.get("exported_samples", 0)
            card("run-input", "run input", n_in, f"{n_in:,}", "samples read by the run")
            card("run-exported", "run exported", n_out, f"{n_out:,}",
                 pct(n_out / n_in) + " of the input" if n_in else "", "good")  # fmt: skip
            q = s.get("quarantined_samples", 0)
            if a is None or inp.input_samples is None:
                card("run-quarantined", "run quarantined", q, f"{q:,}", "", "bad" if q else "")
                if a is not None:
                    card("stats", "stats", len(a.table.kinds), str(len(a.table.kinds)),
                         "as each filter saw them")  # fmt: skip
        return cards

    def funnel(self) -> dict[str, Any] | None:
        run = self.inp.run
        if run is None or not run.ops:
            return None
        s = run.summary
        start = int(s.get("input_samples", 0))
        names, remaining, dropped, rows = [], [], [], []
        first_in = run.ops[0].n_in
        if first_in < start:
            names.append("entry checks")
            remaining.append(first_in)
            dropped.append(start - first_in)
        for op in run.ops:
            names.append(op.name)
            remaining.append(op.n_out)
            lost = max(0, op.n_in - op.n_out)
            dropped.append(lost)
            rows.append(
                {"index": op.index, "name": op.name, "n_in": f"{op.n_in:,}",
                 "n_out": f"{op.n_out:,}", "dropped": f"{lost:,}" if lost else "–",
                 "bar": _bar(lost / op.n_in if op.n_in else 0.0)}
            )  # fmt: skip
        png = plots.funnel(names, remaining, dropped, start)
        exported = s.get("exported_samples", 0)
        note = (
            f"{start:,} read, {exported:,} exported, {sum(s.get('filtered', {}).values()):,} "
            f"filtered, {s.get('quarantined_samples', 0):,} quarantined "
            f"({os.path.join(run.work_dir, 'summary.json')})"
        )
        return {"png": _b64(png), "rows": rows, "note": note}


def _short(value: Any) -> str:
    if isinstance(value, list):
        return (
            "[" + ", ".join(_short(v) for v in value[:4]) + (", …" if len(value) > 4 else "") + "]"
        )
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _args_text(args: dict[str, Any]) -> str:
    return " · ".join(f"{k}: {v}" for k, v in args.items() if k not in _GLOBAL_ARGS)


def render_report(inp: ReportInput, path: str) -> str:
    """Write `report.html` at `path`; return the path."""
    page = _Page(inp)
    sections = page.sections()
    notes = list(inp.notes)
    a = inp.analysis
    if a is not None and a.whatif.subset:
        notes.append(
            f"Drop shares are judged on {a.whatif.sampled:,} of {a.table.rows:,} samples "
            f"(every {a.whatif.step}th); the distributions and overall.csv use all of them."
        )
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("dj_synth.tools.analyze", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    html = env.get_template("report.html.j2").render(
        project=inp.project,
        version=package_version(),
        meta=[*inp.meta, dt.datetime.now().strftime("%Y-%m-%d %H:%M")],
        cards=page.cards(),
        notes=notes,
        sections=sections,
        funnel=page.funnel(),
        corr_png=_b64(a.corr_png) if a else None,
        footer=inp.footer,
    )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(html)
    os.replace(tmp, path)
    return path
