"""`hyperver unlock`: exit codes, clear errors, and no torch/tensorflow on the device path."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from hyperver.cli import main
from hyperver.device.artifact import build_artifact


@pytest.fixture(scope="module")
def models(tmp_path_factory, spec, theta, template_store, signer):
    """The same verifier sealed with a threshold nothing reaches (deny) and one everything reaches."""
    out = tmp_path_factory.mktemp("unlock")
    paths = {}
    for name, runtime, threshold in (("deny", "tflite", 1e6), ("unlock", "tflite", -1e6), ("onnx", "onnx", -1e6)):
        paths[name] = out / f"{name}.hva"
        paths[name].write_bytes(build_artifact(template_store.get(spec, runtime, "fp32"), theta, threshold, signer,
                                               {"user_id": name}))
    tampered = bytearray(paths["unlock"].read_bytes())
    tampered[-100] ^= 0xFF
    paths["tampered"] = out / "tampered.hva"
    paths["tampered"].write_bytes(bytes(tampered))
    return paths


@pytest.fixture(scope="module")
def probe(lfw_images):
    return str(lfw_images / "Zico" / "Zico_0001.jpg")


def _unlock(model, image, signer, capsys, *extra):
    rc = main(["unlock", "--model", str(model), "--image", str(image), "--trusted-key", signer.public_b64, *extra])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_exit_codes_unlock_and_deny(models, probe, signer, capsys):
    rc, out, _ = _unlock(models["unlock"], probe, signer, capsys)
    res = json.loads(out)
    assert rc == 0 and res["decision"] == "unlock" and res["threshold"] == -1e6 and np.isfinite(res["score"])
    rc, out, _ = _unlock(models["deny"], probe, signer, capsys)
    assert rc == 1 and json.loads(out)["decision"] == "deny"
    rc, out, _ = _unlock(models["onnx"], probe, signer, capsys)
    assert rc == 0 and json.loads(out)["runtime"] == "onnx"


def test_errors_exit_2_with_one_clear_line(models, probe, signer, capsys, tmp_path, two_faces_image):
    from PIL import Image

    two = tmp_path / "two.jpg"
    Image.fromarray(two_faces_image).save(two)
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("hello")
    cases = [(models["tampered"], probe, "signature does not verify"),
             (models["unlock"], two, "2 faces"),
             (models["unlock"], not_image, "not an image"),
             (tmp_path / "missing.hva", probe, "model file not found"),
             (not_image, probe, "not a HyperVer artifact")]
    for model, image, message in cases:
        rc, out, err = _unlock(model, image, signer, capsys)
        assert rc == 2 and message in err and out == "", (model, image, err)
    # No trusted key at all: the device refuses rather than running an unverifiable model.
    rc = main(["unlock", "--model", str(models["unlock"]), "--image", probe, "--set", "device.trusted_keys=[]"])
    assert rc == 2 and "no trusted signing key" in capsys.readouterr().err


def test_unlock_imports_neither_torch_nor_tensorflow(models, probe, signer):
    code = ("import sys; from hyperver.cli import main; rc = main(sys.argv[1:]); "
            "heavy = [m for m in ('torch', 'tensorflow', 'keras', 'jax') if m in sys.modules]; "
            "print('HEAVY', heavy, file=sys.stderr); sys.exit(rc if not heavy else 99)")
    env = {**os.environ, "HYPERVER_TRUSTED_KEYS": signer.public_b64}
    proc = subprocess.run([sys.executable, "-c", code, "unlock", "--model", str(models["unlock"]), "--image", probe],
                          capture_output=True, text=True, env=env, timeout=120)
    assert "HEAVY []" in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["decision"] == "unlock"


def test_artifact_cli_keygen_build_inspect(tmp_path, spec, theta, capsys, monkeypatch):
    from hyperver.hypernet.model_io import UserModel

    key = tmp_path / "server.pem"
    assert main(["artifact", "keygen", "-o", str(key)]) == 0
    pub = json.loads(capsys.readouterr().out)["public_key"]
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert main(["artifact", "keygen", "-o", str(key)]) == 2       # never overwrites a key
    capsys.readouterr()
    user = UserModel(theta, spec, 1.5, np.ones(128, np.float32) / np.sqrt(128))
    user.save(tmp_path / "carol.hv")
    monkeypatch.setenv("HYPERVER_SERVER_KEY", str(key))
    monkeypatch.setenv("HYPERVER_TRUSTED_KEYS", pub)
    templates = f"artifacts.template_dir={tmp_path / 'templates'}"
    assert main(["artifact", "build", str(tmp_path / "carol.hv"), "-o", str(tmp_path / "carol.hva"),
                 "--runtime", "onnx", "--set", templates]) == 0
    assert json.loads(capsys.readouterr().out)["threshold"] == 1.5
    assert main(["artifact", "inspect", str(tmp_path / "carol.hva")]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["verified"] and res["header"]["user_id"] == "carol" and res["header"]["threshold"] == 1.5
