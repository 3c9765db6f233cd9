"""Enrollment-server replicas on one PostgreSQL registry behind HAProxy (127.0.0.1): throughput, visibility
across replicas, and nothing acknowledged lost when a replica is killed or the database restarts.

    python benchmarks/server_scale.py                # ~4-5 min on 2 cores (longer under load)
    python benchmarks/server_scale.py --quick        # smoke run, ~1 min

Starts its own throw-away PostgreSQL cluster (initdb/pg_ctl in a temporary folder, as the 'postgres'
user when run as root; Debian's postgresql package) and, for each replica count, that many
``hyperver serve`` processes (a temporary API key and one temporary signing key shared by all) behind
HAProxy (Debian's haproxy), each count on a fresh database. Enrollments are one LFW photo of a
distinct person each, benchmarks/server_load.py's way, sent to HAProxy's one address.

1. Runs: after one warm-up enrollment per replica (deleted again), for each replica count (1, 3) and
   client count (1, 4, 16, 32) a bounded number of enrollments; p50/p95 latency, throughput, failed requests. Afterwards every acknowledged user
   must be present on every replica and found first by its own photo (identify, users spread over
   the replicas); one that is not counts as lost.
2. Visibility (3 replicas): enroll on replica i, then, alternately, (a) poll replica i+1's /healthz
   until its index (followed by LISTEN/NOTIFY, no request involved) reaches the enrollment's
   generation: that time is ``visibility_ms`` (an upper bound: it includes /healthz round trips), or
   (b) identify on replica i+1 at once: it must find the user at the first try (identify catches up
   with the database first); ``visibility_ms.probe`` has the time to that answer.
3. Replica kill: a burst of enrollments over 3 replicas; kill -9 of one after the first
   acknowledgements; every acknowledged user must be present, downloadable, signature-valid and
   identifiable on both survivors; the killed replica restarts and must catch up.
4. Database restart: a burst; PostgreSQL is stopped (fast shutdown) after the first
   acknowledgements and started again ``--db-down-s`` later; requests meanwhile must get 503
   (never 500), and nothing acknowledged may be missing afterwards.

Writes results/server_scale.json (with the machine's load average at start and end: a training
may share the cores) and prints a table.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

# Run as `python benchmarks/server_scale.py`: this folder is on sys.path, so server_load's helpers import.
from server_load import benchmark_generator, photo_pool, run_clients

from hyperver.config import load_config
from hyperver.reporting import current_command, write_result


def enroll(base_url: str, api_key: str, user: str, photo: bytes) -> tuple[int | str, dict, float]:
    """(status or exception name, JSON body, ms)."""
    import httpx

    t0 = time.perf_counter()
    try:
        with httpx.Client(base_url=base_url, headers={"X-API-Key": api_key}, timeout=120) as c:
            r = c.post("/v1/enroll", data={"user_id": user}, files=[("photos", (f"{user}.jpg", photo, "image/jpeg"))])
        answer: tuple[int | str, dict] = (r.status_code, r.json())
    except (httpx.HTTPError, ValueError) as exc:
        answer = (type(exc).__name__, {})
    return *answer, 1e3 * (time.perf_counter() - t0)


def burst(base_url: str, api_key: str, jobs: list[tuple[str, bytes]], clients: int,
          on_answer=lambda user, status: None) -> dict[str, tuple[int | str, dict]]:
    def one(job: tuple[str, bytes]) -> tuple[str, int | str, dict]:
        status, body, _ = enroll(base_url, api_key, *job)
        on_answer(job[0], status)
        return job[0], status, body

    with ThreadPoolExecutor(clients) as pool:
        return {u: (s, b) for u, s, b in pool.map(one, jobs)}


def wait_consistent(server, generation: int = 0, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with server.client() as c:
        while True:
            health = c.get("/healthz").json()
            if health.get("consistent") and health.get("index_generation", 0) >= generation:
                return health
            if time.monotonic() > deadline:
                raise SystemExit(f"{server.url} not consistent after {timeout} s: {health}")
            time.sleep(0.05)


def missing(servers: list, photos: dict[str, bytes], users: set[str], signer=None) -> set[str]:
    """Users absent from any replica, or not found first by their own photo on the replica checking them
    (users spread round-robin); with ``signer``, also those whose model fails the device's signature check."""
    from hyperver.device.artifact import open_artifact
    from hyperver.device.signing import TrustedKeys

    generation = max(wait_consistent(s)["generation"] for s in servers)
    for s in servers:
        wait_consistent(s, generation)
    trusted = TrustedKeys([signer.public_raw]) if signer else None
    bad: set[str] = set()
    clients = [s.client() for s in servers]
    try:
        for i, user in enumerate(sorted(users)):
            if any(c.get(f"/v1/users/{user}").status_code != 200 for c in clients):
                bad.add(user)
                continue
            c = clients[i % len(clients)]
            top = c.post("/v1/identify", data={"top_k": "1"}, files=[("photo", ("p.jpg", photos[user], "image/jpeg"))])
            if top.status_code != 200 or not top.json()["matches"] or top.json()["matches"][0]["user_id"] != user:
                bad.add(user)
                continue
            if trusted is not None:
                for c in clients:
                    record, model = c.get(f"/v1/users/{user}").json(), c.get(f"/v1/users/{user}/model").content
                    try:
                        art = open_artifact(model, trusted, [record["f_version"]], user)
                        ok = art.header["user_id"] == user and hashlib.sha256(model).hexdigest() == record["model_sha256"]
                    except Exception:      # noqa: BLE001 - any failure to open it counts as not whole
                        ok = False
                    if not ok:
                        bad.add(user)
    finally:
        for c in clients:
            c.close()
    return bad


