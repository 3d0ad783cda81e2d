"""dj-analyze: Data-Juicer's analyzer files, the report's numbers, and the report in a real
browser (headless Chromium over the DevTools protocol).

The worked example (hand-computed below): four parsed samples plus one broken line,
  texts of 10, 20, 30, 40 characters; image widths [40], [100], [40, 64], [] (no image);
  heights [30], [50], [30, 64], []
recipe: a mapper, text_length_filter(min_len 25, max_len 1000),
image_shape_filter(min_width 50), document_deduplicator.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import read_jsonl, write_recipe
from PIL import Image
from selectolax.lexbor import LexborHTMLParser as HTMLParser
from typer.testing import CliRunner

from dj_synth.pipelines.recipe import load_recipe
from dj_synth.pipelines.run import run_recipe
from dj_synth.tools.analyze.cli import app

SIZES = {"a.png": (40, 30), "b.png": (100, 50), "c.png": (64, 64)}
SAMPLES = [
    {"id": "s0", "text": "a" * 10, "images": ["img/a.png"]},
    {"id": "s1", "text": "b" * 20, "images": ["img/b.png"]},
    {"id": "s2", "text": "c" * 30, "images": ["img/a.png", "img/c.png"]},
    {"id": "s3", "text": "d" * 40},
]
PROCESS = [
    {"whitespace_normalization_mapper": None},
    {"text_length_filter": {"min_len": 25, "max_len": 1000}},
    {"image_shape_filter": {"min_width": 50}},
    {"document_deduplicator": None},
]


def _dataset(root: Path) -> Path:
    (root / "img").mkdir(parents=True)
    for i, (name, size) in enumerate(SIZES.items()):
        Image.new("RGB", size, (60 * i, 120, 200 - 50 * i)).save(root / "img" / name)
    lines = [json.dumps(s) for s in SAMPLES]
    lines.insert(2, '{"id": "broken", "text": ')  # quarantined, never analysed
    data = root / "data.jsonl"
    data.write_text("\n".join(lines) + "\n")
    return data


def _recipe(root: Path, name: str, **extra) -> Path:
    return write_recipe(
        root / f"{name}.yaml", project_name="worked-example", dataset_path=str(root / "data.jsonl"),
        export_path=str(root / name / "res.jsonl"), np=1, percentiles=[0.9], process=PROCESS,
        **extra,
    )  # fmt: skip


def _analyze(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [*args, "-q"])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The worked example analysed, and run with `report: true`; then analysed with --run."""
    root = tmp_path_factory.mktemp("analyze")
    _dataset(root)
    summary = run_recipe(load_recipe(_recipe(root, "run", report=True)), progress=False)
    code, out = _analyze(str(_recipe(root, "an")), "--run", str(root / "run"))
    assert code == 0, out
    return root, summary


def _csv(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "overall.csv", index_col=0)


# ---------------------------------------------------------------------------
# Data-Juicer's analyzer contract


def test_overall_csv_is_data_juicers_describe_on_every_sample(example):
    root, _ = example
    folder = root / "an" / "analysis"
    frame = _csv(folder)
    assert list(frame.columns) == ["text_len", "image_width", "image_height"]
    assert list(frame.index) == ["count", "mean", "std", "min", "25%", "50%", "75%", "90%", "max"]
    # text_len over all four samples, though min_len 25 would drop two of them
    t = frame["text_len"]
    assert (t["count"], t["mean"], t["min"], t["max"]) == (4, 25, 10, 40)
    assert t["std"] == pytest.approx(math.sqrt(500 / 3))
    assert (t["25%"], t["50%"], t["75%"], t["90%"]) == (17.5, 25, 32.5, 37)
    # per-image stats exploded: [40], [100], [40, 64], [] -> 40, 100, 40, 64
    w = frame["image_width"]
    assert (w["count"], w["mean"], w["min"], w["max"]) == (4, 61, 40, 100)
    assert w["std"] == pytest.approx(math.sqrt(2412 / 3))
    assert (w["25%"], w["50%"], w["75%"], w["90%"]) == (40, 52, 73, pytest.approx(89.2))
    assert frame["image_height"]["mean"] == 43.5
    md = (folder / "overall.md").read_text()
    assert md.splitlines()[0].split("|")[2].strip() == "text_len"  # a markdown table


