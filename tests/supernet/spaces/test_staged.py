import numpy as np
import pytest

from supernet.spaces.mobilefacenet import MobileFaceNetSpace
from supernet.train import Phase

S = MobileFaceNetSpace(kernels=(3, 5))


def test_shape():
    assert S.stage_slots == (5, 7, 3) and S.n_slots == 15
    assert S.depths == (1, 2, 3, 4, 5, 6, 7)
    assert S.slot(1, 0) == 5 and S.slot(2, 2) == 14
    assert S.encoding_size == 4 + 5 + 3 + 15 * (2 + 3)


def test_validate_normalises_inactive_slots_and_rejects_bad_archs():
    arch = S.largest()
    arch["d"][2] = 1
    arch["k"][14], arch["e"][14] = 5, 100
    norm = S.validate(arch)
    assert (norm["k"][14], norm["e"][14]) == (3, 50) and norm["k"][12] == 5
    with pytest.raises(ValueError, match="depth values \\[2\\]"):
        S.validate({**S.largest(), "d": [5, 2, 3]})
    with pytest.raises(ValueError, match="need 3 depths"):
        S.validate({**S.largest(), "d": [5, 7]})
    with pytest.raises(ValueError, match="expand values"):
        S.validate({**S.largest(), "e": [60] * 15})
    with pytest.raises(ValueError, match="exactly the keys"):
        S.validate({"d": [5, 7, 3], "k": [3] * 15})


def test_encoding_round_trip_and_uniqueness():
    rng = np.random.default_rng(0)
    seen = {}
    for _ in range(200):
        arch = S.sample(rng)
        vec = S.encode(arch)
        assert vec.shape == (S.encoding_size,) and S.decode(vec) == arch
        seen[vec.tobytes()] = arch
    # Distinct encodings <=> distinct (normalised) architectures.
    assert len(seen) == len({str(a) for a in seen.values()})


def test_restrictions_follow_phases():
    rng = np.random.default_rng(1)
    full_depth = Phase("kernel", 1, 0.1, kernels="all").choices(S)
    for _ in range(20):
        arch = S.sample(rng, **full_depth)
        assert arch["d"] == [5, 7, 3] and set(arch["e"]) == {100}
    elastic = Phase("depth", 1, 0.1, depths="all").choices(S)
    depths = {tuple(S.sample(rng, **elastic)["d"]) for _ in range(200)}
    assert {d[2] for d in depths} == {1, 2, 3} and {d[0] for d in depths} == {2, 3, 4, 5}
    assert S.smallest(**elastic) == {**S.smallest(kernels=[5], expands=[100]), "d": [2, 3, 1]}
    assert S.smallest()["d"] == [2, 3, 1] and set(S.smallest()["e"]) == {50}


def test_mutation_and_crossover_stay_in_the_space():
    rng = np.random.default_rng(2)
    a, b = S.sample(rng), S.sample(rng)
    assert S.mutate(a, 0.0, rng) == a
    for _ in range(50):
        child = S.crossover(a, S.mutate(b, 0.5, rng), rng)
        assert S.validate(child) == child
        for s, depth in enumerate(child["d"]):
            assert depth in S.stage_depths[s]


def test_arch_ids_are_unambiguous_with_multi_digit_choices():
    from supernet.space import DEFAULT_SPACE, arch_id

    assert arch_id(DEFAULT_SPACE.largest()) == "d44444-k" + "7" * 20 + "-e" + "6" * 20   # unchanged for OFA MobileNetV3
    largest = arch_id(S.largest())
    assert largest.startswith("d573-k") and largest.endswith("-e" + ".".join(["100"] * 15))
    rng = np.random.default_rng(3)
    archs = [S.sample(rng) for _ in range(300)]
    assert len({arch_id(a) for a in archs}) == len({str(a) for a in archs})
