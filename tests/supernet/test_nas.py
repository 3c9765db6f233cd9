
import numpy as np
import pytest

from supernet.nas.dataset import arch_for_index, build_accuracy_dataset, read_dataset, split_rows
from supernet.nas.efficiency import DeviceProfile, LatencyLUT, LUTEntry, NetworkGeometry, fit_calibration
from supernet.nas.predictor import (MLPAccuracyPredictor, PairwiseComparator, kendall_tau_from_comparator,
                                    pairwise_accuracy)
from supernet.nas.search import (Budget, CountingComparator, EvolutionConfig, evolution_search, quickselect_top_k,
                                 random_search, sort_evolution_search)
from supernet.profile import count_params
from supernet.space import DEFAULT_SPACE as S
from supernet.static import build_static


def synthetic_accuracy(arch) -> float:
    """A known, learnable 'accuracy': bigger kernels/expands/depths help, with diminishing returns."""
    blocks = S.active_blocks(arch)
    return 0.9 + 0.002 * sum(k for *_, k, e in blocks) / 7 + 0.003 * sum(e for *_, e in blocks) / 6 \
        - 0.0005 * sum(arch["d"]) ** 1.2 / 10


def synthetic_lut(input_size=64) -> LatencyLUT:
    geom = NetworkGeometry(S, 1.0, input_size)
    entries = {}
    for b in geom.all_blocks():
        cost = b.size_out ** 2 * b.cout * (b.kernel ** 2 + b.expand * b.cin / 8) / 1e5
        entries[b.key] = LUTEntry(10, cost, cost * 0.05)
    return LatencyLUT(geom, entries)


def test_quickselect_sets_duplicates_aside_with_their_pivot():
    rng = np.random.default_rng(0)
    items = [{"v": 1}] * 90 + [{"v": int(v)} for v in range(2, 12)]
    cmp = CountingComparator(lambda a, b: np.array([x["v"] > y["v"] for x, y in zip(a, b)]))
    top = quickselect_top_k(items, 25, cmp, rng)
    assert sorted(x["v"] for x in top) == [1] * 15 + list(range(2, 12))
    assert cmp.calls < 4 * len(items)  # peeling 90 copies one by one would cost ~15 x 90


