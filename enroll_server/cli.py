"""``hyperver serve``: the enrollment server as a hyperver subcommand (entry point ``hyperver.commands``).

Kept import-light: hyperver builds its parser from this triple on every invocation.
"""
from __future__ import annotations

import argparse


# What the server refuses to start without, and what moves it; --help adds the configured values.
NEEDS = ("Needs an API key: HYPERVER_API_KEY (comma-separated) or server.api_keys, and a signing key: "
         "HYPERVER_SERVER_KEY or artifacts.signing_key (`hyperver artifact keygen`). Optional: HYPERVER_GENERATOR "
         "(else server.generator_path, else hypernet.generator_path), HYPERVER_SERVER_STATE (else server.state_dir), "
         "HYPERVER_SERVER_REGISTRY (else server.registry: sqlite:///PATH, or postgresql://... shared by replicas).")


def configure(p: argparse.ArgumentParser) -> None:
    p.epilog = NEEDS
    p.add_argument("--host", default=None, help="bind address (default: server.host)")
    p.add_argument("--port", type=int, default=None, help="port (default: server.port)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--verbose", action="store_true",
                   help="also show third-party start-up logs (faiss's loader, TensorFlow, absl), hidden by default")


def run(args: argparse.Namespace) -> int:
    from hyperver.quiet import quiet_third_party

    # Before anything imports tensorflow or faiss: their INFO lines ("Could not load library with
    # AVX512 support", oneDNN) read like failures at start-up but are normal.
    quiet_third_party(args.verbose)

    import logging

    import uvicorn

    from hyperver.config import load_config

    from .app import create_app
    from .service import EnrollmentService
    from .settings import ServerSettings

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = load_config(args.config, args.overrides)
    settings = ServerSettings.from_config(cfg)
    service = EnrollmentService(cfg, settings)   # models, keys and registry load before the port opens
    uvicorn.run(create_app(service), host=args.host or settings.host, port=args.port or settings.port,
                log_level=args.log_level, workers=1, timeout_graceful_shutdown=10)
    return 0


SERVE_COMMAND = ("run the enrollment server (FastAPI + uvicorn; OpenAPI schema at /openapi.json with server.docs: true)", configure, run)
