"""The fit-gap diagnostic: each LFW pair set scored on its own, and the train - test gap."""
import numpy as np


def test_per_set_figures_score_each_pair_set_separately():
    from hyperver.fit_gap import per_set_figures

    rng = np.random.default_rng(0)
    fold = np.repeat(np.arange(1, 11), 200)
    same = np.tile(np.r_[np.ones(100, bool), np.zeros(100, bool)], 10)
    scores = rng.normal(size=fold.size)
    train = fold <= 4
    scores[train] = np.where(same[train], 1.0, -1.0) + 0.01 * scores[train]   # memorised: separable
    val = fold == 5
    scores[val] = np.where(same[val], 0.3, -0.3) + scores[val]                # partly separable
    out = per_set_figures(scores, same, fold)

    assert out["train_people_sets_1_4"] == {"accuracy": 1.0, "auc": 1.0, "pairs": 800}
    assert out["val_set_5"]["pairs"] == 200 and 0.55 < out["val_set_5"]["auc"] < 0.85
    test = out["test_sets_6_10"]
    assert test["pairs"] == 1000 and 0.45 < test["auc"] < 0.56
    assert np.isclose(out["gap_train_minus_test"]["accuracy"], 1.0 - test["accuracy"])
    assert np.isclose(out["gap_train_minus_test"]["auc"], 1.0 - test["auc"])


def test_per_set_figures_skip_absent_sets_and_the_gap():
    from hyperver.fit_gap import per_set_figures

    fold = np.repeat([6, 7], 4)
    same = np.tile([True, True, False, False], 2)
    out = per_set_figures(np.where(same, 1.0, 0.0), same, fold)
    assert set(out) == {"test_sets_6_10"} and out["test_sets_6_10"]["accuracy"] == 1.0
