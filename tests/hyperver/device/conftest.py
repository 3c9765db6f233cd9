"""Fixtures for the device tests: f's spec, templates built once per session, keys, real crops."""
from __future__ import annotations

import numpy as np
import pytest

LFW_PROBES = ["Zico/Zico_0001.jpg", "Abel_Pacheco/Abel_Pacheco_0001.jpg", "Aaron_Peirsol/Aaron_Peirsol_0001.jpg",
              "Abdullah_Gul/Abdullah_Gul_0001.jpg", "Adam_Sandler/Adam_Sandler_0001.jpg"]


@pytest.fixture(scope="session")
def spec():
    from hyperver.config import load_config
    from hyperver.hypernet.verifier import VerifierSpec

    return VerifierSpec.from_dict(dict(load_config(env={}).get_path("hypernet.f")))


@pytest.fixture(scope="session")
def template_store(tmp_path_factory):
    """One template cache for the whole session (the enrollment-server tests share this path)."""
    from hyperver.device.templates import TemplateStore

    return TemplateStore(tmp_path_factory.getbasetemp() / "f_templates")


@pytest.fixture(scope="session")
def signer():
    from hyperver.device.signing import Signer

    return Signer.generate()


@pytest.fixture(scope="session")
def trusted(signer):
    from hyperver.device.signing import TrustedKeys

    return TrustedKeys([signer.public_raw])


@pytest.fixture(scope="session")
def theta(spec) -> np.ndarray:
    """A verifier with realistic weight scales and non-zero biases (no trained generator needed)."""
    import torch

    from hyperver.hypernet.verifier import init_theta

    g = torch.Generator().manual_seed(1)
    return (init_theta(spec, g) + 0.05 * torch.randn(spec.n_params, generator=g)).numpy()


@pytest.fixture(scope="session")
def real_crops(lfw_images) -> list[np.ndarray]:
    from hyperver.align import Aligner
    from hyperver.data import load_image

    aligner = Aligner()
    return [aligner.align_photo(load_image(lfw_images / p)).crop for p in LFW_PROBES]
