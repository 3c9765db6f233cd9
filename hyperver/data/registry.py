"""Datasets by name, built from the config's ``datasets`` section."""
from __future__ import annotations

from typing import Any, Mapping

from ..config import Config
from ..errors import ConfigError
from ..registry import Registry
from .folder import FlatFolderDataset, FolderDataset
from .lfw import LFWDataset

DATASET_KINDS: Registry = Registry("dataset kind")
DATASET_KINDS.register("lfw")(LFWDataset)
DATASET_KINDS.register("folder")(FolderDataset)
DATASET_KINDS.register("flat")(FlatFolderDataset)


def dataset_entry(cfg: Config, name: str) -> Mapping[str, Any]:
    entries = cfg.get_path("datasets")
    if name not in entries:
        raise ConfigError(f"unknown dataset {name!r}; configured: {', '.join(sorted(entries))}")
    entry = entries[name]
    for key in ("kind", "path"):
        if key not in entry:
            raise ConfigError(f"dataset {name!r} needs a {key!r} entry")
    return entry


def open_dataset(cfg: Config, name: str):
    """Open a configured dataset, e.g. ``open_dataset(cfg, "lfw")``."""
    entry = dataset_entry(cfg, name)
    return DATASET_KINDS.create(entry["kind"], root=cfg.data_root / entry["path"], name=name)
