"""Issue 18 newcomer items: config defaults in --help, one path photo -> signed artifact -> unlock, batch verify."""
import json
from pathlib import Path

import pytest

from hyperver.cli import main, with_config_values

REPO = Path(__file__).resolve().parents[2]
KEY_ENV = ("HYPERVER_SERVER_KEY", "HYPERVER_TRUSTED_KEYS")


@pytest.fixture()
def in_repo(monkeypatch):
    """A user in a clone: the shipped generator's relative config path resolves; no keys from the caller's shell."""
    monkeypatch.chdir(REPO)
    for var in KEY_ENV:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def zico_model(tmp_path_factory, lfw_images) -> Path:
    """A per-user model from the shipped generator (enrollment itself takes ~0.1 s)."""
    from hyperver.config import load_config
    from hyperver.hypernet.enroll import Enroller

    cfg = load_config(env={})
    user = Enroller(REPO / cfg.get_path("hypernet.generator_path"), cfg).enroll([lfw_images / "Zico/Zico_0001.jpg"])
    return user.save(tmp_path_factory.mktemp("batch") / "zico.hv")


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_help_shows_the_configured_values(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "250")   # one line per option: the checks below do not depend on wrapping
    for command, expected in (("enroll", ["hypernet.generator_path = assets/hypernet/generator_v3.safetensors"]),
                              ("serve", ["server.port = 8080", "server.host = 127.0.0.1", "HYPERVER_API_KEY",
                                         "HYPERVER_SERVER_KEY", "artifacts.signing_key = null"]),
                              ("unlock", ["device.trusted_keys = []"])):
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        out = " ".join(capsys.readouterr().out.split())
        assert exc.value.code == 0
        for text in expected:
            assert text in out, (command, text)


def test_help_values_never_show_secrets_and_leave_examples_alone():
    cfg = {"artifacts": {"signing_key": "c2VjcmV0"}, "server": {"api_keys": ["hunter2"], "port": 80},
           "embed": {"workers": 2}, "hypernet": {"checkpoint_dir": "ck"}}
    text = with_config_values("artifacts.signing_key, server.api_keys, server.port", cfg)
    assert text == "artifacts.signing_key = (set), server.api_keys = (set), server.port = 80"
    for example in ("--set embed.workers=1", "hypernet.checkpoint_dir/last.pt", "a/server.port", "server.docs: true",
                    "e.g. results/x.json"):
        assert with_config_values(example, cfg) == example
    assert with_config_values("embed.workers", {"embed": {"workers": "100%"}}, percent=True) == "embed.workers = 100%%"


def test_enroll_defaults_to_the_configured_generator(in_repo, tmp_path, lfw_images, capsys, monkeypatch):
    photo, probe = lfw_images / "Zico/Zico_0001.jpg", lfw_images / "Zico/Zico_0002.jpg"
    assert main(["enroll", str(photo), "-o", str(tmp_path / "zico")]) == 0
    out = capsys.readouterr()
    res = json.loads(out.out)
    assert res["output"] == str(tmp_path / "zico.hv") and "artifact" not in res
    assert not (tmp_path / "zico.hva").exists()
    # No signing key: one line says exactly how to get the .hva for unlock.
    assert len(out.err.strip().splitlines()) == 1
    assert "hyperver artifact keygen -o" in out.err and "HYPERVER_SERVER_KEY=" in out.err
    # verify keeps working on the .hv, with its single-photo exit codes.
    rc = main(["verify", res["output"], str(probe)])
    verdict = json.loads(capsys.readouterr().out)
    assert rc == (0 if verdict["match"] else 1) and set(verdict) >= {"logit", "score", "threshold", "match"}
    # A key that is set but unusable stops enrollment before anything is written.
    monkeypatch.setenv("HYPERVER_SERVER_KEY", "not-a-key")
    assert main(["enroll", str(photo), "-o", str(tmp_path / "bad")]) == 2
    assert "signing key" in capsys.readouterr().err and not (tmp_path / "bad.hv").exists()


def test_enroll_without_a_name_writes_next_to_the_caller(tmp_path, lfw_images, capsys, monkeypatch):
    from hyperver.config import load_config

    for var in KEY_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYPERVER_MODELS", str(REPO / "models"))   # outside the clone: say where the models are
    generator = REPO / load_config(env={}).get_path("hypernet.generator_path")
    assert main(["enroll", str(lfw_images / "Zico/Zico_0001.jpg"), "--generator", str(generator)]) == 0
    assert json.loads(capsys.readouterr().out)["output"] == "Zico_0001.hv"
    assert (tmp_path / "Zico_0001.hv").is_file()


