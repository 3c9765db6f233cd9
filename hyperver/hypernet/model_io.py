"""Safe files for the hypernetwork: the trained generator and per-user models (safetensors + JSON metadata).

A per-user model holds theta (f's flat weights), f's version and spec, the decision threshold,
and the descriptor's embedding of the enrollment photo (for identification). Loading checks the
format and f's version, so a model made for another f is refused rather than misread.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ModelFileError
from .generator import WeightGenerator
from .verifier import VerifierSpec

GENERATOR_FORMAT = "hyperver-generator-v1"
USER_FORMAT = "hyperver-user-v1"


def _read_safetensors(path: Path, what: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    from safetensors import safe_open

    if not path.is_file():
        raise ModelFileError(f"{what} not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {}), {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own types for corrupt headers/data
        raise ModelFileError(f"corrupt or unreadable {what} {path}: {exc}") from exc


def save_generator(gen: WeightGenerator, path: str | Path, backbone: str, extra: dict[str, Any] | None = None,
                   dtype: torch.dtype = torch.float16) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if v.is_floating_point() and k != "theta_base" else v.float()).contiguous()
             for k, v in gen.state_dict().items()}
    meta = {"format": GENERATOR_FORMAT, "spec": json.dumps(gen.spec.to_dict()), "f_version": gen.spec.version,
            "generator": json.dumps(gen.config), "backbone": backbone, "extra": json.dumps(extra or {})}
    save_file(state, str(path), metadata=meta)
    return path


def generator_thresholds(meta: dict[str, Any]) -> dict[str, float]:
    """The decision thresholds a generator file stores, by FAR (``"0.001"`` -> logit): its ``thresholds``,
    and its single ``threshold`` at ``threshold_far`` (files exported before ``thresholds`` existed)."""
    out = {}
    if "threshold" in meta and meta.get("threshold_far") is not None:
        out[f"{float(meta['threshold_far']):g}"] = float(meta["threshold"])
    for far, value in (meta.get("thresholds") or {}).items():
        out[f"{float(far):g}"] = float(value)
    return out


def stored_threshold(meta: dict[str, Any], far: float) -> float | None:
    """The generator file's threshold for ``far``, or None when it stores none for that FAR."""
    for key, value in generator_thresholds(meta).items():
        if abs(float(key) - far) <= 1e-9 * max(abs(far), 1e-12):
            return value
    return None


def update_generator_metadata(path: str | Path, extra: dict[str, Any]) -> Path:
    """Merge ``extra`` into a generator file's metadata; the weights are written back as they are
    (fp16 -> float32 -> fp16 is exact), through a temporary file and an atomic rename."""
    import os

    path = Path(path)
    gen, meta = load_generator(path)
    backbone = meta.pop("backbone")
    tmp = path.with_name(path.name + ".tmp")
    save_generator(gen, tmp, backbone, {**meta, **extra})
    os.replace(tmp, path)
    return path


def load_generator(path: str | Path) -> tuple[WeightGenerator, dict[str, Any]]:
    meta, state = _read_safetensors(Path(path), "generator file")
    if meta.get("format") != GENERATOR_FORMAT:
        raise ModelFileError(f"{path} is not a {GENERATOR_FORMAT} file (format={meta.get('format')!r})")
    spec = VerifierSpec.from_dict(json.loads(meta["spec"]))
    # The generator config names its output parametrisation; files written before outputs existed
    # have no "output" key and load as WeightGenerator's default, "full".
    gen = WeightGenerator(spec, **json.loads(meta["generator"]))
    gen.load_state_dict({k: v.float() for k, v in state.items()})
    return gen.eval(), {"backbone": meta["backbone"], **json.loads(meta.get("extra", "{}"))}


@dataclass
class UserModel:
    theta: np.ndarray              # (P,) float32
    spec: VerifierSpec
    threshold: float               # on the logit; accept when logit >= threshold
    embedding: np.ndarray          # descriptor embedding of the enrollment photo(s)
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        from safetensors.numpy import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": USER_FORMAT, "f_version": self.spec.version, "spec": json.dumps(self.spec.to_dict()),
                "threshold": repr(float(self.threshold)), "meta": json.dumps({"created": time.time(), **self.meta})}
        save_file({"theta": self.theta.astype(np.float32), "embedding": self.embedding.astype(np.float32)},
                  str(path), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | Path, expected: VerifierSpec | None = None) -> "UserModel":
        meta, tensors = _read_safetensors(Path(path), "user model")
        if meta.get("format") != USER_FORMAT:
            raise ModelFileError(f"{path} is not a {USER_FORMAT} file (format={meta.get('format')!r})")
        try:
            spec = VerifierSpec.from_dict(json.loads(meta["spec"]))
            threshold = float(meta["threshold"])
            extra = json.loads(meta.get("meta", "{}"))
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelFileError(f"user model {path} has malformed metadata: {exc}") from exc
        if spec.version != meta.get("f_version"):
            raise ModelFileError(f"user model {path}: spec does not match its f version {meta.get('f_version')!r}")
        if expected is not None and spec.version != expected.version:
            raise ModelFileError(f"user model {path} is for f {spec.version}; this verifier runs {expected.version}")
        theta = tensors.get("theta")
        if theta is None or theta.numel() != spec.n_params:
            raise ModelFileError(f"user model {path}: theta has {0 if theta is None else theta.numel()} values, "
                                 f"f {spec.version} needs {spec.n_params}")
        return cls(theta.numpy().astype(np.float32), spec, threshold, tensors["embedding"].numpy(), extra)
