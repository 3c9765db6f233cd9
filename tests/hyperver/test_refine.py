"""Enrollment-time refinement (issue #17 item 5) on real cached LFW training crops."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from hyperver.hypernet.refine import NegativeBank, NegativeBankError, RefinementProblem, build_negative_bank, refine_theta
from hyperver.hypernet.verifier import VerifierSpec, forward

REPO = Path(__file__).resolve().parents[2]
TEACHER = "dlib"        # hypernet.teacher: the bank's, whose cosines grade its negatives


@pytest.fixture(scope="module")
def real_cfg(data_root, tmp_path_factory):
    """A feature cache of its own, as on a clean clone (CI): the first photo of 56 LFW training people
    (sets 1-4), aligned and embedded with the bank's teacher here (~10 s); banks are drawn from what is cached."""
    from hyperver.config import load_config
    from hyperver.data import LFWSplit, open_dataset
    from hyperver.features import FeatureCache

    cfg = load_config(overrides=[f"data.root={data_root}", f"cache.root={tmp_path_factory.mktemp('cache')}",
                                 "embed.workers=1"], env={})
    first: dict = {}
    for record in LFWSplit(open_dataset(cfg, "lfw")).records("train"):
        first.setdefault(record.identity, record)
    assert cfg.get_path("hypernet.teacher") == TEACHER
    FeatureCache(cfg, "lfw", TEACHER).embeddings(list(first.values())[:56])
    return cfg


@pytest.fixture(scope="module")
def shipped(real_cfg):
    """The shipped generator (any h_bb, any f) and its metadata."""
    from hyperver.hypernet.model_io import load_generator

    return load_generator(REPO / real_cfg.get_path("hypernet.generator_path"))


@pytest.fixture(scope="module")
def spec(shipped) -> VerifierSpec:
    return shipped[0].spec


@pytest.fixture(scope="module")
def bank(real_cfg, spec, tmp_path_factory):
    return build_negative_bank(real_cfg, 48, seed=0, path=tmp_path_factory.mktemp("bank") / "bank.npz",
                               input_size=spec.input_size)


@pytest.fixture(scope="module")
def enrollment(real_cfg, bank):
    """A cached LFW training photo (people sets 1-4) whose person is not in the bank: crop + teacher embedding."""
    from hyperver.data import LFWSplit, open_dataset
    from hyperver.features import FeatureCache

    in_bank = {name.split(":", 1)[1] for name in bank.identities}
    cache = FeatureCache(real_cfg, "lfw", TEACHER)
    records = LFWSplit(open_dataset(real_cfg, "lfw")).records("train")
    keys = cache.keys_for(records, progress=False)
    record = next(r for r, k in zip(records, keys)
                  if r.identity not in in_bank and k in cache.embed_store and k in cache.align_store)
    return cache.crops([record])[0], cache.embeddings([record], build=False)[0], record


@pytest.fixture(scope="module")
def theta0(real_cfg, shipped, enrollment):
    """What enrollment starts from: the shipped generator's theta for the photo's h_bb embedding."""
    from hyperver.features import FeatureCache

    gen, meta = shipped
    backbone_emb = FeatureCache(real_cfg, "lfw", meta["backbone"]).embeddings([enrollment[2]])[0]
    with torch.no_grad():
        return gen(torch.from_numpy(backbone_emb[None]))[0]


def test_bank_uses_training_people_only(real_cfg, spec, bank):
    from hyperver.data import LFWSplit, open_dataset

    split = LFWSplit(open_dataset(real_cfg, "lfw"))
    held_out = {name for role in ("val", "test") for name, _ in split.people(role)}
    training = {name for name, _ in split.people("train")}
    sources = {name.split(":", 1)[0] for name in bank.identities}
    lfw_people = {name.split(":", 1)[1] for name in bank.identities if name.startswith("lfw_train:")}
    assert sources <= {"lfw_train", "celeba"} and lfw_people
    assert lfw_people <= training and not lfw_people & held_out
    assert len(set(bank.identities)) == len(bank) == 48             # one image per person
    assert bank.crops.shape == (48, spec.input_size, spec.input_size, 3) and bank.crops.dtype == np.uint8
    assert np.allclose(np.linalg.norm(bank.embeddings, axis=1), 1, atol=1e-4)
    with pytest.raises(ValueError, match="training sources only"):
        build_negative_bank(real_cfg, 4, seed=0, sources=("lfw_train", "lfw_test"))


