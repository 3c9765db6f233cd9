"""Fixed reference architectures (face-agnostic): MobileFaceNet and its TFLite weight import."""
from supernet.models.mobilefacenet import (VARIANTS, Bottleneck, ConvBN, MobileFaceNet, MobileFaceNetSpec, StageSpec,
                                           count_params_and_macs, fold_input_scale, tf_same_padding)
from supernet.models.tflite_import import (expected_tflite_tensors, load_tensor_dict, load_tflite_weights,
                                           mobilefacenet_from_tflite, read_tflite_tensors)

__all__ = ["VARIANTS", "Bottleneck", "ConvBN", "MobileFaceNet", "MobileFaceNetSpec", "StageSpec",
           "count_params_and_macs", "fold_input_scale", "tf_same_padding", "expected_tflite_tensors", "load_tensor_dict",
           "load_tflite_weights", "mobilefacenet_from_tflite", "read_tflite_tensors"]