def test_analysis_drops_nothing_and_writes_the_plots(example):
    root, _ = example
    folder = root / "an" / "analysis"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["exported_samples"] == 4 and summary["quarantined_samples"] == 1
    assert not any(summary["filtered"].values())
    names = [op["name"] for op in summary["ops"]]
    assert names == ["text_length_filter", "image_shape_filter"]  # filters only
    stats = read_jsonl(folder / "res_stats.jsonl")  # Data-Juicer's <export>_stats.jsonl
    assert [s["__dj__stats__"]["text_len"] for s in stats] == [10, 20, 30, 40]
    assert not (folder / "res.jsonl").exists()  # no export_original_dataset
    for stat in ("text_len", "image_width", "image_height"):
        for kind in ("hist", "box"):
            with Image.open(folder / f"{stat}-{kind}.png") as im:
                assert im.size[0] > 200 and len(np.unique(np.asarray(im.convert("L")))) > 8
    assert (folder / "stats-corr-pearson.png").stat().st_size > 1000


def _dom(path: Path) -> HTMLParser:
    return HTMLParser(path.read_text(encoding="utf-8"))


def _section(dom: HTMLParser, name: str):
    for node in dom.css("section.op"):
        if node.css_first("h2").text() == name:
            return node
    raise AssertionError(f"no section {name}")


def _rows(table) -> list[list[str]]:
    return [[c.text(strip=True) for c in tr.css("td")] for tr in table.css("tr") if tr.css("td")]


def test_report_shares_and_suggestions_are_the_hand_computed_ones(example):
    root, _ = example
    dom = _dom(root / "an" / "analysis" / "report.html")
    text = _section(dom, "text_length_filter")
    assert text.css_first(".pill").text() == "drops 50.0% as configured"  # 10 and 20 < 25
    assert _rows(text.css_first("table.thresholds")) == [
        ["min_len", "25", "50.0%"], ["max_len", "1,000", "0%"],
    ]  # fmt: skip
    suggested = {r[1]: (r[0], r[2]) for r in _rows(text.css_first("table.suggestions"))}
    assert suggested["mean"] == ("min_len: 25", "50.0%")
    assert suggested["p25"] == ("min_len: 18", "25.0%")  # 17.5 rounded: a length is whole
    assert not any("σ" in rule and "min_len" in v[0] for rule, v in suggested.items())
    shape = _section(dom, "image_shape_filter")
    # [40] dropped; [40, 64] kept (any_or_all any); a sample without images kept
    assert shape.css_first(".pill").text() == "drops 25.0% as configured"
    keep = dom.css_first("#card-keep .value")
    assert keep.attributes["data-value"] == "0.5"  # s2 and s3 survive both, in order


def test_run_report_shows_each_stat_as_its_filter_saw_it(example):
    root, summary = example
    assert summary["exported_samples"] == 2
    folder = root / "run" / "analysis"
    frame = _csv(folder)
    assert frame["text_len"]["count"] == 4  # every parsed sample reached text_length_filter
    assert frame["image_width"]["count"] == 2  # only s2, s3 reached image_shape_filter: [40, 64]
    assert frame["image_width"]["mean"] == 52
    dom = _dom(folder / "report.html")
    cards = {c.attributes["id"]: c.css_first(".value").attributes["data-value"]
             for c in dom.css(".card")}  # fmt: skip
    assert cards["card-run-input"] == "5" and cards["card-run-exported"] == "2"


