"""Every bad input becomes one JSON body ``{"error": code, "detail": message}`` with a precise status.

hyperver's exceptions are mapped here by class (ImageError by its kind), so the
library stays HTTP-free and the server never answers a user mistake with a 500. A registry
database that cannot be reached is 503 registry_unavailable (retry later), not a 500 either.
"""
from __future__ import annotations

from hyperver.errors import (ConfigError, CorruptImageError, EmptyImageError, FaceNotFoundError, HyperVerError,
                             ImageDimensionsTooLargeError, ImageError, ImageTooLargeError, ImageTooSmallError,
                             ModelFileError, MultipleFacesError, NotAnImageError)

from .registry import RegistryUnavailable


class ApiError(Exception):
    """An error the server answers with ``status`` and a stable machine-readable ``code``."""

    def __init__(self, status: int, code: str, detail: str):
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


# Kinds of hyperver ImageError (most specific first) -> status and code.
IMAGE_ERRORS: list[tuple[type[ImageError], int, str]] = [
    (ImageDimensionsTooLargeError, 413, "image_dimensions_too_large"),
    (ImageTooLargeError, 413, "image_too_large"),
    (NotAnImageError, 415, "not_an_image"),
    (CorruptImageError, 422, "corrupt_image"),
    (ImageTooSmallError, 422, "image_too_small"),
    (EmptyImageError, 422, "empty_image"),
]

HYPERVER_ERRORS: list[tuple[type[Exception], int, str]] = [
    (RegistryUnavailable, 503, "registry_unavailable"),
    (FaceNotFoundError, 422, "no_face"),
    (MultipleFacesError, 422, "multiple_faces"),
    (ModelFileError, 500, "model_error"),
    (ConfigError, 500, "server_misconfigured"),
    (HyperVerError, 422, "bad_input"),
]


def from_hyperver(exc: HyperVerError, context: str = "") -> ApiError:
    """The ApiError for a hyperver exception; ``context`` (e.g. 'photo 2 (a.jpg)') prefixes the message."""
    detail = f"{context}: {exc}" if context else str(exc)
    if isinstance(exc, ImageError):
        for cls, status, code in IMAGE_ERRORS:
            if isinstance(exc, cls):
                return ApiError(status, code, detail)
        return ApiError(422, "bad_image", detail)
    for cls, status, code in HYPERVER_ERRORS:
        if isinstance(exc, cls):
            return ApiError(status, code, detail)
    return ApiError(422, "bad_input", detail)