def warm_up(group, pool: list[tuple[str, bytes]]) -> None:
    """One enrollment (then deleted) on each replica: its first one pays one-off start-up costs, which the runs
    would otherwise count once per replica."""
    for server, (user, photo) in zip(group.servers, pool):
        status, body, _ = enroll(server.url, group.api_key, f"warm_{user}", photo)
        if status != 200:
            raise SystemExit(f"warm-up enrollment on {server.url} failed: {status} {body}")
        with server.client() as c:
            c.delete(f"/v1/users/warm_{user}").raise_for_status()


def measure_runs(group, pool: list[tuple[str, bytes]], clients: list[int], requests: list[int]) -> list[dict]:
    warm_up(group, pool)
    runs, acked, photos, start = [], [], dict(pool), 0
    for n_clients, n in zip(clients, requests):
        jobs = [(f"c{n_clients}_{u}", p) for u, p in pool[start:start + n]]
        photos.update(jobs)
        start += n
        run, ok = run_clients(group, jobs, n_clients)       # through HAProxy's one address
        runs.append({"replicas": len(group.servers), **run})
        acked.append(ok)
        print(json.dumps(runs[-1]), flush=True)
    lost = missing(group.servers, photos, set().union(*acked))
    for run, ok in zip(runs, acked):
        run["lost"] = len(ok & lost)
    return runs


def measure_visibility(group, pool: list[tuple[str, bytes]]) -> dict[str, Any]:
    """Alternate samples: even ones time the follower of another replica (no request involved), odd ones a
    probe (identify) sent to another replica right after the acknowledgement."""
    servers, api_key = group.servers, group.api_key
    follow_ms, probe_ms, probe_found = [], [], 0
    for i, (user, photo) in enumerate(pool):
        user = f"v_{user}"
        writer, other = servers[i % 3], servers[(i + 1) % 3]
        status, body, _ = enroll(writer.url, api_key, user, photo)
        t_ack = time.perf_counter()
        if status != 200:
            raise SystemExit(f"visibility: enrollment of {user} failed: {status} {body}")
        with other.client() as c:
            if i % 2 == 0:
                while c.get("/healthz").json()["index_generation"] < body["generation"]:
                    if time.perf_counter() - t_ack > 30:
                        raise SystemExit(f"{other.url} did not reach generation {body['generation']} in 30 s")
                    time.sleep(0.001)
                follow_ms.append(1e3 * (time.perf_counter() - t_ack))
            else:
                top = c.post("/v1/identify", data={"top_k": "1"}, files=[("photo", ("p.jpg", photo, "image/jpeg"))])
                probe_ms.append(1e3 * (time.perf_counter() - t_ack))
                probe_found += top.status_code == 200 and top.json()["matches"][0]["user_id"] == user
    follow, probe = np.array(follow_ms), np.array(probe_ms)
    return {"p50": round(float(np.percentile(follow, 50)), 1), "max": round(float(follow.max()), 1),
            "samples": len(follow),
            "probe": {"found_first_try": f"{probe_found}/{len(probe)}", "p50_ms": round(float(np.percentile(probe, 50)), 1),
                      "max_ms": round(float(probe.max()), 1)},
            "how": "p50/max: enroll on replica i, then poll replica i+1's /healthz until its index (its follower: "
                   "LISTEN/NOTIFY, no request involved) has the enrollment's generation; includes the /healthz "
                   "round trips. probe: enroll on replica i, then identify on replica i+1 at once: found at the "
                   "first try (identify catches up with the database first), time from the acknowledgement "
                   "to the answer"}


