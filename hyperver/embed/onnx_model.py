"""Any ONNX face model, insightface convention by default (112x112 RGB, (x - 127.5) / 127.5, NCHW)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ModelFileError
from .base import EMBEDDERS, Embedder, FaceInput


@EMBEDDERS.register("onnx")
class OnnxEmbedder(Embedder):
    """Runs an ONNX model with onnxruntime on template crops of ``input_size``."""

    needs_source_image = False

    def __init__(self, path: str | Path, input_size: int = 112, mean: float | Sequence[float] = 127.5,
                 std: float | Sequence[float] = 127.5, channel_order: str = "rgb", layout: str = "nchw",
                 name: str | None = None, threads: int = 1, lfw_free: bool = False):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"ONNX model not found: {path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for corrupt files
            raise ModelFileError(f"cannot load ONNX model {path}: {exc}") from exc
        if channel_order not in ("rgb", "bgr") or layout not in ("nchw", "nhwc"):
            raise ValueError("channel_order must be rgb|bgr and layout nchw|nhwc")
        self.path = path
        self.input_size = int(input_size)
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.channel_order = channel_order
        self.layout = layout
        self.name = name or path.stem
        self.lfw_free = lfw_free
        self._input = self._session.get_inputs()[0].name
        out_shape = self._session.get_outputs()[0].shape
        self.dim = int(out_shape[-1]) if isinstance(out_shape[-1], int) else 0
        self.needs_source_image = self.input_size != 112  # other sizes are re-warped from the source

    @property
    def cache_id(self) -> str:
        import hashlib

        digest = hashlib.sha1(self.path.read_bytes()).hexdigest()[:12]
        return (f"onnx_{self.name}_{digest}_s{self.input_size}_{self.channel_order}_{self.layout}"
                f"_m{'-'.join(f'{v:g}' for v in np.atleast_1d(self.mean))}_s{'-'.join(f'{v:g}' for v in np.atleast_1d(self.std))}")

    def preprocess(self, crops: np.ndarray) -> np.ndarray:
        x = crops.astype(np.float32)
        if self.channel_order == "bgr":
            x = x[..., ::-1]
        x = (x - self.mean) / self.std
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if self.layout == "nchw" else x)

    def _embed_raw(self, faces: Sequence[FaceInput]) -> np.ndarray:
        crops = np.stack([f.face.crop_at(f.image, self.input_size) if f.image is not None else f.face.crop for f in faces])
        out = self._session.run(None, {self._input: self.preprocess(crops)})[0]
        return out.reshape(len(faces), -1)
