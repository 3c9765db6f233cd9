"""Exceptions raised by HyperVer.

Every failure a user can cause (bad image, no face, bad dataset, bad config) has its own
class so callers (CLI, enrollment server) can map it to a precise message or HTTP status.
"""
from __future__ import annotations


class HyperVerError(Exception):
    """Base class of all errors HyperVer raises on purpose."""


class ImageError(HyperVerError, ValueError):
    """An image could not be used (missing, empty, not an image, truncated, too large)."""


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


class ModelFileError(HyperVerError, ValueError):
    """A model file is missing, corrupt or of the wrong kind/version."""
