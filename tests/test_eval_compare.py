"""`dj-eval compare` on constructed per-question results whose answer is known by hand.

Expected intervals come from the analytic standard error of a paired difference of binary
outcomes: with p10 the share of questions A gets right and B wrong, p01 the reverse,
Var(mean(B) - mean(A)) = (p10 + p01 - (p01 - p10)^2) / n (the variance of a variable taking
-1, +1, 0 with those shares, over n questions); a 95% interval is about +-1.96 of its root."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dj_synth.tools.eval.cli import app
from dj_synth.tools.eval.compare import CompareError, compare_runs, find_scores, load_run

runner = CliRunner()


def write_seed(
    folder: Path,
    textvqa: list[float] | None = None,
    mmbench: list[tuple[int, bool, bool]] | None = None,
    seed: int | None = None,
) -> Path:
    """scores.json + per_question.jsonl as `dj-eval scores` lays them out. TextVQA: one soft
    score per question; MMBench: (index, answered, correct) rows. The accuracies in scores.json
    are worked out here directly: mean soft score; right / answered rows; groups (index % 1e6)
    with a main question whose every row is right / such groups."""
    folder.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    scores: dict = {"fidelity": None, "seed": seed, "per_question": "per_question.jsonl"}
    if textvqa is not None:
        rows += [
            {"benchmark": "textvqa", "question_id": f"img{i // 2}", "question": f"q{i}?",
             "score": s}
            for i, s in enumerate(textvqa)
        ]  # fmt: skip
        scores["textvqa"] = {
            "accuracy": 100.0 * sum(textvqa) / len(textvqa), "samples": len(textvqa),
            "unmatched": 0,
        }  # fmt: skip
    if mmbench is not None:
        rows += [
            {"benchmark": "mmbench", "index": i, "group": i % 1_000_000, "answered": a,
             "correct": c, "category": "x"}
            for i, a, c in mmbench
        ]  # fmt: skip
        answered = [c for _, a, c in mmbench if a]
        groups: dict[int, list[bool]] = {}
        for i, _, c in mmbench:
            groups.setdefault(i % 1_000_000, []).append(c)
        mains = [g for g in groups if g in {i for i, _, _ in mmbench}]
        scores["mmbench"] = {
            "accuracy": 100.0 * sum(answered) / len(answered),
            "circular_accuracy": 100.0 * sum(all(groups[g]) for g in mains) / len(mains),
        }
    (folder / "per_question.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "scores.json").write_text(json.dumps(scores))
    return folder


def binary(right: int, n: int) -> list[float]:
    return [1.0] * right + [0.0] * (n - right)


def compare_json(a: Path, b: Path, *extra: str) -> dict:
    out = runner.invoke(app, ["compare", str(a), str(b), "--json", *extra])
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


def paired_se(p10: float, p01: float, n: int) -> float:
    """Standard error, in points, of B - A for paired binary outcomes."""
    return 100 * math.sqrt((p10 + p01 - (p01 - p10) ** 2) / n)


def test_identical_runs_differ_by_nothing(tmp_path):
    scores = binary(7, 10) + [0.3, 0.6, 0.9]
    a = write_seed(tmp_path / "a", scores, [(0, True, True), (1_000_000, True, False)])
    b = write_seed(tmp_path / "b", scores, [(0, True, True), (1_000_000, True, False)])
    result = compare_json(a, b)
    for key in ("textvqa", "mmbench", "mmbench_circular"):
        m = result["metrics"][key]
        assert m["diff"] == 0 and m["ci"] == [0.0, 0.0]
        assert not m["distinguishable"] and m["direction"] is None
        assert "not distinguishable from noise" in m["verdict"]
    assert result["metrics"]["textvqa"]["a"]["mean"] == pytest.approx(100 * 8.8 / 13)


def test_ten_points_more_on_2000_questions_is_clear(tmp_path):
    """A right on 1000 of 2000; B loses 100 of those and gains 300 others: +10 points exactly,
    p10 = 0.05, p01 = 0.15, so the paired SE is 100 * sqrt(0.19 / 2000) = 0.975 points."""
    n = 2000
    a_scores = binary(1000, n)
    b_scores = [0.0] * 100 + [1.0] * 900 + [1.0] * 300 + [0.0] * 700
    a = write_seed(tmp_path / "a", a_scores)
    b = write_seed(tmp_path / "b", b_scores)
    m = compare_json(a, b, "--n-boot", "4000")["metrics"]["textvqa"]
    se = paired_se(0.05, 0.15, n)
    assert se == pytest.approx(0.97468, abs=1e-4)
    assert m["diff"] == pytest.approx(10.0)
    assert m["distinguishable"] and m["direction"] == "higher"
    lo, hi = m["ci"]
    assert 0 < lo < 10 < hi
    assert m["se"] == pytest.approx(se, rel=0.05)
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.07)
    # pairing matters: resampling the runs independently would give sqrt(.25 + .24) / n
    assert m["se"] < 0.8 * 100 * math.sqrt((0.25 + 0.24) / n)
    assert "B is higher by 10.00 points (+20.0% of A's 50.00)" in m["verdict"]
    assert "excludes 0: distinguishable from noise" in m["verdict"]
    # the other way round: the same size, lower
    back = compare_json(b, a, "--n-boot", "4000")["metrics"]["textvqa"]
    assert back["diff"] == pytest.approx(-10.0) and back["direction"] == "lower"


def test_mmbench_resamples_whole_circular_groups(tmp_path):
    """1000 groups (a main question and its copy, right or wrong together). A: 500 groups
    right; B: loses 50, gains 150: +10 points plain and circular. Per group p10 = 0.05,
    p01 = 0.15 over n = 1000 groups: SE 1.378 points (per row it would be 0.975)."""

    def rows(right: set[int]) -> list[tuple[int, bool, bool]]:
        return [(g + k * 1_000_000, True, g in right) for g in range(1000) for k in (0, 1)]

    a_right = set(range(500))
    b_right = (a_right - set(range(50))) | set(range(500, 650))
    a = write_seed(tmp_path / "a", mmbench=rows(a_right))
    b = write_seed(tmp_path / "b", mmbench=rows(b_right))
    metrics = compare_json(a, b, "--n-boot", "4000")["metrics"]
    se = paired_se(0.05, 0.15, 1000)
    for key in ("mmbench", "mmbench_circular"):
        m = metrics[key]
        assert m["units"] == 1000 and m["unit"] == "circular group"
        assert m["diff"] == pytest.approx(10.0)
        assert m["se"] == pytest.approx(se, rel=0.06)
        assert m["distinguishable"]
    assert "textvqa" not in metrics


def test_one_more_right_of_20_is_noise(tmp_path):
    """B loses question 0 and gains questions 10 and 11: +5 points on 20 questions."""
    a = write_seed(tmp_path / "a", binary(10, 20))
    b = write_seed(tmp_path / "b", [0.0] + [1.0] * 11 + [0.0] * 8)
    m = compare_json(a, b)["metrics"]["textvqa"]
    assert m["diff"] == pytest.approx(5.0)
    lo, hi = m["ci"]
    assert lo < 0 < hi and not m["distinguishable"]
    assert "B - A = +5.00 points" in m["verdict"] and "includes 0" in m["verdict"]
    out = runner.invoke(app, ["compare", str(a), str(b)])
    assert out.exit_code == 0, out.output
    assert "not distinguishable from noise" in out.stdout


def test_seed_to_seed_spread_widens_the_interval(tmp_path):
    """Same +5 points, once from one seed each, once as the mean over 3 seeds whose scores
    spread by 10 points: the seeds' spread must show in the interval."""
    n = 2000
    a_seeds, b_seeds = [800, 1000, 1200], [900, 1100, 1300]
    a1 = write_seed(tmp_path / "a1", binary(a_seeds[0], n), seed=1)
    b1 = write_seed(tmp_path / "b1", binary(b_seeds[0], n), seed=1)
    single = compare_json(a1, b1, "--n-boot", "3000")["metrics"]["textvqa"]
    assert single["diff"] == pytest.approx(5.0) and single["distinguishable"]
    # p10 = 0, p01 = 0.05: SE 0.487 points
    assert single["se"] == pytest.approx(paired_se(0.0, 0.05, n), rel=0.06)

    runs = {}
    for name, rights in (("A", a_seeds), ("B", b_seeds)):
        out = tmp_path / name / "output"
        entries = []
        for k, right in enumerate(rights):
            rel = f"eval_results/MGM-2B-Finetune-x{'' if k == 0 else f'-{k}'}"
            write_seed(out / rel, binary(right, n), seed=k + 1)
            entries.append({"seed": k + 1, "scores": f"{rel}/scores.json"})
        (out / "dj_train_state.json").write_text(json.dumps({"seeds": entries}))
        runs[name] = out
    multi = compare_json(runs["A"], runs["B"], "--n-boot", "3000")
    m = multi["metrics"]["textvqa"]
    assert multi["a"]["seeds"] == [1, 2, 3]
    assert m["a"]["per_seed"] == [40.0, 50.0, 60.0]
    assert m["a"]["mean"] == pytest.approx(50.0) and m["a"]["std"] == pytest.approx(10.0)
    assert m["diff"] == pytest.approx(5.0)
    width = m["ci"][1] - m["ci"][0]
    assert width > 5 * (single["ci"][1] - single["ci"][0])
    assert not m["distinguishable"]
    assert multi["notes"] == []  # 3 seeds each: nothing to warn about


