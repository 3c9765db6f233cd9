"""Run the server as a separate process on a free 127.0.0.1 port (tests, benchmarks, crash drills)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m enroll_server`` (= ``hyperver serve``) with ``--set`` overrides and extra environment."""

    def __init__(self, overrides: list[str], env: Mapping[str, str], log_path: str | Path,
                 cwd: str | Path | None = None, ready_timeout: float = 120, config: str | Path | None = None,
                 port: int | None = None, wait: bool = True):
        """``port``: a fixed one (a replica behind a load balancer, restarted in place); ``wait``: False
        returns at once (start several, then ``wait_ready`` each)."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = env.get("HYPERVER_API_KEY", "")
        cmd = [sys.executable, "-m", "enroll_server", "--host", "127.0.0.1", "--port", str(self.port),
               "--log-level", "warning"] + (["--config", str(config)] if config else [])
        for o in overrides:
            cmd += ["--set", o]
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1", **env},
                                     stdout=self._log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready(ready_timeout)

    def wait_ready(self, timeout: float) -> None:
        import httpx

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.read_log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"server not ready after {timeout}s: {self.read_log()}")

    def read_log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-3000:]

    def client(self, timeout: float = 120):
        import httpx

        return httpx.Client(base_url=self.url, headers={"X-API-Key": self.api_key}, timeout=timeout)

    def stop(self) -> int:
        """SIGTERM: graceful (uvicorn re-raises the signal afterwards, so the code is -15 or 0)."""
        self.proc.terminate()
        return self._wait()

    def kill(self) -> int:
        """SIGKILL, i.e. kill -9."""
        self.proc.kill()
        return self._wait()

    def _wait(self) -> int:
        code = self.proc.wait(timeout=60)
        self._log.close()
        return code

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.kill()
