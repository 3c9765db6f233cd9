import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from hyperver.align import Aligner
from hyperver.data import load_image
from hyperver.embed import EMBEDDERS, FaceInput
from hyperver.errors import ModelFileError


def _faces(lfw_images, items):
    aligner = Aligner()
    out = []
    for person, n in items:
        img = load_image(lfw_images / person / f"{person}_{n:04d}.jpg")
        out.append(FaceInput(aligner.align_photo(img), img))
    return out


def test_dlib_embeddings_are_unit_and_separate_people(lfw_images):
    emb = EMBEDDERS.create("dlib")
    faces = _faces(lfw_images, [("Zico", 1), ("Zico", 2), ("Abel_Pacheco", 1), ("Abel_Pacheco", 2)])
    e = emb.embed(faces)
    assert e.shape == (4, 128) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] and sim[2, 3] > sim[1, 3]
    # dlib's own chip is 150x150 from the 5-point shape, not the ArcFace crop.
    assert emb.chip(faces[0].image, faces[0].face).shape == (150, 150, 3)
    with pytest.raises(ValueError, match="needs the source image"):
        emb.embed([FaceInput(faces[0].face, None)])


def test_dlib_detail_limit_degrades_with_fewer_pixels(lfw_images):
    faces = _faces(lfw_images, [("Zico", 1)])
    native = EMBEDDERS.create("dlib")
    ref = native.embed(faces)[0]
    cos = {}
    for px in (16, 64, 400):
        limited = EMBEDDERS.create("dlib", detail_px=px, name=f"dlib_at_{px}px")
        assert limited.cache_id != native.cache_id and limited.name == f"dlib_at_{px}px"
        assert limited.chip(faces[0].image, faces[0].face).shape == (150, 150, 3)
        cos[px] = float(limited.embed(faces)[0] @ ref)
    # 400 px holds more detail than the 150-px chip: nothing is removed
    assert cos[400] == pytest.approx(1.0, abs=1e-6)
    assert cos[16] < cos[64] < 1.0
    with pytest.raises(ValueError, match="at least 8"):
        EMBEDDERS.create("dlib", detail_px=4)


def tiny_onnx_model(path, dim=3):
    """Global average pool over a 112x112 RGB input -> (N, 3) -> linear (3 -> dim)."""
    w = np.arange(3 * dim, dtype=np.float32).reshape(3, dim) - 2.0
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("MatMul", ["flat", "W"], ["embedding"])],
        "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dim])],
        initializer=[helper.make_tensor("W", TensorProto.FLOAT, w.shape, w.ravel())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return w


def test_onnx_embedder_follows_the_insightface_convention(tmp_path, lfw_images):
    w = tiny_onnx_model(tmp_path / "tiny.onnx")
    emb = EMBEDDERS.create("onnx", path=tmp_path / "tiny.onnx")
    faces = _faces(lfw_images, [("Zico", 1)])
    got = emb.embed(faces)[0]
    x = (faces[0].face.crop.astype(np.float32) - 127.5) / 127.5
    want = x.mean(axis=(0, 1)) @ w
    np.testing.assert_allclose(got, want / np.linalg.norm(want), rtol=1e-4, atol=1e-5)
    bgr = EMBEDDERS.create("onnx", path=tmp_path / "tiny.onnx", channel_order="bgr").embed(faces)[0]
    want_bgr = x[..., ::-1].mean(axis=(0, 1)) @ w
    np.testing.assert_allclose(bgr, want_bgr / np.linalg.norm(want_bgr), rtol=1e-4, atol=1e-5)
    assert emb.cache_id != EMBEDDERS.create("onnx", path=tmp_path / "tiny.onnx", mean=0, std=255).cache_id


def test_onnx_embedder_file_errors(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        EMBEDDERS.create("onnx", path=tmp_path / "missing.onnx")
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x08\x01garbage that is not a protobuf model")
    with pytest.raises(ModelFileError, match="cannot load ONNX model"):
        EMBEDDERS.create("onnx", path=bad)


def test_user_embedder_from_config(cfg, tmp_path):
    from hyperver.config import load_config
    from hyperver.features import build_embedder

    tiny_onnx_model(tmp_path / "mine.onnx")
    cfg = load_config(overrides=[f"embedders.mine={{kind: onnx, path: {tmp_path / 'mine.onnx'}}}"], env={})
    emb = build_embedder(cfg, "mine")
    assert emb.name == "mine" and emb.dim == 3 and not emb.lfw_free
