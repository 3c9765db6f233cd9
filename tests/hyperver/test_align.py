import numpy as np
import pytest

from hyperver.align import Aligner
from hyperver.align.templates import (ARCFACE_112, apply_transform, convert_points, estimate_similarity, template,
                                      warp_affine)
from hyperver.data import load_image
from hyperver.errors import ConfigError, FaceNotFoundError, MultipleFacesError


@pytest.fixture(scope="module")
def aligner():
    return Aligner()


@pytest.fixture(scope="module")
def no_face_image(lfw_images):
    """A real photo region without a face: the bottom strip of an LFW picture (clothes), enlarged."""
    from PIL import Image

    img = load_image(lfw_images / "Zico" / "Zico_0001.jpg")
    return np.asarray(Image.fromarray(img[200:250, :, :]).resize((500, 100)))


def test_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, size=(5, 2))
    theta, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rot = scale * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    dst = src @ rot.T + shift
    m = estimate_similarity(src, dst)
    np.testing.assert_allclose(apply_transform(m, src), dst, atol=1e-9)


def test_scheme_conversion_round_trip():
    pts = template("dlib5") * 2.1 + 30
    back = convert_points(convert_points(pts, "dlib5", "arcface5"), "arcface5", "dlib5")
    np.testing.assert_allclose(back, pts, atol=1e-9)


def test_single_face_is_aligned_to_the_arcface_template(aligner, lfw_images):
    img = load_image(lfw_images / "Zico" / "Zico_0001.jpg")
    face = aligner.align_photo(img)
    assert face.crop.shape == (112, 112, 3) and face.crop.dtype == np.uint8
    assert face.n_faces == 1 and not face.fallback
    # The face's ArcFace points land on the template in crop coordinates.
    m = estimate_similarity(face.points("arcface5"), ARCFACE_112)
    np.testing.assert_allclose(apply_transform(m, face.points("arcface5")), ARCFACE_112, atol=1e-6)
    # ... and the crop really contains that face: re-detection finds the eyes near the template.
    again = Aligner(attempts=[{"upsample": 1}]).detect(np.asarray(face.crop))
    assert again, "the aligned crop should still contain a detectable face"
    assert again[0].scheme == "dlib5"
    assert np.all(np.abs(convert_points(again[0].landmarks, "dlib5", "arcface5")[:2] - ARCFACE_112[:2]) < 6)


def test_two_faces_is_a_clear_error(aligner, two_faces_image):
    with pytest.raises(MultipleFacesError, match="2 faces") as info:
        aligner.align_photo(two_faces_image, name="pair.jpg")
    assert info.value.n_faces == 2


def test_no_face_is_a_clear_error_for_a_photo_but_a_counted_fallback_for_a_dataset(aligner, no_face_image):
    with pytest.raises(FaceNotFoundError, match="no face found in clothes.jpg"):
        aligner.align_photo(no_face_image, name="clothes.jpg")
    face = aligner.align_dataset_image(no_face_image)
    assert face.fallback and face.n_faces == 0 and face.crop.shape == (112, 112, 3)


def test_dataset_policy_picks_the_central_face(aligner, lfw_images):
    a = load_image(lfw_images / "Zico" / "Zico_0001.jpg")
    b = load_image(lfw_images / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg")
    canvas = np.concatenate([a, b, a], axis=1)  # Zico | Abel | Zico: Abel is the central face
    face = aligner.align_dataset_image(canvas)
    assert face.n_faces == 3 and not face.fallback
    assert 250 < (face.box[0] + face.box[2]) / 2 < 500


def test_warp_is_pixel_exact_for_a_translation():
    img = np.zeros((60, 60, 3), np.uint8)
    img[30, 20] = 255
    out = warp_affine(img, np.array([[1.0, 0, -10], [0, 1.0, -5]]), 40)
    assert tuple(np.argwhere(out[:, :, 0] == 255)[0]) == (25, 10)


def test_unknown_detector_and_attempt_options():
    with pytest.raises(ConfigError, match="unknown face detector 'retinaface'"):
        Aligner(detector="retinaface")
    with pytest.raises(ValueError, match="unknown detection attempt"):
        Aligner(attempts=[{"upscale": 1}])
