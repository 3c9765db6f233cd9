"""Per-user model artifacts and the on-device unlock check.

Device side (numpy, ai-edge-litert / onnxruntime, cryptography, the aligner; never torch or
tensorflow): ``artifact`` (signed container), ``signing`` (Ed25519 keys), ``preprocess``
(f's input in numpy), ``runtime`` (``DeviceVerifier``, ``unlock``), ``patching`` (template +
theta -> model bytes).

Server side (imports torch, and tensorflow to build TFLite templates once): ``templates``
(export f once per version and locate its weight buffers) and ``builder`` (``ArtifactBuilder``).

Nothing is imported here, so ``import hyperver.device`` stays light on a device.
"""