def measure_replica_kill(group, pool: list[tuple[str, bytes]], clients: int, signer) -> dict[str, Any]:
    jobs = [(f"k_{u}", p) for u, p in pool]
    victim, killed, acks = 1, threading.Event(), []

    def kill_after_acks(user: str, status: int | str) -> None:
        if status == 200:
            acks.append(user)
        if len(acks) >= max(2, len(jobs) // 8) and not killed.is_set():
            killed.set()
            group.kill(victim)

    answers = burst(group.url, group.api_key, jobs, clients, kill_after_acks)
    acknowledged = {u for u, (s, _) in answers.items() if s == 200}
    survivors = [s for i, s in enumerate(group.servers) if i != victim]
    lost = missing(survivors, dict(jobs), acknowledged, signer)
    generation = max(wait_consistent(s)["generation"] for s in survivors)
    t0 = time.perf_counter()
    restarted = group.restart(victim)
    started_s = time.perf_counter() - t0
    health = wait_consistent(restarted, generation)
    with restarted.client() as c:
        on_restarted = sum(c.get(f"/v1/users/{u}").status_code == 200 for u in acknowledged)
    return {"acknowledged": len(acknowledged), "present_after": len(acknowledged) - len(lost), "lost": len(lost),
            "requests": len(jobs), "clients": clients,
            "status_codes": dict(Counter(str(s) for s, _ in answers.values())),
            "restarted_replica": {"start_s": round(started_s, 1), "consistent": health["consistent"],
                                  "generation": health["index_generation"], "database_generation": generation,
                                  "acknowledged_present": on_restarted}}


def measure_db_restart(group, cluster, pool: list[tuple[str, bytes]], clients: int, down_s: float) -> dict[str, Any]:
    jobs = [(f"r_{u}", p) for u, p in pool]
    stopped, acks, window = threading.Event(), [], {}

    def start_again() -> None:
        cluster.start()
        window["up"] = time.perf_counter()

    def restart_after_acks(user: str, status: int | str) -> None:
        if status == 200:
            acks.append(user)
        if len(acks) >= max(2, len(jobs) // 8) and not stopped.is_set():
            stopped.set()
            window["down"] = time.perf_counter()
            cluster.stop()            # fast shutdown: open transactions roll back, connections drop
            threading.Timer(down_s, start_again).start()

    answers = burst(group.url, group.api_key, jobs, clients, restart_after_acks)
    if not stopped.is_set():
        raise SystemExit(f"db restart: the burst ended before {max(2, len(jobs) // 8)} acknowledgements: {answers}")
    while "up" not in window:
        time.sleep(0.05)
    codes = Counter(str(s) for s, _ in answers.values())
    errors = Counter(b.get("error") for s, b in answers.values() if s != 200)
    acknowledged = {u for u, (s, _) in answers.items() if s == 200}
    lost = missing(group.servers, dict(jobs), acknowledged)
    return {"acknowledged": len(acknowledged), "lost": len(lost), "status_codes": dict(codes),
            "error_codes": {str(k): v for k, v in errors.items()}, "requests": len(jobs), "clients": clients,
            "down_s": round(window["up"] - window["down"], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default=None,
                    help="trained generator (default: hypernet.generator_path; an untrained one if that is missing)")
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 32])
    ap.add_argument("--requests", type=int, nargs="+", default=[16, 32, 64, 96],
                    help="enrollments per client count (per replica count)")
    ap.add_argument("--drill-requests", type=int, default=48, help="enrollments in the kill and restart bursts")
    ap.add_argument("--visibility-samples", type=int, default=20)
    ap.add_argument("--db-down-s", type=float, default=2.0)
    ap.add_argument("--quick", action="store_true", help="smoke run: few requests, 3 replicas only")
    ap.add_argument("--out", default="results/server_scale.json")
    ap.add_argument("--config", default=None)
    args = ap.parse_args()
    if args.quick:
        args.replicas, args.clients, args.requests = [3], [1, 8], [4, 16]
        args.drill_requests, args.visibility_samples, args.db_down_s = 16, 5, 1.0
    if len(args.requests) != len(args.clients):
        raise SystemExit("--requests needs one count per --clients entry")
    if 3 not in args.replicas:
        raise SystemExit("--replicas must include 3: the kill drill and visibility need three")

    from enroll_server.local_services import PostgresCluster, Replicas
    from hyperver.device.signing import Signer

    load_start = os.getloadavg()
    t_start = time.perf_counter()
    cfg = load_config(args.config)
    tmp = Path(tempfile.mkdtemp(prefix="server_scale_"))
    generator, untrained = benchmark_generator(cfg, args.generator, tmp)
    signer = Signer.generate()         # one key for every replica
    overrides = [f"server.state_dir={tmp / 'state'}", f"server.generator_path={generator}",
                 f"artifacts.signing_key={signer.private_b64()}", "server.threshold=0.0"]
    per_config = sum(args.requests)
    pool = photo_pool(cfg, per_config + args.visibility_samples + 2 * args.drill_requests)
    runs_pool = pool[:per_config]
    vis_pool = pool[per_config:per_config + args.visibility_samples]
    kill_pool = pool[per_config + args.visibility_samples:][:args.drill_requests]
    restart_pool = pool[per_config + args.visibility_samples + args.drill_requests:]
    print(f"{len(pool)} photos; load average {load_start}", flush=True)

    runs: list[dict] = []
    out: dict[str, Any] = {}
    with PostgresCluster() as cluster:
        for n in sorted(args.replicas):
            env = {"HYPERVER_API_KEY": secrets.token_hex(16),
                   "HYPERVER_SERVER_REGISTRY": cluster.create_database(f"scale_{n}_replicas")}
            print(f"-- {n} replica(s)", flush=True)
            with Replicas(n, overrides, env, tmp / f"replicas_{n}") as group:
                runs += measure_runs(group, runs_pool, args.clients, args.requests)
                if n == 3:
                    out["visibility_ms"] = measure_visibility(group, vis_pool)
                    print("visibility_ms", json.dumps(out["visibility_ms"]), flush=True)
                    out["replica_kill"] = measure_replica_kill(group, kill_pool, 16, signer)
                    print("replica_kill", json.dumps(out["replica_kill"]), flush=True)
                    out["db_restart"] = measure_db_restart(group, cluster, restart_pool, 8, args.db_down_s)
                    print("db_restart", json.dumps(out["db_restart"]), flush=True)
                    healths = []
                    for s in group.servers:
                        with s.client() as c:
                            healths.append(c.get("/healthz").json())
                    out["replicas_after"] = [{k: h.get(k) for k in ("status", "users", "index", "generation",
                                                                     "index_generation", "consistent", "signing_key_id")}
                                             for h in healths]

    def rps(n: int, clients: int) -> float | None:
        return next((r["throughput_rps"] for r in runs if r["replicas"] == n and r["clients"] == clients), None)

    scaling = {f"{c}_clients": {"1_replica": rps(1, c), "3_replicas": rps(3, c)} for c in args.clients}
    figures = {"backend": "postgresql", "replicas": max(args.replicas), "runs": runs,
               "replica_kill": out["replica_kill"], "db_restart": out["db_restart"],
               "visibility_ms": out["visibility_ms"], "throughput_by_replicas": scaling,
               "replicas_after": out["replicas_after"],
               "machine": {"cpus": os.cpu_count(), "loadavg_start": [round(x, 2) for x in load_start],
                           "loadavg_end": [round(x, 2) for x in os.getloadavg()]},
               "wall_s": round(time.perf_counter() - t_start, 1),
               "server_generator": "untrained" if untrained else str(generator), "quick": args.quick}
    path = write_result(args.out, figures, command=f"python {current_command()}")
    shutil.rmtree(tmp, ignore_errors=True)       # kept only when a step failed: its server logs are there

    print(f"\n{'replicas':>8} {'clients':>7} {'requests':>8} {'failed':>6} {'lost':>4} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'rps':>6}")
    for r in runs:
        print(f"{r['replicas']:>8} {r['clients']:>7} {r['requests']:>8} {r['failed']:>6} {r['lost']:>4} "
              f"{r['p50_ms']:>8} {r['p95_ms']:>8} {r['throughput_rps']:>6}")
    v, k, d = out["visibility_ms"], out["replica_kill"], out["db_restart"]
    print(f"visibility (follower): p50 {v['p50']} ms, max {v['max']} ms; probe found at the first try "
          f"{v['probe']['found_first_try']} (answer p50 {v['probe']['p50_ms']} ms, max {v['probe']['max_ms']} ms)")
    print(f"replica kill: {k['acknowledged']} acknowledged, {k['present_after']} present after, {k['lost']} lost; "
          f"statuses {k['status_codes']}")
    print(f"database restart ({d['down_s']} s down): {d['acknowledged']} acknowledged, {d['lost']} lost; "
          f"statuses {d['status_codes']}")
    print(f"load average at start {figures['machine']['loadavg_start']}, end {figures['machine']['loadavg_end']}; "
          f"wrote {path}")


if __name__ == "__main__":
    main()
