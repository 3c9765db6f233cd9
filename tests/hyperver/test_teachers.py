"""The rules that pick the default descriptor/teacher and detector (hyperver.teachers)."""
import numpy as np
import pytest

from hyperver.errors import ConfigError
from hyperver.teachers import CANDIDATES, DETECTOR_CANDIDATES, choose, choose_detector, pair_set_figures


def _row(set5_acc: float, celeba_tar: float, auc: float = 0.99) -> dict:
    return {"set_5": {"accuracy": set5_acc, "auc": auc, "pairs": 600}, "celeba": {"tar_at_far_0.001": celeba_tar}}


def test_best_set5_accuracy_wins_when_clear():
    rows = {"a": _row(0.990, 0.90), "b": _row(0.995, 0.70)}
    assert choose(rows, ["a", "b"]) == "b"


def test_a_set5_tie_within_two_pairs_goes_to_celeba():
    rows = {"a": _row(0.9900, 0.90), "b": _row(0.9933, 0.70), "c": _row(0.9950, 0.60)}   # a is 3 pairs behind c
    assert choose(rows, ["b", "c"]) == "b"          # 1 pair apart: CelebA decides
    assert choose(rows, ["a", "b", "c"]) == "b"     # a is out of the tie band
    assert choose(rows, ["a"]) == "a"
    with pytest.raises(ConfigError):
        choose(rows, ["zzz"])


def test_detector_rule_fewest_refused_under_the_miss_limit_then_fastest():
    def det(no_face, refused, ms):
        return {"celeba_no_face_rate": no_face, "celeba_refused_rate": refused, "ms_per_image": ms}

    rows = {"hog": det(0.14, 0.15, 20), "strict": det(0.008, 0.010, 9), "loose": det(0.002, 0.030, 9),
            "chain": det(0.004, 0.0095, 12)}
    assert choose_detector(rows) == "strict"       # chain is within the 0.1 % tie band and slower
    assert choose_detector(rows, {"max_celeba_no_face": 0.01, "tie": 0.0}) == "chain"
    assert choose_detector(rows, {"max_celeba_no_face": 0.005, "tie": 0.001}) == "chain"   # strict misses too many
    assert choose_detector(rows, {"max_celeba_no_face": 0.001, "tie": 0.001}) == "loose"   # none qualifies


def test_photo_outcomes_on_real_photos(cfg):
    from hyperver.teachers import photo_outcomes

    out = photo_outcomes(cfg, ["yunet", "dlib_hog"], "lfw", workers=1, limit=12)
    assert out["images"] == 12 and out["no_face"] + out["several_faces"] <= 12
    assert 0.0 <= out["refused_rate"] == (out["no_face"] + out["several_faces"]) / 12


def test_detector_rule_prefers_chains_that_start_with_the_datasets_detector():
    def det(spec, no_face, refused, ms):
        return {"spec": spec, "celeba_no_face_rate": no_face, "celeba_refused_rate": refused, "ms_per_image": ms}

    rows = {"fast": det(["yunet", "dlib_hog"], 0.003, 0.004, 18), "consistent": det(["dlib_hog", "yunet"], 0.004, 0.005, 30),
            "hog": det("dlib_hog", 0.14, 0.15, 25)}
    assert choose_detector(rows) == "consistent"          # hog alone misses too many
    assert choose_detector(rows, {"max_celeba_no_face": 0.01, "first": None, "tie": 0.001}) == "fast"
    assert choose_detector({"fast": rows["fast"]}) == "fast"   # nobody starts with dlib_hog: the others compete


def test_pair_set_figures_on_a_separable_set():
    scores = np.r_[np.linspace(0.6, 0.9, 50), np.linspace(-0.2, 0.3, 50)]
    same = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    f = pair_set_figures(scores, same, far=1e-2)
    assert f["accuracy"] == 1.0 and f["auc"] == 1.0 and f["eer"] == 0.0 and f["tar_at_far_0.01"] == 1.0
    assert f["pairs"] == 100 and f["impostor_pairs"] == 50


def test_candidates_are_all_buildable_names(cfg):
    from hyperver.embed import EMBEDDERS

    entries = cfg.get_path("embedders")
    for name in CANDIDATES:
        assert name in entries or name in EMBEDDERS
    from hyperver.align.detectors import build_detector

    for spec in DETECTOR_CANDIDATES.values():
        assert build_detector(spec, str(cfg.models_dir)).version
