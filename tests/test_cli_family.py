"""The dj-* commands are one family: typer, -h and --help, --version, every flag in its help,
help that fits 80 columns however wide the terminal. Called through the installed entry points,
as a user's shell calls them."""

from __future__ import annotations

import sys
from importlib.metadata import distribution, version

import pytest

# command -> its subcommands (none: a single command)
FAMILY = {
    "dj-train": [],
    "dj-pack": [],
    "dj-convert": ["dj-to-llava", "llava-to-dj", "cap", "check-batch"],
    "dj-eval": ["textvqa", "mmbench", "scores", "summarize", "compare"],
    "dj-synth": ["make-tiny-models", "make-tiny-challenge", "cache"],
    "dj-analyze": [],
    "dj-run": [],
}


def run(name: str, args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """Call the console-script entry point of `name` with argv, as the shell would."""
    entry = next(e for e in distribution("dj-synth").entry_points if e.name == name)
    main = entry.load()
    monkeypatch.setattr(sys, "argv", [name, *args])
    try:
        code = main()
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return (code if isinstance(code, int) else 0 if code is None else 1), out.out, out.err


@pytest.mark.parametrize("name", FAMILY)
def test_short_and_long_help(name, monkeypatch, capsys):
    code, short, _ = run(name, ["-h"], monkeypatch, capsys)
    assert code == 0 and short.startswith(f"Usage: {name} ")
    assert run(name, ["--help"], monkeypatch, capsys)[:2] == (0, short)
    for sub in FAMILY[name]:
        code, text, _ = run(name, [sub, "-h"], monkeypatch, capsys)
        assert code == 0 and text.startswith(f"Usage: {name} {sub} "), (sub, text)


@pytest.mark.parametrize("name", FAMILY)
def test_version(name, monkeypatch, capsys):
    assert run(name, ["--version"], monkeypatch, capsys)[:2] == (
        0,
        f"dj-synth {version('dj-synth')}\n",
    )


@pytest.mark.parametrize("name", FAMILY)
def test_help_fits_80_columns_on_a_wide_terminal(name, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    for args in [["-h"], *[[sub, "-h"] for sub in FAMILY[name]]]:
        _, text, _ = run(name, args, monkeypatch, capsys)
        long = [line for line in text.splitlines() if len(line) > 80]
        assert not long, (args, long)
        assert "\x1b" not in text  # plain text: pipes and logs get no colour codes


def test_every_flag_in_its_help(monkeypatch, capsys):
    _, train, _ = run("dj-train", ["-h"], monkeypatch, capsys)
    for flag in ("CONFIG", "--resume", "--from-stage", "--until", "--dry-run", "--quiet"):
        assert flag in train, flag
    assert "--seeds" in train
    _, compare, _ = run("dj-eval", ["compare", "-h"], monkeypatch, capsys)
    for flag in ("RUN_A", "RUN_B", "--n-boot", "--seed", "--confidence", "--json"):
        assert flag in compare, flag
    _, pack, _ = run("dj-pack", ["-h"], monkeypatch, capsys)
    for flag in ("--config", "--output-dir", "--exp", "--solution", "--pretrain-data", "--split"):
        assert flag in pack, flag
    assert "--cap" in pack and "-o, --zip" in pack


def test_options_take_the_equals_form(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "nope.yaml"
    code, _, err = run("dj-pack", [f"--config={missing}"], monkeypatch, capsys)
    assert code == 2 and "cannot read config" in err and str(missing) in err
    code, _, err = run("dj-train", [str(missing), "--from-stage=finetune"], monkeypatch, capsys)
    assert code == 2 and "cannot read config" in err


def test_usage_mistakes_exit_2(monkeypatch, capsys):
    code, _, err = run("dj-train", ["x.yaml", "--from-stage", "nope"], monkeypatch, capsys)
    assert code == 2 and "'nope' is not one of 'recipe', 'cap'" in err
    code, _, err = run("dj-pack", ["--no-such-flag"], monkeypatch, capsys)
    assert code == 2 and "No such option" in err
