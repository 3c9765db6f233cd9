"""Three real server processes on one PostgreSQL registry behind HAProxy on 127.0.0.1: duplicate races,
visibility across replicas, kill -9 of a replica in a burst, and a database restart in a burst.

The replicas (and the database they share) live for the whole module; each test uses its own user
ids and photos, so a probe photo always has exactly one owner in the registry.
"""
from __future__ import annotations

import hashlib
import secrets
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import httpx
import pytest

from tests.enroll_server.conftest import API_KEY, REPO, server_overrides

DEPLOY_CONFIG = REPO / "enroll_server" / "deploy" / "haproxy.cfg"


@pytest.fixture(scope="module")
def haproxy():
    from enroll_server.local_services import MissingService, haproxy_binary

    try:
        return haproxy_binary()
    except MissingService as exc:
        pytest.skip(f"no HAProxy for the scale-out tests: {exc}")


@pytest.fixture(scope="module")
def replicas(postgres, haproxy, server_files, tmp_path_factory):
    from enroll_server.local_services import Replicas

    tmp = tmp_path_factory.mktemp("scale_out")
    url = postgres.create_database(f"scale_out_{secrets.token_hex(3)}")
    env = {"HYPERVER_API_KEY": API_KEY, "HYPERVER_SERVER_REGISTRY": url}
    with Replicas(3, server_overrides(server_files, tmp), env, tmp, cwd=REPO) as group:
        group.db_url = url
        yield group


def enroll(base_url: str, user: str, photo: bytes) -> httpx.Response:
    with httpx.Client(base_url=base_url, headers={"X-API-Key": API_KEY}, timeout=120) as c:
        return c.post("/v1/enroll", data={"user_id": user}, files=[("photos", (f"{user}.jpg", photo, "image/jpeg"))])


def burst(base_url: str, jobs: dict[str, bytes], clients: int,
          on_answer: Callable[[str, int | str], None] = lambda user, status: None) -> dict[str, tuple[int | str, dict]]:
    """Enroll every job from ``clients`` concurrent clients: user -> (status or exception name, JSON body)."""
    def one(user: str) -> tuple[str, int | str, dict]:
        try:
            r = enroll(base_url, user, jobs[user])
            answer: tuple[int | str, dict] = (r.status_code, r.json())
        except httpx.HTTPError as exc:
            answer = (type(exc).__name__, {})
        on_answer(user, answer[0])
        return user, *answer

    with ThreadPoolExecutor(clients) as pool:
        return {u: (s, body) for u, s, body in pool.map(one, jobs)}


def wait_consistent(server, generation: int | None = None, timeout: float = 20) -> dict:
    """The replica's /healthz once its index holds exactly the database's users (at ``generation`` or later)."""
    deadline = time.monotonic() + timeout
    with server.client() as c:
        while True:
            health = c.get("/healthz").json()
            if health["consistent"] and (generation is None or health["index_generation"] >= generation):
                return health
            assert time.monotonic() < deadline, health
            time.sleep(0.05)


def check_enrolled(server, users: dict[str, bytes], signer) -> None:
    """Each user is present, its model downloads whole and verifies with the shared key, and its own
    photo identifies it first, on this replica."""
    from hyperver.device.artifact import open_artifact
    from hyperver.device.signing import TrustedKeys

    trusted = TrustedKeys([signer.public_raw])
    with server.client() as c:
        for user, photo in users.items():
            record = c.get(f"/v1/users/{user}")
            assert record.status_code == 200, (server.url, user, record.text)
            model = c.get(f"/v1/users/{user}/model")
            assert model.status_code == 200 and hashlib.sha256(model.content).hexdigest() == record.json()["model_sha256"]
            artifact = open_artifact(model.content, trusted, [record.json()["f_version"]], user)
            assert artifact.header["user_id"] == user
            top = c.post("/v1/identify", data={"top_k": "1"},
                         files=[("photo", ("p.jpg", photo, "image/jpeg"))]).json()["matches"][0]
            assert top["user_id"] == user and top["similarity"] > 0.999, (server.url, user, top)


