"""A SuperNet subnet (safetensors from ``hyperver supernet-export``) as an embedder."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ModelFileError
from .base import EMBEDDERS, Embedder, FaceInput


@EMBEDDERS.register("subnet")
class SubnetEmbedder(Embedder):
    """Runs a static subnet on the 112x112 ArcFace crop (resized to the subnet's input size)."""

    needs_source_image = False
    lfw_free = False   # trained on LFW sets 1-4: report on the test folds only

    def __init__(self, path: str | Path, name: str | None = None, threads: int = 1):
        from supernet.export import load_subnet

        path = Path(path)
        try:
            self.net = load_subnet(path)
        except (FileNotFoundError, ValueError) as exc:
            raise ModelFileError(str(exc)) from exc
        self.path = path
        self.name = name or path.stem
        self.input_size = int(self.net.net_config.get("input_size", 112))
        self.dim = int(self.net.net_config.get("embed_dim", 128))
        self.threads = threads

    @property
    def cache_id(self) -> str:
        return f"subnet_{self.name}_{hashlib.sha1(self.path.read_bytes()).hexdigest()[:12]}"

    def _embed_raw(self, faces: Sequence[FaceInput]) -> np.ndarray:
        import torch  # lazily: `import hyperver` must not pull torch onto a device that only unlocks

        from ..descriptor.data import to_input

        crops = torch.from_numpy(np.stack([f.face.crop for f in faces]))
        with torch.no_grad():
            return self.net(to_input(crops, self.input_size)).numpy()
