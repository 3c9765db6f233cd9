"""Export a static subnet: safetensors + JSON config, ONNX, and TFLite via a tf.keras rebuild.

TFLite is built by re-creating the architecture in tf.keras and copying weights (the route
the paper took, since ONNX->TF conversion was slow), with the known pitfalls handled:
BatchNorm epsilon 1e-5 (Keras defaults to 1e-3), explicit symmetric ZeroPadding2D + 'valid'
(Keras 'same' pads asymmetrically at stride 2), and weight layouts (conv (2,3,1,0),
depthwise (2,3,0,1), dense .T). TFLite models take NHWC input.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from .layers import MBConv
from .spaces import build_static
from .static import StaticMobileNetV3

FORMAT_VERSION = "hyperver-subnet-v1"


# -- safetensors ----------------------------------------------------------------------------------
def save_subnet(net: nn.Module, path: str | Path, dtype: torch.dtype = torch.float32,
                extra: Mapping[str, Any] | None = None) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in net.state_dict().items()}
    meta = {"format": FORMAT_VERSION, "net_config": json.dumps(net.net_config), **{k: json.dumps(v) for k, v in (extra or {}).items()}}
    save_file(tensors, str(path), metadata=meta)
    return path


def load_subnet(path: str | Path) -> nn.Module:
    """Rebuild a subnet from a safetensors file written by :func:`save_subnet` (fp16 is upcast)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"subnet weights not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"corrupt or unreadable subnet file {path}: {exc}") from exc
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path} is not a {FORMAT_VERSION} file (format={meta.get('format')!r})")
    net = build_static(json.loads(meta["net_config"]))
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
    net.load_state_dict(state)
    return net.eval()


# -- ONNX -------------------------------------------------------------------------------------------
def export_onnx(net: nn.Module, path: str | Path, input_size: int, opset: int = 17) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = net.eval()
    dummy = torch.zeros(1, 3, input_size, input_size)
    torch.onnx.export(net, (dummy,), str(path), input_names=["input"], output_names=["embedding"],
                      dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}}, opset_version=opset,
                      dynamo=False)
    return path


# -- TFLite via tf.keras -----------------------------------------------------------------------------
def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy()


