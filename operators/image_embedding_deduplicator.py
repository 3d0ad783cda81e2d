"""image_embedding_deduplicator: semantic dedup (SemDeDup) on CLIP image embeddings."""

from __future__ import annotations

import copy
from collections.abc import Hashable
from typing import Any, Literal

import numpy as np

from .base import DedupIndex, Deduplicator
from .batch import Batch, SampleRef
from .clip_embeddings import ClipEmbedder, unit
from .dedup_decision import DedupEntry, Position, decide, fitted_for
from .field_selection import check_count
from .models import cpu_threads
from .registry import register


class EmbeddingDeduplicator(Deduplicator):
    """Semantic dedup over one unit embedding per sample (`embed`, given by a subclass).

    As SemDeDup (NeMo Curator's semantic dedup): k-means clusters the embeddings, and
    within a cluster a sample whose cosine similarity to a kept sample is at least
    `1 - eps` is its duplicate. How it is decided, and why it distributes:

    - Workers embed (key: the unit embedding as float16 bytes; None, never a duplicate,
      when the sample has nothing to embed).
    - The decision first fits the centroids once, on a seeded sample of the keys:
      scikit-learn's k-means (k-means++, `seed`, one init, a fixed thread count) on the
      at most `fit_sample_size` samples whose hash of (input position, `seed`) is
      smallest, in input order; the sample does not depend on shards or executors.
    - Each sample's cluster is its most similar centroid (cosine). The cluster id is
      the sample's one bucket (`EmbeddingIndex.buckets`), so clusters are independent:
      the local executor decides them in one index, the Ray executor cluster by
      cluster in tasks (each holding only its clusters' embeddings; the driver holds
      the fit sample and the centroids).
    - Within a cluster, samples are admitted in the keep policy's order (`first`:
      input order; `max` / `min` of `keep_stats_key`); a sample is compared with the
      samples of its cluster kept so far and dropped as the duplicate of the most
      similar one when that cosine is >= 1 - eps. The record names it and the cosine.

    Deliberate differences from NeMo Curator: it ranks a cluster by distance to the
    centroid (`which_to_keep` hard/easy/random); we use our keep policies. It drops a
    sample similar to any earlier-ranked one, even a dropped one (a chain A~B~C drops
    B and C); we compare with kept samples only, as every deduplicator here, so each
    record names a sample that is in the export (C, not within eps of A, is kept).
    Like SemDeDup, near-duplicates that fall in different clusters are not compared.
    """

    def __init__(
        self,
        n_clusters: int = 100,
        eps: float = 0.01,
        fit_sample_size: int = 50_000,
        seed: int = 42,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_count(self.name, "n_clusters", n_clusters)
        check_count(self.name, "fit_sample_size", fit_sample_size)
        if not 0 <= eps < 2:
            raise ValueError(f"{self.name}: eps must be in [0, 2) (duplicates have cosine >= "
                             f"1 - eps; 0.01 by default), got {eps}")  # fmt: skip
        if fit_sample_size < n_clusters:
            raise ValueError(f"{self.name}: fit_sample_size ({fit_sample_size}) must be at "
                             f"least n_clusters ({n_clusters})")  # fmt: skip
        self.n_clusters, self.eps = n_clusters, eps
        self.fit_sample_size, self.seed = fit_sample_size, seed
        self.centroids: np.ndarray | None = None  # set on the copy that decides (`with_fit`)

    @property
    def ranked(self) -> bool:
        """Always: the centroids are fitted on a sample of every key."""
        return True

    # -- workers ------------------------------------------------------------------
    def embed(self, batch: Batch) -> list[Any]:
        """One embedding (a vector, any length) per sample, or None: nothing to embed."""
        raise NotImplementedError

    def compute_hash(self, batch: Batch) -> list[Hashable | None]:
        return [None if v is None else unit(np.asarray(v, dtype=np.float32)).astype(np.float16)
                .tobytes() for v in self.embed(batch)]  # fmt: skip

    # -- the decision -----------------------------------------------------------------
    def fit(self, keys: list[Hashable]) -> np.ndarray:
        """Unit centroids (k, d) of k-means over `keys` (the seeded sample, input order)."""
        from sklearn.cluster import KMeans
        from threadpoolctl import threadpool_limits

        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        x = np.stack([vector(k) for k in keys])  # type: ignore[arg-type]
        k = min(self.n_clusters, len(np.unique(x, axis=0)))
        with threadpool_limits(limits=cpu_threads()):
            km = KMeans(n_clusters=k, n_init=1, random_state=self.seed).fit(x)
        return np.stack([unit(c) for c in km.cluster_centers_.astype(np.float32)])

    def with_fit(self, centroids: np.ndarray) -> EmbeddingDeduplicator:
        """A copy of this operator that decides with `centroids`."""
        fitted = copy.copy(self)
        fitted.centroids = centroids
        return fitted

    def new_index(self) -> DedupIndex:
        if self.centroids is None:
            raise RuntimeError(f"{self.name}: the decision needs the centroids (with_fit) first")
        return EmbeddingIndex(self.centroids, 1.0 - self.eps)

    def decide(self, entries: list[DedupEntry]) -> dict[Position, str]:
        return decide(fitted_for(self, entries), entries)


def vector(key: bytes) -> np.ndarray:
    """A key's embedding as a float32 unit vector (the same arithmetic in every process)."""
    return unit(np.frombuffer(key, dtype=np.float16).astype(np.float32))


class EmbeddingIndex(DedupIndex):
    """Kept embeddings per k-means cluster; a sample is compared with its cluster's only.

    Memory per kept sample: its float32 row (4 B a dimension: 2 KiB for CLIP ViT-B/32's
    512) in its cluster's array (grown by doubling), its input ordinal and a reference
    to its id.
    """

    partitions = True  # one bucket per key: a cluster is a component on its own

    def __init__(self, centroids: np.ndarray, threshold: float) -> None:
        self.centroids, self.threshold = centroids, threshold
        self.rows: dict[int, np.ndarray] = {}
        self.who: dict[int, list[tuple[int, Any]]] = {}

    def cluster(self, vec: np.ndarray) -> int:
        return int(np.argmax(self.centroids @ vec)) if len(self.centroids) else 0

    def buckets(self, key: Hashable | None) -> list[Hashable]:
        return [] if key is None else [("cluster", self.cluster(vector(key)))]  # type: ignore[arg-type]

    def admit(self, key: Hashable | None, ref: SampleRef, sample_id: Any) -> str | None:
        if key is None:
            return None
        vec = vector(key)  # type: ignore[arg-type]
        c = self.cluster(vec)
        who = self.who.setdefault(c, [])
        n = len(who)
        if n:
            sims = self.rows[c][:n] @ vec
            best = int(np.argmax(sims))
            if sims[best] >= self.threshold:
                ordinal, kept_id = who[best]
                name = f"id={kept_id!r} " if kept_id is not None else ""
                return (f"near-duplicate of {name}(input sample #{ordinal}), "
                        f"cosine {float(sims[best]):.4f} (cluster {c})")  # fmt: skip
        rows = self.rows.get(c)
        if rows is None or n == len(rows):
            grown = np.empty((max(8, 2 * n), len(vec)), dtype=np.float32)
            if n:
                grown[:n] = rows[:n]  # type: ignore[index]
            self.rows[c] = rows = grown
        rows[n] = vec
        who.append((ref.ordinal, sample_id))
        return None


@register("image_embedding_deduplicator")
class ImageEmbeddingDeduplicator(ClipEmbedder, EmbeddingDeduplicator):
    """Semantic dedup (SemDeDup) of samples by their CLIP image embedding
    (`EmbeddingDeduplicator` says how it decides and distributes).

    The embedding is the mean of the sample's image embeddings (made unit again);
    samples without images are never duplicates. CLIP from `hf_clip` or open_clip
    (`open_clip_model` + `open_clip_pretrained`), as `image_text_similarity_filter`;
    embeddings go through the model-output cache, so a rerun with another `eps`,
    `n_clusters` or keep policy embeds nothing again. Named as our other
    deduplicators, after what it compares (`document_minhash_deduplicator`...); not
    a Data-Juicer operator (arguments after NeMo Curator's `n_clusters`, `eps`, seed).
    """

    accelerator = "cuda"
    pixel_side = 448
    default_batch_size = 256
    needs_pixels = True
    cache_ignore = ("n_clusters", "eps", "fit_sample_size", "seed", "keep_policy",
                    "keep_stats_key")  # fmt: skip

    def __init__(
        self,
        n_clusters: int = 100,
        eps: float = 0.01,
        fit_sample_size: int = 50_000,
        seed: int = 42,
        keep_policy: Literal["first", "max", "min"] = "first",
        keep_stats_key: str | None = None,
        hf_clip: str = "openai/clip-vit-base-patch32",
        trust_remote_code: bool = False,
        open_clip_model: str | None = None,
        open_clip_pretrained: str | None = None,
        gpu_batch_size: int = 128,
        dtype: str = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            n_clusters=n_clusters, eps=eps, fit_sample_size=fit_sample_size, seed=seed,
            keep_policy=keep_policy, keep_stats_key=keep_stats_key, **kwargs,
        )  # fmt: skip
        self.init_clip(hf_clip, trust_remote_code, open_clip_model, open_clip_pretrained,
                       gpu_batch_size, dtype)  # fmt: skip

    def compute_hash(self, batch: Batch) -> list[Hashable | None]:
        return self.embedding_keys(batch, "image")  # type: ignore[return-value]
