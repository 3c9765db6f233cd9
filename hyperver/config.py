"""Layered YAML configuration.

An experiment config names its parent with ``_base_: other.yaml`` (relative to itself) and
overrides only what differs, as in insightface's arcface_torch. Every key must exist in the
base config (typos are errors, not silently ignored), except inside open sections such as
``datasets`` where users add their own entries. Environment variables override paths:
``HYPERVER_DATA`` -> ``data.root``, ``HYPERVER_CACHE`` -> ``cache.root``,
``HYPERVER_MODELS`` -> ``models.dir``.
"""
from __future__ import annotations

import copy
import difflib
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from .errors import ConfigError

PACKAGE_CONFIG_DIR = Path(__file__).resolve().parent / "default_configs"
BASE_CONFIG = PACKAGE_CONFIG_DIR / "base.yaml"
# Sections whose children are user-defined names (datasets, models) rather than fixed keys.
OPEN_SECTIONS = {("datasets",), ("embedders",)}
ENV_OVERRIDES = {"HYPERVER_DATA": ("data", "root"), "HYPERVER_CACHE": ("cache", "root"),
                 "HYPERVER_MODELS": ("models", "dir")}


class Config(dict):
    """A nested dict with attribute-free, explicit access: ``cfg.get_path("align.crop_size")``."""

    def get_path(self, dotted: str, default: Any = ConfigError) -> Any:
        node: Any = self
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                if default is ConfigError:
                    raise ConfigError(f"config key {dotted!r} is missing")
                return default
            node = node[part]
        return node

    @property
    def data_root(self) -> Path:
        root = self.get_path("data.root", None)
        if not root:
            raise ConfigError("no data root: set HYPERVER_DATA or data.root in the config")
        return Path(os.path.expanduser(str(root))).resolve()

    @property
    def cache_root(self) -> Path:
        return Path(os.path.expanduser(str(self.get_path("cache.root")))).resolve()

    def cache_dir(self, dotted: str, default: str) -> Path:
        """A folder that belongs to the cache (``artifacts.template_dir``, ``demo.work_dir``).

        A relative value, or null (= ``default``), resolves under ``cache.root``, so that
        ``HYPERVER_CACHE`` moves it too instead of a ``cache/`` appearing in the working folder;
        an absolute (or ``~``) path is used as it is.
        """
        value = self.get_path(dotted, None)
        path = Path(os.path.expanduser(str(value if value not in (None, "") else default)))
        return path if path.is_absolute() else self.cache_root / path

    @property
    def template_dir(self) -> Path:
        """f's exported templates (hyperver.device.templates.TemplateStore), under the cache root."""
        return self.cache_dir("artifacts.template_dir", "f_templates")

    @property
    def models_dir(self) -> Path:
        """Folder of the third-party model files (hyperver.model_files)."""
        return Path(os.path.expanduser(str(self.get_path("models.dir")))).resolve()

    @property
    def results_dir(self) -> Path:
        return Path(os.path.expanduser(str(self.get_path("results.dir")))).resolve()


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at top level")
    return data


def _load_chain(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config inheritance loop through {path}")
    data = _read_yaml(path)
    base_name = data.pop("_base_", None)
    if base_name is None:
        return data
    base_path = (path.parent / base_name) if not Path(base_name).is_absolute() else Path(base_name)
    if not base_path.exists() and (PACKAGE_CONFIG_DIR / base_name).exists():
        base_path = PACKAGE_CONFIG_DIR / base_name
    return merge(_load_chain(base_path, seen + (path,)), data, check_against=None)


def _check_keys(reference: Mapping, override: Mapping, prefix: tuple[str, ...]) -> None:
    if prefix in OPEN_SECTIONS:
        return
    for key, value in override.items():
        if key not in reference:
            close = difflib.get_close_matches(str(key), [str(k) for k in reference], n=1)
            hint = f" (did you mean {'.'.join(prefix + (close[0],))!r}?)" if close else ""
            raise ConfigError(f"unknown config key {'.'.join(prefix + (str(key),))!r}{hint}")
        if isinstance(value, Mapping) and isinstance(reference[key], Mapping):
            _check_keys(reference[key], value, prefix + (key,))


def merge(base: Mapping, override: Mapping, check_against: Mapping | None = None) -> dict:
    """Deep-merge ``override`` into a copy of ``base``; with ``check_against``, unknown keys raise."""
    if check_against is not None:
        _check_keys(check_against, override, ())
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _parse_overrides(pairs: Iterable[str]) -> dict:
    tree: dict = {}
    for item in pairs:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        dotted, raw = item.split("=", 1)
        node = tree
        parts = dotted.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return tree


def load_config(path: str | os.PathLike | None = None, overrides: Iterable[str] = (),
                env: Mapping[str, str] | None = None) -> Config:
    """Load the base config, layer ``path`` (and its ``_base_`` chain) and ``key=value`` overrides.

    Environment variables (``HYPERVER_DATA``, ``HYPERVER_CACHE``) win over files, and
    ``--set`` style overrides win over everything.
    """
    env = os.environ if env is None else env
    base = _read_yaml(BASE_CONFIG)
    cfg = base
    if path is not None:
        cfg = merge(base, _load_chain(Path(path)), check_against=base)
    for var, keys in ENV_OVERRIDES.items():
        if env.get(var):
            cfg = merge(cfg, {keys[0]: {keys[1]: env[var]}})
    cfg = merge(cfg, _parse_overrides(overrides), check_against=base)
    return Config(cfg)
