"""Safe image loading: every way an image can be bad becomes a specific ImageError."""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import (CorruptImageError, EmptyImageError, ImageDimensionsTooLargeError, ImageError,
                      ImageTooLargeError, ImageTooSmallError, NotAnImageError)

ImageSource = Union[str, os.PathLike, bytes, bytearray, np.ndarray]

DEFAULT_MAX_BYTES = 20_000_000
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MIN_SIDE = 32


def read_bytes(path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Read a file's bytes with clear errors for missing, empty or oversized files."""
    p = Path(path)
    if not p.exists():
        raise ImageError(f"image file not found: {p}")
    if not p.is_file():
        raise ImageError(f"not a regular file: {p}")
    size = p.stat().st_size
    if size == 0:
        raise EmptyImageError(f"image file is empty: {p}")
    if size > max_bytes:
        raise ImageTooLargeError(f"image file is too large: {p} has {size} bytes, limit {max_bytes}")
    try:
        return p.read_bytes()
    except OSError as exc:
        raise ImageError(f"image file is unreadable: {p}: {exc.strerror or exc}") from exc


def probe_image(data: bytes | bytearray, name: str = "<bytes>", max_bytes: int = DEFAULT_MAX_BYTES,
                max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = DEFAULT_MIN_SIDE) -> tuple[int, int]:
    """(width, height) from the header, with decode_image's size checks but without decoding the pixels
    (milliseconds: the server checks every photo of a request before it decodes the first)."""
    img = _open(data, name, max_bytes, max_pixels, load=False)
    if min(img.size) < min_side:
        raise ImageTooSmallError(f"image too small: {name} is {img.size[0]}x{img.size[1]}, need >= {min_side} px a side")
    return img.size


def _open(data: bytes | bytearray, name: str, max_bytes: int, max_pixels: int, load: bool = True) -> Image.Image:
    if len(data) == 0:
        raise EmptyImageError(f"image is empty: {name}")
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"image is too large: {name} has {len(data)} bytes, limit {max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(bytes(data)))
            width, height = img.size
            if width * height > max_pixels:
                raise ImageDimensionsTooLargeError(
                    f"image dimensions too large: {name} is {width}x{height}, limit {max_pixels} pixels")
            if load:
                img.load()
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise NotAnImageError(f"not an image (unknown format): {name}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDimensionsTooLargeError(f"image dimensions too large: {name}: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise CorruptImageError(f"image is corrupt or truncated: {name}: {exc}") from None
    return img


def decode_image(data: bytes | bytearray, name: str = "<bytes>", max_bytes: int = DEFAULT_MAX_BYTES,
                 max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = DEFAULT_MIN_SIDE) -> np.ndarray:
    """Decode encoded image bytes to an RGB uint8 array (H, W, 3), honouring EXIF orientation.

    Memory: about Pillow's image (4 bytes a pixel) plus the array (3 bytes a pixel), ~175 MB at 25 MP.
    """
    img = _open(data, name, max_bytes, max_pixels)
    if min(img.size) < min_side:
        raise ImageTooSmallError(f"image too small: {name} is {img.size[0]}x{img.size[1]}, need >= {min_side} px a side")
    bits = _bit_depth(img)    # before exif_transpose: it may drop the file's tags
    ImageOps.exif_transpose(img, in_place=True)   # in place: no copy of an image that is upright already
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        grey = _to_8bit(img, bits)   # Pillow's convert("RGB") clips these at 255: a white image
    elif img.mode == "L":
        grey = _to_array(img)
    else:
        if img.mode != "RGB":
            img = img.convert("RGB")
        return _to_array(img)
    del img
    return np.repeat(grey[:, :, None], 3, axis=2)   # what Pillow's L -> RGB does, without its 4-byte copy


# Pillow hands an image to numpy through a bytes copy (np.asarray(img)); converting band by band
# into one preallocated array keeps a 25 MP photo's decode at about PIL's image + the array
# (~175 MB) instead of the image + bytes + a writable copy (~250 MB).
_BAND_PIXELS = 1 << 20


def _to_array(img: Image.Image, dtype=np.uint8, fn=None) -> np.ndarray:
    """``img`` as a writable numpy array, converted in bands of rows (``fn``: applied to each band)."""
    width, height = img.size
    rows = max(1, _BAND_PIXELS // max(1, width))
    out = None
    for y in range(0, height, rows):
        band = np.asarray(img.crop((0, y, width, min(height, y + rows))))
        band = band if fn is None else fn(band)
        if out is None:
            out = np.empty((height,) + band.shape[1:], dtype)
        out[y:y + band.shape[0]] = band
    return out


def _bit_depth(img: Image.Image) -> int | None:
    """Bits per sample of a 16/32-bit integer greyscale image, when known."""
    if img.mode.startswith("I;16"):
        return 16
    if img.mode == "I":
        if img.format == "PPM":        # Pillow rescales PGM maxval > 255 to 0..65535
            return 16
        bits = getattr(img, "tag_v2", {}).get(258)   # TIFF BitsPerSample
        bits = int(bits[0] if isinstance(bits, tuple) else bits or 0)
        if 8 < bits <= 16:               # a 32-bit container says nothing of the data's range
            return bits
    return None


def _to_8bit(img: Image.Image, bits: int | None) -> np.ndarray:
    """16/32-bit greyscale -> 8-bit (H, W): full scale 2**bits - 1 -> 255 (1/257 for 16 bits); unknown depth:
    values up to 255 are kept, larger ones are scaled by the maximum."""
    if bits:
        scale = 255.0 / (2.0 ** bits - 1)
    else:
        peak = float(img.getextrema()[1])
        scale = 255.0 / peak if peak > 255 else 1.0

    def to_8bit(band: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(band.astype(np.float32) * scale), 0, 255).astype(np.uint8)

    return _to_array(img, np.uint8, to_8bit)


def load_image(source: ImageSource, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS,
               min_side: int = DEFAULT_MIN_SIDE) -> np.ndarray:
    """Load a path, encoded bytes or an array into an RGB uint8 array (H, W, 3)."""
    if isinstance(source, np.ndarray):
        return as_rgb_array(source)
    if isinstance(source, (bytes, bytearray)):
        return decode_image(source, "<bytes>", max_bytes, max_pixels, min_side)
    data = read_bytes(source, max_bytes)
    return decode_image(data, str(source), max_bytes, max_pixels, min_side)


def as_rgb_array(array: np.ndarray) -> np.ndarray:
    """Validate an in-memory image: uint8, (H, W) or (H, W, 3|4)."""
    if array.dtype != np.uint8:
        raise ImageError(f"image array must be uint8, got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ImageError(f"image array must have shape (H, W), (H, W, 3) or (H, W, 4), got {array.shape}")
    return np.ascontiguousarray(array[:, :, :3])