def test_resampling_is_seeded(tmp_path):
    a = write_seed(tmp_path / "a", binary(30, 60))
    b = write_seed(tmp_path / "b", [0.0] * 5 + [1.0] * 25 + [1.0] * 8 + [0.0] * 22)
    first = compare_json(a, b, "--n-boot", "500", "--seed", "3")
    assert compare_json(a, b, "--n-boot", "500", "--seed", "3") == first
    other = compare_json(a, b, "--n-boot", "500", "--seed", "4")
    assert other["metrics"]["textvqa"]["ci"] != first["metrics"]["textvqa"]["ci"]


def test_run_folders_are_found_by_layout(tmp_path):
    """A dj-train output folder without a state file: the toolkit tree of the first seed and
    output/seeds/seed-<S>/ of the others (seed 10 after seed 9: by number)."""
    out = tmp_path / "output"
    ckpt = "eval_results/MGM-2B-Finetune-e"
    write_seed(out / ckpt, binary(1, 4), seed=42)
    for s in (10, 9):
        write_seed(out / f"seeds/seed-{s}" / ckpt, binary(2, 4), seed=s)
    found = find_scores(tmp_path)  # the flow's folder holding output/
    assert [p for _, p in found] == [
        out / ckpt / "scores.json",
        out / "seeds/seed-9" / ckpt / "scores.json",
        out / "seeds/seed-10" / ckpt / "scores.json",
    ]
    assert [s.seed for s in load_run(out).seeds] == [42, 9, 10]
    write_seed(out / "eval_results/MGM-2B-Finetune-f", binary(1, 4))
    with pytest.raises(CompareError, match="2 experiments"):
        find_scores(out)


