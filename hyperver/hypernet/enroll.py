"""One-shot enrollment (photo -> per-user model) and verification (user model + photo -> decision)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..align import Aligner
from ..config import Config
from ..data.imageio import ImageSource, load_image
from ..embed import Embedder, FaceInput, l2_normalize
from .data import resize_crops, to_unit_range
from .model_io import UserModel, load_generator
from .refine import NegativeBank, load_or_build_bank, refine_settings, refine_theta, warm_up
from .verifier import VerifierSpec, forward


def face_input(crop_112: np.ndarray, spec: VerifierSpec) -> torch.Tensor:
    """The aligned 112x112 crop as f's input: resized exactly as in training, in [-1, 1]."""
    return to_unit_range(resize_crops(crop_112[None], spec.input_size))


class Enroller:
    def __init__(self, generator_path: str | Path, cfg: Config, embedder: Embedder | None = None,
                 aligner: Aligner | None = None, threshold: float | None = None, refine: bool | None = None):
        """``refine``: refine each generated theta against a negative bank (``hyperver.hypernet.refine``);
        None: as ``hypernet.refine.enabled`` says."""
        from ..features import build_embedder

        self.cfg = cfg
        self.gen, self.meta = load_generator(generator_path)
        self.spec = self.gen.spec
        self.embedder = embedder or build_embedder(cfg, self.meta["backbone"])
        self.aligner = aligner or Aligner.from_config(cfg.get_path("align"), models_dir=str(cfg.models_dir))
        self.limits = {k: cfg.get_path(f"image.{k}") for k in ("max_bytes", "max_pixels", "min_side")}
        self.threshold = float(threshold if threshold is not None else self.meta.get("threshold", 0.0))
        if refine is None:
            refine = bool(cfg.get_path("hypernet.refine.enabled", False))
        self.refine = refine
        self.bank: NegativeBank | None = None
        self._teacher: Embedder | None = None
        if refine:
            self._prepare_refinement(build_embedder)

    def _prepare_refinement(self, build_embedder) -> None:
        self.bank = load_or_build_bank(self.cfg, self.spec.input_size)
        self.refine_kwargs = refine_settings(self.cfg)
        # The bank's targets come from its teacher's cosines: embed the enrollment with that teacher.
        self._teacher = (self.embedder if self.bank.teacher == self.meta["backbone"]
                         else build_embedder(self.cfg, self.bank.teacher))
        warm_up(self.spec, self.bank)   # not in the first enrollment's time budget

    def _faces(self, source: ImageSource, flip: bool) -> list[FaceInput]:
        image = load_image(source, **self.limits)
        name = str(source) if isinstance(source, (str, Path)) else "photo"
        faces = [FaceInput(self.aligner.align_photo(image, name), image)]
        if flip:
            mirrored = np.ascontiguousarray(image[:, ::-1])
            faces.append(FaceInput(self.aligner.align_photo(mirrored, name + " (flipped)"), mirrored))
        return faces

    def embed(self, photos: Sequence[ImageSource], flip_average: bool = False) -> np.ndarray:
        """Average of the (unit) descriptor embeddings of all photos (and their mirror images)."""
        faces = [f for p in photos for f in self._faces(p, flip_average)]
        return l2_normalize(self.embedder.embed(faces).mean(0))

    def enroll(self, photos: Sequence[ImageSource], flip_average: bool = False,
               extra: dict[str, Any] | None = None) -> UserModel:
        if not photos:
            raise ValueError("enrollment needs at least one photo")
        info = {"photos": len(photos), "flip_average": flip_average, **(extra or {})}
        with torch.no_grad():   # refine_theta turns gradients on for itself
            if not self.refine:
                return self.model_for(self.embed(photos, flip_average), info)
            faces = [f for p in photos for f in self._faces(p, flip_average)]
            user = self.model_for(l2_normalize(self.embedder.embed(faces).mean(0)), info)
        return self.refined(user, np.stack([f.face.crop for f in faces]), faces)

    def refined(self, user: UserModel, crops: np.ndarray, faces: Sequence[FaceInput]) -> UserModel:
        """``user`` with theta refined on its aligned enrollment ``crops``; its info records how."""
        if self.bank is None or self._teacher is None:
            raise RuntimeError("this Enroller was made without refinement (refine=False)")
        with torch.no_grad():
            teacher_emb = (user.embedding if self._teacher is self.embedder
                           else l2_normalize(self._teacher.embed(list(faces)).mean(0)))
        theta, stats = refine_theta(self.spec, torch.from_numpy(user.theta), crops, teacher_emb, self.bank,
                                    **self.refine_kwargs)
        record = {k: stats[k] for k in ("refined", "steps_done", "steps", "stopped_by", "seconds", "time_budget_s",
                                        "lr", "views", "negatives")}
        return UserModel(theta.numpy().astype(np.float32), user.spec, user.threshold, user.embedding,
                         {**user.meta, "refine": record})

    @torch.no_grad()
    def model_for(self, embedding: np.ndarray, extra: dict[str, Any] | None = None) -> UserModel:
        """The per-user model for a (unit) descriptor embedding: theta = h_gen(embedding)."""
        emb = np.asarray(embedding, dtype=np.float32)
        theta = self.gen(torch.from_numpy(emb[None]))[0].numpy()
        return UserModel(theta, self.spec, self.threshold, emb, {"backbone": self.embedder.cache_id, **(extra or {})})


@torch.no_grad()
def verify(user: UserModel, source: ImageSource, aligner: Aligner, limits: dict | None = None) -> dict[str, Any]:
    image = load_image(source, **(limits or {}))
    face = aligner.align_photo(image, str(source) if isinstance(source, (str, Path)) else "photo")
    logit = float(forward(user.spec, torch.from_numpy(user.theta), face_input(face.crop, user.spec))[0])
    return {"logit": logit, "score": float(1 / (1 + np.exp(-logit))), "threshold": user.threshold,
            "match": bool(logit >= user.threshold)}
