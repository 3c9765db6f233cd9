import numpy as np
import pytest
import torch

from hyperver.errors import FaceNotFoundError, ModelFileError, MultipleFacesError
from hyperver.hypernet.batched import score_matrix, stacked_scores, vmap_scores
from hyperver.hypernet.generator import WeightGenerator
from hyperver.hypernet.losses import positive_weight, theta_norm_penalty, weighted_bce
from hyperver.hypernet.model_io import UserModel, load_generator, save_generator
from hyperver.hypernet.sampling import IdentitySampler
from hyperver.hypernet.verifier import VerifierModule, VerifierSpec, forward, init_theta, unflatten
from supernet.profile import count_macs, count_params

SPEC = VerifierSpec(input_size=64)


def test_f_has_about_23k_params_counted_by_a_tool_and_a_documented_layout():
    module = VerifierModule(SPEC)
    assert count_params(module) == SPEC.n_params
    assert abs(SPEC.n_params - 23000) / 23000 < 0.15
    assert count_macs(module, (1, 3, 64, 64)) > 1e6
    theta = init_theta(SPEC)
    parts = unflatten(SPEC, theta)
    assert list(parts) == [name for name, _ in SPEC.layout()]
    assert parts["conv0.weight"].shape == (16, 3, 3, 3) and parts["fc2.bias"].shape == (1,)
    # The module and the functional form are one definition.
    x = torch.randn(3, 3, 64, 64)
    torch.testing.assert_close(VerifierModule(SPEC, theta)(x), forward(SPEC, theta, x))
    with pytest.raises(ValueError, match="needs 23009"):
        unflatten(SPEC, torch.zeros(10))
    with pytest.raises(ValueError, match="groups"):
        VerifierSpec(channels=(16, 30), groups=(1, 4), strides=(2, 2))