def test_bad_inputs_exit_2_with_the_fix(tmp_path):
    a = write_seed(tmp_path / "a", binary(3, 4))
    old = tmp_path / "old"
    old.mkdir()
    (old / "scores.json").write_text(json.dumps({"textvqa": {"accuracy": 75.0}}))
    out = runner.invoke(app, ["compare", str(a), str(old)])
    assert out.exit_code == 2 and "no per-question results" in out.stderr
    assert "dj-eval scores" in out.stderr and "Traceback" not in out.output
    stale = write_seed(tmp_path / "stale", binary(3, 4))
    (stale / "scores.json").write_text(
        json.dumps({"textvqa": {"accuracy": 50.0}, "per_question": "per_question.jsonl"})
    )
    out = runner.invoke(app, ["compare", str(a), str(stale)])
    assert out.exit_code == 2 and "different scorings" in out.stderr
    mm = write_seed(tmp_path / "mm", mmbench=[(0, True, True)])
    out = runner.invoke(app, ["compare", str(a), str(mm)])
    assert out.exit_code == 2 and "no score in common" in out.stderr
    with pytest.raises(CompareError, match="no scores.json"):
        find_scores(tmp_path / "nothing")


def test_questions_only_in_one_run_are_left_out_and_said(tmp_path):
    a = write_seed(tmp_path / "a", binary(5, 10))
    b = write_seed(tmp_path / "b", binary(5, 10)[:8])
    result = compare_runs(load_run(a), load_run(b), n_boot=200)
    assert result["metrics"]["textvqa"]["units"] == 8
    assert any(
        "8 questions both runs have (2 only in A, 0 only in B)" in n for n in result["notes"]
    )


def test_summarize_gives_mean_and_sample_std(tmp_path):
    files = [
        write_seed(tmp_path / f"s{k}", binary(r, 10), [(0, True, k > 0)], seed=k) / "scores.json"
        for k, r in enumerate((4, 5, 9))
    ]
    out = runner.invoke(app, ["summarize", *map(str, files), "--out", str(tmp_path / "sum.json")])
    assert out.exit_code == 0, out.output
    summary = json.loads((tmp_path / "sum.json").read_text())
    assert summary["seeds"] == [0, 1, 2]
    tv = summary["textvqa"]["accuracy"]
    assert tv["values"] == [40.0, 50.0, 90.0]
    # mean 60; deviations -20, -10, 30: sum of squares 1400 over n - 1 = 2: std sqrt(700)
    assert tv["mean"] == pytest.approx(60.0) and tv["std"] == pytest.approx(math.sqrt(700))
    circ = summary["mmbench"]["circular_accuracy"]
    assert circ["values"] == [0.0, 100.0, 100.0] and circ["mean"] == pytest.approx(200 / 3)
