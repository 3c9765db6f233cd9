"""Server settings: the ``server`` section of the config (configs/server.yaml) plus environment overrides.

Secrets come from the environment, never from a committed file: ``HYPERVER_API_KEY``
(comma-separated accepted API keys), ``HYPERVER_SERVER_KEY`` (the artifact signing key,
read by hyperver.device.signing) and ``HYPERVER_SERVER_REGISTRY`` (the registry URL, which may
hold a database password). ``HYPERVER_SERVER_STATE`` and ``HYPERVER_GENERATOR`` move the state
folder and pick the generator without editing the file.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from hyperver.config import Config
from hyperver.errors import ConfigError

from .registry import backend_for

ENV_API_KEYS = "HYPERVER_API_KEY"
ENV_STATE_DIR = "HYPERVER_SERVER_STATE"
ENV_GENERATOR = "HYPERVER_GENERATOR"
ENV_REGISTRY = "HYPERVER_SERVER_REGISTRY"
SQLITE_FILE = "registry.sqlite3"          # the default registry's file in server.state_dir
# Never a path: no '/', no leading dot. Use USER_ID.fullmatch: with match, '$' would also accept a trailing
# newline ("abc\n"), an id that then cannot go into a header (the model download's Content-Disposition).
USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")


@dataclass(frozen=True)
class ServerSettings:
    host: str
    port: int
    state_dir: Path
    registry: str = field(repr=False)     # URL (enroll_server.registry); may hold a password: not in repr()
    generator_path: Path
    api_keys: tuple[str, ...]
    threshold: float | None
    target_far: float
    max_request_bytes: int
    max_photos: int
    image_limits: dict[str, int]
    top_k: int
    max_top_k: int
    flip_average: bool
    runtime: str
    precision: str
    docs: bool = False
    body_timeout_s: float = 30.0
    max_concurrent_photos: int = 2
    queue_timeout_s: float = 60.0
    unlock_far: float | None = None
    registry_poll_s: float = 1.0

    @classmethod
    def from_config(cls, cfg: Config, env: Mapping[str, str] | None = None) -> "ServerSettings":
        env = os.environ if env is None else env
        s = cfg.get_path("server")
        keys = env[ENV_API_KEYS].split(",") if env.get(ENV_API_KEYS) else list(s["api_keys"] or [])
        keys = tuple(k.strip() for k in keys if k and k.strip())
        if not keys:
            raise ConfigError(f"no API key configured: set {ENV_API_KEYS} (comma-separated) or server.api_keys; "
                              "the server does not run unauthenticated")
        generator = env.get(ENV_GENERATOR) or s["generator_path"] or cfg.get_path("hypernet.generator_path")
        image: dict[str, Any] = dict(s["image"])
        body_timeout = float(s["body_timeout_s"])
        if not body_timeout > 0:
            raise ConfigError(f"server.body_timeout_s must be > 0 seconds, got {s['body_timeout_s']!r}")
        slots = s["max_concurrent_photos"]
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise ConfigError(f"server.max_concurrent_photos must be an integer >= 1, got {slots!r}")
        queue_timeout = float(s["queue_timeout_s"])
        if not queue_timeout > 0:
            raise ConfigError(f"server.queue_timeout_s must be > 0 seconds, got {s['queue_timeout_s']!r}")
        try:
            unlock_far = None if s["unlock_far"] is None else float(s["unlock_far"])
        except (TypeError, ValueError):
            unlock_far = float("nan")
        if unlock_far is not None and not 0 < unlock_far < 1:
            raise ConfigError(f"server.unlock_far must be a false-accept rate in (0, 1) or null, got {s['unlock_far']!r}")
        state_dir = Path(os.path.expanduser(env.get(ENV_STATE_DIR) or str(s["state_dir"])))
        registry = str(env.get(ENV_REGISTRY) or s["registry"] or default_registry(state_dir))
        backend_for(registry)     # an unknown scheme fails here, at start-up, naming the accepted ones
        poll = s["registry_poll_s"]
        if isinstance(poll, bool) or not isinstance(poll, (int, float)) or not poll > 0:
            raise ConfigError(f"server.registry_poll_s must be > 0 seconds, got {poll!r}")
        if not isinstance(s["docs"], bool):
            raise ConfigError(f"server.docs must be true or false, got {s['docs']!r}")
        return cls(host=str(s["host"]), port=int(s["port"]),
                   state_dir=state_dir, registry=registry,
                   generator_path=Path(os.path.expanduser(str(generator))), api_keys=keys,
                   threshold=None if s["threshold"] is None else float(s["threshold"]),
                   target_far=float(s["target_far"]), max_request_bytes=int(s["max_request_bytes"]),
                   max_photos=int(s["max_photos"]), image_limits={k: int(v) for k, v in image.items()},
                   top_k=int(s["top_k"]), max_top_k=int(s["max_top_k"]), flip_average=bool(s["flip_average"]),
                   runtime=str(cfg.get_path("artifacts.runtime")), precision=str(cfg.get_path("artifacts.precision")),
                   docs=s["docs"], body_timeout_s=body_timeout, max_concurrent_photos=slots,
                   queue_timeout_s=queue_timeout, unlock_far=unlock_far,
                   registry_poll_s=float(poll))


def default_registry(state_dir: Path) -> str:
    """sqlite:/// + the path: three slashes then a relative path, four for an absolute one."""
    return f"sqlite:///{state_dir / SQLITE_FILE}"
