"""Thresholds by FAR (issue #18, item 14): the generator file stores them, the signed models get the one
for server.target_far, and the browser page's unlock decides at server.unlock_far's (1e-2) when the file
stores it, else at the signed model's own, with a note saying so."""
from __future__ import annotations

import pytest

from tests.enroll_server.conftest import API_KEY


def generator_with(server_files, tmp_path, name: str, **extra):
    from hyperver.hypernet.model_io import load_generator, save_generator

    gen, meta = load_generator(server_files["generator"])
    return save_generator(gen, tmp_path / name, backbone=meta["backbone"], extra=extra)


def service_for(server_files, tmp_path, generator, **settings):
    from hyperver.config import load_config

    from enroll_server.service import EnrollmentService
    from enroll_server.settings import ServerSettings
    from tests.enroll_server.conftest import server_overrides

    values = {"server.generator_path": generator, "server.threshold": "null", **settings}
    cfg = load_config(overrides=server_overrides(server_files, tmp_path, **values), env={})
    return EnrollmentService(cfg, ServerSettings.from_config(cfg, env={"HYPERVER_API_KEY": API_KEY}))


def test_stored_thresholds_by_far_and_a_metadata_update_that_keeps_the_weights(server_files, tmp_path):
    import torch
    from safetensors import safe_open

    from hyperver.hypernet.model_io import generator_thresholds, stored_threshold, update_generator_metadata

    legacy = {"threshold": 7.5, "threshold_far": 0.001}           # the single threshold of older exports
    assert generator_thresholds(legacy) == {"0.001": 7.5}
    assert stored_threshold(legacy, 1e-3) == 7.5 and stored_threshold(legacy, 1e-2) is None
    assert stored_threshold({"threshold": 7.5}, 1e-3) is None     # a threshold of unknown FAR is none of these

    path = generator_with(server_files, tmp_path, "g.safetensors", **legacy)

    def tensors():
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}

    before = tensors()
    update_generator_metadata(path, {"thresholds": {"0.01": 5.5}})
    after = tensors()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before)
    from hyperver.hypernet.model_io import load_generator

    meta = load_generator(path)[1]
    assert generator_thresholds(meta) == {"0.001": 7.5, "0.01": 5.5} and meta["threshold"] == 7.5


def test_hypernet_threshold_stores_the_chosen_thresholds(server_files, tmp_path, monkeypatch):
    """`hyperver hypernet-threshold --far 0.01` (the LFW set-5 scoring itself is validation_threshold's, tested
    with the generator's training; here it is replaced by fixed values)."""
    import hyperver.hypernet.evaluate as evaluate
    from hyperver.config import load_config
    from hyperver.hypernet.model_io import load_generator

    path = generator_with(server_files, tmp_path, "g.safetensors", threshold=7.5, threshold_far=0.001)
    monkeypatch.setattr(evaluate, "validation_thresholds", lambda cfg, gen, backbone, fars: {f: 5.5 for f in fars})
    out = evaluate.store_generator_thresholds(load_config(env={}), str(path), [0.01])
    assert out["thresholds"] == {"0.001": 7.5, "0.01": 5.5}
    assert load_generator(path)[1]["thresholds"] == {"0.001": 7.5, "0.01": 5.5}


def test_the_page_decides_at_the_stored_far_1e2_threshold(server_files, tmp_path, photos):
    """Thresholds far apart on purpose: the device (FAR 1e-3) denies, the page (FAR 1e-2) unlocks."""
    path = generator_with(server_files, tmp_path, "g.safetensors", threshold=1e6, threshold_far=0.001,
                          thresholds={"0.001": 1e6, "0.01": -1e6})
    service = service_for(server_files, tmp_path, path)
    try:
        assert (service.threshold, service.threshold_far) == (1e6, 0.001)
        health = service.health()
        assert health["threshold_far"] == 0.001
        assert health["unlock_far"] == {"far": 0.01, "threshold": -1e6, "source": "stored in g.safetensors"}
        service.enroll("zico", [("z.jpg", photos["zico"])])
        res = service.unlock("zico", photos["zico"])
        assert (res["decision"], res["unlock"], res["threshold"], res["threshold_far"]) == ("deny", False, 1e6, 0.001)
        assert res["unlock_far"] == {"far": 0.01, "threshold": -1e6, "unlock": True, "decision": "unlock"}
    finally:
        service.close()


def test_target_far_picks_the_stored_threshold_for_it(server_files, tmp_path):
    """server.target_far 0.01 with a file that stores it: the signed models decide at FAR 1e-2 themselves."""
    path = generator_with(server_files, tmp_path, "g.safetensors", threshold=2.0, threshold_far=0.001,
                          thresholds={"0.01": -2.0})
    service = service_for(server_files, tmp_path, path, **{"server.target_far": 0.01})
    try:
        assert (service.threshold, service.threshold_far) == (-2.0, 0.01)
        assert service.page_threshold["threshold"] == -2.0
        assert service.page_threshold["source"] == "the signed models' own threshold"
    finally:
        service.close()


def test_no_stored_far_1e2_threshold_falls_back_with_a_clear_note(server_files, tmp_path, photos, caplog):
    path = generator_with(server_files, tmp_path, "old.safetensors", threshold=1e6, threshold_far=0.001)
    with caplog.at_level("WARNING", logger="enroll_server"):
        service = service_for(server_files, tmp_path, path)
    try:
        note = service.health()["unlock_far"]["note"]
        assert service.health()["unlock_far"]["threshold"] is None
        assert "no threshold for FAR 0.01 is stored" in note and "1000000.0000 (FAR 0.001)" in note
        assert "hyperver hypernet-threshold --far 0.01" in note and note in caplog.text
        service.enroll("zico", [("z.jpg", photos["zico"])])
        res = service.unlock("zico", photos["zico"])
        assert res["decision"] == "deny" and res["unlock_far"]["threshold"] is None and res["unlock_far"]["note"] == note
    finally:
        service.close()


def test_unlock_far_off_and_bad_values(server_files, tmp_path):
    from hyperver.config import load_config
    from hyperver.errors import ConfigError

    from enroll_server.settings import ServerSettings
    from tests.enroll_server.conftest import server_overrides

    path = generator_with(server_files, tmp_path, "g.safetensors", threshold=1.0, threshold_far=0.001,
                          thresholds={"0.01": 0.5})
    service = service_for(server_files, tmp_path, path, **{"server.unlock_far": "null"})
    try:
        assert service.health()["unlock_far"] is None and service.page_threshold is None
    finally:
        service.close()
    assert ServerSettings.from_config(load_config(overrides=server_overrides(server_files, tmp_path), env={}),
                                      env={"HYPERVER_API_KEY": API_KEY}).unlock_far == 0.01
    for bad in ("0", "1.5", "lenient"):
        cfg = load_config(overrides=server_overrides(server_files, tmp_path, **{"server.unlock_far": bad}), env={})
        with pytest.raises(ConfigError, match="unlock_far must be a false-accept rate"):
            ServerSettings.from_config(cfg, env={"HYPERVER_API_KEY": API_KEY})


def test_the_shipped_generator_stores_a_far_1e2_threshold():
    """The README's browser section relies on it (`hyperver hypernet-threshold --far 0.01` wrote it)."""
    from hyperver.hypernet.model_io import load_generator, stored_threshold
    from tests.conftest import shipped_generator

    meta = load_generator(shipped_generator())[1]
    low, high = stored_threshold(meta, 1e-2), stored_threshold(meta, 1e-3)
    assert low is not None and high is not None and low < high == meta["threshold"]
