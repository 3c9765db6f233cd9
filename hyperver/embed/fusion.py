"""Fusion of embedders: concatenated unit embeddings, optionally weighted, renormalised.

With member weights w_i, the cosine of two fused embeddings is sum_i w_i cos_i / sum_i w_i: a
weighted average of the members' cosine scores, computed as one vector (so nearest-neighbour
search, distillation and every other consumer of an embedder work unchanged).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import ConfigError
from .base import EMBEDDERS, Embedder, FaceInput, l2_normalize


@EMBEDDERS.register("fusion")
class FusionEmbedder(Embedder):
    """Members are built by :func:`hyperver.features.build_embedder` from their names (``composite``)."""

    composite = True

    def __init__(self, members: Sequence[Embedder], weights: Sequence[float] | None = None,
                 member_names: Sequence[str] | None = None, name: str = "fusion"):
        if len(members) < 2:
            raise ConfigError("a fusion needs at least two member embedders")
        weights = [1.0] * len(members) if weights is None else [float(w) for w in weights]
        if len(weights) != len(members) or any(w <= 0 for w in weights):
            raise ConfigError(f"fusion weights must be {len(members)} positive numbers, got {weights}")
        self.members = list(members)
        self.member_names = list(member_names or [m.name for m in members])
        self.weights = weights
        self.name = name
        self.dim = sum(m.dim for m in members)
        self.needs_source_image = any(m.needs_source_image for m in members)
        self.lfw_free = all(m.lfw_free for m in members)
        notes = [getattr(m, "training_data", "") for m in members]
        self.training_data = "; ".join(f"{m.name}: {n}" for m, n in zip(members, notes) if n)

    @property
    def cache_id(self) -> str:
        return "fusion_" + "+".join(f"{m.cache_id}x{w:g}" for m, w in zip(self.members, self.weights))

    def combine(self, member_embeddings: Sequence[np.ndarray]) -> np.ndarray:
        """Fuse the members' embeddings of the same faces (the order of ``members``)."""
        parts = [np.sqrt(w) * l2_normalize(np.asarray(e, np.float32)) for e, w in zip(member_embeddings, self.weights)]
        return l2_normalize(np.concatenate(parts, axis=1))

    def _embed_raw(self, faces: Sequence[FaceInput]) -> np.ndarray:
        return self.combine([m.embed(faces) for m in self.members])
