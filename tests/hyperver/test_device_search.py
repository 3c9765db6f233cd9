"""Device-search glue (hyperver.device_search): guard band, timing found subnets, calibration refit."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def test_guard_margin_follows_the_profile_calibration_error():
    from hyperver.config import load_config
    from hyperver.device_search import guard_margin

    auto = load_config(env={})          # auto, quantile 0.9
    cal = {"terms": "block_sum", "loo_ratios": [0.9, 0.95, 1.0, 1.02, 1.05, 1.1, 1.0, 0.97, 1.01, 1.25]}
    q = float(np.quantile(cal["loo_ratios"], 0.9))
    assert guard_margin(auto, cal) == pytest.approx(1 - 1 / q)
    assert guard_margin(auto, None) == 0.03 and guard_margin(auto, {"terms": "block_sum"}) == 0.03
    assert guard_margin(auto, {"loo_ratios": [0.8, 0.9]}) == 0.0          # an over-predicting LUT needs none
    fixed = load_config(overrides=["search.budget_margin=0.05"], env={})
    assert guard_margin(fixed, cal) == 0.05


def test_found_subnets_are_timed_against_the_largest_in_the_same_batch():
    from types import SimpleNamespace

    from hyperver.config import load_config
    from hyperver.device_search import time_found_subnets
    from supernet.space import DEFAULT_SPACE

    cfg = load_config(overrides=["search.lut={warmup: 1, repeats: 3, rounds: 2}"], env={})
    net = SimpleNamespace(space=DEFAULT_SPACE, width_mult=1.0, input_size=32, embed_dim=128,
                          net_config=lambda arch: {"arch": arch, "width_mult": 1.0, "input_size": 32, "embed_dim": 128})
    prof = SimpleNamespace(runtime="torch", threads=1, name="cpu")
    found = [{"arch": DEFAULT_SPACE.smallest(), "budget_ms": 1e6, "budget_rel": 0.9},
             {"arch": DEFAULT_SPACE.largest(), "budget_ms": 1e-6, "budget_rel": 0.5}]
    time_found_subnets(cfg, net, prof, found)
    small, large = found
    assert small["latency_ms"] < large["latency_ms"] and small["largest_ms_same_batch"] > 0
    assert small["latency_rel"] == pytest.approx(small["latency_ms"] / small["largest_ms_same_batch"])
    assert small["within_budget"] and small["within_budget_ms"]
    assert not large["within_budget"] and not large["within_budget_ms"]      # the largest is ~1.0x, budget 0.5x


def test_lut_calibrate_refit_reuses_the_stored_timings(tmp_path):
    import shutil

    from hyperver.config import load_config
    from hyperver.device_search import lut_calibrate
    from hyperver.errors import ConfigError
    from supernet.nas.efficiency import DeviceProfile

    repo = Path(__file__).resolve().parents[2]
    for f in ("this_cpu_tflite_t1.json", "this_cpu_tflite_t1.lut.txt"):
        shutil.copy(repo / "assets" / "devices" / "elastic_mfn" / f, tmp_path / f)
    cfg = load_config(overrides=[f"search.devices_dir={tmp_path}"], env={})
    stored = DeviceProfile.load(tmp_path / "this_cpu_tflite_t1.json").calibration
    refit = lut_calibrate(cfg, "this_cpu_tflite_t1", refit=True).calibration
    assert refit["measured_ms"] == stored["measured_ms"] and refit["terms"] == stored["terms"]
    assert refit["scale"] == pytest.approx(stored["scale"], rel=1e-3) and len(refit["loo_ratios"]) == 12
    with pytest.raises(ConfigError, match="no stored calibration timings"):
        lut_calibrate(cfg, "this_cpu_tflite_t1", n=5, refit=True)


def test_run_search_reuses_given_predictors_and_stays_in_budget(tmp_path, monkeypatch):
    """The search report fits its predictors once and hands them to every run_search call."""
    from types import SimpleNamespace

    import hyperver.device_search as ds
    from hyperver.config import load_config
    from supernet.space import load_arch

    cfg = load_config(overrides=["search.evolution.generations=3", "search.evolution.population=20"], env={})

    def refuse(*_a, **_k):
        raise AssertionError("run_search fitted predictors although they were given")

    monkeypatch.setattr(ds, "fit_search_predictors", refuse)
    params = lambda archs: np.array([sum(a["e"]) + sum(a["d"]) for a in archs], dtype=float)   # noqa: E731
    bigger = SimpleNamespace(better=lambda a, b: params(a) > params(b))   # "more capacity is more accurate"
    res = ds.run_search(cfg, "this_cpu_tflite_t1", budget_rel=0.6, out_dir=str(tmp_path), methods=("nac_quickselect",),
                        export=False, progress=False, predictors=(bigger, None))
    assert len(res) == 1 and res[0]["predicted_latency_ms"] <= res[0]["budget_ms"]
    saved = load_arch(tmp_path / f"this_cpu_tflite_t1_{res[0]['budget_ms']:.2f}ms.arch.json", ds.search_space(cfg))
    assert saved == res[0]["arch"]


def test_a_budget_below_the_smallest_subnet_is_refused_with_its_figures(tmp_path):
    """An infeasible budget fails at once, saying why (the report records it and goes on)."""
    import hyperver.device_search as ds
    from hyperver.config import load_config
    from hyperver.errors import BudgetInfeasibleError

    cfg = load_config(env={})
    never = lambda *_a, **_k: (_ for _ in ()).throw(AssertionError("searched an infeasible budget"))  # noqa: E731
    with pytest.raises(BudgetInfeasibleError, match=r"the smallest subnet is predicted at .* the largest\)"):
        ds.run_search(cfg, "this_cpu_tflite_t1", budget_rel=0.05, out_dir=str(tmp_path), export=False,
                      progress=False, predictors=(never, never))
