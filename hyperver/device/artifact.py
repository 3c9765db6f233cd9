"""The signed per-user artifact a device receives (``.hva``).

Layout (all lengths little-endian)::

    b"HVA1" | uint32 header length | header JSON (UTF-8) | model bytes | Ed25519 signature (64 bytes)

The signature covers everything before it, so the header (f version, decision threshold,
runtime, precision, input size, model hash) cannot be changed without the server's key. The
device checks, in this order: the container is whole; the signature verifies with a trusted
key (nothing else is read before that); the format is known; f's version is one the device
runs; the model's length and SHA-256 match the header. Each failure is a ModelFileError with a
message that says which check failed.
"""
from __future__ import annotations

import hashlib
import json
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection

import numpy as np

from ..errors import ModelFileError
from .patching import Template
from .signing import SIGNATURE_BYTES, Signer, TrustedKeys

MAGIC = b"HVA1"
ARTIFACT_FORMAT = "hyperver-artifact-v1"
EXTENSION = ".hva"
MAX_ARTIFACT_BYTES = 64 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Artifact:
    header: dict[str, Any]
    model: bytes
    key_id: str                  # the trusted key that signed it

    @property
    def f_version(self) -> str:
        return self.header["f_version"]

    @property
    def threshold(self) -> float:
        return float(self.header["threshold"])

    @property
    def runtime(self) -> str:
        return self.header["runtime"]

    @property
    def input_size(self) -> int:
        return int(self.header["input"]["size"])

    @property
    def layout(self) -> str:
        return self.header["input"]["layout"]


def seal(header: dict[str, Any], model: bytes, signer: Signer) -> bytes:
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    body = MAGIC + struct.pack("<I", len(head)) + head + model
    return body + signer.sign(body)


def build_artifact(template: Template, theta: np.ndarray, threshold: float, signer: Signer,
                   meta: dict[str, Any] | None = None) -> bytes:
    """theta -> the template's model with theta baked in, sealed with f's version and the threshold."""
    model = template.instantiate(theta)
    header = {"format": ARTIFACT_FORMAT, "runtime": template.runtime, "precision": template.precision,
              "f_version": template.f_version, "threshold": float(threshold),
              "input": {"size": template.input_size, "layout": template.layout, "range": [-1.0, 1.0],
                        "resize": "bilinear-antialias from the 112x112 ArcFace crop"},
              "decision": "unlock when logit >= threshold",
              "model_bytes": len(model), "model_sha256": hashlib.sha256(model).hexdigest(),
              "key_id": signer.key_id, "created": round(time.time(), 3), **(meta or {})}
    return seal(header, model, signer)


def _split(data: bytes, source: str) -> tuple[bytes, bytes, bytes]:
    """(signed body, header bytes, signature) with structural checks only."""
    if len(data) < len(MAGIC) + 4 + SIGNATURE_BYTES or data[:4] != MAGIC:
        raise ModelFileError(f"{source} is not a HyperVer artifact (no HVA1 header); "
                             "build one with `hyperver artifact build` or the enrollment server")
    (n,) = struct.unpack("<I", data[4:8])
    if n > MAX_HEADER_BYTES or 8 + n + SIGNATURE_BYTES > len(data):
        raise ModelFileError(f"{source} is truncated or corrupt (header of {n} bytes in a {len(data)}-byte file)")
    return data[:-SIGNATURE_BYTES], data[8:8 + n], data[-SIGNATURE_BYTES:]


def open_artifact(data: bytes, trusted: TrustedKeys, accepted_f_versions: Collection[str] | None,
                  source: str = "artifact") -> Artifact:
    """Verify and parse an artifact; ModelFileError says which check failed."""
    body, head, signature = _split(data, source)
    kid = trusted.verify(signature, body)
    try:
        header = json.loads(head)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:   # signed but malformed: a server bug
        raise ModelFileError(f"{source}: malformed header: {exc}") from None
    if header.get("format") != ARTIFACT_FORMAT:
        raise ModelFileError(f"{source} has format {header.get('format')!r}; this device reads {ARTIFACT_FORMAT}")
    if accepted_f_versions is not None and header.get("f_version") not in accepted_f_versions:
        raise ModelFileError(f"{source} was built for f {header.get('f_version')!r}; this device runs "
                             f"{', '.join(sorted(accepted_f_versions)) or 'no f version'} (re-enroll for this device)")
    model = body[8 + len(head):]
    if len(model) != header.get("model_bytes") or hashlib.sha256(model).hexdigest() != header.get("model_sha256"):
        raise ModelFileError(f"{source}: model bytes do not match the signed header")
    return Artifact(header, model, kid)


def read_artifact(path: str | Path, trusted: TrustedKeys, accepted_f_versions: Collection[str] | None) -> Artifact:
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"model file not found: {p}")
    if p.stat().st_size > MAX_ARTIFACT_BYTES:
        raise ModelFileError(f"{p} is {p.stat().st_size} bytes; an artifact is at most {MAX_ARTIFACT_BYTES}")
    return open_artifact(p.read_bytes(), trusted, accepted_f_versions, str(p))


def peek_header(data: bytes, source: str = "artifact") -> dict[str, Any]:
    """The header WITHOUT verifying the signature (for inspection only; never for decisions)."""
    _, head, _ = _split(data, source)
    try:
        return json.loads(head)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{source}: malformed header: {exc}") from None
