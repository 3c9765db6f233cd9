"""The one record type every dataset reader yields."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class ImageRecord:
    path: Path
    identity: Optional[str]   # None for unlabelled images (e.g. UTKFace)
    dataset: str

    @property
    def key(self) -> str:
        """A stable, readable id: dataset/identity/file."""
        ident = self.identity if self.identity is not None else "_"
        return f"{self.dataset}/{ident}/{self.path.name}"