def test_the_deploy_config_is_the_tested_one_and_valid(haproxy):
    from enroll_server.local_services import haproxy_config

    assert DEPLOY_CONFIG.read_text() == haproxy_config(8080, [8081, 8082, 8083])
    check = subprocess.run([haproxy, "-c", "-f", str(DEPLOY_CONFIG)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr


def test_replicas_share_one_registry_and_one_signing_key(replicas, server_files):
    healths = [wait_consistent(s) for s in replicas.servers]
    assert {h["signing_key_id"] for h in healths} == {server_files["signer"].key_id}
    assert all(h["backend"] == "postgresql" and h["listening"] and h["index_loaded_from"] == "database"
               for h in healths)
    with replicas.client() as c:                     # the balancer's one address
        assert c.get("/healthz").json()["status"] == "ok"


def test_one_id_enrolled_on_two_replicas_at_once_exactly_one_wins(replicas, photos):
    start = threading.Barrier(2)

    def attempt(server) -> int:
        start.wait()
        return enroll(server.url, "adam_sandler", photos["adam_sandler"]).status_code

    with ThreadPoolExecutor(2) as pool:
        statuses = sorted(pool.map(attempt, replicas.servers[:2]))
    assert statuses == [200, 409]
    for server in replicas.servers:
        with server.client() as c:
            assert c.get("/v1/users/adam_sandler").status_code == 200


def test_an_enrollment_is_found_on_every_replica_and_a_delete_everywhere(replicas, photos):
    first, second, third = replicas.servers
    ack = enroll(first.url, "zico", photos["zico"])
    assert ack.status_code == 200, ack.text
    generation = ack.json()["generation"]
    for server in (second, third):                   # a probe right after the acknowledgement
        with server.client() as c:
            top = c.post("/v1/identify", files=[("photo", ("p.jpg", photos["zico"], "image/jpeg"))]).json()
            assert top["matches"][0]["user_id"] == "zico", top
    # Without any request, the follower (NOTIFY) brings the third replica's index up to date promptly.
    t0 = time.monotonic()
    wait_consistent(third, generation, timeout=5)
    assert time.monotonic() - t0 < 2
    with third.client() as c:
        assert c.delete("/v1/users/zico").status_code == 200
    for server in (first, second):
        with server.client() as c:
            assert c.get("/v1/users/zico").status_code == 404
            assert c.get("/v1/users/zico/model").status_code == 404
            found = c.post("/v1/identify", files=[("photo", ("p.jpg", photos["zico"], "image/jpeg"))]).json()
            assert "zico" not in [m["user_id"] for m in found["matches"]]
            assert c.post("/v1/users/zico/unlock", files=[("photo", ("p.jpg", photos["zico"], "image/jpeg"))]
                          ).status_code == 404


def test_kill_9_of_a_replica_during_a_burst_loses_nothing_acknowledged(replicas, many_photos, server_files):
    jobs = {f"k_{u}": p for u, p in list(many_photos.items())[:8]}
    victim = 1
    killed = threading.Event()

    def kill_after_first_ack(user: str, status: int | str) -> None:
        if status == 200 and not killed.is_set():
            killed.set()
            replicas.kill(victim)                    # kill -9 with the rest of the burst in flight or queued

    answers = burst(replicas.url, jobs, clients=6, on_answer=kill_after_first_ack)
    assert killed.is_set() and replicas.servers[victim].proc.returncode == -9
    acknowledged = {u for u, (s, _) in answers.items() if s == 200}
    # Requests on the killed replica get HAProxy's JSON 502, or no whole answer when the replica died while
    # sending it (the client sees a transport error); none may be a replica's own error (e.g. a 500).
    assert all(s == 200 or (s == 502 and body.get("error") == "replica_failed") or isinstance(s, str)
               for s, body in answers.values()), answers
    assert len(acknowledged) >= 4, answers
    survivors = [s for i, s in enumerate(replicas.servers) if i != victim]
    generation = max(wait_consistent(s)["generation"] for s in survivors)
    with survivors[0].client() as c:   # unacknowledged ones may have committed: if present, they must be whole
        present = {u for u in jobs if c.get(f"/v1/users/{u}").status_code == 200}
    assert acknowledged <= present
    for server in survivors:
        check_enrolled(server, {u: jobs[u] for u in present}, server_files["signer"])
    restarted = replicas.restart(victim)             # same port: HAProxy's check brings it back
    health = wait_consistent(restarted, generation)
    assert health["users"] >= len(present) and health["index_loaded_from"] == "database"
    check_enrolled(restarted, {u: jobs[u] for u in sorted(present)[:2]}, server_files["signer"])


def test_a_database_restart_during_a_burst_is_503_and_loses_nothing_acknowledged(replicas, postgres, many_photos,
                                                                                  server_files):
    jobs = {f"r_{u}": p for u, p in list(many_photos.items())[8:16]}
    down = threading.Event()
    during: list[httpx.Response] = []

    def restart_after_two_acks(user: str, status: int | str, acks: list = []) -> None:
        if status == 200:
            acks.append(user)
        if len(acks) == 2 and not down.is_set():
            down.set()
            postgres.stop()                          # fast shutdown: open transactions are rolled back

    try:
        answers = burst(replicas.url, jobs, clients=4, on_answer=restart_after_two_acks)
        assert down.is_set()
        with replicas.client() as c:                 # while it is down, through the balancer
            during.append(c.post("/v1/enroll", data={"user_id": "r_late"},
                                 files=[("photos", ("p.jpg", next(iter(jobs.values())), "image/jpeg"))]))
            during.append(c.get(f"/v1/users/{next(iter(jobs))}"))
            during.append(c.get("/healthz"))
    finally:
        postgres.start()
    statuses = sorted({str(s) for s, _ in answers.values()})
    assert set(statuses) <= {"200", "503"}, answers           # never a 500, never a dropped connection
    assert all(body["error"] == "registry_unavailable" for s, body in answers.values() if s == 503), answers
    for r in during[:2]:
        assert r.status_code == 503 and r.json()["error"] == "registry_unavailable", r.text
        assert "is unavailable" in r.json()["detail"] and r.headers["retry-after"] == "5"
    assert during[2].status_code == 200 and during[2].json()["status"] == "degraded"
    acknowledged = {u for u, (s, _) in answers.items() if s == 200}
    # Back up: retrying a 503 enrolls the user, or says it already was (its COMMIT went through unanswered).
    for user in sorted(set(jobs) - acknowledged):
        retry = enroll(replicas.url, user, jobs[user])
        assert retry.status_code in (200, 409), retry.text
        acknowledged.add(user)
    assert acknowledged == set(jobs)
    generation = max(wait_consistent(s)["generation"] for s in replicas.servers)
    for server in replicas.servers:
        assert wait_consistent(server, generation)["users"] >= len(jobs)
        check_enrolled(server, jobs, server_files["signer"])
