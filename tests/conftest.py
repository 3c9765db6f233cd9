"""Shared fixtures. Tests use small real subsets of the shared data (HYPERVER_DATA, default ../shared/data)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def shipped_generator() -> Path:
    """The generator enrollment uses by default (hypernet.generator_path of the base config), so tests
    about "the shipped generator" follow a switch of it."""
    from hyperver.config import load_config

    return REPO / load_config(env={}).get_path("hypernet.generator_path")


def _data_root() -> Path:
    return Path(os.environ.get("HYPERVER_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = _data_root()
    if not (root / "lfw" / "pairs.txt").exists():
        pytest.fail(f"shared data not found at {root}; set HYPERVER_DATA to the data root")
    return root


@pytest.fixture(scope="session")
def lfw_images(data_root: Path) -> Path:
    return data_root / "lfw" / "images"


@pytest.fixture()
def cfg(tmp_path: Path, data_root: Path):
    from hyperver.config import load_config

    return load_config(overrides=[f"data.root={data_root}", f"cache.root={tmp_path / 'cache'}",
                                  f"results.dir={tmp_path / 'results'}", "embed.workers=1"], env={})


@pytest.fixture(scope="session")
def two_faces_image(lfw_images: Path) -> np.ndarray:
    """Two real LFW faces pasted side by side."""
    from hyperver.data import load_image

    a = load_image(lfw_images / "Zico" / "Zico_0001.jpg")
    b = load_image(lfw_images / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg")
    return np.concatenate([a, b], axis=1)
