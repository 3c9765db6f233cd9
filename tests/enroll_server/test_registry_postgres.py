"""The PostgreSQL registry in-process: two PostgresRegistry objects on one database stand for two replicas.

A throw-away cluster (conftest ``postgres``), a fresh database per test; 4-D descriptors, since the
registry does not care where they come from (the real server over HTTP: test_scale_out.py).
"""
from __future__ import annotations

import hashlib
import threading
import time

import numpy as np
import psycopg
import pytest

from hyperver.errors import ConfigError

from tests.enroll_server.conftest import API_KEY, jpeg_bytes

DIM = 4
MODEL = b"signed-model-bytes"
SHA = hashlib.sha256(MODEL).hexdigest()


def unit(*values: float) -> np.ndarray:
    v = np.array(values, np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture()
def open_replica(pg_url):
    from enroll_server.registry import open_registry

    opened = []

    def open_(poll_s: float = 1.0, dim: int = DIM):
        registry = open_registry(pg_url, dim, "test-descriptor", poll_s=poll_s)
        opened.append(registry)
        return registry

    yield open_
    for r in opened:
        r.close()


def wait_until(condition, timeout: float) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout``."""
    t0 = time.perf_counter()
    while not condition():
        assert time.perf_counter() - t0 < timeout, f"not within {timeout} s"
        time.sleep(0.005)
    return time.perf_counter() - t0


def sql(url: str, query: str, params=()) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def test_migrations_are_versioned_idempotent_and_never_downgraded(open_replica, pg_url):
    a = open_replica()
    b = open_replica()           # a second replica starting: nothing to apply
    assert a.schema_versions() == b.schema_versions() == [1]
    assert sql(pg_url, "SELECT version, name FROM schema_migrations") == \
        [(1, "users, registry state, generation and change log")]
    sql(pg_url, "INSERT INTO schema_migrations (version, name) VALUES (2, 'from a newer server')")
    with pytest.raises(ConfigError, match=r"schema version\(s\) \[2\], newer than this server knows \(up to 1\)"):
        open_replica()


def test_concurrent_enrollments_of_one_id_from_two_replicas_exactly_one_wins(open_replica, pg_url):
    from enroll_server.registry import DuplicateUser

    replicas = [open_replica(), open_replica()]
    start = threading.Barrier(8)
    outcomes: list[str] = []

    def enroll(i: int) -> None:
        start.wait()
        try:
            replicas[i % 2].add("zico", unit(1, i, 0, 0), MODEL, SHA, {"attempt": i})
            outcomes.append("won")
        except DuplicateUser:
            outcomes.append("duplicate")

    threads = [threading.Thread(target=enroll, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["duplicate"] * 7 + ["won"]
    assert sql(pg_url, "SELECT count(*) FROM users") == [(1,)]
    assert sql(pg_url, "SELECT value FROM registry_generation") == [(1,)]   # the losers bumped nothing
    winner = replicas[0].get("zico").info["attempt"]
    for r in replicas:
        assert r.search(unit(1, winner, 0, 0), 5) == [("zico", pytest.approx(1.0))]
        assert r.consistency()["consistent"]


def test_changes_are_seen_by_the_other_replica_and_delete_is_final(open_replica):
    a, b = open_replica(), open_replica()
    first, _ = a.add("zico", unit(1, 0, 0, 0), MODEL, SHA, {"n": 1})
    assert first.generation == 1
    assert b.search(unit(1, 0, 0, 0), 1) == [("zico", pytest.approx(1.0))]    # right after the commit
    model = b"another-model"
    second, replaced = b.add("zico", unit(0, 1, 0, 0), model, hashlib.sha256(model).hexdigest(), {"n": 2},
                             replace=True)
    assert replaced and second.generation == 2 and second.id != first.id
    assert a.get("zico").info == {"n": 2} and a.model("zico") == (model, {"n": 2, "model_sha256": second.model_sha256})
    assert a.search(unit(1, 0, 0, 0), 5) == [("zico", pytest.approx(0.0, abs=1e-6))]   # only the new descriptor
    assert a.delete("zico") and not a.delete("zico")
    for r in (a, b):
        assert r.get("zico") is None and r.model("zico") is None and r.search(unit(0, 1, 0, 0), 5) == []
        check = r.consistency()
        assert (check["users"], check["index"], check["generation"], check["consistent"]) == (0, 0, 3, True)
    assert not b.delete("zico")


def test_an_idle_replica_follows_by_notification(open_replica):
    a = open_replica()
    b = open_replica(poll_s=30)     # the poll would take 30 s: only the notification can be this fast
    wait_until(lambda: b.local_state()["listening"], 10)
    record, _ = a.add("zico", unit(1, 0, 0, 0), MODEL, SHA, {})
    took = wait_until(lambda: b.local_state()["index_generation"] >= record.generation, 5)
    assert took < 2, took
    assert b.local_state()["index"] == 1


def test_a_missed_notification_is_caught_by_the_poll(open_replica, monkeypatch):
    from enroll_server.registry import postgres

    a = open_replica()
    b = open_replica(poll_s=0.3)
    wait_until(lambda: b.local_state()["listening"], 10)
    monkeypatch.setattr(postgres, "CHANNEL", "nobody_listens_here")   # a's notifications never reach b
    record, _ = a.add("zico", unit(1, 0, 0, 0), MODEL, SHA, {})
    wait_until(lambda: b.local_state()["index_generation"] >= record.generation, 3)


def test_a_replica_that_lost_its_connection_catches_up(open_replica, pg_url):
    from enroll_server.registry.postgres import FOLLOWER_NAME

    a = open_replica()
    b = open_replica(poll_s=0.3)
    wait_until(lambda: a.local_state()["listening"] and b.local_state()["listening"], 10)
    dropped = sql(pg_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND application_name = %s", (FOLLOWER_NAME,))
    assert len(dropped) == 2                          # a's and b's followers
    for name in ("zico", "al_gore"):
        a.add(name, unit(1, len(name), 0, 0), MODEL, SHA, {})
    assert a.delete("zico")
    wait_until(lambda: b.local_state()["index_generation"] == 3, 10)
    assert b.consistency()["consistent"] and b.consistency()["listening"]
    late = open_replica()                              # a replica starting now builds its index from the database
    assert late.index_loaded_from == "database"
    assert late.consistency() | {"listening": True} == {**b.consistency(), "listening": True}


def test_the_database_checks_the_model_hash_and_the_shared_settings(open_replica, pg_url):
    a = open_replica()
    with pytest.raises(psycopg.errors.CheckViolation, match="model_sha256_is_the_models"):
        a.add("zico", unit(1, 0, 0, 0), MODEL, "0" * 64, {})
    assert a.get("zico") is None and a.consistency()["generation"] == 0
    with pytest.raises(ConfigError, match=r"holds descriptors of .*this server embeds with test-descriptor \(8-D\)"):
        open_replica(dim=8)
    a.check_signing_key("key-one")
    a.check_signing_key("key-one")
    with pytest.raises(ConfigError, match="sign with key id key-one; this server's key is key-two"):
        open_replica().check_signing_key("key-two")


def test_an_unreachable_database_is_registry_unavailable():
    from enroll_server.process import free_port
    from enroll_server.registry import RegistryUnavailable, open_registry

    t0 = time.perf_counter()
    with pytest.raises(RegistryUnavailable, match=r"the registry database \(postgresql://u:\*\*\*@127\.0\.0\.1:\d+/x\) "
                                                  r"is unavailable: .*refused"):
        open_registry(f"postgresql://u:secret@127.0.0.1:{free_port()}/x", DIM, "m")
    assert time.perf_counter() - t0 < 5


def test_database_down_is_a_clear_503_and_service_resumes(make_service, postgres, pg_url, photos):
    from fastapi.testclient import TestClient

    from enroll_server.app import create_app

    service = make_service(**{"server.registry": pg_url})
    auth = {"X-API-Key": API_KEY}
    photo = [("photos", ("z.jpg", photos["zico"], "image/jpeg"))]
    with TestClient(create_app(service)) as client:
        assert client.post("/v1/enroll", data={"user_id": "zico"}, files=photo, headers=auth).status_code == 200
        postgres.stop()
        try:
            health = client.get("/healthz")
            assert health.status_code == 200 and health.json()["status"] == "degraded", health.text
            assert "is unavailable" in health.json()["database_error"]
            for r in (client.post("/v1/enroll", data={"user_id": "al_gore"}, files=photo, headers=auth),
                      client.get("/v1/users/zico", headers=auth),
                      client.post("/v1/identify", files=[("photo", ("p.jpg", photos["zico"], "image/jpeg"))],
                                  headers=auth)):
                assert r.status_code == 503, r.text
                assert r.json()["error"] == "registry_unavailable" and r.headers["retry-after"] == "5"
                assert "the registry database" in r.json()["detail"] and "is unavailable" in r.json()["detail"]
        finally:
            postgres.start()
        health = client.get("/healthz").json()
        assert health["status"] == "ok" and health["users"] == 1
        found = client.post("/v1/identify", files=[("photo", ("p.jpg", photos["zico"], "image/jpeg"))], headers=auth)
        assert found.json()["matches"][0]["user_id"] == "zico"
        blank = client.post("/v1/enroll", data={"user_id": "nobody"}, headers=auth,
                            files=[("photos", ("b.jpg", jpeg_bytes(np.zeros((64, 64, 3), np.uint8)), "image/jpeg"))])
        assert blank.status_code == 422     # after the outage, ordinary errors are themselves again
