"""Embedders (teachers and descriptors) behind one interface and one registry."""
from . import dlib_resnet, fusion, mobilefacenet, onnx_model, sface, subnet  # noqa: F401  (registers the built-in embedders)
from .base import EMBEDDERS, Embedder, FaceInput, l2_normalize

__all__ = ["EMBEDDERS", "Embedder", "FaceInput", "l2_normalize"]
