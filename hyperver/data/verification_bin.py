"""insightface-style verification ``.bin`` files (lfw.bin, cfp_fp.bin, agedb_30.bin, ...).

The file is a pickle of ``(list_of_encoded_images, issame_list)``; consecutive images form a
pair. Users download these files, so they are read with an unpickler that can build only
bytes, lists, tuples, bools and numbers: any other object (a class, a function) is refused
before it is created.
"""
from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .imageio import decode_image

# Python 3 pickles bytes with protocol <= 2 via _codecs.encode(str, 'latin1'): a pure function
# returning bytes, the one global these files need.
_ALLOWED_GLOBALS = {("_codecs", "encode"), ("builtins", "bytearray")}
_MAX_BIN_BYTES = 2_000_000_000


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a verification .bin file")


def safe_load_pickle(data: bytes):
    return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()


@dataclass
class VerificationBin:
    images: list[bytes]      # encoded images (JPEG/PNG bytes), 2 per pair
    issame: np.ndarray       # (n_pairs,) bool
    name: str = "bin"

    def __len__(self) -> int:
        return len(self.issame)

    def decode(self, i: int) -> np.ndarray:
        return decode_image(self.images[i], f"{self.name}[{i}]")

    def pair(self, k: int) -> tuple[np.ndarray, np.ndarray, bool]:
        return self.decode(2 * k), self.decode(2 * k + 1), bool(self.issame[k])

    def folds(self, n_folds: int = 10) -> np.ndarray:
        """Fold id (1-based) per pair, consecutive equal blocks as insightface evaluates them."""
        return (np.arange(len(self)) * n_folds // len(self)) + 1


def read_verification_bin(path: str | Path) -> VerificationBin:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"verification .bin file not found: {path}")
    size = path.stat().st_size
    if size == 0 or size > _MAX_BIN_BYTES:
        raise DatasetError(f"verification .bin file {path} has an implausible size ({size} bytes)")
    try:
        obj = safe_load_pickle(path.read_bytes())
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise DatasetError(f"cannot read verification .bin file {path}: {exc}") from exc
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise DatasetError(f"{path}: expected a (images, issame) pair, got {type(obj).__name__}")
    images, issame = obj
    if not isinstance(images, (list, tuple)) or not all(isinstance(b, (bytes, bytearray)) for b in images):
        raise DatasetError(f"{path}: images must be a list of encoded image bytes")
    issame = np.asarray(issame, dtype=bool).ravel()
    if len(images) != 2 * len(issame):
        raise DatasetError(f"{path}: {len(images)} images for {len(issame)} pairs (need 2 per pair)")
    return VerificationBin([bytes(b) for b in images], issame, path.stem)
