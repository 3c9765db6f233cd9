"""The embedder interface: aligned faces in, L2-normalised embeddings out."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..align.aligner import AlignedFace
from ..registry import Registry


CHANNEL_ORDERS = ("rgb", "bgr")


def check_channel_order(value: str) -> str:
    """A model's input channel order (crops are RGB; ``bgr`` flips them)."""
    if value not in CHANNEL_ORDERS:
        from ..errors import ConfigError

        raise ConfigError(f"channel_order must be rgb or bgr, got {value!r}")
    return value


def in_channel_order(crops: np.ndarray, order: str) -> np.ndarray:
    """RGB crops (..., 3) as a model that wants ``order`` reads them."""
    return crops[..., ::-1] if order == "bgr" else crops


@dataclass
class FaceInput:
    """One face for an embedder: its alignment, and the source image where the embedder needs it."""
    face: AlignedFace
    image: Optional[np.ndarray] = None


class Embedder(ABC):
    """Maps faces to unit-length vectors. Each embedder builds the input crop it was trained on."""

    name: str = "embedder"
    dim: int = 0
    needs_source_image: bool = False   # True: builds its own crop from the source image + landmarks
    lfw_free: bool = False             # True: has seen no LFW image, so all 10 folds may be reported
    training_data: str = ""            # what it was trained on, where that qualifies its LFW figures

    @property
    @abstractmethod
    def cache_id(self) -> str:
        """Changes whenever the embedding of the same face would change (model, input recipe)."""

    @abstractmethod
    def _embed_raw(self, faces: Sequence[FaceInput]) -> np.ndarray:
        """(N, dim) float embeddings, not necessarily normalised."""

    def embed(self, faces: Sequence[FaceInput]) -> np.ndarray:
        if not faces:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.needs_source_image and any(f.image is None for f in faces):
            raise ValueError(f"embedder {self.name!r} needs the source image of every face")
        return l2_normalize(np.asarray(self._embed_raw(faces), dtype=np.float32))


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


EMBEDDERS: Registry[Embedder] = Registry("embedder")
