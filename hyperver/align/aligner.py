"""Face alignment: detect, pick the face, warp to the 112x112 ArcFace template.

Two policies, because the two uses differ:
- ``align_photo`` (enrollment, unlock): exactly one face or a clear error; never a guess.
- ``align_dataset_image`` (benchmarks, training): the face nearest the centre; if none is
  found, a centred crop, flagged as ``fallback`` so the caller can count and report it.
The result keeps the source landmarks so every embedder can build its own input (dlib's
ResNet wants its own 150x150 chip, ArcFace models the 112x112 crop).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import FaceNotFoundError, MultipleFacesError
from .detectors import Detector, DetectorSpec, FaceDetection, build_detector
from .templates import TEMPLATE_SIZE, convert_points, estimate_similarity, template, warp_affine

ALIGNER_FORMAT = "v1"  # bump when crops change, so caches keyed on the version are rebuilt


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


class Aligner:
    """Detector + landmark policy + template warp. ``version`` keys the on-disk crop cache."""

    def __init__(self, detector: DetectorSpec = "dlib_hog", crop_size: int = TEMPLATE_SIZE,
                 attempts: Sequence[Mapping[str, Any]] = ({"upsample": 0}, {"upsample": 1}),
                 fallback_box_fraction: float = 0.5, min_face_ratio: float = 0.0, models_dir: str | None = None):
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

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], dataset_overrides: Mapping[str, Any] | None = None,
                    models_dir: str | None = None) -> "Aligner":
        params = {k: cfg[k] for k in ("detector", "crop_size", "attempts", "fallback_box_fraction", "min_face_ratio") if k in cfg}
        params.update(dataset_overrides or {})
        return cls(**params, models_dir=models_dir)

    @property
    def version(self) -> str:
        attempts = "+".join(f"u{a.get('upsample', 0)}p{a.get('pad', 0)}" for a in self.attempts)
        return (f"{self.detector.version}_{ALIGNER_FORMAT}_s{self.crop_size}_{attempts}"
                f"_fb{self.fallback_box_fraction:g}")

    # -- detection -------------------------------------------------------------------------
    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        """Run the detection attempts in order until one finds a face."""
        return self._detect_with(self.detector, image)

    def _detect_with(self, detector: Detector, image: np.ndarray) -> list[FaceDetection]:
        for attempt in self.attempts:
            pad_frac = float(attempt.get("pad", 0.0))
            work, pad = _pad_image(image, pad_frac) if pad_frac > 0 else (image, 0)
            faces = detector.detect(work, int(attempt.get("upsample", 0)))
            if pad:
                faces = [FaceDetection(f.box - pad, f.score, f.landmarks - pad, f.scheme) for f in faces]
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
        most = 0
        for detector in getattr(self.detector, "members", None) or [self.detector]:
            faces = self._keep_main_faces(self._detect_with(detector, image))
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
