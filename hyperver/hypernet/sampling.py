"""Batch sampling of identities: uniform, and K-means-centred sampling (KCS) for hard negatives."""
from __future__ import annotations

import numpy as np


class IdentitySampler:
    """Draws B identities per batch. KCS: K-means over per-identity mean embeddings; a batch is
    drawn from one cluster, so the negatives a verifier sees look alike (hard negatives)."""

    def __init__(self, identity_means: np.ndarray, n_clusters: int = 16, seed: int = 0):
        self.means = np.asarray(identity_means, dtype=np.float32)
        self.n = len(self.means)
        self.rng = np.random.default_rng(seed)
        self.n_clusters = max(1, min(n_clusters, self.n))
        self.clusters = self._kmeans(self.n_clusters, seed)

    def _kmeans(self, k: int, seed: int) -> list[np.ndarray]:
        from sklearn.cluster import KMeans

        centred = self.means - self.means.mean(0)
        centred /= np.linalg.norm(centred, axis=1, keepdims=True) + 1e-12
        labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(centred)
        return [np.nonzero(labels == c)[0] for c in range(k)]

    def uniform(self, b: int) -> np.ndarray:
        return self.rng.choice(self.n, size=min(b, self.n), replace=False)

    def kcs(self, b: int) -> np.ndarray:
        """B identities from one cluster (chosen with probability proportional to its size);
        topped up from the nearest clusters' members when the cluster is smaller than B."""
        sizes = np.array([len(c) for c in self.clusters], dtype=np.float64)
        c = int(self.rng.choice(len(self.clusters), p=sizes / sizes.sum()))
        members = self.clusters[c]
        if len(members) >= b:
            return self.rng.choice(members, size=b, replace=False)
        centre = self.means[members].mean(0)
        others = np.setdiff1d(np.arange(self.n), members)
        nearest = others[np.argsort(-(self.means[others] @ centre))][: b - len(members)]
        return np.concatenate([members, nearest])

    def sample(self, b: int, use_kcs: bool) -> np.ndarray:
        return self.kcs(b) if use_kcs and self.n_clusters > 1 else self.uniform(b)
