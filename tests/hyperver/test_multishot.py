"""Multi-shot enrollment and multi-probe decisions (issue #17 item 6) on a few real LFW test people."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from hyperver.hypernet.multishot import draw_people, multi_shot_rows

REPO = Path(__file__).resolve().parents[2]


def test_draw_people_keeps_probes_apart_and_stable():
    records = [SimpleNamespace(identity=name) for name, n in (("a", 5), ("b", 2), ("c", 4)) for _ in range(n)]
    people, probes, enroll = draw_people(records, n_enroll=2, n_probe=2, seed=0)
    assert people == ["a", "c"]                                    # b has too few photos
    for p in people:
        assert not set(probes[p]) & set(enroll[p]) and len(probes[p]) == 2 and len(enroll[p]) == 2
        assert all(records[i].identity == p for i in probes[p] + enroll[p])
    # A person's draw does not depend on who else qualifies (seeded by the person's place).
    again = draw_people(records, n_enroll=2, n_probe=2, seed=0)
    assert again[1] == probes and draw_people(records, 2, 2, seed=1)[1] != probes


def test_rows_for_each_shots_and_probes_on_real_people(cfg):
    from hyperver.hypernet.model_io import load_generator

    gen, meta = load_generator(REPO / cfg.get_path("hypernet.generator_path"))
    rows = multi_shot_rows(cfg, gen, meta["backbone"], shots=(1, 2), probes=(1, 2), limit_people=6)
    assert [(r["shots"], r["probes"]) for r in rows] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    for r in rows:
        assert r["people"] == 6 and r["genuine"] == 6 and r["impostor"] == 30
        for model in ("hypernet", "descriptor"):
            assert 0.0 <= r[model]["auc"] <= 1.0 and 0.0 <= r[model]["tar_at_far_1e3"] <= 1.0
        assert r["descriptor"]["auc"] > 0.9          # dlib separates six people easily
        assert r["hypernet"]["auc"] > 0.5            # the shipped verifiers are better than chance
    with pytest.raises(ValueError, match=">= 1"):
        multi_shot_rows(cfg, gen, meta["backbone"], shots=(0,), probes=(1,))


def test_refined_rows_score_the_same_probes(cfg):
    import numpy as np

    from hyperver.hypernet.model_io import load_generator
    from hyperver.hypernet.refine import NegativeBank

    gen, meta = load_generator(REPO / cfg.get_path("hypernet.generator_path"))
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(6, 128)).astype(np.float32)
    bank = NegativeBank(rng.integers(0, 256, (6, gen.spec.input_size, gen.spec.input_size, 3), dtype=np.uint8),
                        emb / np.linalg.norm(emb, axis=1, keepdims=True), np.zeros(128, np.float32),
                        np.array([f"lfw_train:p{i}" for i in range(6)]), "dlib", ("lfw_train",))
    tiny = {"bank": bank, "steps": 2, "negatives": 4, "views": 2, "time_budget_s": None}
    plain = multi_shot_rows(cfg, gen, meta["backbone"], shots=(2,), probes=(1,), limit_people=4)
    rows = multi_shot_rows(cfg, gen, meta["backbone"], shots=(2,), probes=(1,), limit_people=4, refine=tiny)
    assert rows[0]["hypernet"] == plain[0]["hypernet"]                  # unrefined scores unchanged
    refined = rows[0]["hypernet_refined"]
    assert 0.0 <= refined["auc"] <= 1.0 and refined["median_refine_s"] > 0
    assert "hypernet_refined" not in plain[0]
