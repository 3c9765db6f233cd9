"""The shared backend: one PostgreSQL database, several enrollment-server replicas (psycopg 3).

Every replica is stateless apart from its faiss index, which follows the database:

* Each change (enroll, replace, delete) runs in one transaction that first bumps the single
  ``registry_generation`` row, then writes the user row and a ``registry_changes`` row tagged with
  that generation, and sends ``NOTIFY hyperver_registry`` (delivered at commit). The generation
  row's lock serialises writers, so generations commit in order and without gaps: a replica whose
  index is at generation g needs exactly the changes with generation > g.
* A follower thread per replica LISTENs; a notification (or, for a missed one, a poll every
  ``server.registry_poll_s``) applies the new changes to the index. On start, and after the
  database comes back, the replica catches up the same way.
* ``search`` (identify) first applies whatever was committed before it arrived: one short query
  when the index is current. A probe sent to any replica after an enrollment was acknowledged by
  another therefore finds that user; the follower keeps that query from having work to do.

The database enforces the duplicate policy (UNIQUE user_id, ``INSERT ... ON CONFLICT DO NOTHING``:
of two concurrent enrollments of one id, exactly one is inserted) and the model's integrity (a
CHECK that ``model_sha256`` is the sha256 of the stored bytes). A database that cannot be reached
raises RegistryUnavailable, which the server answers with 503.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

from hyperver.errors import ConfigError

from .base import DuplicateUser, RegistryUnavailable, UserRecord, as_descriptor, fault
from .index import LocalIndex
from .migrations import Migration, check_migrations, pending

try:
    import psycopg
    from psycopg.pq import TransactionStatus
except ImportError:          # the SQLite default needs no driver; opening a postgresql:// URL says what to install
    psycopg = None

log = logging.getLogger("enroll_server.registry")

CHANNEL = "hyperver_registry"           # NOTIFY channel; the payload is the committed generation
MIGRATIONS_LOCK = 0x68797076            # pg_advisory_xact_lock key: replicas starting together migrate one at a time
FOLLOWER_NAME = "hyperver-registry-follower"   # application_name of a replica's LISTEN connection
RECONNECT_MAX_S = 2.0                   # a follower that lost the database tries again at least this often
STOP_CHECK_S = 0.25                     # how often the follower looks at its stop flag
POOL_SIZE = 8                           # connections per replica; statements are short (the face pipeline is not)
POOL_WAIT_S = 30.0                      # a request waiting longer for a connection gets 503
CONNECTION_DEFAULTS = {"connect_timeout": "5", "application_name": "hyperver-enroll-server",
                       "options": "-c statement_timeout=30000"}   # a hung statement fails (503), never hangs a request

MIGRATIONS = [
    Migration(1, "users, registry state, generation and change log", """
CREATE TABLE users (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,     -- faiss id; never reused
    user_id TEXT NOT NULL UNIQUE,                            -- the duplicate policy lives here
    created DOUBLE PRECISION NOT NULL,
    descriptor BYTEA NOT NULL,                               -- float32 unit vector
    model BYTEA NOT NULL,                                    -- the signed artifact
    model_sha256 TEXT NOT NULL                               -- the database checks it is the model's
        CONSTRAINT model_sha256_is_the_models CHECK (model_sha256 = encode(sha256(model), 'hex')),
    info TEXT NOT NULL                                       -- JSON: f version, threshold, runtime, signing key id, ...
);
CREATE TABLE registry_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE registry_generation (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    value BIGINT NOT NULL
);
INSERT INTO registry_generation VALUES (TRUE, 0);
CREATE TABLE registry_changes (
    generation BIGINT NOT NULL,
    op TEXT NOT NULL CHECK (op IN ('add', 'delete')),
    row_id BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (generation, row_id)
);
"""),
]
check_migrations(MIGRATIONS)
MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"""


