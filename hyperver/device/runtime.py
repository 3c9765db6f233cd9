"""The on-device unlock check: verified artifact + probe photo -> logit vs threshold.

Depends on numpy, the TFLite interpreter (ai-edge-litert; onnxruntime for ONNX artifacts),
cryptography (signature check) and the aligner. It never imports torch or tensorflow
(tests/hyperver/device/test_unlock.py runs it in a fresh interpreter and checks sys.modules).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Collection

import numpy as np

from ..config import Config
from ..errors import ModelFileError
from .artifact import Artifact, read_artifact
from .preprocess import face_array
from .signing import TrustedKeys, load_trusted_keys

Runner = Callable[[np.ndarray], float]


def _tflite_runner(model: bytes, threads: int) -> tuple[Runner, tuple[int, ...]]:
    from ai_edge_litert.interpreter import Interpreter

    try:
        interp = Interpreter(model_content=model, num_threads=threads)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelFileError(f"the TFLite interpreter rejects the model: {exc}") from None
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]

    def run(x: np.ndarray) -> float:
        interp.set_tensor(inp["index"], x.astype(np.float32, copy=False))
        interp.invoke()
        return float(interp.get_tensor(out["index"]).reshape(-1)[0])

    return run, tuple(int(s) for s in inp["shape"])


def _onnx_runner(model: bytes, threads: int) -> tuple[Runner, tuple[int, ...]]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    try:
        sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
        raise ModelFileError(f"ONNX Runtime rejects the model: {exc}") from None
    name = sess.get_inputs()[0].name
    shape = tuple(int(s) if isinstance(s, int) else 1 for s in sess.get_inputs()[0].shape)

    def run(x: np.ndarray) -> float:
        return float(sess.run(None, {name: x.astype(np.float32, copy=False)})[0].reshape(-1)[0])

    return run, shape


RUNNERS: dict[str, Callable[[bytes, int], tuple[Runner, tuple[int, ...]]]] = {"tflite": _tflite_runner,
                                                                              "onnx": _onnx_runner}


def make_runner(runtime: str, model: bytes, threads: int = 1) -> Runner:
    if runtime not in RUNNERS:
        raise ModelFileError(f"unsupported model runtime {runtime!r}; this device runs {sorted(RUNNERS)}")
    return RUNNERS[runtime](model, threads)[0]


class DeviceVerifier:
    """One user's verified model, ready to score aligned crops."""

    def __init__(self, artifact: Artifact, threads: int = 1):
        if artifact.runtime not in RUNNERS:
            raise ModelFileError(f"unsupported model runtime {artifact.runtime!r}; this device runs {sorted(RUNNERS)}")
        self.artifact = artifact
        self._run, shape = RUNNERS[artifact.runtime](artifact.model, threads)
        s = artifact.input_size
        expected = (1, s, s, 3) if artifact.layout == "NHWC" else (1, 3, s, s)
        if shape != expected:
            raise ModelFileError(f"the model's input is {shape}, its header promises {expected}")

    @classmethod
    def load(cls, path: str | Path, trusted: TrustedKeys, accepted_f_versions: Collection[str] | None,
             threads: int = 1) -> "DeviceVerifier":
        return cls(read_artifact(path, trusted, accepted_f_versions), threads)

    def logit(self, crop_112: np.ndarray) -> float:
        return self._run(face_array(crop_112, self.artifact.input_size, self.artifact.layout))

    def check(self, crop_112: np.ndarray) -> dict[str, Any]:
        score = self.logit(crop_112)
        return {"unlock": bool(score >= self.artifact.threshold), "score": score,
                "threshold": self.artifact.threshold}


def unlock(model_path: str | Path, image: Any, cfg: Config, extra_trusted: Collection[str] = ()) -> dict[str, Any]:
    """The whole device check: verify the artifact, align the probe's single face, score it."""
    from ..align import Aligner
    from ..data.imageio import load_image

    t0 = time.perf_counter()
    verifier = DeviceVerifier.load(model_path, load_trusted_keys(cfg, extra=extra_trusted),
                                   cfg.get_path("device.accepted_f_versions"), int(cfg.get_path("device.threads")))
    t1 = time.perf_counter()
    limits = {k: cfg.get_path(f"image.{k}") for k in ("max_bytes", "max_pixels", "min_side")}
    aligner = Aligner.from_config(cfg.get_path("align"), models_dir=str(cfg.models_dir))
    face = aligner.align_photo(load_image(image, **limits), str(image))
    t2 = time.perf_counter()
    res = verifier.check(face.crop)
    t3 = time.perf_counter()
    h = verifier.artifact.header
    return {"decision": "unlock" if res["unlock"] else "deny", **res, "user_id": h.get("user_id"),
            "f_version": h["f_version"], "runtime": h["runtime"], "precision": h["precision"],
            "ms": {"load": round(1e3 * (t1 - t0), 2), "align": round(1e3 * (t2 - t1), 2),
                   "score": round(1e3 * (t3 - t2), 2)}}