def test_one_path_from_photo_to_unlock_decision(in_repo, tmp_path, tmp_path_factory, lfw_images, capsys,
                                                monkeypatch):
    photo, probe = lfw_images / "Zico/Zico_0001.jpg", lfw_images / "Zico/Zico_0002.jpg"
    assert main(["artifact", "keygen", "-o", str(tmp_path / "key.pem")]) == 0
    keys = json.loads(capsys.readouterr().out)
    assert keys["public_key_file"] == str(tmp_path / "key.pub") and (tmp_path / "key.pub").is_file()
    monkeypatch.setenv("HYPERVER_SERVER_KEY", str(tmp_path / "key.pem"))
    # The session's template folder (shared with the device tests): f is exported once per test run.
    templates = tmp_path_factory.getbasetemp() / "f_templates"
    assert main(["enroll", str(photo), "-o", str(tmp_path / "me"), "--set", f"artifacts.template_dir={templates}"]) == 0
    out = capsys.readouterr()
    res = json.loads(out.out)
    assert res["artifact"] == str(tmp_path / "me.hva") and res["public_key"] == keys["public_key"]
    assert "hyperver unlock --model" in out.err
    monkeypatch.delenv("HYPERVER_SERVER_KEY")   # the device side holds the public key only

    rc = main(["unlock", "--model", res["artifact"], "--image", str(probe), "--trusted-key", keys["public_key_file"]])
    unlocked = json.loads(capsys.readouterr().out)
    assert rc == (0 if unlocked["unlock"] else 1) and unlocked["user_id"] == "me"
    rc = main(["verify", res["output"], str(probe)])
    verdict = json.loads(capsys.readouterr().out)
    # Same model on both paths: the TFLite artifact's logit is torch's, so the decisions agree.
    assert abs(unlocked["score"] - verdict["logit"]) < 1e-3 and unlocked["unlock"] == verdict["match"]

    # The private key by mistake, or another key: exit 2 with one line that says so.
    assert main(["unlock", "--model", res["artifact"], "--image", str(probe), "--trusted-key",
                 str(tmp_path / "key.pem")]) == 2
    assert "is a private key" in capsys.readouterr().err
    assert main(["artifact", "keygen", "-o", str(tmp_path / "other.pem")]) == 0
    capsys.readouterr()
    assert main(["unlock", "--model", res["artifact"], "--image", str(probe), "--trusted-key",
                 str(tmp_path / "other.pub")]) == 2
    assert "signature does not verify" in capsys.readouterr().err


def test_batch_verify_folder_with_an_unreadable_photo(zico_model, tmp_path, lfw_images, capsys):
    import shutil

    folder = tmp_path / "photos"
    folder.mkdir()
    for p in ("Zico/Zico_0002.jpg", "Abel_Pacheco/Abel_Pacheco_0001.jpg"):
        shutil.copy(lfw_images / p, folder)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    (folder / "notes.txt").write_text("not a photo: skipped")
    rc = main(["verify", str(zico_model), "--photos", str(folder)])
    lines = _json_lines(capsys.readouterr().out)
    assert rc == 2 and len(lines) == 4
    rows, summary = lines[:3], lines[3]["summary"]
    assert [Path(r["photo"]).name for r in rows] == ["Abel_Pacheco_0001.jpg", "Zico_0002.jpg", "broken.jpg"]
    assert "not an image" in rows[2]["error"]
    assert all("match" in r and r["ms"] > 0 for r in rows[:2])
    assert summary["photos"] == 3 and summary["errors"] == 1 and summary["match"] + summary["no_match"] == 2
    assert summary["mean_ms"] > 0
    # Every photo scored: exit 0 whatever the verdicts.
    assert main(["verify", str(zico_model), "--photos", str(folder / "Zico_0002.jpg")]) == 0
    assert _json_lines(capsys.readouterr().out)[-1]["summary"]["errors"] == 0


def test_batch_verify_pairs_file(zico_model, tmp_path, lfw_images, capsys):
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(f"# model photo\n{zico_model}\t{lfw_images / 'Zico/Zico_0002.jpg'}\n\n"
                     f"{zico_model} missing.jpg\nonly-one-field\nnope.hv {lfw_images / 'Zico/Zico_0002.jpg'}\n")
    rc = main(["verify", "--pairs", str(pairs)])
    lines = _json_lines(capsys.readouterr().out)
    assert rc == 2 and len(lines) == 5
    ok, missing, malformed, no_model = lines[:4]
    assert ok["line"] == 2 and "match" in ok
    assert missing["photo"] == str(tmp_path / "missing.jpg") and "not found" in missing["error"]
    assert malformed["line"] == 5 and "expected 'USER_MODEL PHOTO'" in malformed["error"]
    assert "user model not found" in no_model["error"]
    assert lines[4]["summary"] == {**lines[4]["summary"], "photos": 4, "errors": 3}
    # A model AND --pairs, or nothing to score: a usage error (exit 2), not a traceback.
    assert main(["verify", str(zico_model), "--pairs", str(pairs)]) == 2
    assert main(["verify", str(zico_model)]) == 2
    assert "verify needs" in capsys.readouterr().err
