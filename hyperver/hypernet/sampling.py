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


def nearest_faces(identity_means: np.ndarray, faces: np.ndarray, centre: np.ndarray, k: int,
                  chunk: int = 256) -> np.ndarray:
    """(identities, k) indices of the ``k`` faces nearest each identity (cosine of centred, unit
    embeddings, usually a strong teacher's): the look-alikes to use as that identity's hard negatives."""
    def unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32) - centre
        return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)

    q, f = unit(identity_means), unit(faces)
    k = min(k, len(f))
    out = np.empty((len(q), k), dtype=np.int64)
    for i in range(0, len(q), chunk):
        sims = q[i:i + chunk] @ f.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
        out[i:i + chunk] = np.take_along_axis(top, order, axis=1)
    return out


def pick_extra_faces(neighbours: np.ndarray | None, batch_ids: np.ndarray, n: int, n_faces: int,
                     rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct extra faces for a batch: each a random near neighbour of a random batch
    identity (``neighbours`` from ``nearest_faces``), topped up at random; all random without them."""
    n = min(n, n_faces)
    picked: list[int] = []
    if neighbours is not None and len(batch_ids):
        owners = rng.choice(batch_ids, size=2 * n)
        for face in neighbours[owners, rng.integers(0, neighbours.shape[1], size=2 * n)]:
            if face not in picked:
                picked.append(int(face))
            if len(picked) == n:
                break
    if not picked:
        return rng.choice(n_faces, size=n, replace=False)
    if len(picked) < n:
        rest = np.setdiff1d(np.arange(n_faces), picked)
        picked += rng.choice(rest, size=n - len(picked), replace=False).tolist()
    return np.array(picked, dtype=np.int64)