def test_batched_implementations_agree_with_the_loop():
    thetas = torch.stack([init_theta(SPEC, torch.Generator().manual_seed(i)) for i in range(4)])
    x = torch.randn(6, 3, 64, 64)
    loop = torch.stack([forward(SPEC, t, x) for t in thetas])
    torch.testing.assert_close(stacked_scores(SPEC, thetas, x), loop, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(vmap_scores(SPEC, thetas, x), loop, atol=1e-5, rtol=1e-4)
    per_user = torch.randn(4, 2, 3, 64, 64)
    loop2 = torch.stack([forward(SPEC, t, xi) for t, xi in zip(thetas, per_user)])
    torch.testing.assert_close(score_matrix(SPEC, thetas, per_user, "stacked", chunk=3), loop2, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(score_matrix(SPEC, thetas, per_user, "vmap"), loop2, atol=1e-5, rtol=1e-4)


def test_generator_starts_with_sensible_verifiers_and_trains():
    gen = WeightGenerator(SPEC, embed_dim=16, hidden=32)
    emb = torch.nn.functional.normalize(torch.randn(5, 16), dim=1)
    thetas = gen(emb)
    assert thetas.shape == (5, SPEC.n_params)
    logits = stacked_scores(SPEC, thetas, torch.randn(8, 3, 64, 64))
    assert torch.isfinite(logits).all() and 0.01 < logits.std() < 10
    # Users differ a little at step 0, and gradients reach the generator.
    assert (thetas[0] - thetas[1]).abs().max() > 0
    logits.sum().backward()
    assert gen.out.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="embeddings must be"):
        gen(torch.randn(2, 7))


def test_weighted_bce_and_norm_penalty_by_hand():
    assert positive_weight(16, 2.0) == pytest.approx(0.875)
    logits = torch.tensor([[2.0, -1.0], [0.0, 3.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    bce = lambda z, y: -(y * np.log(1 / (1 + np.exp(-z))) + (1 - y) * np.log(1 - 1 / (1 + np.exp(-z))))  # noqa
    pos = (bce(2.0, 1) + bce(3.0, 1)) / 2
    neg = (bce(-1.0, 0) + bce(0.0, 0)) / 2
    assert float(weighted_bce(logits, targets, 0.75)) == pytest.approx(0.75 * pos + 0.25 * neg, rel=1e-5)
    mask = torch.tensor([[True, False], [True, True]])
    assert float(weighted_bce(logits, targets, 0.5, mask)) == pytest.approx(0.5 * pos + 0.5 * bce(0.0, 0), rel=1e-5)
    assert float(theta_norm_penalty(torch.tensor([[3.0, 4.0], [0.0, 1.0]]))) == pytest.approx(13.0)
    with pytest.raises(ValueError):
        positive_weight(2, 2.0)


def test_kcs_draws_batches_from_one_cluster():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 8)) * 5
    means = np.concatenate([c + rng.normal(size=(30, 8)) for c in centres])
    sampler = IdentitySampler(means, n_clusters=4, seed=0)
    cluster_of = np.empty(len(means), int)
    for c, members in enumerate(sampler.clusters):
        cluster_of[members] = c
    for _ in range(10):
        batch = sampler.sample(16, use_kcs=True)
        assert len(set(cluster_of[batch])) == 1 and len(set(batch)) == 16
    assert len(set(cluster_of[sampler.sample(60, use_kcs=False)])) > 1


def test_user_model_round_trip_and_refusals(tmp_path):
    theta = init_theta(SPEC).numpy()
    user = UserModel(theta, SPEC, 0.25, np.ones(128, np.float32) / np.sqrt(128), {"user": "alice"})
    path = user.save(tmp_path / "alice.hv")
    again = UserModel.load(path, expected=SPEC)
    np.testing.assert_array_equal(again.theta, theta)
    assert again.threshold == 0.25 and again.meta["user"] == "alice"
    with pytest.raises(ModelFileError, match="is for f"):
        UserModel.load(path, expected=VerifierSpec(input_size=80))
    data = bytearray(path.read_bytes())
    (tmp_path / "cut.hv").write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ModelFileError, match="corrupt"):
        UserModel.load(tmp_path / "cut.hv")
    with pytest.raises(ModelFileError, match="not found"):
        UserModel.load(tmp_path / "nobody.hv")


def test_enrollment_and_verification_on_real_photos(tmp_path, lfw_images, two_faces_image, cfg):
    from PIL import Image

    from hyperver.align import Aligner
    from hyperver.hypernet.enroll import Enroller, verify

    gen = WeightGenerator(SPEC, embed_dim=128, hidden=64)
    gpath = save_generator(gen, tmp_path / "gen.safetensors", backbone="dlib", extra={"threshold": 0.0})
    loaded, meta = load_generator(gpath)
    assert meta["backbone"] == "dlib"
    enroller = Enroller(gpath, cfg)
    zico = [lfw_images / "Zico" / f"Zico_000{i}.jpg" for i in (1, 2)]
    user = enroller.enroll([zico[0]], flip_average=True)
    assert user.theta.shape == (SPEC.n_params,) and abs(np.linalg.norm(user.embedding) - 1) < 1e-5
    res = verify(user, zico[1], Aligner())
    assert set(res) == {"logit", "score", "threshold", "match"}
    Image.fromarray(two_faces_image).save(tmp_path / "two.jpg")
    with pytest.raises(MultipleFacesError):
        enroller.enroll([tmp_path / "two.jpg"])
    blank = np.asarray(Image.open(zico[0]))[200:250]
    Image.fromarray(blank).resize((500, 100)).save(tmp_path / "none.jpg")
    with pytest.raises(FaceNotFoundError):
        enroller.enroll([tmp_path / "none.jpg"])


def test_hard_pseudo_identities_are_teacher_look_alikes_of_the_batch():
    from hyperver.hypernet.sampling import nearest_faces, pick_extra_faces

    rng = np.random.default_rng(0)
    people = rng.normal(size=(5, 16)).astype(np.float32)
    # 10 faces near each person (+ noise), 50 unrelated faces
    faces = np.concatenate([np.repeat(people, 10, axis=0) + 0.1 * rng.normal(size=(50, 16)),
                            rng.normal(size=(50, 16))]).astype(np.float32)
    nn = nearest_faces(people, faces, np.zeros(16, np.float32), k=10, chunk=2)
    assert nn.shape == (5, 10)
    for p in range(5):
        assert set(nn[p]) == set(range(10 * p, 10 * p + 10))     # its own look-alikes, nearest first
    picks = pick_extra_faces(nn, np.array([1, 3]), 8, len(faces), np.random.default_rng(1))
    assert len(set(picks)) == 8 and all(10 <= f < 20 or 30 <= f < 40 for f in picks)
    # more extras than look-alikes: distinct, topped up from the rest
    many = pick_extra_faces(nn, np.array([2]), 15, len(faces), np.random.default_rng(1))
    assert len(set(many)) == 15 and set(range(20, 30)) <= set(many)
    plain = pick_extra_faces(None, np.array([2]), 8, len(faces), np.random.default_rng(1))
    assert np.array_equal(plain, np.random.default_rng(1).choice(len(faces), size=8, replace=False))