def test_run_funnel_and_dropped_samples(example):
    root, _ = example
    dom = _dom(root / "an" / "analysis" / "report.html")
    rows = _rows(dom.css_first("#funnel-table"))
    assert rows[1] == ["1", "text_length_filter", "4", "2", "2"]
    assert rows[2] == ["2", "image_shape_filter", "2", "2", "–"]
    dropped = _section(dom, "text_length_filter").css(".sample")
    reasons = [d.css_first(".reason").text() for d in dropped]
    assert [r.split(" ")[0] for r in reasons] == ["text_len=10", "text_len=20"]
    thumbs = dropped[0].css(".thumbs img")
    assert len(thumbs) == 1 and thumbs[0].attributes["src"].startswith("data:image/jpeg;base64,")
    jpeg = base64.b64decode(thumbs[0].attributes["src"].split(",", 1)[1])
    with Image.open(io.BytesIO(jpeg)) as im:
        assert im.size == (40, 30)  # a.png, already smaller than a thumbnail


def test_run_alone_reports_from_the_runs_files(example):
    """`dj-analyze --run DIR` without a recipe: the run's stats, funnel and drops; no
    thresholds (the recipe as the run used it is unknown)."""
    root, _ = example
    code, out = _analyze("--run", str(root / "run"))
    assert code == 0, out
    dom = _dom(root / "run" / "analysis" / "report.html")
    assert not dom.css("table.thresholds")
    stats = _section(dom, "stats")
    assert [s.attributes["data-stat"] for s in stats.css("div.stat")] == [
        "text_len", "image_width", "image_height",
    ]  # fmt: skip
    reasons = [d.text() for d in _section(dom, "text_length_filter").css(".reason")]
    assert len(reasons) == 2 and reasons[0].startswith("text_len=10")


def test_auto_analyses_the_first_samples(tmp_path):
    _dataset(tmp_path)
    code, out = _analyze(str(_recipe(tmp_path, "auto")), "--auto", "--auto-num", "2")
    assert code == 0, out
    t = _csv(tmp_path / "auto" / "analysis")["text_len"]
    assert (t["count"], t["min"], t["max"]) == (2, 10, 20)


def test_configuration_mistakes_exit_2(tmp_path):
    _dataset(tmp_path)
    no_filters = write_recipe(
        tmp_path / "m.yaml", dataset_path=str(tmp_path / "data.jsonl"),
        export_path=str(tmp_path / "m" / "o.jsonl"), process=[{"clean_links_mapper": None}],
    )  # fmt: skip
    code, out = _analyze(str(no_filters))
    assert code == 2 and "no filters" in out
    code, out = _analyze(str(_recipe(tmp_path, "x")), "--run", str(tmp_path / "nowhere"))
    assert code == 2 and "summary.json" in out
    bad = _recipe(tmp_path, "p")
    data = yaml.safe_load(bad.read_text())
    data["percentiles"] = [50]
    bad.write_text(yaml.safe_dump(data))
    code, out = _analyze(str(bad))
    assert code == 2 and "percentiles" in out


def test_cli_is_one_of_the_family(monkeypatch):
    """-h and --help, --version, plain help within 80 columns on a wide terminal."""
    from importlib.metadata import version

    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    short = runner.invoke(app, ["-h"], prog_name="dj-analyze")
    assert short.exit_code == 0 and short.output.startswith("Usage: dj-analyze ")
    assert runner.invoke(app, ["--help"], prog_name="dj-analyze").output == short.output
    assert max(len(line) for line in short.output.splitlines()) <= 80
    assert "--auto-num" in short.output and "--run" in short.output
    got = runner.invoke(app, ["--version"])
    assert got.output == f"dj-synth {version('dj-synth')}\n"


