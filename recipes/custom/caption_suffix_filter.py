"""An example custom operator: copy this file, rename, and list it in `custom_operator_paths`.

custom_operator_paths: [recipes/custom/caption_suffix_filter.py]
process:
  - caption_suffix_filter:
      suffixes: [".", "!"]
"""

from __future__ import annotations

from dj_synth.operators import Batch, Filter, register


@register("caption_suffix_filter")
class CaptionSuffixFilter(Filter):
    """Keep captions that end with one of `suffixes` (special tokens ignored).

    Stat `caption_suffix_ok` (bool). The base class counts, times, records what
    was dropped and why, and isolates a failing sample; this class is only logic.
    """

    stats_keys = ("caption_suffix_ok",)

    def __init__(self, suffixes: list[str] = (".",), **kwargs) -> None:  # type: ignore[assignment]
        super().__init__(**kwargs)
        self.suffixes = tuple(suffixes)

    def compute_stats(self, batch: Batch) -> None:
        tokens = (batch.ctx.image_token, batch.ctx.eoc_token)
        for stats, text in zip(batch.stats, batch.texts):
            for token in tokens:
                text = text.replace(token, "")
            stats["caption_suffix_ok"] = text.strip().endswith(self.suffixes)

    def keep(self, batch: Batch) -> list[bool]:
        return [stats["caption_suffix_ok"] for stats in batch.stats]
