import shutil

import numpy as np
import pytest
from PIL import Image

from hyperver.config import load_config
from hyperver.data import open_dataset
from hyperver.errors import ImageError
from hyperver.features import FeatureCache


@pytest.fixture()
def my_dataset(tmp_path, lfw_images):
    """A user's folder-per-identity dataset: 4 real faces, a faceless photo and a corrupt file."""
    root = tmp_path / "mine"
    for person in ("Zico", "Abel_Pacheco"):
        (root / person).mkdir(parents=True)
        for n in (1, 2):
            shutil.copy(lfw_images / person / f"{person}_{n:04d}.jpg", root / person)
    img = np.asarray(Image.open(lfw_images / "Zico" / "Zico_0001.jpg"))[200:250]
    Image.fromarray(img).resize((500, 100)).save(root / "Zico" / "no_face.jpg")
    (root / "Abel_Pacheco" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def _cfg(tmp_path, my_dataset, workers=1):
    return load_config(overrides=[f"data.root={my_dataset.parent}", f"cache.root={tmp_path / 'cache'}",
                                  f"embed.workers={workers}", "datasets.mine={kind: folder, path: mine}"], env={})


def test_build_counts_fallbacks_and_resumes(tmp_path, my_dataset):
    cfg = _cfg(tmp_path, my_dataset)
    records = open_dataset(cfg, "mine").records()
    assert len(records) == 6
    cache = FeatureCache(cfg, "mine", "dlib")
    rep = cache.build(records, progress=False)
    assert rep.aligned_new == 5 and rep.embedded_new == 5
    assert rep.fallback_crops == 1 and len(rep.unreadable) == 1
    assert "broken.jpg" in rep.unreadable[0][0]
    # A second run (e.g. after an interruption) computes nothing again.
    again = FeatureCache(cfg, "mine", "dlib").build(records, progress=False)
    assert again.aligned_new == 0 and again.embedded_new == 0
    good = [r for r in records if r.path.name != "broken.jpg"]
    emb = cache.embeddings(good)
    assert emb.shape == (5, 128)
    crops = cache.crops(good)
    assert crops.shape == (5, 112, 112, 3)
    with pytest.raises(ImageError, match="could not be embedded"):
        cache.embeddings(records)


def test_parallel_build_matches_serial(tmp_path, my_dataset):
    cfg1 = _cfg(tmp_path / "a", my_dataset, workers=1)
    cfg2 = _cfg(tmp_path / "b", my_dataset, workers=2)
    records = [r for r in open_dataset(cfg1, "mine").records() if r.path.name != "broken.jpg"]
    e1 = FeatureCache(cfg1, "mine", "dlib").embeddings(records, chunk=2)
    e2 = FeatureCache(cfg2, "mine", "dlib").embeddings(records, chunk=2)
    np.testing.assert_allclose(e1, e2, atol=1e-6)


def test_embedding_cache_reuses_aligned_crops(tmp_path, my_dataset):
    cfg = _cfg(tmp_path, my_dataset)
    records = [r for r in open_dataset(cfg, "mine").records() if r.path.name != "broken.jpg"]
    crops_only = FeatureCache(cfg, "mine", None)
    assert crops_only.build(records, progress=False).aligned_new == 5
    rep = FeatureCache(cfg, "mine", "dlib").build(records, progress=False)
    assert rep.aligned_new == 0 and rep.embedded_new == 5


def test_feature_pack_round_trip(tmp_path, my_dataset):
    from hyperver.feature_pack import export_pack, import_pack

    cfg = _cfg(tmp_path, my_dataset)
    records = [r for r in open_dataset(cfg, "mine").records() if r.path.name != "broken.jpg"]
    original = FeatureCache(cfg, "mine", "dlib")
    want = original.embeddings(records)
    pack = export_pack(cfg, "mine", "dlib", tmp_path / "packs")
    fresh = _cfg(tmp_path / "fresh", my_dataset)
    rep = import_pack(fresh, "mine", "dlib", tmp_path / "packs")
    assert rep["imported"] == 5 and pack.stat().st_size < 50_000
    again = FeatureCache(fresh, "mine", "dlib")
    np.testing.assert_allclose(again.embeddings(records, build=False), want, atol=1e-3)
    assert np.abs(again.crops(records).astype(int) - original.crops(records)).max() <= 1
    assert again.alignment_stats(records)["fallback_crops"] == 1


def test_second_embedders_pack_adds_embeddings_to_cached_crops(tmp_path, my_dataset):
    """Importing a pack for another embedder over existing crops adds only its embeddings."""
    from hyperver.feature_pack import export_pack, import_pack

    cfg = _cfg(tmp_path, my_dataset)
    records = [r for r in open_dataset(cfg, "mine").records() if r.path.name != "broken.jpg"]
    want = FeatureCache(cfg, "mine", "mobilefacenet").embeddings(records)
    FeatureCache(cfg, "mine", "dlib").embeddings(records)
    for name in ("dlib", "mobilefacenet"):
        export_pack(cfg, "mine", name, tmp_path / "packs")
    fresh = _cfg(tmp_path / "fresh", my_dataset)
    import_pack(fresh, "mine", "dlib", tmp_path / "packs")
    crops = FeatureCache(fresh, "mine", None).crops(records)
    assert import_pack(fresh, "mine", "mobilefacenet", tmp_path / "packs")["imported"] == 5
    again = FeatureCache(fresh, "mine", "mobilefacenet")
    np.testing.assert_allclose(again.embeddings(records, build=False), want, atol=2e-3)
    np.testing.assert_array_equal(again.crops(records), crops)
