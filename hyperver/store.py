"""An append-only, crash-safe, on-disk key -> arrays store (used for aligned crops and embeddings).

Layout: ``<dir>/shard-<n>/keys.json`` plus one ``<field>.npy`` per field. A shard is written
to a temporary folder and renamed into place, so a killed job leaves only complete shards and
resumes where it stopped. Arrays are memory-mapped on read: 36k crops cost no RAM until used.
No pickles anywhere (``allow_pickle=False``).
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from .errors import ModelFileError


class ShardedStore:
    def __init__(self, directory: str | os.PathLike, meta: Mapping | None = None):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        meta_path = self.dir / "meta.json"
        if meta is not None:
            if meta_path.exists():
                old = json.loads(meta_path.read_text())
                if old != json.loads(json.dumps(dict(meta))):
                    raise ModelFileError(f"store {self.dir} was written with other settings: {old} != {dict(meta)}")
            else:
                _atomic_write(meta_path, json.dumps(dict(meta), indent=1, sort_keys=True))
        self._index: dict[str, tuple[int, int]] = {}
        self._shards: list[dict[str, np.ndarray]] = []
        self.reload()

    def reload(self) -> None:
        """Re-read the shards from disk (another handle of the same folder may have written)."""
        self._index.clear()
        self._shards.clear()
        for shard_dir in sorted(self.dir.glob("shard-*")):
            if not (shard_dir / "keys.json").exists():
                continue  # an interrupted write that never got renamed into place
            keys = json.loads((shard_dir / "keys.json").read_text())
            arrays = {p.stem: np.load(p, mmap_mode="r", allow_pickle=False) for p in shard_dir.glob("*.npy")}
            sid = len(self._shards)
            self._shards.append(arrays)
            for row, key in enumerate(keys):
                self._index[key] = (sid, row)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def keys(self) -> list[str]:
        return list(self._index)

    def missing(self, keys: Iterable[str]) -> list[str]:
        return [k for k in keys if k not in self._index]

    def get(self, key: str) -> dict[str, np.ndarray]:
        sid, row = self._index[key]
        return {name: np.asarray(arr[row]) for name, arr in self._shards[sid].items()}

    def get_field(self, keys: Iterable[str], field: str) -> np.ndarray:
        """Stack one field for many keys (KeyError names the first missing key)."""
        rows = []
        for k in keys:
            if k not in self._index:
                raise KeyError(f"{k!r} is not in store {self.dir}")
            sid, row = self._index[k]
            rows.append(np.asarray(self._shards[sid][field][row]))
        return np.stack(rows) if rows else np.zeros((0,))

    def put_many(self, keys: list[str], fields: Mapping[str, np.ndarray]) -> None:
        if not keys:
            return
        for name, arr in fields.items():
            if len(arr) != len(keys):
                raise ValueError(f"field {name!r} has {len(arr)} rows for {len(keys)} keys")
        tmp = self.dir / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            for name, arr in fields.items():
                np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
            (tmp / "keys.json").write_text(json.dumps(list(keys)))
            final = self.dir / f"shard-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self.reload()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + f".tmp-{uuid.uuid4().hex}")
    tmp.write_text(text)
    os.replace(tmp, path)
