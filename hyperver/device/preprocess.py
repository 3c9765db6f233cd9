"""f's input on the device, in numpy only: the aligned 112x112 crop -> S x S in [-1, 1].

Training and enrollment resize with ``torch.nn.functional.interpolate(mode="bilinear",
antialias=True, align_corners=False)`` on float pixels, round to uint8, then map to [-1, 1]
(``hyperver.hypernet.enroll.face_input``). The device cannot import torch, so the same
separable triangle filter (torch's and PIL's antialiased bilinear: support = scale, weights
normalised per output pixel) is written here as two small matrices. PIL's own uint8 resize
rounds between the horizontal and vertical pass and so differs by 1 grey level on some pixels
(measured in tests/hyperver/device/test_preprocess.py); these matrices match torch's float
path exactly up to float rounding.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=16)
def resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) weights of the antialiased bilinear filter (torch ``_compute_indices_weights_aa``)."""
    scale = in_size / out_size
    support = scale if scale >= 1.0 else 1.0          # triangle filter, widened when shrinking
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    m = np.zeros((out_size, in_size), np.float64)
    for i in range(out_size):
        centre = scale * (i + 0.5)
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), in_size)
        j = np.arange(lo, hi)
        w = np.clip(1.0 - np.abs((j - centre + 0.5) * inv), 0.0, None)
        m[i, lo:hi] = w / w.sum()
    return m.astype(np.float32)


def resize_crop(crop: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8, as training resized its crops."""
    if crop.ndim != 3 or crop.shape[2] != 3 or crop.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 crop, got {crop.shape} {crop.dtype}")
    if crop.shape[0] == size and crop.shape[1] == size:
        return crop
    h, w, c = crop.shape
    ry, rx = resize_matrix(h, size), resize_matrix(w, size)
    rows = (ry @ crop.reshape(h, w * c).astype(np.float32)).reshape(size, w, c)    # vertical pass
    out = (rx @ rows.transpose(1, 0, 2).reshape(w, size * c)).reshape(size, size, c).transpose(1, 0, 2)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def face_array(crop: np.ndarray, size: int, layout: str = "NHWC") -> np.ndarray:
    """The aligned crop as f's float32 input batch of one, in [-1, 1], NHWC (TFLite) or NCHW (ONNX)."""
    x = (resize_crop(crop, size).astype(np.float32) - 127.5) / 127.5
    return x[None] if layout == "NHWC" else x.transpose(2, 0, 1)[None]
