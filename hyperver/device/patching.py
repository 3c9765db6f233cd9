"""A model template of f and the per-user step: write theta into a copy of its weight bytes.

A template is f exported ONCE (TFLite or ONNX, fp32/fp16/int8) plus a patch map: for every
weight buffer of the file, its byte offset, its storage type and, per stored element, the
index into theta it holds (so any transpose the exporter applied is just a gather). Building a
user's model is then ``bytearray(template)`` + one gather and one cast per tensor: no converter,
no TensorFlow, no torch (numpy only), ~1 ms.

int8 buffers are symmetric per-channel (TFLite's dynamic-range scheme: zero point 0, values in
[-127, 127], scale = max|w| / 127 along the quantised axis); their scales sit in the file too
and are rewritten with the weights.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelFileError

TEMPLATE_FORMAT = "hyperver-f-template-v1"   # bump when a builder changes: cached templates are keyed by it
STORAGE = {"float32": "<f4", "float16": "<f2", "int8": "i1"}


@dataclass
class Patch:
    tensor: str                  # name in f's theta layout (for messages)
    offset: int                  # byte offset of the stored data in the model file
    dtype: str                   # float32 | float16 | int8
    shape: tuple[int, ...]       # storage shape
    index: np.ndarray            # (prod(shape),) theta index of each stored element, in storage order
    scale_offset: int = -1       # int8: byte offset of the float32 per-channel scales
    axis: int = 0                # int8: quantised axis of ``shape``

    @property
    def nbytes(self) -> int:
        return int(self.index.size) * np.dtype(STORAGE[self.dtype]).itemsize


@dataclass
class Template:
    runtime: str                 # tflite | onnx
    precision: str               # fp32 | fp16 | int8
    f_version: str
    n_params: int
    input_size: int
    layout: str                  # NHWC (TFLite) | NCHW (ONNX)
    model: bytes
    patches: list[Patch]
    info: dict[str, Any] = field(default_factory=dict)   # builder versions, for the record

    def instantiate(self, theta: np.ndarray) -> bytes:
        """The model file with ``theta`` baked in (the per-user step)."""
        theta = np.asarray(theta, dtype=np.float32).reshape(-1)
        if theta.size != self.n_params:
            raise ModelFileError(f"theta has {theta.size} values, template for f {self.f_version} "
                                 f"needs {self.n_params}")
        if not np.all(np.isfinite(theta)):
            raise ModelFileError("theta holds NaN or infinite values; refusing to build a model from it")
        out = bytearray(self.model)
        for p in self.patches:
            w = theta[p.index]
            if p.dtype == "int8":
                q, scale = quantize_per_channel(w.reshape(p.shape), p.axis)
                out[p.offset:p.offset + q.nbytes] = q.tobytes()
                out[p.scale_offset:p.scale_offset + scale.nbytes] = scale.astype("<f4").tobytes()
            else:
                out[p.offset:p.offset + p.nbytes] = w.astype(STORAGE[p.dtype]).tobytes()
        return bytes(out)

    # -- on disk: one .npz (no pickle), written atomically so concurrent builders cannot tear it --
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": TEMPLATE_FORMAT, "runtime": self.runtime, "precision": self.precision,
                "f_version": self.f_version, "n_params": self.n_params, "input_size": self.input_size,
                "layout": self.layout, "info": self.info,
                "patches": [{k: (list(v) if k == "shape" else v) for k, v in asdict(p).items() if k != "index"}
                            for p in self.patches]}
        arrays = {"model": np.frombuffer(self.model, np.uint8),
                  "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8),
                  **{f"index_{i}": p.index.astype(np.int32) for i, p in enumerate(self.patches)}}
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Template":
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(z["meta"].tobytes())
                if meta.get("format") != TEMPLATE_FORMAT:
                    raise ModelFileError(f"{path} is not a {TEMPLATE_FORMAT} template")
                patches = [Patch(**{**p, "shape": tuple(p["shape"])}, index=z[f"index_{i}"].astype(np.int64))
                           for i, p in enumerate(meta["patches"])]
                model = z["model"].tobytes()
        except (OSError, ValueError, KeyError) as exc:
            raise ModelFileError(f"unreadable f template {path}: {exc}") from exc
        return cls(meta["runtime"], meta["precision"], meta["f_version"], meta["n_params"], meta["input_size"],
                   meta["layout"], model, patches, meta.get("info", {}))


def quantize_per_channel(w: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per-channel quantisation (TFLite dynamic range): returns (int8 weights, scales)."""
    other = tuple(i for i in range(w.ndim) if i != axis)
    maxabs = np.abs(w).max(axis=other) if other else np.abs(w)
    scale = np.where(maxabs > 0, maxabs / 127.0, 1.0).astype(np.float32)   # an all-zero channel stays zero
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale
