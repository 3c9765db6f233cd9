"""Face detection, landmarks and warping to the ArcFace template."""
from .aligner import ALIGNER_FORMAT, AlignedFace, Aligner
from .detectors import DETECTORS, FaceDetection
from .templates import ARCFACE_112, TEMPLATES, estimate_similarity, warp_affine

__all__ = ["ALIGNER_FORMAT", "ARCFACE_112", "AlignedFace", "Aligner", "DETECTORS", "FaceDetection", "TEMPLATES",
           "estimate_similarity", "warp_affine"]
