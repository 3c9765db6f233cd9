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


# -- large photos: detection on at most detect_max_pixels, alignment on the full photo ----------------
class _Recorder:
    """A detector that finds nothing and records what it was given."""

    name, version, scheme = "recorder", "recorder-v1", "dlib5"

    def __init__(self):
        self.calls: list[tuple[tuple[int, ...], int]] = []

    def detect(self, image, upsample=0):
        self.calls.append((image.shape, upsample))
        return []


def test_small_images_are_detected_exactly_as_before():
    """LFW (250x250, then 2x), CelebA (2x, 4x) and padded UTKFace attempts stay within the budget: as configured."""
    a = Aligner(detector=_Recorder())
    assert a.plan((250, 250, 3)) == [(0.0, 0, 1.0), (0.0, 1, 1.0)]
    celeba = Aligner(detector=_Recorder(), attempts=[{"upsample": 0}, {"upsample": 1}, {"upsample": 2}])
    assert celeba.plan((109, 89, 3)) == [(0.0, 0, 1.0), (0.0, 1, 1.0), (0.0, 2, 1.0)]
    utk = Aligner(detector=_Recorder(), attempts=[{"upsample": 0}, {"upsample": 1}, {"pad": 0.3, "upsample": 1}])
    assert utk.plan((200, 200, 3)) == [(0.0, 0, 1.0), (0.0, 1, 1.0), (0.3, 1, 1.0)]
    assert a.version == Aligner(detector=_Recorder(), detect_max_pixels=None).version.replace("_dm0", "")


def test_a_huge_cheap_image_is_detected_at_the_working_size():
    """The 25 MP all-black photo of issue #18: each detector sees one downscaled copy, no upsampled one."""
    from hyperver.align.detectors import DetectorChain

    first, second = _Recorder(), _Recorder()
    a = Aligner(detector=DetectorChain([first, second]))
    with pytest.raises(FaceNotFoundError):
        a.align_photo(np.zeros((5000, 5000, 3), np.uint8))
    for rec in (first, second):
        assert len(rec.calls) == 1                                 # the 2x attempt would only repeat it
        (h, w, _), upsample = rec.calls[0]
        assert upsample == 0 and h * w <= a.detect_max_pixels and max(h, w) >= 1200
    # A mid-size photo: as is first, then upsampled only up to the budget (not 2x).
    mid = _Recorder()
    with pytest.raises(FaceNotFoundError):
        Aligner(detector=mid).align_photo(np.zeros((1000, 800, 3), np.uint8))
    assert [c[0][:2] for c in mid.calls] == [(1000, 800), (1431, 1144)] and mid.calls[1][1] == 0
    assert all(h * w <= a.detect_max_pixels for (h, w, _), _ in mid.calls)


def test_detect_max_pixels_from_config_and_its_bounds():
    assert Aligner.from_config({"detect_max_pixels": 500_000}, models_dir=None).detect_max_pixels == 500_000
    assert "_dm500000" in Aligner(detect_max_pixels=500_000).version
    assert Aligner(detect_max_pixels=None).plan((5000, 5000)) == [(0.0, 0, 1.0), (0.0, 1, 1.0)]
    with pytest.raises(ValueError, match="detect_max_pixels"):
        Aligner(detect_max_pixels=100)


@pytest.mark.parametrize("person", ["Zico/Zico_0001.jpg", "Abel_Pacheco/Abel_Pacheco_0001.jpg"])
def test_a_face_in_an_upscaled_photo_is_found_and_aligned_like_the_original(cfg, lfw_images, person):
    """LFW 250x250 upscaled to 4000x4000 (16 MP, a phone photo's size): the default chain finds the face on a
    downscaled copy and the landmarks, mapped back, sit where the original's do (in 250-pixel units)."""
    from PIL import Image

    aligner = Aligner.from_config(cfg.get_path("align"), models_dir=str(cfg.models_dir))
    img = load_image(lfw_images / person)
    big = np.asarray(Image.fromarray(img).resize((4000, 4000), Image.Resampling.BICUBIC))
    a, b = aligner.align_photo(img), aligner.align_photo(big)
    assert b.scheme == a.scheme and b.image_size == (4000, 4000)
    assert np.abs(b.points("arcface5") / 16 - a.points("arcface5")).max() < 1.5
    assert np.abs(b.crop.astype(int) - a.crop.astype(int)).mean() < 6


def test_warping_a_large_image_cuts_only_the_crop_region(monkeypatch):
    """Over WARP_REGION_MIN_PIXELS the crop's source region is cut out first: the same crop, no whole-photo copy."""
    import hyperver.align.templates as templates

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (1500, 1200, 3), dtype=np.uint8)
    m = estimate_similarity(ARCFACE_112 * 3 + np.array([500, 700]), ARCFACE_112)     # a 336-px face
    cut = warp_affine(img, m, 112)
    monkeypatch.setattr(templates, "WARP_REGION_MIN_PIXELS", 10 ** 9)
    whole = warp_affine(img, m, 112)
    assert np.abs(cut.astype(int) - whole.astype(int)).max() <= 1
    # A crop hanging over the border, and one wholly outside, are still the whole-image warp's.
    monkeypatch.setattr(templates, "WARP_REGION_MIN_PIXELS", 1_000_000)
    for shift in ([-100, -50], [5000, 5000]):
        m2 = estimate_similarity(ARCFACE_112 * 3 + np.array(shift), ARCFACE_112)
        cut = warp_affine(img, m2, 112)
        monkeypatch.setattr(templates, "WARP_REGION_MIN_PIXELS", 10 ** 9)
        assert np.abs(cut.astype(int) - warp_affine(img, m2, 112).astype(int)).max() <= 1
        monkeypatch.setattr(templates, "WARP_REGION_MIN_PIXELS", 1_000_000)