def test_quickselect_returns_exact_top_k_with_linear_comparisons():
    rng = np.random.default_rng(0)
    for n in (50, 100, 200):
        values = rng.permutation(n)
        items = [{"v": int(v)} for v in values]
        cmp = CountingComparator(lambda a, b: np.array([x["v"] > y["v"] for x, y in zip(a, b)]))
        top = quickselect_top_k(items, n // 4, cmp, rng)
        assert sorted(x["v"] for x in top) == list(range(n - n // 4, n))
        assert cmp.calls < 6 * n  # expected ~2-3n; a sort would need ~n log n


def test_lut_predicts_sum_and_round_trips_text(tmp_path):
    lut = synthetic_lut()
    assert not lut.missing()
    arch = S.sample(np.random.default_rng(1))
    total = sum(lut.entries[b.key].mean for b in lut.geometry.blocks(arch))
    assert lut.predict(arch) == pytest.approx(total)
    assert lut.predict(S.smallest()) < lut.predict(S.largest())
    path = lut.save_text(tmp_path / "lut.txt")
    again = LatencyLUT(lut.geometry, LatencyLUT.read_text(path))
    assert again.predict(arch) == pytest.approx(total, rel=1e-5)
    prof = DeviceProfile("phone", "tflite", 1, "lut.txt", 64, 1.0).save(tmp_path / "phone.json")
    assert DeviceProfile.load(prof).lut(S).predict(arch) == pytest.approx(total, rel=1e-5)
    (tmp_path / "bad.txt").write_text("Conv-input:64x64x3 1 0.5\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        LatencyLUT.read_text(tmp_path / "bad.txt")
    partial = LatencyLUT(lut.geometry, dict(list(lut.entries.items())[:5]))
    with pytest.raises(KeyError, match="no entry"):
        partial.predict(arch)


def test_calibration_fits_whole_network_overhead_and_travels_in_the_profile(tmp_path):
    lut = synthetic_lut()
    rng = np.random.default_rng(2)
    archs = [S.sample(rng) for _ in range(8)]
    sums = np.array([lut.block_sum(a) for a in archs])
    measured = 1.3 * sums + 0.2  # what a device adds on top of isolated blocks
    cal = fit_calibration(sums, measured)
    assert cal["scale"] == pytest.approx(1.3) and cal["offset"] == pytest.approx(0.2, abs=1e-9)
    lut.save_text(tmp_path / "lut.txt")
    prof = DeviceProfile("phone", "tflite", 1, "lut.txt", 64, 1.0, calibration=cal).save(tmp_path / "phone.json")
    loaded = DeviceProfile.load(prof)
    arch = S.sample(rng)
    assert loaded.lut(S).predict(arch) == pytest.approx(1.3 * lut.block_sum(arch) + 0.2, rel=1e-5)
    assert loaded.lut(S, calibrated=False).predict(arch) == pytest.approx(lut.block_sum(arch), rel=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        fit_calibration([1.0], [1.2])


def test_analytic_params_match_the_built_network():
    geom = NetworkGeometry(S, 1.0, 64)
    for arch in (S.largest(), S.smallest(), S.sample(np.random.default_rng(3))):
        assert geom.params(arch) == count_params(build_static({"arch": arch, "input_size": 64}))


def test_predictors_learn_a_synthetic_accuracy():
    rng = np.random.default_rng(0)
    archs = [S.sample(rng) for _ in range(400)]
    acc = [synthetic_accuracy(a) for a in archs]
    train, test = archs[:300], archs[300:]
    nac = PairwiseComparator(S, n_pairs=5000, n_estimators=100).fit(train, acc[:300])
    mlp = MLPAccuracyPredictor(S, epochs=60).fit(train, acc[:300])
    i, j = rng.integers(0, 100, 500), rng.integers(0, 100, 500)
    ta, tb = np.array(acc[300:])[i], np.array(acc[300:])[j]
    a, b = [test[k] for k in i], [test[k] for k in j]
    assert pairwise_accuracy(nac.prob_better(a, b), ta, tb) > 0.8
    assert pairwise_accuracy(mlp.better(a, b), ta, tb) > 0.8
    assert kendall_tau_from_comparator(test, acc[300:], nac.better) > 0.6
    # The comparator is antisymmetric by construction.
    p = nac.prob_better(a[:20], b[:20])
    np.testing.assert_allclose(p + nac.prob_better(b[:20], a[:20]), 1.0, atol=1e-9)


def test_searches_respect_the_budget_and_find_good_subnets():
    lut = synthetic_lut()
    budget = Budget(0.6 * lut.predict(S.largest()), lut.predict)
    better = lambda a, b: np.array([synthetic_accuracy(x) > synthetic_accuracy(y) for x, y in zip(a, b)])  # noqa
    predict = lambda archs: np.array([synthetic_accuracy(x) for x in archs])  # noqa: E731
    cfg = EvolutionConfig(generations=30, population=50)
    evo = evolution_search(S, better, budget, cfg)
    srt = sort_evolution_search(S, predict, budget, cfg)
    rnd = random_search(S, predict, budget, n=200)
    for res in (evo, srt, rnd):
        assert lut.predict(res.best) <= budget.latency_ms
    assert synthetic_accuracy(evo.best) >= synthetic_accuracy(rnd.best) - 1e-3
    # Comparator calls per generation grow linearly with the population.
    calls = {}
    for p in (50, 100, 200):
        r = evolution_search(S, better, budget, EvolutionConfig(generations=20, population=p))
        calls[p] = np.mean([h["comparator_calls"] for h in r.history])
    # Expected QuickSelect cost for the top quarter is ~3.1 n comparisons; a sort needs ~n log2 n.
    # (The ratio between populations is not a good test: small populations converge sooner and
    # their duplicates cost nothing, so they sit further below the bound.)
    assert all(calls[p] < 4.5 * p for p in calls), calls
    with pytest.raises(RuntimeError, match="budget"):
        evolution_search(S, better, Budget(1e-6, lut.predict), EvolutionConfig(generations=1, population=4))


def test_accuracy_dataset_is_resumable_and_deterministic(tmp_path):
    path = tmp_path / "acc.jsonl"
    calls = []

    def evaluate(arch):
        calls.append(1)
        return {"val_acc": synthetic_accuracy(arch)}

    build_accuracy_dataset(S, evaluate, 5, path, seed=1, progress=False)
    with path.open("a") as f:
        f.write('{"index": 5, "arch": {"d"')  # a write killed halfway
    rows = build_accuracy_dataset(S, evaluate, 8, path, seed=1, progress=False)
    assert len(calls) == 8 and [r["index"] for r in rows] == list(range(8))
    assert rows[6]["arch"] == arch_for_index(S, 1, 6)
    assert len(read_dataset(path)) == 8
    tr, te = split_rows(rows, 0.25)
    assert len(tr) == 6 and len(te) == 2 and not ({r["index"] for r in tr} & {r["index"] for r in te})


def test_interleaved_timing_orders_models_and_ignores_a_slow_phase():
    """A slow phase that hits one model's whole timing window must not reorder the models."""
    import time

    from supernet.nas.measure import time_interleaved

    calls_made = {"n": 0}

    def model(ms):
        def call():
            calls_made["n"] += 1
            # every call in calls 40..80 (one model's window in some round) is 10x slower
            slow = 40 <= calls_made["n"] < 80
            t = time.perf_counter() + ms * (10 if slow else 1) / 1000
            while time.perf_counter() < t:
                pass
        return call

    entries = time_interleaved([model(0.4), model(0.8), model(1.6)], warmup=1, repeats=8, rounds=3)
    means = [e.mean for e in entries]
    assert means == sorted(means)
    assert means[0] == pytest.approx(0.4, rel=0.5) and means[2] == pytest.approx(1.6, rel=0.5)
    assert all(e.count == 24 for e in entries)


def test_measure_modules_times_each_prepared_model():
    from torch import nn

    from supernet.nas.measure import measure_modules

    small, big = nn.Conv2d(3, 4, 1), nn.Sequential(*[nn.Conv2d(32, 32, 3, padding=1) for _ in range(4)])
    small_e, big_e = measure_modules([(small, (1, 3, 32, 32)), (big, (1, 32, 32, 32))], "torch", 1, 2, 5, rounds=2)
    assert 0 < small_e.mean < big_e.mean and small_e.count == big_e.count == 10
    with pytest.raises(ValueError, match="unknown backend"):
        measure_modules([(small, (1, 3, 8, 8))], "tpu")


def test_calibration_keeps_the_parameter_term_only_when_it_predicts_held_out_subnets_better(tmp_path):
    lut = synthetic_lut()
    rng = np.random.default_rng(3)
    archs = [S.sample(rng) for _ in range(12)] + [S.smallest(), S.largest()]
    sums = np.array([lut.block_sum(a) for a in archs])
    mparams = np.array([lut.geometry.params(a) / 1e6 for a in archs])
    # A device whose whole networks also pay for streaming their weights.
    cal = fit_calibration(sums, 1.2 * sums + 0.08 * mparams + 0.05, mparams)
    assert cal["terms"] == "block_sum+params"
    assert (cal["scale"], cal["per_mparam"], cal["offset"]) == pytest.approx((1.2, 0.08, 0.05), rel=1e-6)
    lut.save_text(tmp_path / "lut.txt")
    prof = DeviceProfile("box", "onnxruntime", 1, "lut.txt", 64, 1.0, calibration=cal).save(tmp_path / "box.json")
    arch = S.sample(rng)
    expected = 1.2 * lut.block_sum(arch) + 0.08 * lut.geometry.params(arch) / 1e6 + 0.05
    assert DeviceProfile.load(prof).lut(S).predict(arch) == pytest.approx(expected, rel=1e-5)
    # Without a memory effect the simpler model is kept.
    plain = fit_calibration(sums, 1.3 * sums + 0.2, mparams)
    assert plain["terms"] == "block_sum" and plain["per_mparam"] == 0.0
    assert plain["scale"] == pytest.approx(1.3)
