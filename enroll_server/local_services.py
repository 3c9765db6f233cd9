"""Throw-away PostgreSQL and HAProxy on 127.0.0.1: for the scale-out tests, benchmarks/server_scale.py, and
trying replicas on one machine. Both come from Debian packages (``apt-get install postgresql haproxy``);
nothing is downloaded.

PostgreSQL refuses to run as root, so when this runs as root the cluster belongs to an unprivileged
user (``postgres``, which Debian's package creates) and initdb / pg_ctl run as that user; its data
folder is a fresh temporary folder that user owns. The cluster listens on 127.0.0.1 only (no Unix
socket) and trusts local connections: it is for tests, never for a deployment (README "Scale-out").
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Sequence

from .process import free_port

PG_USER = "postgres"              # the unprivileged OS user the cluster runs as when we are root
DB_SUPERUSER = "hyperver"         # the cluster's database superuser (trust authentication, 127.0.0.1 only)
ENV_INSTALL_ERROR = "HYPERVER_SCALEOUT_INSTALL_ERROR"   # set by .ci/run when apt-get could not install them


class MissingService(RuntimeError):
    """A binary (initdb, pg_ctl, haproxy) is not installed or cannot be run here; the message says why."""


def _install_hint(what: str, package: str) -> str:
    why = os.environ.get(ENV_INSTALL_ERROR, "").strip()
    return f"{what} not found: {why}" if why else \
        f"{what} not found; as root: apt-get install {package} (.ci/run does it)"


def pg_binary(name: str) -> str:
    """``name`` (initdb, pg_ctl, postgres) from PATH or the newest /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if candidates:
        return candidates[-1]
    raise MissingService(_install_hint(f"PostgreSQL's {name}", "postgresql"))


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if os.access(p, os.X_OK)), None)
    if not found:
        raise MissingService(_install_hint("haproxy", "haproxy"))
    return found


def wait_for_port(port: int, timeout: float, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:g} s")


