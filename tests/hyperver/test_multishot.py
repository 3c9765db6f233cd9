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
