import io

import numpy as np
import pytest
from PIL import Image

from hyperver.data.imageio import decode_image, load_image
from hyperver.errors import ImageError


def _jpeg(w=64, h=48, mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (w, h), 128).save(buf, format="JPEG" if mode != "RGBA" else "PNG")
    return buf.getvalue()


def test_loads_real_lfw_image(lfw_images):
    img = load_image(lfw_images / "Zico" / "Zico_0001.jpg")
    assert img.shape == (250, 250, 3) and img.dtype == np.uint8


def test_missing_empty_and_non_image_files(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "missing.jpg")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(empty)
    text = tmp_path / "notes.jpg"
    text.write_bytes(b"this is not an image at all, just text bytes")
    with pytest.raises(ImageError, match="not an image"):
        load_image(text)
    with pytest.raises(ImageError, match="not a regular file"):
        load_image(tmp_path)


def test_unreadable_file(tmp_path, monkeypatch):
    p = tmp_path / "locked.jpg"
    p.write_bytes(_jpeg())
    # Permissions do not stop root (CI runs as root), so simulate the OS refusing the read.
    from pathlib import Path

    def deny(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(ImageError, match="unreadable.*Permission denied"):
        load_image(p)


def test_truncated_image(lfw_images):
    data = (lfw_images / "Zico" / "Zico_0001.jpg").read_bytes()
    with pytest.raises(ImageError, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2])


def test_size_limits():
    with pytest.raises(ImageError, match="too large"):
        decode_image(_jpeg(), max_bytes=10)
    with pytest.raises(ImageError, match="dimensions too large"):
        decode_image(_jpeg(400, 300), max_pixels=100 * 100)
    with pytest.raises(ImageError, match="too small"):
        decode_image(_jpeg(20, 20))


def test_modes_and_arrays():
    assert decode_image(_jpeg(mode="L")).shape == (48, 64, 3)
    assert decode_image(_jpeg(mode="RGBA")).shape == (48, 64, 3)
    assert load_image(np.zeros((40, 40), np.uint8)).shape == (40, 40, 3)
    with pytest.raises(ImageError, match="uint8"):
        load_image(np.zeros((40, 40, 3), np.float32))
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((40, 40, 2), np.uint8))


def _encoded(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "PPM"])
def test_16bit_greyscale_is_scaled_not_clipped(lfw_images, fmt):
    """16-bit grey (Pillow mode 'I;16' / 'I') used to be clipped at 255 by convert('RGB'): a white image."""
    grey = np.asarray(Image.open(lfw_images / "Zico" / "Zico_0001.jpg").convert("L"))
    data = _encoded(grey.astype(np.uint16) * 257, fmt)             # full 16-bit range
    assert Image.open(io.BytesIO(data)).mode in ("I;16", "I;16B", "I")
    img = decode_image(data)
    assert img.shape == (*grey.shape, 3) and img.dtype == np.uint8
    assert (img == img[:, :, :1]).all()                             # still grey
    assert np.abs(img[:, :, 0].astype(int) - grey).max() <= 1


def test_32bit_greyscale_of_unknown_range_is_scaled_by_its_maximum():
    ramp = np.tile(np.arange(0, 64 * 1000, 1000, dtype=np.int32), (40, 1))    # 0..63000 in a 32-bit TIFF
    img = decode_image(_encoded(ramp, "TIFF"))
    assert img[0, -1, 0] == 255 and img[0, 0, 0] == 0
    assert np.abs(img[0, :, 0].astype(int) - np.rint(ramp[0] * 255 / 63000)).max() <= 1
    small = np.tile(np.arange(64, dtype=np.int32) * 4, (40, 1))              # already 0..252: kept as is
    assert (decode_image(_encoded(small, "TIFF"))[:, :, 0] == small).all()


def test_probe_checks_the_header_without_decoding(lfw_images):
    """The server checks every photo of a request this way before it decodes the first."""
    from hyperver.data.imageio import probe_image
    from hyperver.errors import (CorruptImageError, ImageDimensionsTooLargeError, ImageTooSmallError,
                                 NotAnImageError)

    assert probe_image(_jpeg(64, 48)) == (64, 48)
    huge = _encoded(np.zeros((5000, 5000), np.uint8), "PNG")          # 25 MP in a few KB
    with pytest.raises(ImageDimensionsTooLargeError, match="5000x5000"):
        probe_image(huge, max_pixels=20_000_000)
    with pytest.raises(NotAnImageError):
        probe_image(b"this is not a photo")
    with pytest.raises(ImageTooSmallError, match="20x20"):
        probe_image(_jpeg(20, 20))
    with pytest.raises(ImageError, match="too large"):
        probe_image(_jpeg(), max_bytes=10)
    good = (lfw_images / "Zico" / "Zico_0001.jpg").read_bytes()
    assert probe_image(good[: len(good) // 2]) == (250, 250)            # the header is intact ...
    with pytest.raises(CorruptImageError):
        decode_image(good[: len(good) // 2])                            # ... the pixels are not


@pytest.mark.parametrize("mode", ["L", "P", "LA", "RGBA", "CMYK", "RGB"])
def test_every_mode_decodes_like_pillows_rgb_conversion(mode):
    """Band-wise conversion (and L -> RGB by numpy) gives Pillow's own convert('RGB'), as a writable array."""
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (1100, 1000, 3), dtype=np.uint8)).convert(mode)   # several bands
    buf = io.BytesIO()
    img.save(buf, format="TIFF" if mode == "CMYK" else "PNG")
    data = buf.getvalue()
    assert Image.open(io.BytesIO(data)).mode == mode
    out = decode_image(data)
    assert out.flags.writeable and out.flags.c_contiguous and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


def test_exif_orientation_is_still_applied():
    img = Image.new("RGB", (64, 48), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 8, 8))                            # a white corner, top left
    exif = Image.Exif()
    exif[0x0112] = 6                                                    # rotate 90 degrees clockwise to view
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif, quality=95)
    out = decode_image(buf.getvalue())
    assert out.shape == (64, 48, 3)
    assert out[:8, -8:].mean() > 200 and out[:8, :8].mean() < 50       # the corner is now top right