class PostgresCluster:
    """``initdb`` + ``pg_ctl`` in a temporary folder; ``url(dbname)`` for the server, ``create_database``
    for a fresh database per test. ``stop``/``start`` keep the data (a database restart)."""

    def __init__(self, root: str | Path | None = None, port: int | None = None, os_user: str = PG_USER):
        self.initdb, self.pg_ctl = pg_binary("initdb"), pg_binary("pg_ctl")
        self.port = port or free_port()
        # A folder of its own (root's pytest/mkdtemp folders are 0700: the postgres user could not enter them).
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="hyperver_pg_"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.data, self.log = self.root / "data", self.root / "postgres.log"
        self._as_user: dict = {}
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam(os_user)
            except KeyError:
                raise MissingService(f"PostgreSQL will not run as root and there is no {os_user!r} user to run "
                                     f"it as (useradd --system {os_user}, or apt-get install postgresql)") from None
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [],
                             "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.root),
                                     "LC_ALL": "C"}}
        self._run([self.initdb, "-D", str(self.data), "-U", DB_SUPERUSER, "--auth=trust", "-E", "UTF8",
                   "--no-locale", "--no-sync"])
        self.start()

    def _run(self, cmd: Sequence[str], timeout: float = 120) -> None:
        out = subprocess.run(list(cmd), cwd=self.root, capture_output=True, text=True, timeout=timeout,
                             **self._as_user)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}"
                               f"\n{self.read_log()}")

    def read_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{DB_SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def start(self, timeout: float = 60) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories=''"
        self._run([self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(int(timeout)),
                   "-o", options, "start"], timeout=timeout + 10)

    def stop(self, mode: str = "fast") -> None:
        """``fast``: roll back open transactions, disconnect everyone, shut down cleanly (what a restart
        during maintenance does); ``immediate``: like a crash (recovery at the next start)."""
        self._run([self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop"])

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").is_file()

    def execute(self, sql: str, dbname: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"database name {name!r}: letters, digits and _ only")
        self.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def destroy(self) -> None:
        if self.running:
            try:
                self.stop("immediate")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "PostgresCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.destroy()


def haproxy_config(port: int, replica_ports: Sequence[int], host: str = "127.0.0.1") -> str:
    """The HAProxy configuration for replicas on ``host``:``replica_ports`` behind ``host``:``port``;
    enroll_server/deploy/haproxy.cfg is this for port 8080 and replicas 8081-8083 (a test checks)."""
    servers = "\n".join(f"    server replica{i + 1} {host}:{p} check" for i, p in enumerate(replica_ports))
    return f"""\
# HAProxy in front of enrollment-server replicas that share one PostgreSQL registry (README "Scale-out").
# Generated by enroll_server.local_services.haproxy_config({port}, {list(replica_ports)}); run: haproxy -f THIS_FILE
global
    maxconn 2048

defaults
    mode http
    option http-server-close
    timeout connect 2s
    timeout client 120s
    # An enrollment may wait up to server.queue_timeout_s (60 s) for a photo slot, then run: allow for both.
    timeout server 120s
    timeout http-request 35s
    # A replica that refuses the connection (killed, restarting): try another. Only connection failures are
    # retried, never a request a replica may have started (an enrollment is not idempotent).
    retries 2
    option redispatch 1
    # Our errors are JSON like the server's own.
    http-error status 502 content-type application/json string '{{"error": "replica_failed", "detail": "the replica failed before answering: the request may or may not have taken effect"}}'
    http-error status 503 content-type application/json string '{{"error": "no_replica", "detail": "no replica is up; try again later"}}'
    http-error status 504 content-type application/json string '{{"error": "replica_timeout", "detail": "the replica did not answer in time"}}'

frontend enrollment
    bind {host}:{port}
    default_backend replicas

backend replicas
    # Enrollments cost ~0.15 s of CPU each and vary: the replica with the fewest requests in flight gets the next.
    balance leastconn
    # /healthz answers 200 while the process serves (also while the database is down: it then says
    # "degraded" and requests get the server's own 503), so a check fails only for a dead or stuck replica.
    option httpchk GET /healthz
    http-check expect status 200
    default-server inter 1s fall 2 rise 1
{servers}
"""


class HAProxy:
    """haproxy in the foreground with haproxy_config(); ``url`` is the one address clients use."""

    def __init__(self, replica_ports: Sequence[int], workdir: str | Path, port: int | None = None,
                 ready_timeout: float = 30):
        self.binary = haproxy_binary()
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = Path(workdir)
        self.config = self.workdir / "haproxy.cfg"
        self.config.write_text(haproxy_config(self.port, replica_ports))
        self.log_path = self.workdir / "haproxy.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.binary, "-db", "-f", str(self.config)], stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=self.workdir)
        try:
            wait_for_port(self.port, ready_timeout)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"haproxy did not start: {self.log_path.read_text(errors='replace')[-2000:]}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()

    def __enter__(self) -> "HAProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class Replicas:
    """``count`` enrollment servers (``hyperver serve``) on one registry, each on its own fixed port, behind
    HAProxy at ``url``. ``kill(i)`` is kill -9; ``restart(i)`` starts replica i again on the same port."""

    def __init__(self, count: int, overrides: Sequence[str], env: dict[str, str], workdir: str | Path,
                 cwd: str | Path | None = None, ready_timeout: float = 180):
        from .process import ServerProcess

        self._server = ServerProcess
        self.overrides, self.env, self.cwd = list(overrides), dict(env), cwd
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ready_timeout = ready_timeout
        self.ports = [free_port() for _ in range(count)]
        self.servers = []
        try:
            # Started together, then waited for: start-up is mostly imports and model loading.
            self.servers = [self._start(i, wait=False) for i in range(count)]
            for s in self.servers:
                s.wait_ready(ready_timeout)
            self.balancer = HAProxy(self.ports, self.workdir)
        except BaseException:
            self.close()
            raise
        self.url = self.balancer.url
        self.api_key = self.env.get("HYPERVER_API_KEY", "")

    def _start(self, i: int, wait: bool = True):
        return self._server(self.overrides, self.env, self.workdir / f"replica{i + 1}.log", cwd=self.cwd,
                            port=self.ports[i], wait=wait, ready_timeout=self.ready_timeout)

    def kill(self, i: int) -> int:
        return self.servers[i].kill()

    def restart(self, i: int):
        if self.servers[i].proc.poll() is None:
            self.servers[i].stop()
        self.servers[i] = self._start(i)
        return self.servers[i]

    def client(self, timeout: float = 120):
        """An HTTP client for the balancer's address (what clients of the service use)."""
        import httpx

        return httpx.Client(base_url=self.url, headers={"X-API-Key": self.api_key}, timeout=timeout)

    def close(self) -> None:
        if getattr(self, "balancer", None) is not None:
            self.balancer.stop()
        for s in self.servers:
            s.__exit__()

    def __enter__(self) -> "Replicas":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
