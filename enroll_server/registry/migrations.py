"""Versioned schema migrations: an ordered list per backend, and a ``schema_migrations`` table that
records which versions a database has (version, name, when). No ORM: each migration is plain SQL.

A migration is applied in one transaction together with its row in ``schema_migrations``, so a
server killed mid-migration leaves the previous version. A database at a version this server
does not know (written by a newer server) is refused rather than used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from hyperver.errors import ConfigError


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def check_migrations(migrations: Sequence[Migration]) -> None:
    """Versions must be 1, 2, 3, ...: a gap or a repeat is a programming error, caught at import."""
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migration versions must be 1..{len(versions)} in order, got {versions}")


def pending(migrations: Sequence[Migration], applied: Iterable[int], where: str) -> list[Migration]:
    """The migrations ``where`` (a database, for messages) still needs, oldest first."""
    applied = set(applied)
    known = {m.version for m in migrations}
    newer = sorted(applied - known)
    if newer:
        raise ConfigError(f"{where} has schema version(s) {newer}, newer than this server knows "
                          f"(up to {max(known)}): upgrade the server, or point server.registry elsewhere")
    return [m for m in migrations if m.version not in applied]