def test_bank_round_trips_and_refuses_pickles_and_corrupt_files(bank, tmp_path):
    path = bank.save(tmp_path / "b.npz")
    back = NegativeBank.load(path)
    assert np.array_equal(back.crops, bank.crops) and np.array_equal(back.embeddings, bank.embeddings)
    assert list(back.identities) == list(bank.identities) and back.teacher == TEACHER
    assert np.array_equal(back.teacher_mean, bank.teacher_mean)

    # An object array can only be stored pickled: the loader must refuse it, not unpickle it.
    np.savez(tmp_path / "evil.npz", crops=np.array([{"x": 1}], dtype=object), embeddings=bank.embeddings,
             teacher_mean=bank.teacher_mean, identities=bank.identities, meta=np.array("{}"))
    with pytest.raises(NegativeBankError, match="pickle"):
        NegativeBank.load(tmp_path / "evil.npz")
    (tmp_path / "raw.npz").write_bytes(pickle.dumps({"crops": 1}))
    with pytest.raises(NegativeBankError):
        NegativeBank.load(tmp_path / "raw.npz")
    data = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(NegativeBankError, match="corrupt"):
        NegativeBank.load(tmp_path / "cut.npz")
    with pytest.raises(NegativeBankError, match="not found"):
        NegativeBank.load(tmp_path / "nobody.npz")


def test_refinement_lowers_its_loss_and_separates_the_enrolled_face(spec, bank, enrollment, theta0):
    crop, emb, _ = enrollment
    kept = theta0.clone()
    kwargs = dict(views=4, negatives=32, seed=1)
    theta, stats = refine_theta(spec, theta0, crop, emb, bank, steps=10, lr=1e-3, time_budget_s=None, **kwargs)
    assert torch.equal(theta0, kept)                                   # theta0 untouched
    assert stats["steps_done"] == 10 and stats["stopped_by"] == "steps" and stats["refined"]
    problem = RefinementProblem(spec, theta0, crop, emb, bank, **kwargs)
    with torch.no_grad():
        assert float(problem.loss(theta)) < 0.9 * float(problem.loss(theta0))
        own = lambda t: float(forward(spec, t, problem.x[:1])[0])   # noqa: E731  the plain enrollment crop
        negatives = lambda t: float(forward(spec, t, problem.x[problem.n_positive:]).mean())  # noqa: E731
        assert own(theta) - negatives(theta) > own(theta0) - negatives(theta0) + 1.0

    again, stats2 = refine_theta(spec, theta0, crop, emb, bank, steps=10, lr=1e-3, time_budget_s=None, **kwargs)
    assert torch.equal(theta, again) and stats2["loss_last_step"] == stats["loss_last_step"]   # deterministic
    other, _ = refine_theta(spec, theta0, crop, emb, bank, steps=10, lr=1e-3, time_budget_s=None, views=4,
                            negatives=32, seed=2)
    assert not torch.equal(theta, other)


def test_time_budget_stops_early_and_says_so(spec, bank, enrollment, theta0):
    crop, emb, _ = enrollment
    threads = torch.get_num_threads()
    theta, stats = refine_theta(spec, theta0, crop, emb, bank, steps=1000, time_budget_s=0.05, views=2, negatives=8)
    assert stats["stopped_by"] == "time_budget" and stats["steps_done"] < 1000
    assert stats["seconds"] < 0.05 + 0.5                                # at most ~one step past a tiny budget
    assert torch.get_num_threads() == threads                          # one thread inside, restored after
    _, none = refine_theta(spec, theta0, crop, emb, bank, steps=5, time_budget_s=0.0, views=2, negatives=8)
    assert none["steps_done"] == 0 and not none["refined"] and none["stopped_by"] == "time_budget"


