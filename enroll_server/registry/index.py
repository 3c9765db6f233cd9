"""A server's in-memory faiss index of the registry's descriptors, and the generation it reflects.

IndexIDMap2 over IndexFlatIP of unit descriptors (inner product = cosine similarity), with the
database's row ids as faiss ids: row ids are never reused, so "remove id X" and "add id Y" commute
and a batch of changes can be applied in any order.
"""
from __future__ import annotations

import threading
from typing import Any, Iterable

import numpy as np


class LocalIndex:
    """Thread-safe: searches and changes take one lock, so a search never sees half a batch."""

    def __init__(self, dim: int, index: Any = None, names: dict[int, str] | None = None, generation: int = 0):
        import faiss

        self._faiss = faiss
        self.dim = dim
        self._lock = threading.Lock()
        self._index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._names: dict[int, str] = dict(names or {})
        self.generation = generation

    @classmethod
    def build(cls, dim: int, rows: Iterable[tuple[int, str, bytes]], generation: int) -> "LocalIndex":
        """From (row id, user id, float32 descriptor bytes) rows read at ``generation``."""
        index = cls(dim, generation=generation)
        index.apply(generation, (), rows)
        return index

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def apply(self, generation: int, removed: Iterable[int],
              added: Iterable[tuple[int, str, bytes | np.ndarray]]) -> None:
        """Remove and add rows, then record ``generation``: one step for concurrent searches."""
        removed = [int(i) for i in removed]
        added = list(added)
        vecs = [np.frombuffer(v, np.float32) if isinstance(v, (bytes, bytearray, memoryview)) else
                np.asarray(v, np.float32).reshape(-1) for _, _, v in added]
        with self._lock:
            gone = [i for i in removed if i in self._names]
            if gone:
                self._index.remove_ids(np.array(gone, np.int64))
                for i in gone:
                    del self._names[i]
            new = [(int(i), u, v) for (i, u, _), v in zip(added, vecs) if int(i) not in self._names]
            if new:
                self._index.add_with_ids(np.stack([v for _, _, v in new]), np.array([i for i, _, _ in new], np.int64))
                self._names.update((i, u) for i, u, _ in new)
            self.generation = max(self.generation, generation)

    def search(self, descriptor: np.ndarray, k: int) -> list[tuple[str, float]]:
        with self._lock:
            if self._index.ntotal == 0:
                return []
            sims, ids = self._index.search(np.ascontiguousarray(descriptor, np.float32).reshape(1, -1),
                                           min(k, int(self._index.ntotal)))
            return [(self._names[int(i)], float(s)) for s, i in zip(sims[0], ids[0]) if i >= 0]

    def state(self) -> tuple[int, dict[int, str], bool]:
        """(generation, row id -> user id, whether faiss holds exactly those ids), read together."""
        with self._lock:
            n = int(self._index.ntotal)
            ids = {int(i) for i in self._faiss.vector_to_array(self._index.id_map)} if n else set()
            return self.generation, dict(self._names), ids == set(self._names) and n == len(ids)

    def write(self, path: str) -> tuple[int, int]:
        """Write the faiss index to ``path``; (generation, entries) as written."""
        with self._lock:
            self._faiss.write_index(self._index, path)
            return self.generation, int(self._index.ntotal)
