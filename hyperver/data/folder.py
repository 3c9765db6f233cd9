"""Readers for plain image trees: one folder per identity, or a flat folder of unlabelled images."""
from __future__ import annotations

from pathlib import Path

from ..errors import DatasetError
from .records import ImageRecord

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def _require_dir(root: Path, what: str) -> Path:
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{what} root not found: {root} (set HYPERVER_DATA or the dataset path in the config)")
    if not root.is_dir():
        raise DatasetError(f"{what} root is not a directory: {root}")
    return root


class FolderDataset:
    """``root/<identity>/<image>``: any labelled face dataset a user has (CelebA here, VGGFace2, ...)."""

    def __init__(self, root: str | Path, name: str = "folder"):
        self.root = _require_dir(Path(root), f"dataset {name!r}")
        self.name = name

    def records(self) -> list[ImageRecord]:
        out = []
        for ident_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for img in sorted(ident_dir.iterdir()):
                if img.suffix.lower() in IMAGE_SUFFIXES and img.is_file():
                    out.append(ImageRecord(img, ident_dir.name, self.name))
        if not out:
            raise DatasetError(f"dataset {self.name!r} at {self.root} has no images in identity folders")
        return out

    def identities(self) -> dict[str, list[ImageRecord]]:
        by_id: dict[str, list[ImageRecord]] = {}
        for r in self.records():
            by_id.setdefault(r.identity, []).append(r)
        return by_id


class FlatFolderDataset:
    """``root/<image>`` without identity labels (UTKFace here): for label-free training only."""

    def __init__(self, root: str | Path, name: str = "flat"):
        self.root = _require_dir(Path(root), f"dataset {name!r}")
        self.name = name

    def records(self) -> list[ImageRecord]:
        out = [ImageRecord(p, None, self.name) for p in sorted(self.root.iterdir())
               if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        if not out:
            raise DatasetError(f"dataset {self.name!r} at {self.root} has no images")
        return out
