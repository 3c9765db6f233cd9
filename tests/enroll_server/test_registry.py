"""Choosing the registry backend from server.registry / HYPERVER_SERVER_REGISTRY, and the SQLite
backend's versioned schema (the PostgreSQL backend: test_registry_postgres.py)."""
from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from hyperver.errors import ConfigError

from tests.enroll_server.conftest import API_KEY

# The schema before migrations were versioned: such a registry must open unchanged.
UNVERSIONED_SCHEMA = """
CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL UNIQUE, created REAL NOT NULL,
                    descriptor BLOB NOT NULL, model BLOB NOT NULL, model_sha256 TEXT NOT NULL, info TEXT NOT NULL);
CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def settings(tmp_path, env=None, **server):
    from hyperver.config import load_config

    from enroll_server.settings import ServerSettings

    overrides = [f"server.state_dir={tmp_path / 'state'}"] + [f"server.{k}={v}" for k, v in server.items()]
    return ServerSettings.from_config(load_config(overrides=overrides, env={}),
                                      env={"HYPERVER_API_KEY": API_KEY, **(env or {})})


def test_the_default_is_sqlite_in_the_state_folder(tmp_path):
    assert settings(tmp_path).registry == f"sqlite:///{tmp_path / 'state' / 'registry.sqlite3'}"
    assert settings(tmp_path, registry="sqlite:///elsewhere/r.sqlite3").registry == "sqlite:///elsewhere/r.sqlite3"


def test_the_environment_wins_and_stays_out_of_repr(tmp_path):
    url = "postgresql://app:secret@127.0.0.1:5432/hyperver"
    s = settings(tmp_path, env={"HYPERVER_SERVER_REGISTRY": url}, registry="sqlite:///x.sqlite3")
    assert s.registry == url and "secret" not in repr(s)


@pytest.mark.parametrize("url, says", [
    ("mysql://u@h/db", "unknown server.registry URL scheme 'mysql'; available: postgres, postgresql, sqlite"),
    ("server_state/registry.sqlite3", "is not a URL: use sqlite:///PATH or postgresql://"),
])
def test_a_wrong_registry_url_is_a_config_error(tmp_path, url, says):
    with pytest.raises(ConfigError) as err:
        settings(tmp_path, registry=url)
    assert says in str(err.value)


def test_bad_poll_interval_and_bad_urls_at_open(tmp_path):
    from enroll_server.registry import open_registry

    with pytest.raises(ConfigError, match="registry_poll_s must be > 0"):
        settings(tmp_path, registry_poll_s=0)
    with pytest.raises(ConfigError, match=r"sqlite:///PATH \(relative\) or sqlite:////PATH \(absolute\)"):
        open_registry("sqlite:///", 4, "m")
    pytest.importorskip("psycopg", reason="psycopg (pip install 'hyperver[postgres]') checks PostgreSQL URLs")
    with pytest.raises(ConfigError, match="the port must be a number"):
        open_registry("postgresql://u@127.0.0.1:fivefourthreetwo/db", 4, "m")
    with pytest.raises(ConfigError, match="not a valid PostgreSQL URL"):
        open_registry("postgresql://u@127.0.0.1/db?no_such_option=1", 4, "m")


def test_sqlite_schema_is_versioned_and_an_unversioned_registry_opens_unchanged(tmp_path):
    from enroll_server.registry import open_registry

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(UNVERSIONED_SCHEMA)
    vec = np.array([1, 0, 0, 0], np.float32)
    db.execute("INSERT INTO users VALUES (7, 'zico', 1.0, ?, x'00', 'sha', '{}')", (vec.tobytes(),))
    db.executemany("INSERT INTO state VALUES (?, ?)", [("generation", "5"),
                                                       ("descriptor_model", json.dumps({"model": "m", "dim": 4}))])
    db.commit()
    db.close()
    for _ in range(2):       # applying the migrations again changes nothing
        registry = open_registry(f"sqlite:///{path}", 4, "m")
        assert registry.schema_versions() == [1]
        check = registry.consistency()
        assert (check["users"], check["generation"], check["consistent"]) == (1, 5, True)
        assert registry.search(vec, 1) == [("zico", 1.0)]
        registry.close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO schema_migrations VALUES (99, 'from the future', 0)")
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match=r"schema version\(s\) \[99\], newer than this server knows"):
        open_registry(f"sqlite:///{path}", 4, "m")


@pytest.mark.parametrize("url, shown", [
    ("postgresql://app:s3cret@db.local:5432/hyperver", "postgresql://app:***@db.local:5432/hyperver"),
    ("postgresql://app@db.local/hyperver?sslmode=require&password=s3cret",
     "postgresql://app@db.local/hyperver?sslmode=require&password=***"),
    ("postgresql://db.local/hyperver", "postgresql://db.local/hyperver"),
])
def test_logs_and_errors_show_the_registry_url_without_its_password(url, shown):
    from enroll_server.registry.postgres import redact

    assert redact(url) == shown


def test_missing_postgres_or_haproxy_says_why(monkeypatch):
    """What the scale-out tests' skip message shows where the packages are missing."""
    from enroll_server import local_services

    monkeypatch.setattr(local_services.shutil, "which", lambda name: None)
    monkeypatch.setattr(local_services.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(local_services.os, "access", lambda path, mode: False)
    monkeypatch.delenv(local_services.ENV_INSTALL_ERROR, raising=False)
    with pytest.raises(local_services.MissingService, match=r"PostgreSQL's initdb not found; as root: apt-get "
                                                            r"install postgresql \(\.ci/run does it\)"):
        local_services.pg_binary("initdb")
    monkeypatch.setenv(local_services.ENV_INSTALL_ERROR, "apt-get install postgresql haproxy failed (no network)")
    with pytest.raises(local_services.MissingService, match=r"haproxy not found: apt-get install postgresql "
                                                            r"haproxy failed \(no network\)"):
        local_services.haproxy_binary()
