"""random_selector: keep a seeded random subset of the samples."""

from __future__ import annotations

from typing import Any

from .base import Selector
from .batch import Batch
from .field_selection import check_count, check_ratio, count_from
from .registry import register


@register("random_selector")
class RandomSelector(Selector):
    """Keeps `select_num` samples (or `select_ratio` of them, truncated; with both, the
    fewer), drawn at random with `seed`.

    The same samples as Data-Juicer, which shuffles with a NumPy generator seeded 42
    (`datasets.Dataset.shuffle(seed=42)`) and takes the first N: we draw the same
    permutation of the input positions; `seed` (ours) changes it. Kept samples stay in input
    order (Data-Juicer writes them shuffled). Where we differ: a ratio that selects fewer
    than one sample selects none (Data-Juicer then keeps every sample), `select_num` above
    the sample count keeps every sample once (Data-Juicer repeats samples to reach it; the
    cap's fill repeats here: `dj-convert cap --fill`), and setting neither is refused.
    """

    def __init__(
        self,
        select_ratio: float | None = None,
        select_num: int | None = None,
        seed: int = 42,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_ratio(self.name, "select_ratio", select_ratio)
        check_count(self.name, "select_num", select_num)
        if not select_ratio and select_num is None:
            raise ValueError(f"{self.name}: set select_num (a count) or select_ratio (0-1)")
        self.select_ratio, self.select_num, self.seed = select_ratio, select_num, seed

    def compute_key(self, batch: Batch) -> list[None]:
        return [None] * len(batch)  # the draw needs only the positions

    def select(self, entries: list[Any]) -> dict[tuple[int, int], str]:
        import numpy as np

        n = len(entries)
        count = count_from(self.select_ratio, self.select_num, n)
        if n <= 1 or count is None or count >= n:
            return {}
        keep = set(np.random.default_rng(self.seed).permutation(n)[:count].tolist())
        reason = f"not among the {count} of {n} drawn (seed {self.seed})"
        return {e[1]: reason for i, e in enumerate(entries) if i not in keep}
