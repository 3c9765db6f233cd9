"""Enrollment server under load on 127.0.0.1: latency, throughput, and nothing lost across a restart.

    python benchmarks/server_load.py --generator assets/hypernet/generator_v3.safetensors \
        --clients 1 4 16 --requests 16 32 64

Spawns ``hyperver serve`` (a fresh registry in a temporary folder, a temporary API key and
signing key), then for each client count sends a bounded number of enrollments (one LFW photo
of a distinct person each) from that many concurrent clients and records p50/p95 latency,
throughput, failed requests. Afterwards every acknowledged user must be identifiable (top-1 by
its own photo); the server is restarted (SIGTERM) and it is checked again: an acknowledged user
missing then is counted as lost. Writes the ``runs`` of results/server_load.json (other keys of
that file, written by benchmarks/unlock_latency.py, are kept).
"""
from __future__ import annotations

import argparse
import json
import secrets
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from hyperver.config import load_config
from hyperver.reporting import current_command, write_result


def merge_result(path: str, figures: dict[str, Any], part: str) -> Path:
    """Update ``figures`` in a results file two benchmarks share; "command" lists both commands."""
    p = Path(path)
    old = json.loads(p.read_text()) if p.is_file() else {}
    commands = {**old.get("commands", {}), part: f"python {current_command()}"}
    merged = {k: v for k, v in old.items() if k not in ("command", "commit", "commands")}
    merged.update(figures)
    return write_result(p, {**merged, "commands": commands}, command=" && ".join(commands.values()))


def benchmark_generator(cfg, given: str | None, tmp: Path) -> tuple[Path, bool]:
    """(the generator to serve, whether it is untrained): ``given``, else the configured one, else an
    untrained one written to ``tmp`` (latency does not depend on the generator's training)."""
    generator = Path(given or cfg.get_path("hypernet.generator_path"))
    if generator.is_file():
        return generator, False
    from hyperver.hypernet.model_io import save_generator
    from hyperver.hypernet.train import build_generator

    generator = save_generator(build_generator(dict(cfg.get_path("hypernet")), 128), tmp / "untrained.safetensors",
                               backbone=cfg.get_path("hypernet.backbone"))
    print(f"no trained generator: using an untrained one ({generator}); latency only")
    return Path(generator), True


def photo_pool(cfg, n: int) -> list[tuple[str, bytes]]:
    """n LFW photos of distinct people, each with exactly one detectable face (the server's policy)."""
    from hyperver.align import Aligner
    from hyperver.data.imageio import decode_image
    from hyperver.errors import HyperVerError

    aligner = Aligner.from_config(cfg.get_path("align"))
    out = []
    for person in sorted((cfg.data_root / "lfw" / "images").iterdir()):
        first = sorted(person.glob("*.jpg"))[:1]
        if not first:
            continue
        data = first[0].read_bytes()
        try:
            aligner.align_photo(decode_image(data), person.name)
        except HyperVerError:
            continue
        out.append((person.name.lower(), data))
        if len(out) == n:
            return out
    raise SystemExit(f"only {len(out)} usable LFW photos found, need {n}")


def run_clients(server, jobs: list[tuple[str, bytes]], clients: int) -> tuple[dict[str, Any], set[str]]:
    import httpx

    def one(job: tuple[str, bytes]) -> tuple[str, float, int | str]:
        user, photo = job
        t0 = time.perf_counter()
        try:
            with server.client() as c:
                r = c.post("/v1/enroll", data={"user_id": user},
                           files=[("photos", (f"{user}.jpg", photo, "image/jpeg"))])
            status: int | str = r.status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        return user, 1e3 * (time.perf_counter() - t0), status

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, jobs))
    wall = time.perf_counter() - t0
    lat = np.array([ms for _, ms, s in results if s == 200])
    ok = {u for u, _, s in results if s == 200}
    failures = [s for _, _, s in results if s != 200]
    run = {"clients": clients, "requests": len(jobs), "failed": len(failures), "lost": None,
           "p50_ms": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
           "p95_ms": round(float(np.percentile(lat, 95)), 1) if lat.size else None,
           "throughput_rps": round(len(ok) / wall, 2), "wall_s": round(wall, 2)}
    if failures:
        run["failures"] = sorted(map(str, failures))
    return run, ok


def identifiable(server, photos: dict[str, bytes], users: set[str]) -> set[str]:
    """Users present and found first by identify with their own enrollment photo."""
    found = set()
    with server.client() as c:
        for user in sorted(users):
            r = c.post("/v1/identify", data={"top_k": "1"}, files=[("photo", ("p.jpg", photos[user], "image/jpeg"))])
            if r.status_code == 200 and r.json()["matches"] and r.json()["matches"][0]["user_id"] == user:
                found.add(user)
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default=None,
                    help="trained generator (default: hypernet.generator_path; an untrained one if that is missing)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--requests", type=int, nargs="+", default=[16, 32, 64], help="enrollments per client count")
    ap.add_argument("--out", default="results/server_load.json")
    ap.add_argument("--config", default=None)
    args = ap.parse_args()
    if len(args.requests) != len(args.clients):
        raise SystemExit("--requests needs one count per --clients entry")

    from enroll_server.process import ServerProcess
    from hyperver.device.signing import Signer

    cfg = load_config(args.config)
    tmp = Path(tempfile.mkdtemp(prefix="server_load_"))
    generator, untrained = benchmark_generator(cfg, args.generator, tmp)
    overrides = [f"server.state_dir={tmp / 'state'}", f"server.generator_path={generator}",
                 f"artifacts.signing_key={Signer.generate().private_b64()}", "server.threshold=0.0"]
    env = {"HYPERVER_API_KEY": secrets.token_hex(16)}
    pool = photo_pool(cfg, sum(args.requests))
    photos = dict(pool)
    server = ServerProcess(overrides, env, tmp / "server.log")
    runs, acked = [], []
    try:
        start = 0
        for clients, n in zip(args.clients, args.requests):
            jobs = [(f"c{clients}_{u}", p) for u, p in pool[start:start + n]]
            photos.update(jobs)
            start += n
            run, ok = run_clients(server, jobs, clients)
            runs.append(run)
            acked.append(ok)
            print(json.dumps(run))
        everyone = set().union(*acked)
        before = identifiable(server, photos, everyone)
        server.stop()
        server = ServerProcess(overrides, env, tmp / "server.log")
        after = identifiable(server, photos, everyone)
        with server.client() as c:
            health = c.get("/healthz").json()
    finally:
        server.__exit__()
    for run, ok in zip(runs, acked):
        run["lost"] = len(ok - after)
    check = {"acknowledged": len(everyone), "identifiable_before_restart": len(before),
             "identifiable_after_restart": len(after), "registry_after_restart": health}
    print(json.dumps(check))
    path = merge_result(args.out, {"runs": runs, "server_check": check,
                                   "server_generator": "untrained" if untrained else str(generator),
                                   "server_generator_untrained": untrained}, "server_load")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
