"""Per-user artifacts: templates patched with theta match torch's f; signing and version checks refuse."""
import json
import struct
import time

import numpy as np
import pytest

from hyperver.device.artifact import build_artifact, open_artifact, peek_header, seal
from hyperver.device.runtime import DeviceVerifier
from hyperver.device.signing import Signer, TrustedKeys
from hyperver.errors import ConfigError, ModelFileError

# max |logit - torch| on real faces; fp16/int8 relative to the logits' scale (measured: fp16 ~2e-4,
# int8 ~1.4% of it with this theta; their accuracy cost on LFW is in results/server_load.json).
# int8 (dynamic range) on this random verifier: ~3 % of the logit range for f v2, 6.3 % for f v3 (its 7x7 GDConv
# weights quantised too); what int8 costs a trained verifier is measured on LFW by benchmarks/unlock_latency.py.
TOLERANCE = {"fp32": ("abs", 1e-4), "fp16": ("rel", 0.01), "int8": ("rel", 0.08)}


def _torch_logits(spec, theta, crops):
    import torch

    from hyperver.hypernet.enroll import face_input
    from hyperver.hypernet.verifier import forward

    x = torch.cat([face_input(c, spec) for c in crops])
    return forward(spec, torch.from_numpy(theta), x).numpy()


@pytest.mark.parametrize("runtime", ["tflite", "onnx"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_artifact_matches_torch_forward_on_real_faces(runtime, precision, spec, theta, template_store, signer,
                                                      trusted, real_crops):
    template = template_store.get(spec, runtime, precision)
    data = build_artifact(template, theta, -0.25, signer, {"user_id": "alice"})
    art = open_artifact(data, trusted, [spec.version])
    assert (art.f_version, art.threshold, art.runtime, art.header["user_id"]) == (spec.version, -0.25, runtime, "alice")
    device = DeviceVerifier(art)
    got = np.array([device.logit(c) for c in real_crops])
    # Compare against torch on the device's own preprocessing, so only the model is tested here.
    import torch

    from hyperver.device.preprocess import face_array
    from hyperver.hypernet.verifier import forward

    x = torch.from_numpy(np.concatenate([face_array(c, spec.input_size, "NCHW") for c in real_crops]))
    ref = forward(spec, torch.from_numpy(theta), x).numpy()
    kind, tol = TOLERANCE[precision]
    err = np.abs(got - ref).max()
    scale = max(np.abs(ref).max(), np.ptp(ref))
    assert err < (tol if kind == "abs" else tol * scale), (err, ref)
    # ... and against the training-time preprocessing (torch resize): rounding ties cost ~1e-3.
    assert np.abs(got - _torch_logits(spec, theta, real_crops)).max() < 0.01 * scale + err


def test_patched_tflite_equals_a_fresh_conversion(spec, theta, template_store, real_crops):
    """The template route gives the converter's own result (fp32 exactly, int8 the same quantisation)."""
    from hyperver.device.preprocess import face_array
    from hyperver.device.runtime import make_runner
    from hyperver.device.templates import _convert_tflite

    x = face_array(real_crops[0], spec.input_size, "NHWC")
    for precision, tol in (("fp32", 1e-6), ("int8", 1e-3)):
        patched = make_runner("tflite", template_store.get(spec, "tflite", precision).instantiate(theta))
        fresh = make_runner("tflite", _convert_tflite(spec, theta, precision))
        assert abs(patched(x) - fresh(x)) < tol


def test_per_user_build_is_fast_and_sizes_shrink(spec, theta, template_store, signer):
    sizes = {}
    for precision in ("fp32", "fp16", "int8"):
        template = template_store.get(spec, "tflite", precision)
        t0 = time.perf_counter()
        for _ in range(20):
            sizes[precision] = len(build_artifact(template, theta, 0.0, signer))
        assert (time.perf_counter() - t0) / 20 < 0.02      # measured ~1 ms: no converter per user
    assert sizes["fp32"] > sizes["fp16"] > sizes["int8"]
    assert sizes["fp32"] < 4 * spec.n_params + 40_000      # the weights plus a small graph


def test_template_cache_reloads_and_rebuilds_a_corrupt_file(spec, theta, tmp_path):
    from hyperver.device.templates import TemplateStore

    store = TemplateStore(tmp_path)
    first = store.get(spec, "onnx", "fp32")
    path = store.path(spec.version, "onnx", "fp32")
    assert path.is_file()
    again = TemplateStore(tmp_path).get(spec, "onnx", "fp32")
    assert again.instantiate(theta) == first.instantiate(theta)
    path.write_bytes(b"garbage")
    rebuilt = TemplateStore(tmp_path).get(spec, "onnx", "fp32")
    assert rebuilt.instantiate(theta) == first.instantiate(theta)


def test_templates_follow_the_cache_root(spec, theta, signer, tmp_path, monkeypatch):
    """artifacts.template_dir resolves under cache.root (HYPERVER_CACHE), not in the working folder."""
    from pathlib import Path

    from hyperver.config import load_config
    from hyperver.device.builder import ArtifactBuilder
    from hyperver.hypernet.model_io import UserModel

    cwd, cache = tmp_path / "cwd", tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    cfg = load_config(env={"HYPERVER_CACHE": str(cache)})
    assert cfg.template_dir == cache.resolve() / "f_templates"
    user = UserModel(theta, spec, 1.5, np.ones(128, np.float32) / np.sqrt(128))
    ArtifactBuilder(cfg, signer=signer).build(user, runtime="onnx")
    assert (cache / "f_templates" / spec.version / "onnx-fp32.npz").is_file()
    assert not (cwd / "cache").exists()          # the bug: a cache/ appeared in the working folder
    # cache.root from a config or --set likewise; null = the default name; an absolute path is kept
    assert load_config(overrides=[f"cache.root={cache}", "artifacts.template_dir=null"],
                       env={}).template_dir == cache.resolve() / "f_templates"
    assert load_config(overrides=[f"artifacts.template_dir={tmp_path / 't'}"], env={}).template_dir == tmp_path / "t"
    server = Path(__file__).resolve().parents[3] / "configs" / "server.yaml"
    assert load_config(server, env={"HYPERVER_CACHE": str(cache)}).template_dir == cache.resolve() / "f_templates"


def test_bad_theta_is_refused(spec, template_store):
    template = template_store.get(spec, "onnx", "fp32")
    with pytest.raises(ModelFileError, match=f"needs {spec.n_params}"):
        template.instantiate(np.zeros(10, np.float32))
    bad = np.zeros(spec.n_params, np.float32)
    bad[5] = np.nan
    with pytest.raises(ModelFileError, match="NaN"):
        template.instantiate(bad)


# -- refusal ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def artifact_bytes(spec, theta, template_store, signer):
    return build_artifact(template_store.get(spec, "tflite", "fp32"), theta, 0.5, signer, {"user_id": "bob"})


@pytest.mark.parametrize("where", ["model", "header", "signature"])
def test_tampered_artifact_is_refused(where, artifact_bytes, spec, trusted):
    data = bytearray(artifact_bytes)
    (n,) = struct.unpack("<I", data[4:8])
    pos = {"model": 8 + n + 1000, "header": 8 + n // 2, "signature": len(data) - 3}[where]
    data[pos] ^= 0x01
    with pytest.raises(ModelFileError, match="signature does not verify"):
        open_artifact(bytes(data), trusted, [spec.version])


def test_raised_threshold_needs_the_key(artifact_bytes, spec, trusted):
    """Rewriting the header (e.g. threshold -> -1e9, an unlock-anything model) breaks the signature."""
    header = peek_header(artifact_bytes)
    header["threshold"] = -1e9
    (n,) = struct.unpack("<I", artifact_bytes[4:8])
    model = artifact_bytes[8 + n:-64]
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    forged = b"HVA1" + struct.pack("<I", len(head)) + head + model + artifact_bytes[-64:]
    with pytest.raises(ModelFileError, match="signature does not verify"):
        open_artifact(forged, trusted, [spec.version])


def test_other_key_truncation_and_no_keys_are_refused(artifact_bytes, spec, trusted):
    with pytest.raises(ModelFileError, match="untrusted key"):
        open_artifact(artifact_bytes, TrustedKeys([Signer.generate().public_raw]), [spec.version])
    with pytest.raises(ModelFileError, match="no trusted signing key"):
        open_artifact(artifact_bytes, TrustedKeys([]), [spec.version])
    with pytest.raises(ModelFileError, match="truncated"):
        open_artifact(artifact_bytes[:200], trusted, [spec.version])
    with pytest.raises(ModelFileError, match="not a HyperVer artifact"):
        open_artifact(b"TFL3" + artifact_bytes[4:], trusted, [spec.version])


def test_wrong_f_version_is_refused_even_when_signed(artifact_bytes, spec, signer, trusted):
    header = peek_header(artifact_bytes)
    header["f_version"] = "f-v1-0000000000"
    (n,) = struct.unpack("<I", artifact_bytes[4:8])
    other = seal(header, artifact_bytes[8 + n:-64], signer)
    with pytest.raises(ModelFileError, match=r"built for f 'f-v1-0000000000'; this device runs f-v\d-"):
        open_artifact(other, trusted, [spec.version])
    header = {**peek_header(artifact_bytes), "model_sha256": "0" * 64}
    with pytest.raises(ModelFileError, match="do not match the signed header"):
        open_artifact(seal(header, artifact_bytes[8 + n:-64], signer), trusted, [spec.version])


def test_the_default_device_runs_the_configured_f():
    from hyperver.config import load_config
    from hyperver.hypernet.verifier import VerifierSpec

    cfg = load_config(env={})
    version = VerifierSpec.from_dict(dict(cfg.get_path("hypernet.f"))).version
    assert version in cfg.get_path("device.accepted_f_versions"), \
        f"hypernet.f changed: add {version} to device.accepted_f_versions in base.yaml"


def test_keys_from_base64_and_pem(tmp_path, signer):
    from hyperver.device.signing import load_signer, load_trusted_keys

    pem = tmp_path / "server.pem"
    pem.write_bytes(signer.private_pem())
    for value in (signer.private_b64(), str(pem)):
        assert Signer.from_value(value).key_id == signer.key_id
    cfg = {"artifacts": {"signing_key": None}, "device": {"trusted_keys": []}}
    from hyperver.config import Config

    assert load_signer(Config(cfg), env={"HYPERVER_SERVER_KEY": str(pem)}).key_id == signer.key_id
    keys = load_trusted_keys(Config(cfg), env={"HYPERVER_TRUSTED_KEYS": f"{signer.public_b64}, "})
    assert list(keys.keys) == [signer.key_id]
    with pytest.raises(ConfigError, match="no artifact signing key"):
        load_signer(Config(cfg), env={})
    with pytest.raises(ConfigError, match="32 bytes"):
        Signer.from_value("c2hvcnQ=")
    with pytest.raises(ConfigError, match="neither a PEM file nor base64"):
        TrustedKeys.from_values(["not a key!"])
