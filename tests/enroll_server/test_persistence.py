"""The real server process (uvicorn on 127.0.0.1): restart, and kill -9 in the middle of enrollments."""
from __future__ import annotations

import threading
import time

import httpx

from tests.enroll_server.conftest import API_KEY


def enroll(client: httpx.Client, user: str, photo: bytes) -> httpx.Response:
    return client.post("/v1/enroll", data={"user_id": user}, files=[("photos", (f"{user}.jpg", photo, "image/jpeg"))])


def check_registry(server, photos: dict[str, bytes], must_have: set[str],
                   must_lack: set[str] = frozenset()) -> set[str]:
    """Health says DB and index agree; every stored user is found first by its own photo; returns the users."""
    with server.client() as c:
        health = c.get("/healthz").json()
        assert health["consistent"] and health["users"] == health["index"], health
        present = {u for u in photos if c.get(f"/v1/users/{u}").status_code == 200}
        assert len(present) == health["users"]
        assert must_have <= present and not (must_lack & present), (present, must_have, must_lack)
        for user in present:
            top = c.post("/v1/identify", files=[("photo", ("p.jpg", photos[user], "image/jpeg"))]).json()["matches"][0]
            assert top["user_id"] == user and top["similarity"] > 0.999
            assert c.get(f"/v1/users/{user}/model").status_code == 200
    return present


def test_users_and_index_survive_a_restart(launch, photos):
    server = launch()
    with server.client() as c:
        for user in ("zico", "al_gore", "adam_sandler"):
            assert enroll(c, user, photos[user]).status_code == 200
        assert c.delete("/v1/users/adam_sandler").status_code == 200
        model = c.get("/v1/users/zico/model").content
    assert server.stop() in (0, -15)               # uvicorn re-raises SIGTERM after a graceful shutdown
    again = launch()
    with again.client() as c:
        assert c.get("/healthz").json()["index_loaded_from"] == "snapshot"
    check_registry(again, photos, {"zico", "al_gore"}, {"adam_sandler"})
    with again.client() as c:
        assert c.get("/v1/users/zico/model").content == model


def test_kill_9_at_the_commit_then_restart(launch, photos):
    """Killed just before the DB commit: the user is absent. Just after it (index not yet updated):
    the user is present and identifiable, the index rebuilt from the database."""
    server = launch(fault="after_commit")
    with server.client() as c:
        try:
            enroll(c, "zico", photos["zico"])
        except httpx.HTTPError:
            pass                                   # the process died mid-request: no response
    assert server.proc.wait(timeout=30) == -9
    server = launch(fault="before_commit")
    with server.client() as c:
        try:
            enroll(c, "al_gore", photos["al_gore"])
        except httpx.HTTPError:
            pass
    assert server.proc.wait(timeout=30) == -9
    server = launch()
    with server.client() as c:
        assert c.get("/healthz").json()["index_loaded_from"] == "database"
    check_registry(server, photos, {"zico"}, {"al_gore"})


def test_kill_9_during_concurrent_enrollments(launch, photos):
    server = launch()
    results: dict[str, int | str] = {}

    def worker(user: str) -> None:
        try:
            with httpx.Client(base_url=server.url, headers={"X-API-Key": API_KEY}, timeout=60) as c:
                results[user] = enroll(c, user, photos[user]).status_code
        except httpx.HTTPError as exc:
            results[user] = type(exc).__name__

    threads = [threading.Thread(target=worker, args=(u,)) for u in photos]
    for t in threads:
        t.start()
    deadline = time.time() + 60
    while not any(v == 200 for v in results.values()) and time.time() < deadline:
        time.sleep(0.01)
    server.kill()                                  # kill -9 with enrollments still queued or running
    for t in threads:
        t.join(timeout=60)
    acknowledged = {u for u, v in results.items() if v == 200}
    assert acknowledged and len(acknowledged) < len(photos), results
    # Every acknowledged enrollment is there; an unanswered one may or may not have committed.
    check_registry(launch(), photos, acknowledged)