class _KerasBuilder:
    def __init__(self):
        import tensorflow as tf

        self.tf = tf
        self.layers = tf.keras.layers

    def act(self, x, name: str):
        L = self.layers
        if name == "relu":
            return L.ReLU()(x)
        if name == "hswish":
            return L.Multiply()([x, self.hsigmoid(x)])
        return x

    def hsigmoid(self, x):
        L = self.layers
        return L.Rescaling(1.0 / 6.0)(L.ReLU(max_value=6.0)(L.Rescaling(1.0, offset=3.0)(x)))

    def conv(self, x, conv: nn.Conv2d):
        L = self.layers
        k = conv.kernel_size[0]
        if k > 1:
            x = L.ZeroPadding2D(k // 2)(x)
        use_bias = conv.bias is not None
        if conv.groups == conv.in_channels and conv.groups > 1:
            layer = L.DepthwiseConv2D(k, conv.stride[0], padding="valid", use_bias=use_bias)
            y = layer(x)
            w = [_np(conv.weight).transpose(2, 3, 0, 1)]
        else:
            layer = L.Conv2D(conv.out_channels, k, conv.stride[0], padding="valid", use_bias=use_bias)
            y = layer(x)
            w = [_np(conv.weight).transpose(2, 3, 1, 0)]
        if use_bias:
            w.append(_np(conv.bias))
        layer.set_weights(w)
        return y

    def bn(self, x, bn: nn.BatchNorm2d):
        layer = self.layers.BatchNormalization(epsilon=bn.eps)
        y = layer(x)
        layer.set_weights([_np(bn.weight), _np(bn.bias), _np(bn.running_mean), _np(bn.running_var)])
        return y

    def conv_bn_act(self, x, seq: nn.Sequential, act: str):
        return self.act(self.bn(self.conv(x, seq[0]), seq[1]), act)

    def mbconv(self, x, block: MBConv):
        spec = block.spec
        y = x
        if block.inverted_bottleneck is not None:
            y = self.conv_bn_act(y, block.inverted_bottleneck, spec["act"])
        y = self.conv_bn_act(y, block.depth_conv, spec["act"])
        if block.se is not None:
            L = self.layers
            w = L.GlobalAveragePooling2D(keepdims=True)(y)
            w = L.ReLU()(self.conv(w, block.se.reduce))
            w = self.hsigmoid(self.conv(w, block.se.expand))
            y = L.Multiply()([y, w])
        y = self.bn(self.conv(y, block.point_linear[0]), block.point_linear[1])
        return self.layers.Add()([x, y]) if block.residual else y

    def build(self, net: StaticMobileNetV3):
        L = self.layers
        size = int(net.net_config.get("input_size", 112))
        inp = self.tf.keras.Input((size, size, 3), batch_size=1, name="input")
        x = self.conv_bn_act(inp, net.stem, "hswish")
        x = self.mbconv(x, net.first_block)
        for block in net.blocks:
            x = self.mbconv(x, block)
        x = self.conv_bn_act(x, net.final_expand, "hswish")
        x = L.GlobalAveragePooling2D(keepdims=True)(x)
        x = self.act(self.conv(x, net.head.feature_mix[0]), "hswish")
        x = L.Flatten()(x)
        dense = L.Dense(net.head.projection.out_features)
        x = dense(x)
        dense.set_weights([_np(net.head.projection.weight).T, _np(net.head.projection.bias)])
        if net.head.normalize:
            x = L.UnitNormalization(axis=-1, name="embedding")(x)
        return self.tf.keras.Model(inp, x)


    # -- MobileFaceNet blocks (supernet.models.mobilefacenet / supernet.spaces.mobilefacenet) ------------
    def mfn_conv_bn(self, x, layer):
        """A ``ConvBN``: the same explicit padding as PyTorch (TF SAME), conv, BN, PReLU if any."""
        L = self.layers
        conv = layer.conv
        if layer.pad is not None:
            left, right, top, bottom = layer.pad.padding
            x = L.ZeroPadding2D(((top, bottom), (left, right)))(x)
        elif conv.padding[0]:
            x = L.ZeroPadding2D(conv.padding[0])(x)
        k, stride = conv.kernel_size[0], conv.stride[0]
        if conv.groups == conv.in_channels and conv.groups > 1:
            keras_conv = L.DepthwiseConv2D(k, stride, padding="valid", use_bias=False)
            x = keras_conv(x)
            keras_conv.set_weights([_np(conv.weight).transpose(2, 3, 0, 1)])
        else:
            keras_conv = L.Conv2D(conv.out_channels, k, stride, padding="valid", use_bias=False)
            x = keras_conv(x)
            keras_conv.set_weights([_np(conv.weight).transpose(2, 3, 1, 0)])
        x = self.bn(x, layer.bn)
        if isinstance(layer.act, nn.PReLU):
            prelu = L.PReLU(shared_axes=[1, 2])
            x = prelu(x)
            prelu.set_weights([_np(layer.act.weight).reshape(1, 1, -1)])
        return x

    def mfn_module(self, x, module):
        """A MobileFaceNet piece: a Bottleneck, a Sequential of ConvBN (stem), or a head wrapper (LUT blocks)."""
        L = self.layers
        if hasattr(module, "head"):   # measure._MFNHead
            for layer in module.head:
                x = self.mfn_conv_bn(x, layer)
            return L.UnitNormalization(axis=-1)(L.Flatten()(x))
        if hasattr(module, "residual"):
            y = self.mfn_conv_bn(self.mfn_conv_bn(self.mfn_conv_bn(x, module.expand), module.depthwise), module.project)
            return L.Add()([x, y]) if module.residual else y
        for layer in module:
            x = self.mfn_conv_bn(x, layer)
        return x

    def build_mobilefacenet(self, net):
        L = self.layers
        inp = self.tf.keras.Input((net.input_size, net.input_size, 3), batch_size=1, name="input")
        x = inp
        for layer in net.stem:
            x = self.mfn_conv_bn(x, layer)
        for block in net.blocks:
            x = self.mfn_module(x, block)
        for layer in net.head:
            x = self.mfn_conv_bn(x, layer)
        x = L.Flatten()(x)
        if net.normalize:
            x = L.UnitNormalization(axis=-1, name="embedding")(x)
        return self.tf.keras.Model(inp, x)


# Space name (a net_config's "kind") -> how to rebuild its static subnet in tf.keras.
KERAS_BUILDERS = {"ofa_mbv3": _KerasBuilder.build, "elastic_mfn": _KerasBuilder.build_mobilefacenet}


def to_keras(net: nn.Module):
    from .spaces import kind_of

    kind = kind_of(net.net_config)
    if kind not in KERAS_BUILDERS:
        raise ValueError(f"no tf.keras rebuild for search space {kind!r}; known: {sorted(KERAS_BUILDERS)}")
    return KERAS_BUILDERS[kind](_KerasBuilder(), net.eval())


def export_tflite(net: nn.Module, path: str | Path, fp16: bool = False) -> Path:
    import tensorflow as tf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    converter = tf.lite.TFLiteConverter.from_keras_model(to_keras(net))
    if fp16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    path.write_bytes(converter.convert())
    return path


# -- runners and parity --------------------------------------------------------------------------
def onnx_runner(net: nn.Module, input_size: int, threads: int = 1):
    """``net`` (eval mode) exported to ONNX in memory and opened in ONNX Runtime: a function
    (N, 3, S, S) float32 -> outputs. Inference-only evaluation of many subnets uses it: ORT runs
    these mobile nets ~1.7x faster than eager PyTorch on CPU, export included (~1.4 s)."""
    import io

    import onnxruntime as ort

    buf = io.BytesIO()
    net = net.eval().to(memory_format=torch.contiguous_format)
    dummy = torch.zeros(1, 3, input_size, input_size)
    with torch.no_grad():
        torch.onnx.export(net, (dummy,), buf, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, opset_version=17, dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3   # no graph-optimizer notices per subnet
    sess = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def run(x_nchw: np.ndarray) -> np.ndarray:
        return sess.run(None, {name: np.ascontiguousarray(x_nchw, np.float32)})[0]

    return run


def run_onnx(path: str | Path, x_nchw: np.ndarray, threads: int = 1) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x_nchw.astype(np.float32)})[0]


def run_tflite(path: str | Path, x_nchw: np.ndarray, threads: int = 1) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=threads)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    rows = []
    for x in x_nchw.astype(np.float32).transpose(0, 2, 3, 1):
        interp.set_tensor(inp["index"], x[None])
        interp.invoke()
        rows.append(interp.get_tensor(out["index"])[0].copy())
    return np.stack(rows)


@torch.no_grad()
def parity(net: nn.Module, onnx_path: str | Path, tflite_path: str | Path, x_nchw: np.ndarray) -> dict[str, float]:
    """Max absolute difference of ONNX Runtime and TFLite outputs against PyTorch on ``x_nchw``."""
    ref = net.eval()(torch.from_numpy(x_nchw.astype(np.float32))).numpy()
    return {"onnx": float(np.abs(run_onnx(onnx_path, x_nchw) - ref).max()),
            "tflite": float(np.abs(run_tflite(tflite_path, x_nchw) - ref).max())}
