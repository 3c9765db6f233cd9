"""HyperVer: on-device face unlock.

Public facade::

    import hyperver
    face = hyperver.align_photo("me.jpg")          # 112x112 ArcFace crop + landmarks
    vec = hyperver.represent("me.jpg", model="dlib")
    hyperver.verify("a.jpg", "b.jpg")              # cosine similarity

The ``hyperver`` command wraps the same functions (``hyperver --help``).
"""
from .api import align_photo, get_aligner, get_embedder, represent, verify
from .config import load_config
from .errors import (ConfigError, DatasetError, FaceNotFoundError, HyperVerError, ImageError, ModelFileError,
                     MultipleFacesError)

__version__ = "0.1.0"
__all__ = ["ConfigError", "DatasetError", "FaceNotFoundError", "HyperVerError", "ImageError", "ModelFileError",
           "MultipleFacesError", "align_photo", "get_aligner", "get_embedder", "load_config", "represent", "verify"]
