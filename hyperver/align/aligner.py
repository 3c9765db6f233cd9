"""Face alignment: detect, pick the face, warp to the 112x112 ArcFace template.

Two policies, because the two uses differ:
- ``align_photo`` (enrollment, unlock): exactly one face or a clear error; never a guess.
- ``align_dataset_image`` (benchmarks, training): the face nearest the centre; if none is
  found, a centred crop, flagged as ``fallback`` so the caller can count and report it.
The result keeps the source landmarks so every embedder can build its own input (dlib's
ResNet wants its own 150x150 chip, ArcFace models the 112x112 crop).

Detection works on at most ``detect_max_pixels`` pixels: a larger photo (a 12 MP phone photo, a
25 MP upload) is detected on a downscaled copy (area interpolation), and an upsampling attempt
that would exceed the budget upsamples only up to it (or is skipped when that is a scale already
tried). Boxes and landmarks are mapped back to the source image and the crops are cut from the
source image, so a large photo aligns as before, only its detection costs what a
``detect_max_pixels`` photo's does. Images within the budget (LFW's 250x250, with or without 2x
upsampling; CelebA and UTKFace crops) are detected exactly as before.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import FaceNotFoundError, MultipleFacesError
from .detectors import Detector, DetectorSpec, FaceDetection, build_detector
from .templates import TEMPLATE_SIZE, convert_points, estimate_similarity, template, warp_affine

ALIGNER_FORMAT = "v1"  # bump when crops change, so caches keyed on the version are rebuilt
# Detection budget (pixels the detector sees per attempt): ~1280x1280. dlib HOG takes ~0.2 s on one
# core at this size (a 25 MP photo at full size and upsampled 2x: ~15 s and ~1 GB). The aligner's
# version names the budget only when it is not this default, so the crop caches and feature packs
# of the shared datasets (all far below it) keep their keys.
DEFAULT_DETECT_MAX_PIXELS = 1_638_400


@dataclass
class AlignedFace:
    crop: np.ndarray                 # (S, S, 3) uint8 on the ArcFace template
    landmarks: np.ndarray            # (K, 2) in source-image pixels, scheme ``scheme``
    scheme: str
    box: np.ndarray                  # (4,) detection box (or the fallback box)
    n_faces: int                     # faces the detector saw
    fallback: bool = False           # True: no face found, centred crop used
    image_size: tuple[int, int] = (0, 0)   # (height, width) of the source image
    extra: dict[str, Any] = field(default_factory=dict)

    def points(self, scheme: str) -> np.ndarray:
        """This face's landmarks expressed in another scheme (via the common template frame)."""
        return convert_points(self.landmarks, self.scheme, scheme)

    def crop_at(self, image: np.ndarray, size: int, scheme: str = "arcface5") -> np.ndarray:
        """Re-warp the source image to a ``size`` crop (for embedders with other input sizes)."""
        if size == self.crop.shape[0] and scheme == "arcface5":
            return self.crop
        pts = self.points(scheme)
        return warp_affine(image, estimate_similarity(pts, template(scheme, size)), size)


