"""Fixtures for the enrollment server: an untrained generator (the API does not depend on its
quality), a temporary signing key and API key, f templates shared with the device tests; for the
scale-out tests a throw-away PostgreSQL cluster (one per session, a fresh database per test)."""
from __future__ import annotations

import io
import re
import secrets
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
API_KEY = "test-key-123"
PEOPLE = ["Zico/Zico_0001.jpg", "Abel_Pacheco/Abel_Pacheco_0001.jpg", "Aaron_Peirsol/Aaron_Peirsol_0001.jpg",
          "Abdullah_Gul/Abdullah_Gul_0001.jpg", "Adam_Sandler/Adam_Sandler_0001.jpg",
          "Adrien_Brody/Adrien_Brody_0001.jpg", "Al_Gore/Al_Gore_0001.jpg", "Alan_Greenspan/Alan_Greenspan_0001.jpg"]


@pytest.fixture(scope="session")
def photos(lfw_images) -> dict[str, bytes]:
    """user id -> the bytes of one LFW photo of that person."""
    return {p.split("/")[0].lower(): (lfw_images / p).read_bytes() for p in PEOPLE}


@pytest.fixture(scope="session")
def server_files(tmp_path_factory, data_root):
    """Generator, signing key and warmed f templates, built once per session."""
    import torch

    from hyperver.config import load_config
    from hyperver.device.signing import Signer
    from hyperver.device.templates import TemplateStore
    from hyperver.hypernet.model_io import save_generator
    from hyperver.hypernet.train import build_generator

    root = tmp_path_factory.mktemp("server_files")
    cfg = load_config(env={})
    gen = build_generator(dict(cfg.get_path("hypernet")), 128)
    # A fresh generator's per-user change starts near zero by design, and without a trained input
    # mean two people's (uncentred, dlib) embeddings look alike to it: users' models then differ by
    # ~1e-5-1e-4 in score. A larger output layer and per-parameter change make them differ clearly
    # (~1e-3 and more), as trained ones do.
    with torch.no_grad():
        gen.out.weight.normal_(std=0.05, generator=torch.Generator().manual_seed(0))
        gen.delta_scale.mul_(10.0)
    generator = save_generator(gen, root / "generator_untrained.safetensors", backbone="dlib")
    templates = tmp_path_factory.getbasetemp() / "f_templates"   # same path as tests/hyperver/device
    store = TemplateStore(templates)
    for runtime in ("tflite", "onnx"):
        store.get(gen.spec, runtime, "fp32")
    signer = Signer.generate()
    return {"generator": generator, "templates": templates, "signer": signer, "data_root": data_root}


def server_overrides(files: dict, tmp: Path, **extra) -> list[str]:
    values = {"data.root": files["data_root"], "cache.root": tmp / "cache",
              "artifacts.template_dir": files["templates"],
              "artifacts.signing_key": files["signer"].private_b64(), "server.generator_path": files["generator"],
              "server.state_dir": tmp / "state", "server.threshold": 0.0, "embed.workers": 1, **extra}
    return [f"{k}={v}" for k, v in values.items()]


@pytest.fixture()
def make_service(server_files, tmp_path):
    from hyperver.config import load_config

    from enroll_server.service import EnrollmentService
    from enroll_server.settings import ServerSettings

    made = []

    def make(**extra):
        cfg = load_config(overrides=server_overrides(server_files, tmp_path, **extra), env={})
        service = EnrollmentService(cfg, ServerSettings.from_config(cfg, env={"HYPERVER_API_KEY": API_KEY}))
        made.append(service)
        return service

    yield make


@pytest.fixture()
def launch(server_files, tmp_path):
    from enroll_server.process import ServerProcess

    started: list[ServerProcess] = []

    def start(fault: str | None = None, **extra) -> ServerProcess:
        env = {"HYPERVER_API_KEY": API_KEY, "HYPERVER_SERVER_FAULT": fault or ""}
        server = ServerProcess(server_overrides(server_files, tmp_path, **extra), env,
                               tmp_path / f"server_{len(started)}.log", cwd=REPO)
        started.append(server)
        return server

    yield start
    for s in started:
        s.__exit__()


def jpeg_bytes(array: np.ndarray, **kw) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", **kw)
    return buf.getvalue()


@pytest.fixture(scope="session")
def postgres():
    """A throw-away PostgreSQL cluster (initdb + pg_ctl in a temporary folder, run as the unprivileged
    'postgres' user when the tests run as root); skipped, with the reason, where PostgreSQL is missing."""
    from enroll_server.local_services import MissingService, PostgresCluster

    try:
        cluster = PostgresCluster()
    except MissingService as exc:
        pytest.skip(f"no PostgreSQL for the scale-out tests: {exc}")
    yield cluster
    cluster.destroy()


@pytest.fixture()
def pg_url(postgres, request) -> str:
    """The URL of a new, empty database in the session's cluster, named after the test."""
    return postgres.create_database(f"t_{re.sub(r'[^a-z0-9]+', '_', request.node.name.lower())[:40]}_"
                                    f"{secrets.token_hex(3)}")


@pytest.fixture(scope="session")
def many_photos(lfw_images) -> dict[str, bytes]:
    """user id -> one LFW photo each of 16 people whose photo has exactly one detectable face (the
    first people in name order), for bursts of enrollments."""
    from hyperver.align import Aligner
    from hyperver.config import load_config
    from hyperver.data.imageio import decode_image
    from hyperver.errors import HyperVerError

    aligner = Aligner.from_config(load_config(env={}).get_path("align"))
    out: dict[str, bytes] = {}
    for person in sorted(lfw_images.iterdir()):
        first = sorted(person.glob("*.jpg"))[:1]
        if not first:
            continue
        data = first[0].read_bytes()
        try:
            aligner.align_photo(decode_image(data), person.name)
        except HyperVerError:
            continue
        out[person.name.lower()] = data
        if len(out) == 16:
            return out
    pytest.fail(f"only {len(out)} LFW photos with one detectable face")