def test_model_filter_stats_are_computed_for_every_sample(tiny_models, tmp_path):
    """image_text_similarity_filter (tiny CLIP) with min_score 0.99: a run would drop nearly
    everything; the analysis keeps every sample and scores every image."""
    _dataset(tmp_path)
    recipe = write_recipe(
        tmp_path / "m.yaml", dataset_path=str(tmp_path / "data.jsonl"),
        export_path=str(tmp_path / "m" / "o.jsonl"), np=1,
        process=[{"image_text_similarity_filter": {"hf_clip": tiny_models["clip"],
                                                   "min_score": 0.99, "accelerator": "cpu"}}],
    )  # fmt: skip
    code, out = _analyze(str(recipe))
    assert code == 0, out
    folder = tmp_path / "m" / "analysis"
    # one score per text chunk with images (each text here is one chunk): s0, s1, s2
    assert _csv(folder)["image_text_similarity"]["count"] == 3
    assert json.loads((folder / "summary.json").read_text())["exported_samples"] == 4


def test_streaming_correlation_equals_pandas(tmp_path, monkeypatch):
    """Several row groups, missing values and list stats: the same as DataFrame.corr on the
    per-sample values (lists by their mean)."""
    from dj_synth.tools.analyze import stats_table
    from dj_synth.tools.analyze.correlation import StreamingCorrelation

    monkeypatch.setattr(stats_table, "ROW_GROUP", 97)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(1000):
        x = float(rng.normal(1e6, 3))  # a large offset: sums of squares would cancel
        row = {"x": x, "y": 2 * x + float(rng.normal(0, 4)),
               "z": [float(v) for v in rng.normal(size=int(rng.integers(0, 3)))]}  # fmt: skip
        if i % 7 == 3:
            del row["y"]
        rows.append(row)
    table = stats_table.build_stats_table(lambda: rows, str(tmp_path / "s.parquet"))
    corr = StreamingCorrelation(table)
    for batch in table.batches():
        corr.add(batch)
    expected = pd.DataFrame(
        {
            "x": [r["x"] for r in rows],
            "y": [r.get("y", np.nan) for r in rows],
            "z": [np.mean(r["z"]) if r["z"] else np.nan for r in rows],
        }  # fmt: skip
    ).corr()
    got = corr.result().loc[expected.index, expected.columns]
    np.testing.assert_allclose(got.values, expected.values, atol=1e-9)


def test_arrow_and_python_stats_readers_agree(tmp_path, monkeypatch):
    """The one-pass Arrow reader writes the same Parquet as the two-pass Python reader, and
    a file whose later blocks change shape falls back to the latter."""
    import pyarrow.parquet as pq

    from dj_synth.tools.analyze import stats_table as st

    monkeypatch.setattr(st, "ARROW_BLOCK", 4096)  # several blocks
    rng = np.random.default_rng(1)
    uniform = [
        {"n": int(rng.integers(0, 99)), "r": float(rng.random()), "lang": ["en", "fr"][i % 2],
         "w": [int(x) for x in rng.integers(1, 9, size=i % 3)]}
        for i in range(400)
    ]  # fmt: skip
    shifting = [*uniform, {"n": 1.5, "late": 3}]  # a float and a new key in the last block
    for name, rows, fast in (("uniform", uniform, True), ("shifting", shifting, False)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"__dj__stats__": r}) + "\n" for r in rows))
        assert (st._arrow_stats([str(path)], str(tmp_path / f"{name}.a")) is not None) == fast
        got = st.stats_table_from_files([str(path)], str(tmp_path / f"{name}.parquet"))
        ref = st.build_stats_table(st.stats_lines([str(path)]), str(tmp_path / f"{name}.ref"))
        assert got.kinds == ref.kinds and got.rows == ref.rows == len(rows)
        assert pq.read_table(got.path).equals(pq.read_table(ref.path))
    assert ref.kinds["n"] == "number" and ref.kinds["w"] == "number list"