def redact(url: str) -> str:
    """The URL with its password (in the user part or a ``password=`` option) as *** (for logs and errors)."""
    parts = urlsplit(url)
    if parts.password is not None:
        user, host = parts.netloc.rsplit("@", 1)
        parts = parts._replace(netloc=f"{user.split(':', 1)[0]}:***@{host}")
    query = [(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit(parts._replace(query=urlencode(query, safe="*")))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ConnectionPool:
    """A few autocommit connections reused across requests, each checked with a round trip when taken:
    after a database restart the idle ones are dead, and a request must not fail on one of them."""

    def __init__(self, conninfo: str, size: int = POOL_SIZE, wait_s: float = POOL_WAIT_S):
        self._conninfo, self.size, self.wait_s = conninfo, size, wait_s
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(size)

    @contextmanager
    def connection(self) -> Iterator[Any]:
        if not self._slots.acquire(timeout=self.wait_s):
            raise RegistryUnavailable(f"all {self.size} registry database connections stayed busy for "
                                      f"{self.wait_s:g} s")
        conn = None
        try:
            conn = self._take()
            yield conn
        finally:
            if conn is not None:
                if conn.closed or conn.broken or conn.info.transaction_status != TransactionStatus.IDLE:
                    conn.close()
                else:
                    with self._lock:
                        self._idle.append(conn)
            self._slots.release()

    def _take(self) -> Any:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return psycopg.connect(self._conninfo, autocommit=True)
            try:
                conn.execute("SELECT 1")
                return conn
            except psycopg.Error:
                conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class PostgresRegistry:
    def __init__(self, url: str, dim: int, descriptor_model: str, poll_s: float = 1.0):
        if psycopg is None:
            raise ConfigError("server.registry is a PostgreSQL URL but the psycopg driver is not installed: "
                              "pip install 'hyperver[postgres]'")
        self.url, self.where = url, redact(url)
        self.dim, self.descriptor_model, self.poll_s = dim, descriptor_model, poll_s
        try:
            params = psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise ConfigError(f"server.registry {self.where!r} is not a valid PostgreSQL URL: {exc}") from None
        if not all(p.strip().isdigit() for p in str(params.get("port") or "5432").split(",")):
            raise ConfigError(f"server.registry {self.where!r}: the port must be a number, got {params['port']!r}")
        for key, value in CONNECTION_DEFAULTS.items():
            params.setdefault(key, value)
        self._conninfo = psycopg.conninfo.make_conninfo(**params)
        self._pool = ConnectionPool(self._conninfo)
        self._follow_lock = threading.Lock()      # one catch-up at a time: changes apply in generation order
        self._stop = threading.Event()
        self._listening = threading.Event()
        try:
            self._migrate()
            self._check_descriptor_model()
            self._index = self._load()
        except BaseException:
            self._pool.close()
            raise
        self._follower = threading.Thread(target=self._follow, name="registry-follower", daemon=True)
        self._follower.start()

    @classmethod
    def from_url(cls, url: str, dim: int, descriptor_model: str, poll_s: float = 1.0, **_: Any) -> "PostgresRegistry":
        return cls(url, dim, descriptor_model, poll_s)

    def __repr__(self) -> str:
        return f"PostgresRegistry({self.where!r})"

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        """A pooled connection; a lost or refused connection becomes RegistryUnavailable (503)."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise RegistryUnavailable(f"the registry database ({self.where}) is unavailable: "
                                      f"{_first_line(exc)}") from None

    @contextmanager
    def _snapshot(self) -> Iterator[Any]:
        """A read-only transaction that sees one committed state across its statements."""
        with self._connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield conn

    # -- start-up ----------------------------------------------------------------------------------
    def _migrate(self) -> None:
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATIONS_LOCK,))
            conn.execute(MIGRATIONS_TABLE)
            applied = [v for (v,) in conn.execute("SELECT version FROM schema_migrations")]
            # All pending migrations and their rows in this one transaction: all of them or none.
            todo = pending(MIGRATIONS, applied, f"the registry database {self.where}")
            for m in todo:
                conn.execute(m.sql)
                conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (m.version, m.name))
        for m in todo:
            log.info("registry %s: applied schema migration %d (%s)", self.where, m.version, m.name)

    def schema_versions(self) -> list[int]:
        with self._connection() as conn:
            return [v for (v,) in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]

    def _claim(self, key: str, value: str) -> str:
        """The registry's value for ``key``, set to ``value`` if it has none."""
        with self._connection() as conn, conn.transaction():
            conn.execute("INSERT INTO registry_state VALUES (%s, %s) ON CONFLICT (key) DO NOTHING", (key, value))
            return conn.execute("SELECT value FROM registry_state WHERE key = %s", (key,)).fetchone()[0]

    def _check_descriptor_model(self) -> None:
        mine = {"model": self.descriptor_model, "dim": self.dim}
        stored = self._claim("descriptor_model", json.dumps(mine))
        if json.loads(stored) != mine:
            raise ConfigError(f"the registry database {self.where} holds descriptors of {stored}; this server "
                              f"embeds with {self.descriptor_model} ({self.dim}-D). Point server.registry at "
                              "another database or re-enroll.")

    def check_signing_key(self, key_id: str) -> None:
        """Every replica must sign with the same key, or devices would reject some replicas' models."""
        stored = self._claim("signing_key_id", key_id)
        if stored != key_id:
            raise ConfigError(
                f"the replicas of the registry {self.where} sign with key id {stored}; this server's key is "
                f"{key_id}. Start every replica with the same HYPERVER_SERVER_KEY (or artifacts.signing_key). "
                "To move all replicas to a new key: stop them all, run DELETE FROM registry_state WHERE "
                "key = 'signing_key_id', and start them with the new key (devices must trust both keys until "
                "every user is re-enrolled).")

    @property
    def index_loaded_from(self) -> str:
        return "database"

    def _load(self) -> LocalIndex:
        with self._snapshot() as conn:
            generation = conn.execute("SELECT value FROM registry_generation").fetchone()[0]
            rows = conn.execute("SELECT id, user_id, descriptor FROM users").fetchall()
        return LocalIndex.build(self.dim, rows, int(generation))

    # -- following the database ------------------------------------------------------------------
    def _catch_up(self) -> int:
        """Apply every change committed after the index's generation; the database's generation."""
        with self._follow_lock:
            since = self._index.generation
            with self._snapshot() as conn:
                generation = int(conn.execute("SELECT value FROM registry_generation").fetchone()[0])
                if generation == since:
                    return generation
                if generation < since:          # the database was replaced (e.g. restored): start over
                    log.warning("registry %s: database generation %d is behind this index's %d; rebuilding",
                                self.where, generation, since)
                    rows = conn.execute("SELECT id, user_id, descriptor FROM users").fetchall()
                    changes = None
                else:
                    # The user rows are read in the same snapshot: an 'add' whose row is gone was deleted
                    # by a later change in the same range, so skipping it is right.
                    changes = conn.execute(
                        "SELECT c.op, c.row_id, c.user_id, u.descriptor FROM registry_changes c "
                        "LEFT JOIN users u ON c.op = 'add' AND u.id = c.row_id "
                        "WHERE c.generation > %s AND c.generation <= %s", (since, generation)).fetchall()
            if changes is None:
                self._index = LocalIndex.build(self.dim, rows, generation)
            else:
                self._index.apply(generation, [i for op, i, _, _ in changes if op == "delete"],
                                  [(i, u, d) for op, i, u, d in changes if op == "add" and d is not None])
            return generation

    def _after_commit(self, removed: list[int], added: list[tuple[int, str, np.ndarray]]) -> None:
        """Bring our own committed change into the index. If the database went away right after the
        commit, the change is applied alone (the generation stays put: the follower fills the gap
        later), so the request is still acknowledged: it was committed."""
        try:
            self._catch_up()
        except RegistryUnavailable:
            with self._follow_lock:
                self._index.apply(self._index.generation, removed, added)

    def _follow(self) -> None:
        """LISTEN for committed generations; poll every poll_s for a missed one; reconnect when dropped."""
        outage_logged = False
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, application_name=FOLLOWER_NAME) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._listening.set()
                    self._catch_up()              # whatever was committed while nobody was listening
                    if outage_logged:
                        log.warning("registry %s: reachable again; index at generation %d", self.where,
                                    self._index.generation)
                        outage_logged = False
                    next_poll = time.monotonic() + self.poll_s
                    while not self._stop.is_set():
                        # Waits in short slices so that close() is prompt whatever poll_s is.
                        wait = max(0.0, min(next_poll - time.monotonic(), STOP_CHECK_S))
                        notified = [int(n.payload) for n in conn.notifies(timeout=wait, stop_after=1)]
                        if notified and notified[0] <= self._index.generation:
                            continue              # already applied (e.g. our own change, or a burst's earlier one)
                        if notified or time.monotonic() >= next_poll:
                            self._catch_up()      # a notification, or the periodic poll for a missed one
                            next_poll = time.monotonic() + self.poll_s
            except (psycopg.Error, RegistryUnavailable) as exc:
                self._listening.clear()
                if not outage_logged and not self._stop.is_set():
                    log.warning("registry %s: following the database failed (%s); retrying every %g s",
                                self.where, _first_line(exc), min(self.poll_s, RECONNECT_MAX_S))
                    outage_logged = True
                self._stop.wait(min(self.poll_s, RECONNECT_MAX_S))
        self._listening.clear()

    # -- changes -----------------------------------------------------------------------------------
    def add(self, user_id: str, descriptor: np.ndarray, model: bytes, model_sha256: str, info: dict[str, Any],
            replace: bool = False) -> tuple[UserRecord, bool]:
        vec = as_descriptor(descriptor, self.dim)
        created = time.time()
        with self._connection() as conn:
            with conn.transaction():
                # First: the generation row's lock orders this change after every committed one.
                generation = conn.execute("UPDATE registry_generation SET value = value + 1 RETURNING value"
                                          ).fetchone()[0]
                old = conn.execute("DELETE FROM users WHERE user_id = %s RETURNING id",
                                   (user_id,)).fetchone() if replace else None
                row = conn.execute(
                    "INSERT INTO users (user_id, created, descriptor, model, model_sha256, info) "
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (user_id) DO NOTHING RETURNING id",
                    (user_id, created, vec.tobytes(), model, model_sha256, json.dumps(info))).fetchone()
                if row is None:
                    raise DuplicateUser(user_id)  # leaves the block: rolled back, generation included
                new_id = row[0]
                changes = ([(generation, "delete", old[0], user_id)] if old else []) + \
                    [(generation, "add", new_id, user_id)]
                with conn.cursor() as cur:
                    cur.executemany("INSERT INTO registry_changes (generation, op, row_id, user_id) "
                                    "VALUES (%s, %s, %s, %s)", changes)
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(generation)))
                fault("before_commit")
            fault("after_commit")
        self._after_commit([old[0]] if old else [], [(new_id, user_id, vec)])
        return UserRecord(new_id, user_id, created, vec, model_sha256, info, int(generation)), old is not None

    def delete(self, user_id: str) -> bool:
        with self._connection() as conn:
            with conn.transaction():
                generation = conn.execute("UPDATE registry_generation SET value = value + 1 RETURNING value"
                                          ).fetchone()[0]
                row = conn.execute("DELETE FROM users WHERE user_id = %s RETURNING id", (user_id,)).fetchone()
                if row is None:
                    raise psycopg.Rollback()      # nothing to delete: the generation bump is undone too
                conn.execute("INSERT INTO registry_changes (generation, op, row_id, user_id) "
                             "VALUES (%s, 'delete', %s, %s)", (generation, row[0], user_id))
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(generation)))
        if row is None:
            return False
        self._after_commit([row[0]], [])
        return True

    # -- reads -------------------------------------------------------------------------------------
    def get(self, user_id: str) -> UserRecord | None:
        with self._connection() as conn:
            row = conn.execute("SELECT id, user_id, created, descriptor, model_sha256, info FROM users "
                               "WHERE user_id = %s", (user_id,)).fetchone()
        if row is None:
            return None
        return UserRecord(row[0], row[1], row[2], np.frombuffer(row[3], np.float32), row[4], json.loads(row[5]))

    def model(self, user_id: str) -> tuple[bytes, dict[str, Any]] | None:
        with self._connection() as conn:
            row = conn.execute("SELECT model, info, model_sha256 FROM users WHERE user_id = %s", (user_id,)).fetchone()
        return None if row is None else (bytes(row[0]), {**json.loads(row[1]), "model_sha256": row[2]})

    def count(self) -> int:
        with self._connection() as conn:
            return int(conn.execute("SELECT count(*) FROM users").fetchone()[0])

    def search(self, descriptor: np.ndarray, k: int) -> list[tuple[str, float]]:
        self._catch_up()           # everything committed before this request, even if a notification is late
        return self._index.search(descriptor, k)

    def consistency(self) -> dict[str, Any]:
        index_generation, names, faiss_ok = self._index.state()
        with self._snapshot() as conn:
            generation = int(conn.execute("SELECT value FROM registry_generation").fetchone()[0])
            rows = dict(conn.execute("SELECT id, user_id FROM users").fetchall())
        return {"backend": "postgresql", "users": len(rows), "index": len(names),
                "consistent": faiss_ok and index_generation == generation and names == rows,
                "generation": generation, "index_generation": index_generation,
                "lag": generation - index_generation, "listening": self._listening.is_set()}

    def local_state(self) -> dict[str, Any]:
        """What this replica knows without the database (/healthz while it is unreachable)."""
        generation, names, faiss_ok = self._index.state()
        return {"backend": "postgresql", "index": len(names), "index_generation": generation,
                "listening": self._listening.is_set()}

    def close(self) -> None:
        self._stop.set()
        self._follower.join(timeout=STOP_CHECK_S + 10)     # at most a slice, or one connection attempt
        self._pool.close()
