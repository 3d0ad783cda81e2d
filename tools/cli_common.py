"""One style for every ``dj-*`` command: typer, ``-h``/``--help``, ``--version``, 80-column help.

    app = make_app("What the command does.")            # several commands: --version on the app
    app = make_app("...", commands=False)                # one command: add ``version: VersionOpt``

Help is click's plain formatter (``rich_markup_mode=None``): it honours ``max_content_width``, so
help wraps at 80 columns however wide the terminal, and errors carry no colour codes into logs.
Usage errors exit 2, as a config error does in every dj-* command.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version
from typing import Annotated, Any

import typer

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 80}


def package_version() -> str:
    """The installed dj-synth version (``unknown`` when run from a bare source tree)."""
    try:
        return _dist_version("dj-synth")
    except PackageNotFoundError:
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"dj-synth {package_version()}")
        raise typer.Exit()


VersionOpt = Annotated[
    bool,
    typer.Option(
        "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
]


def make_app(help: str | None = None, *, commands: bool = True, **kwargs: Any) -> typer.Typer:  # noqa: A002
    """A typer app in the family's style.

    ``commands=True`` (dj-convert, dj-eval, dj-synth): the app takes ``--version`` itself and
    ``help`` is its description. ``commands=False`` (dj-run, dj-train, dj-pack): one command,
    whose function takes ``version: VersionOpt = False`` (a single-command app has no app-level
    options in typer).
    """
    app = typer.Typer(
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings=dict(CONTEXT_SETTINGS),
        help=help,
        **kwargs,
    )
    if commands:

        @app.callback()
        def _root(version: VersionOpt = False) -> None:
            pass

        _root.__doc__ = help
    return app


def run_app(app: typer.Typer, prog_name: str, argv: Sequence[str] | None = None) -> int:
    """Run ``app`` as the console script would and return its exit code (for entry points that
    return an int, and for tests calling ``train_main([...])``)."""
    try:
        app(args=None if argv is None else list(argv), prog_name=prog_name)
    except SystemExit as exc:
        if exc.code is None:
            return 0
        return exc.code if isinstance(exc.code, int) else 1
    return 0