# ---------------------------------------------------------------------------
# The report in a real browser


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class DevTools:
    """Just enough of the Chrome DevTools protocol: commands, and the events seen meanwhile."""

    def __init__(self, exe: str, profile: str) -> None:
        import websocket

        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--remote-debugging-port=0",
             "--hide-scrollbars", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.05)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        self.ws = websocket.create_connection(
            page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True
        )
        self.events: list[dict] = []
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                assert "error" not in msg, msg
                return msg["result"]
            self.events.append(msg)

    def wait_for(self, event: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event for e in self.events):
            assert time.monotonic() < deadline, f"no {event}"
            self.events.append(json.loads(self.ws.recv()))

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def test_report_renders_in_chromium(example, tmp_path):
    """Opens offline without a console error or a network request, every inlined image
    decodes, the DOM's numbers equal overall.csv, and the screenshot is not blank."""
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium; CI installs it)")
    pytest.importorskip("websocket")
    root, _ = example
    folder = root / "an" / "analysis"
    browser = DevTools(exe, tempfile.mkdtemp(dir=tmp_path))
    try:
        for domain in ("Runtime", "Log", "Page", "Network"):
            browser.call(f"{domain}.enable")
        browser.call("Emulation.setDeviceMetricsOverride", width=1280, height=900,
                     deviceScaleFactor=1, mobile=False)  # fmt: skip
        browser.call("Page.navigate", url=(folder / "report.html").as_uri())
        browser.wait_for("Page.loadEventFired")
        broken = browser.call(
            "Runtime.evaluate", returnByValue=True,
            expression="[...document.images].filter(i => !i.complete || !i.naturalWidth).length",
        )["result"]["value"]  # fmt: skip
        images = browser.call("Runtime.evaluate", expression="document.images.length",
                              returnByValue=True)["result"]["value"]  # fmt: skip
        html = browser.call("Runtime.evaluate", expression="document.documentElement.outerHTML",
                            returnByValue=True)["result"]["value"]  # fmt: skip
        height = browser.call("Page.getLayoutMetrics")["cssContentSize"]["height"]
        shot = browser.call(
            "Page.captureScreenshot", format="png", captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": 1280, "height": min(height, 6000), "scale": 1},
        )["data"]  # fmt: skip
    finally:
        browser.close()
    errors = [e for e in browser.events if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Runtime.consoleAPICalled"
                  and e["params"]["type"] in ("error", "assert"))
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]  # fmt: skip
    assert not errors, errors
    urls = [e["params"]["request"]["url"] for e in browser.events
            if e.get("method") == "Network.requestWillBeSent"]  # fmt: skip
    assert urls and all(u.startswith(("file:", "data:")) for u in urls), urls
    on_disk = (folder / "report.html").read_text(encoding="utf-8").count("<img ")
    assert images == on_disk >= 6 and broken == 0  # 3 stats, correlation, funnel, thumbnails

    # every number of overall.csv is on the page, and every number on the page is overall.csv's
    frame = _csv(folder)
    cells = HTMLParser(html).css("td[data-row]")
    seen = set()
    for cell in cells:
        stat, row = cell.attributes["data-stat"], cell.attributes["data-row"]
        expected = frame.at[row, stat]
        assert float(cell.attributes["data-value"]) == expected, (stat, row)
        shown = float(cell.text(strip=True).replace(",", ""))
        assert shown == pytest.approx(expected, rel=5e-4), (stat, row, cell.text())
        seen.add((stat, row))
    assert seen == {(s, r) for s in frame.columns for r in frame.index if pd.notna(frame.at[r, s])}

    png = base64.b64decode(shot)
    (tmp_path / "report.png").write_bytes(png)
    with Image.open(io.BytesIO(png)) as im:
        assert im.size[0] == 1280 and im.size[1] > 1500
        grey = np.asarray(im.convert("L"), dtype=np.float64)
    assert grey.std() > 20 and len(np.unique(grey)) > 100  # text, figures, thumbnails
    if os.environ.get("DJ_SAVE_REPORT_SCREENSHOT"):
        shutil.copy(tmp_path / "report.png", os.environ["DJ_SAVE_REPORT_SCREENSHOT"])