def test_graded_targets_soften_look_alikes(bank, enrollment):
    from hyperver.hypernet.refine import graded_targets

    _, emb, _ = enrollment
    t = graded_targets(emb, bank.embeddings, bank.teacher_mean, 0.5, 0.05, 0.4)
    assert float(t.max()) < 0.5 and float(t.min()) >= 0
    own = graded_targets(emb, emb[None], bank.teacher_mean, 0.5, 0.05, 0.4)
    assert float(own[0]) > float(t.median())                          # the person themself: the softest negative
    with pytest.raises(ValueError, match="target_max"):
        graded_targets(emb, bank.embeddings, bank.teacher_mean, 0.5, 0.05, 0.6)


def test_evaluation_hook_scores_the_same_pairs_and_is_a_no_op_without_steps(real_cfg, shipped, bank):
    from hyperver.data import LFWSplit, open_dataset
    from hyperver.hypernet.data import load_records_data
    from hyperver.hypernet.refine import refined_pair_logits
    from hyperver.hypernet.train import pair_logits

    gen, meta = shipped
    records = LFWSplit(open_dataset(real_cfg, "lfw")).records("train")[:6]
    data = load_records_data(real_cfg, "lfw", records, meta["backbone"], gen.spec.input_size, teacher=bank.teacher)
    enroll, probe = np.array([0, 0, 2, 3]), np.array([1, 4, 5, 0])
    plain = pair_logits(gen, data, enroll, probe)
    unchanged, summary = refined_pair_logits(gen, data, enroll, probe, bank, {"steps": 0})
    assert np.allclose(unchanged, plain, atol=1e-5) and summary["enrollments"] == 3
    refined, summary = refined_pair_logits(gen, data, enroll, probe, bank,
                                           {"steps": 3, "negatives": 16, "views": 2, "time_budget_s": None})
    assert refined.shape == plain.shape and not np.allclose(refined, plain) and summary["mean_steps_done"] == 3


def test_enroller_refines_when_asked_and_records_it(real_cfg, bank, tmp_path, lfw_images):
    from hyperver.config import Config, merge
    from hyperver.hypernet.enroll import Enroller

    path = bank.save(tmp_path / "bank.npz")
    cfg = Config(merge(real_cfg, {"hypernet": {"refine": {"bank_path": str(path), "steps": 3, "negatives": 16,
                                                           "views": 2, "time_budget_s": 5.0}}}))
    generator = REPO / cfg.get_path("hypernet.generator_path")
    photo = [lfw_images / "Zico" / "Zico_0001.jpg"]
    # A missing bank is built on first use from the cached training people.
    missing = tmp_path / "built" / "bank.npz"
    built = Enroller(generator, Config(merge(cfg, {"hypernet": {"refine": {"bank_path": str(missing), "bank_size": 8}}})),
                     refine=True)
    assert missing.is_file() and len(built.bank) == 8
    plain = Enroller(generator, cfg).enroll(photo)           # hypernet.refine.enabled is false by default
    assert "refine" not in plain.meta
    refined = Enroller(generator, cfg, refine=True).enroll(photo)
    info = refined.meta["refine"]
    assert info["refined"] and info["steps_done"] == 3 and info["seconds"] < 5.0 and info["negatives"] == 16
    assert np.array_equal(refined.embedding, plain.embedding) and not np.allclose(refined.theta, plain.theta)
    saved = refined.save(tmp_path / "u.hv")
    from hyperver.hypernet.model_io import UserModel

    assert UserModel.load(saved).meta["refine"]["steps_done"] == 3
