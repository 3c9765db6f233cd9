"""Exceptions raised by HyperVer.

Every failure a user can cause (bad image, no face, bad dataset, bad config) has its own
class so callers (CLI, enrollment server) can map it to a precise message or HTTP status.
"""
from __future__ import annotations


class HyperVerError(Exception):
    """Base class of all errors HyperVer raises on purpose."""


class ImageError(HyperVerError, ValueError):
    """An image could not be used (missing, empty, not an image, truncated, too large)."""


# Kinds of ImageError, so callers (e.g. the server's HTTP statuses) dispatch on type, not on text.
class EmptyImageError(ImageError):
    """The image has no bytes."""


class ImageTooLargeError(ImageError):
    """The image's bytes exceed the limit."""


class ImageDimensionsTooLargeError(ImageTooLargeError):
    """The image's pixel count exceeds the limit (decompression-bomb guard)."""


class NotAnImageError(ImageError):
    """The bytes are not in a known image format."""


class CorruptImageError(ImageError):
    """The image is truncated or corrupt."""


class ImageTooSmallError(ImageError):
    """The image is smaller than the minimum side."""


class FaceNotFoundError(HyperVerError, ValueError):
    """No face was detected in a photo that must contain exactly one."""


class MultipleFacesError(HyperVerError, ValueError):
    """Several faces were detected in a photo that must contain exactly one."""

    def __init__(self, message: str, n_faces: int):
        super().__init__(message)
        self.n_faces = n_faces


class DatasetError(HyperVerError, ValueError):
    """A dataset root, list file or dataset file is missing or malformed."""


class ConfigError(HyperVerError, ValueError):
    """A configuration file or value is missing, unknown or malformed."""


class BudgetInfeasibleError(ConfigError):
    """No subnet of the space fits a latency budget: even the smallest is predicted over it."""


class ModelFileError(HyperVerError, ValueError):
    """A model file is missing, corrupt or of the wrong kind/version."""
