"""Landmark templates and similarity transforms.

All landmark schemes are expressed as template points in one common frame, the 112x112
ArcFace crop. Knowing where a scheme's points sit in that frame lets any detector feed any
embedder: points of one scheme are mapped to another through the template frame.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

# insightface's arcface_dst: left eye, right eye, nose tip, left and right mouth corner
# (image left/right), for a 112x112 crop.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)

# dlib's 5-point shape (points 0-1: corners of the eye on the image's right, 2-3: corners of the
# eye on the image's left, 4: base of the nose) where they sit in the ArcFace 112 frame.
# Derived, not guessed: scripts/derive_dlib5_template.py aligns LFW training images with dlib's
# 68-point model (which gives ArcFace's eye centres, nose tip and mouth corners) and averages
# where the 5-point model's points land (577 faces, median; per-point spread 1.4-2.3 px):
#     python scripts/derive_dlib5_template.py --n 600
DLIB5_IN_ARCFACE_112 = np.array(
    [[80.4029, 52.7290], [66.6132, 53.1722], [31.3636, 53.0115], [45.2347, 53.3396], [55.9337, 79.5542]],
    dtype=np.float64,
)

TEMPLATES: dict[str, np.ndarray] = {"arcface5": ARCFACE_112, "dlib5": DLIB5_IN_ARCFACE_112}
TEMPLATE_SIZE = 112


def template(scheme: str, size: int = TEMPLATE_SIZE) -> np.ndarray:
    """Template points of ``scheme`` for a square crop of side ``size`` (scaled about the origin)."""
    try:
        pts = TEMPLATES[scheme]
    except KeyError:
        raise KeyError(f"unknown landmark scheme {scheme!r}; known: {sorted(TEMPLATES)}") from None
    return pts * (size / TEMPLATE_SIZE)


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (Umeyama 1991) mapping ``src`` points onto ``dst``.

    Returns a 2x3 matrix M with ``dst ~= src @ M[:, :2].T + M[:, 2]``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need matching (N>=2, 2) point arrays, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    var_s = (s ** 2).sum() / len(src)
    scale = (sig * sign).sum() / var_s if var_s > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.asarray(points, dtype=np.float64) @ matrix[:, :2].T + matrix[:, 2]


def invert_transform(matrix: np.ndarray) -> np.ndarray:
    a = matrix[:, :2]
    inv = np.linalg.inv(a)
    return np.hstack([inv, (-inv @ matrix[:, 2])[:, None]])


def convert_points(points: np.ndarray, from_scheme: str, to_scheme: str) -> np.ndarray:
    """Express a face's landmarks of one scheme as the (estimated) points of another scheme."""
    if from_scheme == to_scheme:
        return np.asarray(points, dtype=np.float64)
    to_template = estimate_similarity(points, template(from_scheme))
    return apply_transform(invert_transform(to_template), template(to_scheme))


def warp_to_template(image: np.ndarray, points: np.ndarray, scheme: str, size: int = TEMPLATE_SIZE) -> np.ndarray:
    """Crop the face as a ``size`` x ``size`` image, its landmarks on the scheme's template."""
    matrix = estimate_similarity(points, template(scheme, size))
    return warp_affine(image, matrix, size)


# Images over this many pixels are cut to the crop's source region (plus a margin) before warping:
# PIL would otherwise copy the whole photo (100 MB for 25 MP) for one small crop. Smaller images are
# warped whole, bit for bit as always (the shared datasets' cached crops).
WARP_REGION_MIN_PIXELS = 1_000_000


def warp_affine(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Apply a 2x3 image->crop transform with bilinear sampling (PIL wants the inverse map)."""
    h, w = image.shape[:2]
    if h * w > WARP_REGION_MIN_PIXELS:
        corners = apply_transform(invert_transform(matrix), np.array([[0, 0], [size, 0], [0, size], [size, size]]))
        x0, y0 = np.floor(corners.min(0)).astype(int) - 2
        x1, y1 = np.ceil(corners.max(0)).astype(int) + 2
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if x1 <= x0 or y1 <= y0:
            return np.zeros((size, size) + image.shape[2:], np.uint8)   # the crop lies wholly outside
        if (x1 - x0) * (y1 - y0) < h * w:
            shifted = matrix.copy()
            shifted[:, 2] = matrix[:, 2] + matrix[:, :2] @ np.array([x0, y0], dtype=np.float64)
            return warp_affine(np.ascontiguousarray(image[y0:y1, x0:x1]), shifted, size)
    inv = invert_transform(matrix)
    # PIL samples at pixel centres offset by 0.5 relative to the point convention used here.
    coeffs = (inv[0, 0], inv[0, 1], inv[0, 2] - 0.5 * (inv[0, 0] + inv[0, 1]) + 0.5,
              inv[1, 0], inv[1, 1], inv[1, 2] - 0.5 * (inv[1, 0] + inv[1, 1]) + 0.5)
    out = Image.fromarray(image).transform((size, size), Image.AFFINE, coeffs, resample=Image.BILINEAR)
    return np.asarray(out, dtype=np.uint8)
