"""The pretrained embedders from packages (MobileFaceNet, SFace) and fusions, on real LFW faces."""
import numpy as np
import pytest

from hyperver.embed import EMBEDDERS, FaceInput, l2_normalize
from hyperver.errors import ConfigError, ModelFileError
from hyperver.features import FeatureCache, build_embedder

# Three people, two photos each.
PEOPLE = ["Al_Gore", "Adam_Sandler", "Ahmed_Chalabi"]


@pytest.fixture(scope="module")
def faces(lfw_images) -> list[FaceInput]:
    from hyperver.align import Aligner
    from hyperver.data import load_image

    aligner, out = Aligner(), []
    for person in PEOPLE:
        for i in (1, 2):
            image = load_image(lfw_images / person / f"{person}_{i:04d}.jpg")
            out.append(FaceInput(aligner.align_photo(image), image))
    return out


def _check_separates_people(emb: np.ndarray, dim: int) -> None:
    assert emb.shape == (2 * len(PEOPLE), dim) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sims = emb @ emb.T
    same = [sims[2 * k, 2 * k + 1] for k in range(len(PEOPLE))]
    others = [sims[i, j] for i in range(len(emb)) for j in range(len(emb)) if i // 2 != j // 2]
    assert min(same) > max(others) + 0.1, (same, max(others))


@pytest.mark.parametrize("name,dim", [("mobilefacenet", 192), ("sface", 128)])
def test_pretrained_embedders_separate_people(cfg, faces, name, dim):
    model = build_embedder(cfg, name)
    assert model.dim == dim and model.lfw_free and "MS1M" in model.training_data
    _check_separates_people(model.embed(faces), dim)


def test_mobilefacenet_pairs_batches_of_any_length(cfg, faces):
    """The TFLite graph's batch is fixed at 2: an odd count is padded, results do not depend on batching."""
    model = build_embedder(cfg, "mobilefacenet")
    all_at_once = model.embed(faces[:5])
    one_by_one = np.concatenate([model.embed([f]) for f in faces[:5]])
    np.testing.assert_allclose(all_at_once, one_by_one, atol=1e-5)


def test_channel_order_is_part_of_the_cache_id(cfg, tmp_path):
    from hyperver.config import load_config

    c = load_config(overrides=[f"models.dir={cfg.models_dir}", "embedders.mfn_bgr={kind: mobilefacenet, channel_order: bgr}"],
                    env={})
    a, b = build_embedder(c, "mobilefacenet"), build_embedder(c, "mfn_bgr")
    assert a.cache_id != b.cache_id and a.cache_id.endswith("_rgb")
    with pytest.raises(ConfigError, match="channel_order"):
        EMBEDDERS.create("sface", channel_order="yuv", models_dir=str(cfg.models_dir))


def test_corrupt_model_files_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFileError, match="MobileFaceNet"):
        EMBEDDERS.create("mobilefacenet", model_path=str(bad))
    with pytest.raises(ModelFileError, match="SFace"):
        EMBEDDERS.create("sface", model_path=str(bad))
    with pytest.raises(ModelFileError, match="hyperver models fetch sface"):
        EMBEDDERS.create("sface", models_dir=str(tmp_path))


def test_fusion_cosine_is_the_weighted_mean_of_member_cosines(cfg, faces):
    mfn, sface = build_embedder(cfg, "mobilefacenet"), build_embedder(cfg, "sface")
    fusion = EMBEDDERS.create("fusion", members=[mfn, sface], weights=[1.0, 3.0])
    e1, e2, ef = mfn.embed(faces), sface.embed(faces), fusion.embed(faces)
    assert ef.shape == (len(faces), 192 + 128)
    np.testing.assert_allclose(np.linalg.norm(ef, axis=1), 1.0, atol=1e-5)
    expected = (1.0 * (e1 @ e1.T) + 3.0 * (e2 @ e2.T)) / 4.0
    np.testing.assert_allclose(ef @ ef.T, expected, atol=1e-5)
    _check_separates_people(ef, 320)


def test_fusion_combine_renormalises_unnormalised_members():
    rng = np.random.default_rng(0)

    class Stub:
        def __init__(self, dim):
            self.dim, self.name, self.cache_id = dim, f"stub{dim}", f"stub{dim}"
            self.needs_source_image, self.lfw_free = False, True

    fusion = EMBEDDERS.create("fusion", members=[Stub(3), Stub(2)])
    a, b = rng.normal(size=(4, 3)) * 7, rng.normal(size=(4, 2)) * 0.1
    out = fusion.combine([a, b])
    np.testing.assert_allclose(out, np.concatenate([l2_normalize(a), l2_normalize(b)], 1) / np.sqrt(2), atol=1e-6)


def test_fusion_config_errors(cfg):
    from hyperver.config import Config, merge

    with pytest.raises(ConfigError, match="at least two"):
        build_embedder(Config(merge(cfg, {"embedders": {"solo": {"kind": "fusion", "members": ["sface"]}}})), "solo")
    with pytest.raises(ConfigError, match="lists itself"):
        build_embedder(Config(merge(cfg, {"embedders": {"loop": {"kind": "fusion", "members": ["loop", "sface"]}}})), "loop")
    with pytest.raises(ConfigError, match="positive"):
        build_embedder(Config(merge(cfg, {"embedders": {"w": {"kind": "fusion", "members": ["sface", "dlib"],
                                                               "weights": [1, 0]}}})), "w")


def test_fusion_cache_is_built_from_the_member_caches(cfg):
    """A shipped fusion entry: its cache equals the combination of the members' cached embeddings."""
    from hyperver.data import open_dataset

    records = [r for r in open_dataset(cfg, "lfw").records() if r.identity in PEOPLE]
    fused = FeatureCache(cfg, "lfw", "fusion_mobilefacenet_sface").embeddings(records)
    parts = [FeatureCache(cfg, "lfw", n).embeddings(records, build=False) for n in ("mobilefacenet", "sface")]
    np.testing.assert_allclose(fused, l2_normalize(np.concatenate(parts, 1)), atol=1e-5)