def _pad_image(image: np.ndarray, frac: float) -> tuple[np.ndarray, int]:
    pad = int(round(frac * max(image.shape[:2])))
    return np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge"), pad


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    """``image`` resized by about ``scale`` (sides rounded down: the result stays within a pixel budget)."""
    import cv2

    h, w = image.shape[:2]
    size = (max(1, int(w * scale)), max(1, int(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def _scaled(face: FaceDetection, scale: np.ndarray, pad: float = 0.0) -> FaceDetection:
    """A detection on a padded copy resized by ``scale`` (x, y), in the source image's pixels."""
    if not pad and np.all(scale == 1.0):
        return face
    return FaceDetection((face.box - pad) / np.tile(scale, 2), face.score, (face.landmarks - pad) / scale, face.scheme)


class Aligner:
    """Detector + landmark policy + template warp. ``version`` keys the on-disk crop cache."""

    def __init__(self, detector: DetectorSpec = "dlib_hog", crop_size: int = TEMPLATE_SIZE,
                 attempts: Sequence[Mapping[str, Any]] = ({"upsample": 0}, {"upsample": 1}),
                 fallback_box_fraction: float = 0.5, min_face_ratio: float = 0.0, models_dir: str | None = None,
                 detect_max_pixels: int | None = DEFAULT_DETECT_MAX_PIXELS):
        # a name, a list of names (a chain: first detector that finds the face), or a detector object
        self.detector: Detector = build_detector(detector, None if models_dir is None else str(models_dir))
        self.crop_size = int(crop_size)
        self.attempts = [dict(a) for a in attempts] or [{"upsample": 0}]
        for a in self.attempts:
            unknown = set(a) - {"upsample", "pad"}
            if unknown:
                raise ValueError(f"unknown detection attempt option(s) {sorted(unknown)}; use upsample, pad")
        self.fallback_box_fraction = float(fallback_box_fraction)
        self.min_face_ratio = float(min_face_ratio)
        if detect_max_pixels is not None and int(detect_max_pixels) < 4096:
            raise ValueError(f"detect_max_pixels must be at least 4096 (or null: no limit), got {detect_max_pixels}")
        self.detect_max_pixels = None if detect_max_pixels is None else int(detect_max_pixels)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], dataset_overrides: Mapping[str, Any] | None = None,
                    models_dir: str | None = None) -> "Aligner":
        params = {k: cfg[k] for k in ("detector", "crop_size", "attempts", "fallback_box_fraction", "min_face_ratio",
                                      "detect_max_pixels") if k in cfg}
        params.update(dataset_overrides or {})
        return cls(**params, models_dir=models_dir)

    @property
    def version(self) -> str:
        attempts = "+".join(f"u{a.get('upsample', 0)}p{a.get('pad', 0)}" for a in self.attempts)
        budget = "" if self.detect_max_pixels == DEFAULT_DETECT_MAX_PIXELS else f"_dm{self.detect_max_pixels or 0}"
        return (f"{self.detector.version}_{ALIGNER_FORMAT}_s{self.crop_size}_{attempts}"
                f"_fb{self.fallback_box_fraction:g}{budget}")

    # -- detection -------------------------------------------------------------------------
    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        """Run the detection attempts in order until one finds a face."""
        return self._detect_with(self.detector, image)

    def plan(self, shape: tuple[int, ...]) -> list[tuple[float, int, float]]:
        """(pad fraction, upsample, scale) per detection attempt that runs on an image of this shape.

        ``upsample`` > 0: the detector's own upsampling, as configured (the image fits the budget even
        so); else the image is resized by ``scale`` first (1.0: as is). An attempt capped to a scale
        within 20 % of one already tried with the same padding is dropped: it would repeat the work.
        """
        h, w = int(shape[0]), int(shape[1])
        plan: list[tuple[float, int, float]] = []
        for attempt in self.attempts:
            pad = float(attempt.get("pad", 0.0))
            up = int(attempt.get("upsample", 0))
            scale = float(2 ** up)
            if self.detect_max_pixels is not None:
                side = 1 + 2 * pad
                fit = (self.detect_max_pixels / (h * w * side * side)) ** 0.5
                if scale > fit:
                    scale, up = fit, 0
                    if any(p == pad and abs(np.log(scale / (s * 2 ** u))) < np.log(1.2) for p, u, s in plan):
                        continue
            plan.append((pad, up, 1.0 if up else scale))
        return plan

    def warm(self) -> None:
        """Run every detector once on a blank image of the detection budget's size: buffers sized by the
        input (YuNet's network: ~100 MB at 1280x1280) are allocated now, once, not by the first large photo."""
        if self.detect_max_pixels is None:
            return
        side = int(self.detect_max_pixels ** 0.5)
        blank = np.zeros((side, side, 3), np.uint8)
        for detector in getattr(self.detector, "members", None) or [self.detector]:
            detector.detect(blank, 0)

    def _detect_with(self, detector: Detector, image: np.ndarray,
                     resized: dict[float, np.ndarray] | None = None) -> list[FaceDetection]:
        """The first attempt's faces that finds any (``resized``: copies shared between detectors)."""
        resized = {} if resized is None else resized
        for pad_frac, upsample, scale in self.plan(image.shape):
            if scale == 1.0:
                work = image
            else:
                key = round(scale, 6)
                if key not in resized:
                    resized[key] = _resize(image, scale)
                work = resized[key]
            xy = np.array([work.shape[1] / image.shape[1], work.shape[0] / image.shape[0]])
            work, pad = _pad_image(work, pad_frac) if pad_frac > 0 else (work, 0)
            faces = [_scaled(f, xy, pad) for f in detector.detect(work, upsample)]
            if faces:
                return faces
        return []

    def _keep_main_faces(self, faces: list[FaceDetection]) -> list[FaceDetection]:
        if faces and self.min_face_ratio > 0:
            largest = max(f.area for f in faces)
            faces = [f for f in faces if f.area >= self.min_face_ratio * largest]
        return faces

    def _finish(self, image: np.ndarray, face: FaceDetection, n_faces: int, fallback: bool = False) -> AlignedFace:
        pts_arc = convert_points(face.landmarks, face.scheme, "arcface5")
        matrix = estimate_similarity(pts_arc, template("arcface5", self.crop_size))
        crop = warp_affine(image, matrix, self.crop_size)
        return AlignedFace(crop, face.landmarks, face.scheme, face.box, n_faces, fallback, image.shape[:2])

    # -- policies ----------------------------------------------------------------------------
    def align_photo(self, image: np.ndarray, name: str = "photo") -> AlignedFace:
        """Exactly one face, or FaceNotFoundError / MultipleFacesError.

        With a detector chain, the first member that finds exactly one face wins; if none does and
        some member saw several faces, the photo is refused as a group photo.
        """
        most, resized = 0, {}
        for detector in getattr(self.detector, "members", None) or [self.detector]:
            faces = self._keep_main_faces(self._detect_with(detector, image, resized))
            if len(faces) == 1:
                return self._finish(image, faces[0], 1)
            most = max(most, len(faces))
        if most > 1:
            raise MultipleFacesError(f"{most} faces found in {name}; exactly one is required", most)
        raise FaceNotFoundError(f"no face found in {name}")

    def align_dataset_image(self, image: np.ndarray) -> AlignedFace:
        """The face nearest the image centre, or a flagged centred crop when there is none."""
        faces = self.detect(image)
        if faces:
            centre = np.array([image.shape[1] / 2, image.shape[0] / 2])
            face = min(faces, key=lambda f: float(np.linalg.norm(f.center - centre)))
            return self._finish(image, face, len(faces))
        return self._finish(image, self._centre_face(image), 0, fallback=True)

    def _centre_face(self, image: np.ndarray) -> FaceDetection:
        """A pseudo-detection whose template crop is the centred square of the configured size."""
        h, w = image.shape[:2]
        side = self.fallback_box_fraction * min(h, w)
        x0, y0 = (w - side) / 2, (h - side) / 2
        scheme = self.detector.scheme
        pts = template(scheme, TEMPLATE_SIZE) * (side / TEMPLATE_SIZE) + np.array([x0, y0])
        box = np.array([x0, y0, x0 + side, y0 + side])
        return FaceDetection(box, 0.0, pts, scheme)
