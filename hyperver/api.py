"""The public facade: a few functions over the modules that do the work (as deepface does)."""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from .align import AlignedFace, Aligner
from .config import Config, load_config
from .data.imageio import ImageSource, load_image
from .embed import Embedder, FaceInput


def _config(config: Config | None) -> Config:
    return config if config is not None else load_config()


@lru_cache(maxsize=4)
def _aligner_for(align_json: str, models_dir: str) -> Aligner:
    import json

    return Aligner.from_config(json.loads(align_json), models_dir=models_dir)


@lru_cache(maxsize=4)
def _embedder_for(name: str, cfg_json: str) -> Embedder:
    import json

    from .features import build_embedder

    return build_embedder(Config(json.loads(cfg_json)), name)


def get_aligner(config: Config | None = None) -> Aligner:
    import json

    cfg = _config(config)
    return _aligner_for(json.dumps(cfg.get_path("align"), sort_keys=True), str(cfg.models_dir))


def get_embedder(model: str | None = None, config: Config | None = None) -> Embedder:
    import json

    cfg = _config(config)
    return _embedder_for(model or cfg.get_path("embed.model"), json.dumps(cfg, sort_keys=True))


def _image(source: ImageSource, cfg: Config) -> np.ndarray:
    return load_image(source, **{k: cfg.get_path(f"image.{k}") for k in ("max_bytes", "max_pixels", "min_side")})


def align_photo(source: ImageSource, config: Config | None = None) -> AlignedFace:
    """Align the single face of a photo; raises FaceNotFoundError / MultipleFacesError / ImageError."""
    cfg = _config(config)
    name = source if isinstance(source, str) else "photo"
    return get_aligner(cfg).align_photo(_image(source, cfg), name=str(name))


def represent(source: ImageSource, model: str | None = None, config: Config | None = None) -> np.ndarray:
    """Unit-length embedding of the single face in a photo."""
    cfg = _config(config)
    image = _image(source, cfg)
    face = get_aligner(cfg).align_photo(image, name=str(source) if isinstance(source, str) else "photo")
    return get_embedder(model, cfg).embed([FaceInput(face, image)])[0]


def verify(source_a: ImageSource, source_b: ImageSource, model: str | None = None,
           config: Config | None = None) -> dict[str, Any]:
    """Cosine similarity of two photos' faces (decision thresholds come with later per-model cards)."""
    ea = represent(source_a, model, config)
    eb = represent(source_b, model, config)
    return {"similarity": float(ea @ eb), "model": model or _config(config).get_path("embed.model")}
