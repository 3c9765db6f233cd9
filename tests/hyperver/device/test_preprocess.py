"""The device's numpy preprocessing against the torch path training and enrollment use."""
import numpy as np

from hyperver.device.preprocess import face_array, resize_crop, resize_matrix


def test_filter_rows_are_normalised_and_cover_the_input():
    m = resize_matrix(112, 64)
    np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-6)
    assert (m.sum(0) > 0).all()


def test_resize_matches_torch_antialiased_bilinear(real_crops):
    import torch
    import torch.nn.functional as F

    from hyperver.hypernet.data import resize_crops

    differ = total = 0
    for crop in real_crops:
        x = torch.from_numpy(crop.copy()).permute(2, 0, 1)[None].float()
        ref_float = F.interpolate(x, size=(64, 64), mode="bilinear", antialias=True)[0].permute(1, 2, 0).numpy()
        ry = resize_matrix(112, 64)
        ours_float = np.einsum("pw,owc->opc", ry, np.einsum("oh,hwc->owc", ry, crop.astype(np.float32)))
        assert np.abs(ours_float - ref_float).max() < 1e-3           # measured ~5e-5 grey levels
        ref, ours = resize_crops(crop[None], 64)[0].numpy(), resize_crop(crop, 64)
        d = np.abs(ref.astype(int) - ours)
        assert d.max() <= 1                                           # only rounding ties at .5 can differ
        differ, total = differ + int((d > 0).sum()), total + d.size
    assert differ / total < 0.005                                    # measured ~0.04% of values


def test_face_array_matches_face_input(real_crops, spec):
    from hyperver.hypernet.enroll import face_input

    for crop in real_crops:
        ref = face_input(crop, spec).numpy()
        nchw, nhwc = face_array(crop, spec.input_size, "NCHW"), face_array(crop, spec.input_size, "NHWC")
        assert nchw.shape == ref.shape and nchw.dtype == np.float32
        assert np.abs(nchw - ref).max() <= 1 / 127.5 + 1e-6
        np.testing.assert_array_equal(nhwc, nchw.transpose(0, 2, 3, 1))
