"""The embedded default: SQLite (WAL) is the source of truth, the faiss index is derived from it.

One row per user holds the enrollment descriptor AND the signed model, so an enrollment is a
single transaction: a process killed at any point leaves either the whole user or nothing (no
orphan model files to reconcile). The in-memory faiss index (ids = row ids) is updated after the
commit; at start-up it is loaded from its snapshot (``index.faiss`` + ``index.json`` beside the
database file) only if the snapshot's generation (bumped by every committed change) matches the
database's, and rebuilt from the rows otherwise, e.g. after a kill -9 between the commit and the
index update. One server process per database file: for several, see the PostgreSQL backend.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from hyperver.errors import ConfigError

from .base import DuplicateUser, UserRecord, as_descriptor, fault
from .index import LocalIndex
from .migrations import Migration, check_migrations, pending

# Version 1 is the schema that predates versioning (IF NOT EXISTS: such a database just gets its row).
MIGRATIONS = [
    Migration(1, "users and registry state", """
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
INSERT OR IGNORE INTO state VALUES ('generation', '0');
"""),
]
check_migrations(MIGRATIONS)
MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied REAL NOT NULL)"""
BUMP_GENERATION = "UPDATE state SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation' RETURNING value"


def sqlite_path(url: str) -> Path:
    """``sqlite:///relative/file`` or ``sqlite:////absolute/file`` (three slashes, then the path)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ConfigError(f"server.registry {url!r}: a SQLite registry is sqlite:///PATH (relative) or "
                          "sqlite:////PATH (absolute), e.g. sqlite:///server_state/registry.sqlite3")
    return Path(os.path.expanduser(url[len(prefix):]))


class SQLiteRegistry:
    def __init__(self, path: str | Path, dim: int, descriptor_model: str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dim, self.descriptor_model = dim, descriptor_model
        self._lock = threading.Lock()          # one writer; faiss and the id map change with the DB
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")    # an acknowledged enrollment survives power loss too
        self._migrate()
        self._check_descriptor_model()
        self.index, self._loaded_from = self._load_index()

    @classmethod
    def from_url(cls, url: str, dim: int, descriptor_model: str, **_: Any) -> "SQLiteRegistry":
        return cls(sqlite_path(url), dim, descriptor_model)

    def __repr__(self) -> str:
        return f"SQLiteRegistry({str(self.path)!r})"

    # -- start-up ----------------------------------------------------------------------------------
    def _migrate(self) -> None:
        self._db.execute(MIGRATIONS_TABLE)
        applied = [v for (v,) in self._db.execute("SELECT version FROM schema_migrations")]
        for m in pending(MIGRATIONS, applied, f"the registry {self.path}"):
            assert "'" not in m.name
            # One script, one transaction: the schema change and its row commit together.
            script = (f"BEGIN IMMEDIATE;\n{m.sql}\nINSERT INTO schema_migrations VALUES "
                      f"({m.version:d}, '{m.name}', {time.time()!r});\nCOMMIT;")
            try:
                self._db.executescript(script)
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def schema_versions(self) -> list[int]:
        return [v for (v,) in self._db.execute("SELECT version FROM schema_migrations ORDER BY version")]

    def _state(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _check_descriptor_model(self) -> None:
        stored = self._state("descriptor_model")
        if stored is None:
            self._db.execute("INSERT OR IGNORE INTO state VALUES ('descriptor_model', ?)",
                             (json.dumps({"model": self.descriptor_model, "dim": self.dim}),))
        elif json.loads(stored) != {"model": self.descriptor_model, "dim": self.dim}:
            raise ConfigError(f"the registry {self.path} holds descriptors of {stored}; this server embeds with "
                              f"{self.descriptor_model} ({self.dim}-D). Use another server.state_dir or re-enroll.")

    def check_signing_key(self, key_id: str) -> None:
        """One server per SQLite file: it may change its key between runs (old models then fail unlock: 409)."""

    @property
    def generation(self) -> int:
        return int(self._state("generation") or 0)

    @property
    def index_loaded_from(self) -> str:
        return self._loaded_from

    def _snapshot_paths(self) -> tuple[Path, Path]:
        return self.path.parent / "index.faiss", self.path.parent / "index.json"

    def _load_index(self) -> tuple[LocalIndex, str]:
        import faiss

        rows = self._db.execute("SELECT id, user_id FROM users").fetchall()
        idx_path, meta_path = self._snapshot_paths()
        generation = self.generation
        try:
            meta = json.loads(meta_path.read_text())
            index = faiss.read_index(str(idx_path))
            if (meta["generation"] == generation and index.ntotal == len(rows) == meta["ntotal"]
                    and meta.get("database", self.path.name) == self.path.name):
                return LocalIndex(self.dim, index, dict(rows), generation), "snapshot"
        except (OSError, ValueError, KeyError, RuntimeError):
            pass   # missing or stale snapshot: rebuild from the database below
        return LocalIndex.build(self.dim, self._db.execute("SELECT id, user_id, descriptor FROM users"),
                                generation), "database"

    def save_snapshot(self) -> None:
        """Write the index snapshot (at shutdown); a crash just means a rebuild at the next start."""
        with self._lock:
            idx_path, meta_path = self._snapshot_paths()
            generation, ntotal = self.index.write(str(idx_path) + ".tmp")
            os.replace(str(idx_path) + ".tmp", idx_path)
            meta_path.with_suffix(".tmp").write_text(json.dumps({"generation": generation, "ntotal": ntotal,
                                                                 "database": self.path.name}))
            os.replace(meta_path.with_suffix(".tmp"), meta_path)

    def close(self) -> None:
        self.save_snapshot()
        self._db.close()

    # -- changes -----------------------------------------------------------------------------------
    def add(self, user_id: str, descriptor: np.ndarray, model: bytes, model_sha256: str, info: dict[str, Any],
            replace: bool = False) -> tuple[UserRecord, bool]:
        """Insert a user (or replace one when ``replace``); one transaction, then the index."""
        vec = as_descriptor(descriptor, self.dim)
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
                generation = int(cur.execute(BUMP_GENERATION).fetchone()[0])
                fault("before_commit")
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            fault("after_commit")
            self.index.apply(generation, [old[0]] if old is not None else [], [(new_id, user_id, vec)])
        return UserRecord(new_id, user_id, created, vec, model_sha256, info, generation), old is not None

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
                generation = int(cur.execute(BUMP_GENERATION).fetchone()[0])
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            self.index.apply(generation, [row[0]], [])
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
        return self.index.search(descriptor, k)   # changes reach the index under the writer lock, after commit

    def local_state(self) -> dict[str, Any]:
        generation, names, _ = self.index.state()
        return {"backend": "sqlite", "index": len(names), "index_generation": generation}

    def consistency(self) -> dict[str, Any]:
        """Database rows vs index entries (what /healthz reports and the crash tests check)."""
        with self._lock:
            rows = dict(self._db.execute("SELECT id, user_id FROM users").fetchall())
            generation = self.generation
            index_generation, names, faiss_ok = self.index.state()
            return {"backend": "sqlite", "users": len(rows), "index": self.index.ntotal,
                    "consistent": faiss_ok and names == rows and index_generation == generation,
                    "generation": generation, "index_generation": index_generation}
