"""What every registry backend guarantees, whichever database holds the users.

* An enrollment is one transaction: the descriptor, the signed model, its sha256 and the signing
  metadata are committed together or not at all, and only a committed enrollment is visible.
* The duplicate policy is the database's: ``user_id`` is UNIQUE, so of two concurrent enrollments
  of one id (from one server or from several replicas) exactly one wins unless ``replace`` is set.
* Every committed change (enroll, replace, delete) bumps the registry's *generation* in the same
  transaction; a server's faiss index records the generation it reflects, so "is this index
  current?" is one comparison.
* Delete is final: the row is gone when the call returns, and no index answers it afterwards.
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from hyperver.errors import HyperVerError

FAULT_ENV = "HYPERVER_SERVER_FAULT"   # tests only: 'before_commit' | 'after_commit' kills the process (kill -9) there


class DuplicateUser(Exception):
    """The user id is already enrolled and the enrollment did not ask to replace it."""


class RegistryUnavailable(HyperVerError):
    """The registry's database cannot be reached, or dropped the connection mid-request.

    The server answers 503 with this message: the request can be retried once the database is back.
    An enrollment that got this answer was not acknowledged; it may or may not have been committed
    (a connection lost during COMMIT cannot tell), which a retry shows as 409 already_enrolled.
    """


@dataclass
class UserRecord:
    id: int
    user_id: str
    created: float
    descriptor: np.ndarray
    model_sha256: str
    info: dict[str, Any]
    generation: int | None = None     # the registry generation this change committed as (add() only)

    def public(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "created": self.created, "model_sha256": self.model_sha256, **self.info}


@runtime_checkable
class RegistryBackend(Protocol):
    """The user registry as the enrollment service uses it (enroll_server.service)."""

    dim: int
    descriptor_model: str

    @property
    def index_loaded_from(self) -> str:
        """'snapshot' or 'database': where this process's faiss index came from at start-up."""

    def add(self, user_id: str, descriptor: np.ndarray, model: bytes, model_sha256: str, info: dict[str, Any],
            replace: bool = False) -> tuple[UserRecord, bool]:
        """Insert a user, or replace one when ``replace``; (record, whether one was replaced).
        Raises DuplicateUser when the id is enrolled and ``replace`` is false."""

    def delete(self, user_id: str) -> bool:
        """Remove a user; False when there was none."""

    def get(self, user_id: str) -> UserRecord | None: ...

    def model(self, user_id: str) -> tuple[bytes, dict[str, Any]] | None:
        """(the signed artifact, its info with ``model_sha256``) or None."""

    def count(self) -> int: ...

    def search(self, descriptor: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The ``k`` nearest users by cosine similarity, after every change committed before the call."""

    def consistency(self) -> dict[str, Any]:
        """What /healthz reports: users, index entries, generation (database) and index_generation (this
        process), and whether the index holds exactly the database's users at the database's generation."""

    def local_state(self) -> dict[str, Any]:
        """This process's side of consistency() (index entries and generation), without the database."""

    def check_signing_key(self, key_id: str) -> None:
        """Refuse (ConfigError) a signing key other than the one the registry's other servers sign with."""

    def close(self) -> None: ...


def fault(point: str) -> None:
    """Crash drills (tests): kill -9 this process at ``point`` when HYPERVER_SERVER_FAULT names it."""
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def as_descriptor(descriptor: np.ndarray, dim: int) -> np.ndarray:
    """``descriptor`` as a contiguous float32 vector of ``dim`` values (ValueError otherwise)."""
    vec = np.ascontiguousarray(descriptor, np.float32).reshape(-1)
    if vec.size != dim:
        raise ValueError(f"descriptor has {vec.size} values, the registry holds {dim}-D ones")
    return vec
