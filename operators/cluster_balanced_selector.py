"""cluster_balanced_selector (ours): k-means over CLIP embeddings, then N samples spread over
the clusters in proportion to their sizes, or as evenly as the clusters allow."""

from __future__ import annotations

from typing import Any, Literal

from .base import Selector
from .batch import Batch
from .clip_embeddings import ClipEmbedder
from .field_selection import check_count, check_ratio, count_from
from .models import cpu_threads
from .registry import register

NO_EMBEDDING = -1  # the group of samples with nothing to embed (no image with embed: image)


@register("cluster_balanced_selector")
class ClusterBalancedSelector(ClipEmbedder, Selector):
    """Keeps `select_num` samples (or `select_ratio` of them; with both, the fewer) spread
    over `n_clusters` k-means clusters of the samples' CLIP embeddings.

    `embed: text` embeds the caption (special tokens removed), `image` the mean of the
    sample's image embeddings; CLIP from `hf_clip` or open_clip, as
    `image_text_similarity_filter`. `balance: proportional` keeps each cluster's share of
    the data (largest remainders); `flat` gives every cluster the same quota, a small
    cluster's unused quota going to the others. Within a cluster `pick: random` draws
    with `seed`, `central` keeps the samples nearest its centre. k-means is scikit-learn's
    (k-means++, `seed`), on float16-rounded embeddings with a fixed thread count: the same
    samples are kept whatever the executor. Samples with nothing to embed form one more
    group. Kept samples stay in input order; each dropped one names its cluster.
    """

    accelerator = "cuda"
    pixel_side = 448
    default_batch_size = 256
    # the model-output cache keeps embeddings across changes of the selection itself
    cache_ignore = ("select_num", "select_ratio", "n_clusters", "balance", "pick", "seed")

    def __init__(
        self,
        select_num: int | None = None,
        select_ratio: float | None = None,
        n_clusters: int = 100,
        balance: Literal["proportional", "flat"] = "proportional",
        embed: Literal["text", "image"] = "text",
        pick: Literal["random", "central"] = "random",
        seed: int = 42,
        hf_clip: str = "openai/clip-vit-base-patch32",
        trust_remote_code: bool = False,
        open_clip_model: str | None = None,
        open_clip_pretrained: str | None = None,
        gpu_batch_size: int = 128,
        dtype: str = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_ratio(self.name, "select_ratio", select_ratio)
        check_count(self.name, "select_num", select_num)
        check_count(self.name, "n_clusters", n_clusters)
        if not select_ratio and select_num is None:
            raise ValueError(f"{self.name}: set select_num (a count) or select_ratio (0-1)")
        for name, value, allowed in (
            ("balance", balance, ("proportional", "flat")),
            ("embed", embed, ("text", "image")),
            ("pick", pick, ("random", "central")),
        ):
            if value not in allowed:
                raise ValueError(f"{self.name}: {name} must be one of {allowed}, got {value!r}")
        self.select_num, self.select_ratio, self.n_clusters = select_num, select_ratio, n_clusters
        self.balance, self.embed, self.pick, self.seed = balance, embed, pick, seed
        self.needs_pixels = embed == "image"
        self.init_clip(hf_clip, trust_remote_code, open_clip_model, open_clip_pretrained,
                       gpu_batch_size, dtype)  # fmt: skip

    # -- workers: one embedding per sample ------------------------------------------
    def compute_key(self, batch: Batch) -> list[bytes | None]:
        """The embedding as float16 bytes (None: nothing to embed)."""
        return self.embedding_keys(batch, self.embed)

    # -- the decision over all samples ----------------------------------------------
    def select(self, entries: list[Any]) -> dict[tuple[int, int], str]:
        import numpy as np

        n = len(entries)
        count = count_from(self.select_ratio, self.select_num, n)
        if count is None or count >= n:
            return {}
        labels, distance = self.cluster([e[4] for e in entries])
        groups = _groups_in_order(labels)
        quotas = quota([len(g) for g in groups.values()], count, self.balance)
        rng = np.random.default_rng(self.seed)
        drops: dict[tuple[int, int], str] = {}
        for (label, members), q in zip(groups.items(), quotas):
            if self.pick == "random":
                kept = set(rng.permutation(members)[:q].tolist()) if q else set()
            else:
                kept = set(sorted(members, key=lambda i: (distance[i], i))[:q])
            name = "no embedding" if label == NO_EMBEDDING else f"cluster {label}"
            reason = f"{name}: {q} of {len(members)} kept ({self.balance}, {count} of {n})"
            drops.update((entries[i][1], reason) for i in members if i not in kept)
        return drops

    def cluster(self, keys: list[bytes | None]) -> tuple[list[int], list[float]]:
        """Each sample's cluster (numbered by first appearance; NO_EMBEDDING for None keys)
        and its squared distance to the cluster's centre."""
        import numpy as np
        from sklearn.cluster import KMeans
        from threadpoolctl import threadpool_limits

        have = [i for i, k in enumerate(keys) if k is not None]
        labels, distance = [NO_EMBEDDING] * len(keys), [0.0] * len(keys)
        if not have:
            return labels, distance
        x = np.stack([np.frombuffer(keys[i], dtype=np.float16) for i in have]).astype(np.float32)
        k = min(self.n_clusters, len(np.unique(x, axis=0)))
        with threadpool_limits(limits=cpu_threads()):
            km = KMeans(n_clusters=k, n_init=3, random_state=self.seed).fit(x)
        raw = km.labels_.tolist()
        dist = ((x - km.cluster_centers_[km.labels_]) ** 2).sum(axis=1).tolist()
        renumber: dict[int, int] = {}
        for i, label, d in zip(have, raw, dist):
            labels[i] = renumber.setdefault(label, len(renumber))
            distance[i] = d
        return labels, distance


def quota(sizes: list[int], total: int, balance: str) -> list[int]:
    """How many samples each group keeps, `total` in all (at most each group's size).

    proportional: size x total / N, rounded down, the remaining units to the largest
    remainders (ties: the earlier group). flat: equal shares; a group smaller than its
    share keeps all, the rest is shared again among the others; leftover units go to the
    earlier groups.
    """
    n = sum(sizes)
    total = min(total, n)
    if balance == "proportional":
        exact = [s * total / n for s in sizes]
        out = [int(e) for e in exact]
        order = sorted(range(len(sizes)), key=lambda g: (-(exact[g] - out[g]), g))
        for g in order[: total - sum(out)]:
            out[g] += 1
        return out
    out = [0] * len(sizes)
    left = total
    open_groups = [g for g, s in enumerate(sizes) if s > 0]
    while left > 0 and open_groups:
        share = left // len(open_groups)
        if share == 0:
            for g in open_groups[:left]:
                out[g] += 1
            break
        for g in open_groups:
            take = min(share, sizes[g] - out[g])
            out[g] += take
            left -= take
        open_groups = [g for g in open_groups if out[g] < sizes[g]]
    return out


def _groups_in_order(labels: list[int]) -> dict[int, list[int]]:
    """Sample indices per label, labels in order of first appearance (NO_EMBEDDING last)."""
    groups: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, []).append(i)
    if NO_EMBEDDING in groups:
        groups[NO_EMBEDDING] = groups.pop(NO_EMBEDDING)
    return groups
