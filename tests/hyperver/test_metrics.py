import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from hyperver.eval.metrics import (accuracy_at, best_accuracy_threshold, equal_error_rate, far_key,
                                   identification_accuracy, kfold_verification, roc_auc, roc_curve, tar_at_far,
                                   threshold_at_far)


def synthetic(n=2000, seed=0, sep=1.5):
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.5
    scores = rng.normal(size=n) + sep * labels
    return scores, labels


def test_roc_matches_hand_computed_example():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    labels = [1, 1, 0, 1, 0, 0]
    far, tar, thr = roc_curve(scores, labels)
    np.testing.assert_allclose(far, [0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(tar, [0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1])
    assert thr[0] == np.inf and thr[1] == 0.9
    # AUC = P(genuine > impostor) = 8/9 by counting the 9 genuine/impostor orderings.
    assert roc_auc(scores, labels) == pytest.approx(8 / 9)
    # Best accuracy is 5/6, reached by accepting >= 0.8 or >= 0.6; the first (higher) cut wins
    # and sits halfway between 0.8 and the next lower score.
    thr_best, acc = best_accuracy_threshold(scores, labels)
    assert acc == pytest.approx(5 / 6)
    assert thr_best == pytest.approx(0.75)
    assert accuracy_at(np.array(scores), np.array(labels), thr_best) == pytest.approx(5 / 6)


def test_roc_and_auc_agree_with_sklearn_including_ties():
    scores, labels = synthetic()
    scores = np.round(scores, 1)  # many ties
    far, tar, _ = roc_curve(scores, labels)
    sk_far, sk_tar, _ = sk_roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(far, sk_far)
    np.testing.assert_allclose(tar, sk_tar)
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_eer_matches_brute_force():
    scores, labels = synthetic(seed=3)
    eer = equal_error_rate(scores, labels)
    grid = np.linspace(scores.min() - 1, scores.max() + 1, 200001)
    pos, neg = np.sort(scores[labels]), np.sort(scores[~labels])
    far = 1 - np.searchsorted(neg, grid, side="left") / len(neg)
    frr = np.searchsorted(pos, grid, side="left") / len(pos)
    i = np.argmin(np.abs(far - frr))
    assert eer == pytest.approx((far[i] + frr[i]) / 2, abs=2e-3)
    # Perfectly separated scores have zero EER.
    assert equal_error_rate([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 0.0


def test_threshold_at_far_is_exact_and_tie_safe():
    neg = np.arange(1000, dtype=float)  # 0..999
    thr = threshold_at_far(neg, 1e-3)   # 1 false accept allowed: only 999 may pass
    assert np.mean(neg >= thr) == pytest.approx(1e-3)
    ties = np.array([5.0, 5.0, 1.0, 0.0])
    thr = threshold_at_far(ties, 0.25)  # 1 allowed, but the top two tie: both must be rejected
    assert np.mean(ties >= thr) == 0.0
    tar, far, _ = tar_at_far([5, 6, 7, 1, 2, 3], [1, 1, 1, 0, 0, 0], 0.0)
    assert (tar, far) == (1.0, 0.0)


def test_kfold_threshold_comes_from_other_folds():
    # Fold 1 is easy at threshold 0.5; fold 2's data alone would pick another threshold.
    scores = np.array([0.9, 0.8, 0.2, 0.1, 0.6, 0.55, 0.45, 0.4])
    labels = np.array([1, 1, 0, 0, 1, 1, 0, 0], bool)
    folds = np.array([1, 1, 1, 1, 2, 2, 2, 2])
    rep = kfold_verification(scores, labels, folds)
    by_fold = {f.fold: f for f in rep.folds}
    # Threshold for fold 2 is chosen on fold 1 only: any cut in (0.2, 0.8]; midpoint 0.5 -> fold 2 perfect.
    assert 0.2 < by_fold[2].threshold <= 0.8
    assert by_fold[1].accuracy == 1.0
    s = rep.summary()
    assert set(s) >= {"accuracy", "accuracy_std", "val_at_far_1e3", "auc", "eer"}


def test_kfold_on_synthetic_data_is_close_to_oracle():
    scores, labels = synthetic(n=6000, seed=1)
    folds = np.repeat(np.arange(1, 11), 600)
    rep = kfold_verification(scores, labels, folds)
    _, oracle = best_accuracy_threshold(scores, labels)
    assert rep.summary()["accuracy"] == pytest.approx(oracle, abs=0.01)
    assert rep.summary()["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=0.01)
    with pytest.raises(ValueError):
        kfold_verification(scores, labels, np.ones(6000))


def test_far_key_names():
    assert far_key(1e-3) == "val_at_far_1e3"
    assert far_key(1e-4) == "val_at_far_1e4"


def test_identification_hand_computed():
    # Person A: 3 images, B: 2 images, C: 1 image (not eligible). B's second image looks like A.
    emb = np.array([[1, 0], [1, 0.01], [0.99, 0.02], [0, 1], [1, 0.0], [0.7, 0.7]], dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = ["A", "A", "A", "B", "B", "C"]
    res = identification_accuracy(emb, ids, repeats=20, seed=0)
    assert res["people"] == 2 and res["probes"] == 3
    # A's probes always hit A unless B's gallery image is the A-looking one (index 4)...
    # every configuration can be enumerated, so rank-1 is between 1/3 and 1.
    assert 1 / 3 <= res["rank1"] <= 1.0
    well_separated = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.float32)
    assert identification_accuracy(well_separated, ["A", "A", "B", "B"])["rank1"] == 1.0
    with pytest.raises(ValueError):
        identification_accuracy(well_separated, ["A", "B", "C", "D"])


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        roc_curve([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError):
        roc_curve([0.1, np.nan], [1, 0])
    with pytest.raises(ValueError):
        roc_curve([0.1, 0.2, 0.3], [1, 0])


def test_identification_from_scores_open_set_probe_cap_and_distractors():
    from hyperver.eval.metrics import identification_from_scores, identification_trials

    ids = ["A"] * 4 + ["B"] * 3 + ["C"] * 2 + ["D"]       # D has one image: not in the protocol
    person, trials = identification_trials(ids, repeats=3, seed=1, max_probes_per_person=1)
    for gallery, probes in trials:
        assert len(gallery) == 3 and len(probes) == 3         # A, B, C; one probe each
        assert not set(gallery) & set(probes)
        assert sorted(person[probes]) == sorted(person[gallery])

    def oracle(gallery, probes, margin=1.0):
        return np.where(np.asarray(ids)[probes][:, None] == np.asarray(ids)[gallery][None], margin, 0.0)

    closed = identification_from_scores(oracle, ids, repeats=2)
    assert closed["rank1"] == 1.0 and closed["people"] == 3 and closed["probes"] == 6
    # open set: right answers scored below the threshold are rejected, not identified
    low = identification_from_scores(lambda g, p: oracle(g, p, 0.4), ids, repeats=2, threshold=0.5)
    assert low["rank1"] == 1.0 and low["dir"] == 0.0 and low["reject_rate"] == 1.0
    # a distractor column that beats the right match is a miss
    with_distractor = identification_from_scores(
        lambda g, p: np.concatenate([oracle(g, p), np.full((len(p), 1), 2.0)], axis=1), ids, repeats=1)
    assert with_distractor["rank1"] == 0.0
