"""Face glue for the SuperNet: data, loss, validation and training (the supernet package stays face-agnostic)."""
from __future__ import annotations

from pathlib import Path

from ..errors import ModelFileError


def load_supernet_weights(path: str | Path):
    """The SuperNet from exported weights or a checkpoint, with a clear error for a bad file."""
    from supernet.io import load_supernet

    try:
        return load_supernet(path)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelFileError(f"{exc} (train one with `hyperver supernet-train` or pass --weights)") from exc
