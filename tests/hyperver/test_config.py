import pytest

from hyperver.config import load_config
from hyperver.errors import ConfigError


def test_base_config_loads_and_env_overrides_paths(tmp_path):
    cfg = load_config(env={"HYPERVER_DATA": str(tmp_path), "HYPERVER_CACHE": str(tmp_path / "c")})
    assert cfg.data_root == tmp_path.resolve()
    assert cfg.cache_root == (tmp_path / "c").resolve()
    assert cfg.get_path("align.crop_size") == 112


def test_experiment_config_layers_over_base(tmp_path):
    parent = tmp_path / "parent.yaml"
    parent.write_text("_base_: base.yaml\nalign: {crop_size: 128}\n")
    child = tmp_path / "child.yaml"
    child.write_text("_base_: parent.yaml\nembed: {batch_size: 8}\n")
    cfg = load_config(child, env={})
    assert cfg.get_path("align.crop_size") == 128
    assert cfg.get_path("embed.batch_size") == 8
    assert cfg.get_path("embed.model") == load_config(env={}).get_path("embed.model")  # untouched base value


def test_unknown_key_is_an_error_with_a_hint(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("_base_: base.yaml\nalign: {crop_sise: 128}\n")
    with pytest.raises(ConfigError, match="align.crop_sise.*did you mean 'align.crop_size'"):
        load_config(bad, env={})
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(overrides=["embed.modle=x"], env={})


def test_user_datasets_are_an_open_section(tmp_path):
    cfg = load_config(overrides=["datasets.mine={kind: folder, path: faces}"], env={})
    assert cfg.get_path("datasets.mine.kind") == "folder"


def test_missing_and_malformed_config_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", env={})
    broken = tmp_path / "broken.yaml"
    broken.write_text("align: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken, env={})
    loop = tmp_path / "loop.yaml"
    loop.write_text("_base_: loop.yaml\n")
    with pytest.raises(ConfigError, match="loop"):
        load_config(loop, env={})


def test_every_shipped_experiment_config_loads():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
    assert configs, "configs/ should hold the experiment presets"
    for path in configs:
        cfg = load_config(path, env={})
        assert cfg.get_path("supernet.phases"), path


def test_cache_folders_resolve_under_the_cache_root(tmp_path):
    """artifacts.template_dir / demo.work_dir: relative or null -> under cache.root, absolute kept."""
    cfg = load_config(env={"HYPERVER_CACHE": str(tmp_path / "c")})
    assert cfg.template_dir == (tmp_path / "c").resolve() / "f_templates"
    assert cfg.cache_dir("demo.work_dir", "demo") == (tmp_path / "c").resolve() / "demo"
    cfg = load_config(overrides=[f"cache.root={tmp_path}", "artifacts.template_dir=null",
                                 f"demo.work_dir={tmp_path / 'abs'}"], env={})
    assert cfg.template_dir == tmp_path.resolve() / "f_templates"
    assert cfg.cache_dir("demo.work_dir", "demo") == tmp_path / "abs"
