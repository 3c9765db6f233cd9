import json

import numpy as np
import pytest

from supernet.space import DEFAULT_SPACE as S
from supernet.space import arch_id, load_arch, save_arch


def test_validate_normalises_inactive_slots():
    arch = S.sample(np.random.default_rng(0))
    arch["d"][0] = 2
    arch["k"][3], arch["e"][3] = 7, 6  # slot beyond depth 2 in stage 1
    norm = S.validate(arch)
    assert norm["k"][3] == 3 and norm["e"][3] == 3


@pytest.mark.parametrize("bad, msg", [({"d": [2] * 5, "k": [3] * 20}, "exactly the keys"),
                                      ({"d": [2] * 4, "k": [3] * 20, "e": [3] * 20}, "need 5 depths"),
                                      ({"d": [5] * 5, "k": [3] * 20, "e": [3] * 20}, "depth values"),
                                      ({"d": [2] * 5, "k": [4] * 20, "e": [3] * 20}, "kernel values")])
def test_validate_rejects_bad_archs(bad, msg):
    with pytest.raises(ValueError, match=msg):
        S.validate(bad)


def test_encoding_round_trip_and_zero_beyond_depth():
    rng = np.random.default_rng(1)
    for _ in range(50):
        arch = S.sample(rng)
        vec = S.encode(arch)
        assert vec.shape == (S.encoding_size,) and set(np.unique(vec)) <= {0.0, 1.0}
        assert vec.sum() == 5 + 2 * sum(arch["d"])
        assert S.decode(vec) == arch


def test_mutation_and_crossover_stay_in_space():
    rng = np.random.default_rng(2)
    a, b = S.sample(rng), S.sample(rng)
    assert S.mutate(a, 0.0, rng) == a
    assert sum(S.mutate(a, 1.0, rng) != a for _ in range(20)) >= 15
    for _ in range(100):
        child = S.crossover(a, b, rng)
        assert S.validate(child) == child
        assert all(child["d"][i] in (a["d"][i], b["d"][i]) for i in range(5))
        for s_, j, k, e in S.active_blocks(child):
            slot = s_ * S.max_depth + j
            assert k in (a["k"][slot], b["k"][slot]) and e in (a["e"][slot], b["e"][slot])
        mutant = S.mutate(a, 0.3, rng)
        assert S.validate(mutant) == mutant
    assert S.crossover(a, a, rng) == a


def test_restricted_sampling_for_progressive_shrinking():
    rng = np.random.default_rng(3)
    arch = S.sample(rng, kernels=[7], depths=[4], expands=[6])
    assert arch == S.largest()


def test_arch_json_round_trip(tmp_path):
    arch = S.sample(np.random.default_rng(4))
    path = save_arch(arch, tmp_path / "a.json", latency_ms=1.5)
    assert json.loads(path.read_text())["latency_ms"] == 1.5
    assert load_arch(path) == arch
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_arch(tmp_path / "bad.json")
    (tmp_path / "partial.json").write_text('{"d": [2,2,2,2,2]}')
    with pytest.raises(ValueError, match="keys d, k, e"):
        load_arch(tmp_path / "partial.json")
    assert arch_id(S.largest()).startswith("d44444-k7777")
