"""`dj-synth cache stats|prune`: look at and trim the model-output cache."""

from __future__ import annotations

from typing import Annotated

import typer

from dj_synth.tools.cli_common import make_app

cache_app = make_app("The model-output cache (captions, scores, embeddings kept across runs).")

DirOpt = Annotated[
    str | None,
    typer.Option("--cache-dir", help="The cache folder (default: the recipes' default)"),
]


def _open(cache_dir: str | None):
    import diskcache

    from dj_synth.operators.model_cache import default_cache_dir

    return diskcache.Cache(cache_dir or default_cache_dir())


@cache_app.command("stats", help="Entries, size on disk and size limit.")
def stats(cache_dir: DirOpt = None) -> None:
    with _open(cache_dir) as store:
        limit = store.size_limit / 2**30
        typer.echo(
            f"{store.directory}: {len(store):,} entries, {store.volume() / 2**20:,.1f} MiB "
            f"(limit {limit:,.1f} GiB, least recently used evicted first)"
        )


@cache_app.command("prune", help="Evict least recently used entries down to a size, or all.")
def prune(
    cache_dir: DirOpt = None,
    max_gb: Annotated[float, typer.Option(help="Keep at most this many GiB")] = 1.0,
    all_: Annotated[bool, typer.Option("--all", help="Remove every entry")] = False,
) -> None:
    with _open(cache_dir) as store:
        before = len(store)
        if all_:
            store.clear()
        else:
            limit = store.size_limit
            store.reset("size_limit", int(max_gb * 2**30))
            store.cull()
            store.reset("size_limit", limit)
        typer.echo(
            f"{store.directory}: {before - len(store):,} entries removed, {len(store):,} left"
        )
