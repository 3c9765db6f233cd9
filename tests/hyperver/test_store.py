import numpy as np
import pytest

from hyperver.errors import ModelFileError
from hyperver.store import ShardedStore


def test_put_get_and_reopen(tmp_path):
    store = ShardedStore(tmp_path / "s", meta={"v": 1})
    store.put_many(["a", "b"], {"x": np.array([[1, 2], [3, 4]], np.float32), "flag": np.array([True, False])})
    store.put_many(["c"], {"x": np.array([[5, 6]], np.float32), "flag": np.array([True])})
    again = ShardedStore(tmp_path / "s", meta={"v": 1})
    assert len(again) == 3 and "c" in again
    np.testing.assert_array_equal(again.get_field(["c", "a"], "x"), [[5, 6], [1, 2]])
    assert again.get("b")["flag"] == False  # noqa: E712
    assert again.missing(["a", "z"]) == ["z"]
    with pytest.raises(KeyError, match="'z'"):
        again.get_field(["z"], "x")


def test_interrupted_shard_is_ignored_and_settings_are_checked(tmp_path):
    store = ShardedStore(tmp_path / "s", meta={"v": 1})
    store.put_many(["a"], {"x": np.zeros((1, 2))})
    (tmp_path / "s" / ".tmp-dead").mkdir()      # a write killed before its rename
    (tmp_path / "s" / "shard-999").mkdir()      # a shard dir without keys.json
    assert len(ShardedStore(tmp_path / "s")) == 1
    with pytest.raises(ModelFileError, match="other settings"):
        ShardedStore(tmp_path / "s", meta={"v": 2})
    with pytest.raises(ValueError, match="rows"):
        store.put_many(["a", "b"], {"x": np.zeros((1, 2))})
