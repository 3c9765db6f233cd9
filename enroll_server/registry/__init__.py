"""The user registry: a database is the source of truth, each server's faiss index is derived from it.

Backends are chosen by the URL scheme of ``server.registry`` (``HYPERVER_SERVER_REGISTRY``):

    sqlite:///server_state/registry.sqlite3     the embedded default, one server process
    postgresql://user@host:5432/dbname          shared by several replicas (psycopg 3)

Both keep the guarantees listed in enroll_server.registry.base.
"""
from __future__ import annotations

from typing import Any, Callable
from urllib.parse import urlsplit

from hyperver.errors import ConfigError
from hyperver.registry import Registry

from .base import FAULT_ENV, DuplicateUser, RegistryBackend, RegistryUnavailable, UserRecord

__all__ = ["BACKENDS", "FAULT_ENV", "DuplicateUser", "RegistryBackend", "RegistryUnavailable", "UserRecord",
           "backend_for", "open_registry"]

BACKENDS: Registry[RegistryBackend] = Registry("server.registry URL scheme")


@BACKENDS.register("sqlite")
def _sqlite(**kw: Any) -> RegistryBackend:
    from .sqlite import SQLiteRegistry

    return SQLiteRegistry.from_url(**kw)


@BACKENDS.register("postgresql")
def _postgresql(**kw: Any) -> RegistryBackend:
    from .postgres import PostgresRegistry   # imports psycopg only for this backend

    return PostgresRegistry.from_url(**kw)


BACKENDS.register("postgres")(_postgresql)   # libpq accepts both spellings


def backend_for(url: str) -> Callable[..., RegistryBackend]:
    """The factory for ``url``'s scheme; ConfigError for something that is not a registry URL."""
    scheme = urlsplit(url).scheme if "://" in url else ""
    if not scheme:
        raise ConfigError(f"server.registry {url!r} is not a URL: use sqlite:///PATH or "
                          "postgresql://USER@HOST:PORT/DBNAME")
    return BACKENDS.get(scheme.lower())


def open_registry(url: str, dim: int, descriptor_model: str, poll_s: float = 1.0) -> RegistryBackend:
    """Open (and migrate) the registry at ``url`` for ``dim``-D descriptors of ``descriptor_model``."""
    return backend_for(url)(url=url, dim=dim, descriptor_model=descriptor_model, poll_s=poll_s)
