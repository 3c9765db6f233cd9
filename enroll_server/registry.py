"""The user registry: SQLite (WAL) is the source of truth, the faiss index is derived from it.

One row per user holds the enrollment descriptor AND the signed model, so an enrollment is a
single transaction: a process killed at any point leaves either the whole user or nothing (no
orphan model files to reconcile). The in-memory faiss index (IndexFlatIP over unit descriptors,
ids = row ids) is updated after the commit; at start-up it is loaded from its snapshot only if
the snapshot's generation (bumped by every committed change) matches the database's, and
rebuilt from the rows otherwise, e.g. after a kill -9 between the commit and the index update.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hyperver.errors import ConfigError

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,      -- faiss id; never reused
    user_id TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    descriptor BLOB NOT NULL,                  -- float32 unit vector
    model BLOB NOT NULL,                       -- the signed artifact
    model_sha256 TEXT NOT NULL,
    info TEXT NOT NULL                         -- JSON: f version, threshold, runtime, precision, photos
);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
FAULT_ENV = "HYPERVER_SERVER_FAULT"   # tests only: 'before_commit' | 'after_commit' kills the process (kill -9) there


class DuplicateUser(Exception):
    pass


@dataclass
class UserRecord:
    id: int
    user_id: str
    created: float
    descriptor: np.ndarray
    model_sha256: str
    info: dict[str, Any]

    def public(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "created": self.created, "model_sha256": self.model_sha256, **self.info}


def _fault(point: str) -> None:
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


class Registry:
    def __init__(self, state_dir: str | Path, dim: int, descriptor_model: str):
        import faiss

        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dim, self.descriptor_model = dim, descriptor_model
        self._lock = threading.Lock()          # one writer; faiss and the id map change with the DB
        self._db = sqlite3.connect(self.dir / "registry.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")    # an acknowledged enrollment survives power loss too
        self._db.executescript(SCHEMA)
        self._check_descriptor_model()
        self._faiss = faiss
        self._names: dict[int, str] = {}
        self.index = self._load_index()

    # -- start-up ----------------------------------------------------------------------------------
    def _state(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _check_descriptor_model(self) -> None:
        stored = self._state("descriptor_model")
        if stored is None:
            self._db.execute("INSERT OR IGNORE INTO state VALUES ('descriptor_model', ?), ('generation', '0')",
                             (json.dumps({"model": self.descriptor_model, "dim": self.dim}),))
        elif json.loads(stored) != {"model": self.descriptor_model, "dim": self.dim}:
            raise ConfigError(f"the registry in {self.dir} holds descriptors of {stored}; this server embeds with "
                              f"{self.descriptor_model} ({self.dim}-D). Use another server.state_dir or re-enroll.")

    @property
    def generation(self) -> int:
        return int(self._state("generation") or 0)

    def _snapshot_paths(self) -> tuple[Path, Path]:
        return self.dir / "index.faiss", self.dir / "index.json"

    def _load_index(self):
        rows = self._db.execute("SELECT id, user_id FROM users").fetchall()
        self._names = {i: u for i, u in rows}
        idx_path, meta_path = self._snapshot_paths()
        self.rebuilt = True
        try:
            meta = json.loads(meta_path.read_text())
            index = self._faiss.read_index(str(idx_path))
            if meta["generation"] == self.generation and index.ntotal == len(rows) == meta["ntotal"]:
                self.rebuilt = False
                return index
        except (OSError, ValueError, KeyError, RuntimeError):
            pass   # missing or stale snapshot: rebuild from the database below
        index = self._faiss.IndexIDMap2(self._faiss.IndexFlatIP(self.dim))
        ids, vecs = [], []
        for i, blob in self._db.execute("SELECT id, descriptor FROM users"):
            ids.append(i)
            vecs.append(np.frombuffer(blob, np.float32))
        if ids:
            index.add_with_ids(np.stack(vecs), np.array(ids, np.int64))
        return index

    def save_snapshot(self) -> None:
        """Write the index snapshot (at shutdown); a crash just means a rebuild at the next start."""
        with self._lock:
            idx_path, meta_path = self._snapshot_paths()
            self._faiss.write_index(self.index, str(idx_path) + ".tmp")
            os.replace(str(idx_path) + ".tmp", idx_path)
            meta_path.with_suffix(".tmp").write_text(json.dumps({"generation": self.generation,
                                                                 "ntotal": int(self.index.ntotal)}))
            os.replace(meta_path.with_suffix(".tmp"), meta_path)

    def close(self) -> None:
        self.save_snapshot()
        self._db.close()

    # -- changes -----------------------------------------------------------------------------------
    def add(self, user_id: str, descriptor: np.ndarray, model: bytes, model_sha256: str, info: dict[str, Any],
            replace: bool = False) -> tuple[UserRecord, bool]:
        """Insert a user (or replace one when ``replace``); one transaction, then the index."""
        vec = np.ascontiguousarray(descriptor, np.float32).reshape(-1)
        if vec.size != self.dim:
            raise ValueError(f"descriptor has {vec.size} values, the registry holds {self.dim}-D ones")
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                old = cur.execute("SELECT id FROM users WHERE user_id = ?", (user_id,)).fetchone()
                if old is not None and not replace:
                    raise DuplicateUser(user_id)
                if old is not None:
                    cur.execute("DELETE FROM users WHERE id = ?", (old[0],))
                created = time.time()
                cur.execute("INSERT INTO users (user_id, created, descriptor, model, model_sha256, info) "
                            "VALUES (?, ?, ?, ?, ?, ?)", (user_id, created, vec.tobytes(), model, model_sha256,
                                                          json.dumps(info)))
                new_id = cur.lastrowid
                cur.execute("UPDATE state SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
                _fault("before_commit")
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            _fault("after_commit")
            if old is not None:
                self.index.remove_ids(np.array([old[0]], np.int64))
                self._names.pop(old[0], None)
            self.index.add_with_ids(vec[None], np.array([new_id], np.int64))
            self._names[new_id] = user_id
        return UserRecord(new_id, user_id, created, vec, model_sha256, info), old is not None

    def delete(self, user_id: str) -> bool:
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                row = cur.execute("SELECT id FROM users WHERE user_id = ?", (user_id,)).fetchone()
                if row is None:
                    cur.execute("ROLLBACK")
                    return False
                cur.execute("DELETE FROM users WHERE id = ?", (row[0],))
                cur.execute("UPDATE state SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            self.index.remove_ids(np.array([row[0]], np.int64))
            self._names.pop(row[0], None)
            return True

    # -- reads -------------------------------------------------------------------------------------
    def get(self, user_id: str) -> UserRecord | None:
        with self._lock:
            row = self._db.execute("SELECT id, user_id, created, descriptor, model_sha256, info FROM users "
                                   "WHERE user_id = ?", (user_id,)).fetchone()
        if row is None:
            return None
        return UserRecord(row[0], row[1], row[2], np.frombuffer(row[3], np.float32), row[4], json.loads(row[5]))

    def model(self, user_id: str) -> tuple[bytes, dict[str, Any]] | None:
        with self._lock:
            row = self._db.execute("SELECT model, info, model_sha256 FROM users WHERE user_id = ?",
                                   (user_id,)).fetchone()
        return None if row is None else (bytes(row[0]), {**json.loads(row[1]), "model_sha256": row[2]})

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM users").fetchone()[0])

    def search(self, descriptor: np.ndarray, k: int) -> list[tuple[str, float]]:
        with self._lock:
            if self.index.ntotal == 0:
                return []
            sims, ids = self.index.search(np.ascontiguousarray(descriptor, np.float32).reshape(1, -1),
                                          min(k, int(self.index.ntotal)))
            return [(self._names[int(i)], float(s)) for s, i in zip(sims[0], ids[0]) if i >= 0]

    def consistency(self) -> dict[str, Any]:
        """Database rows vs index entries (what /healthz reports and the crash tests check)."""
        with self._lock:
            rows = dict(self._db.execute("SELECT id, user_id FROM users").fetchall())
            n = int(self.index.ntotal)
            ids = {int(i) for i in self._faiss.vector_to_array(self.index.id_map)} if n else set()
            return {"users": len(rows), "index": n, "consistent": ids == set(rows) and self._names == rows,
                    "generation": self.generation}
