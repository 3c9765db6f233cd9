"""Load a pretrained TFLite MobileFaceNet (sirius-ai's MobileFaceNet_TF export) into ``MobileFaceNet`` by tensor name.

The TFLite graph has BatchNorm folded into each conv's bias and PReLU written out as
``relu(x) + mul * (x - |x|)``; since ``x - |x| = 2 min(x, 0)``, the PReLU slope is ``alpha = 2 * mul``.
Each folded bias goes into the layer's BatchNorm as an exact identity (weight 1, running mean 0,
running var 1 - eps so that sqrt(var + eps) = 1, bias = folded bias), so the net stays trainable.

Tensor names follow TF-slim: weights are named by a per-type creation counter
(``MobileFaceNet/Conv_<k>/weights/read``, ``MobileFaceNet/SeparableConv2d_<k>/depthwise_weights/read``),
biases and PReLU constants by the block scope (``MobileFaceNet/MobileFaceNet/Conv2d_2_InvResBlock_0/Conv/Conv2D_bias``).
"""
from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from typing import Iterator, Mapping

import numpy as np
import torch
from torch import nn

from supernet.models.mobilefacenet import ConvBN, MobileFaceNet

_ROOT = "MobileFaceNet"
_SCOPE = "MobileFaceNet/MobileFaceNet"


@dataclass(frozen=True)
class _TFLayer:
    path: str  # module path in the PyTorch model
    module: ConvBN
    weight: str
    bias: str
    alpha: str | None  # the PReLU "mul" constant, None for linear layers
    depthwise: bool

    def shapes(self) -> dict[str, tuple[int, ...]]:
        w = self.module.conv.weight  # (out, in/groups, kh, kw)
        out, cin, kh, kw = w.shape
        shapes = {self.weight: (1, kh, kw, out) if self.depthwise else (out, kh, kw, cin), self.bias: (out,)}
        if self.alpha is not None:
            shapes[self.alpha] = (out,)
        return shapes


def _counter(name: str, k: int) -> str:
    return f"{name}_{k}" if k else name


def _layers(model: MobileFaceNet) -> Iterator[_TFLayer]:
    """The model's ConvBN layers in graph order, each with the TFLite tensor names it reads."""
    n_conv = n_sep = 0  # TF-slim's creation counters for unscoped "Conv" / "SeparableConv2d" layers

    def conv(path: str, module: ConvBN, scope: str) -> _TFLayer:
        nonlocal n_conv
        name, n_conv = _counter("Conv", n_conv), n_conv + 1
        alpha = f"{scope}/mul" if isinstance(module.act, nn.PReLU) else None
        return _TFLayer(path, module, f"{_ROOT}/{name}/weights/read", f"{scope}/Conv2D_bias", alpha, False)

    def sep(path: str, module: ConvBN, scope: str) -> _TFLayer:
        nonlocal n_sep
        name, n_sep = _counter("SeparableConv2d", n_sep), n_sep + 1
        alpha = f"{scope}/mul" if isinstance(module.act, nn.PReLU) else None
        return _TFLayer(path, module, f"{_ROOT}/{name}/depthwise_weights/read", f"{scope}/depthwise_bias", alpha, True)

    stem, head = model.stem, model.head
    yield _TFLayer("stem.conv", stem.conv, f"{_ROOT}/Conv2d_0/weights/read", f"{_SCOPE}/Conv2d_0/Conv2D_bias",
                   f"{_SCOPE}/Conv2d_0/mul", False)
    yield sep("stem.dw", stem.dw, f"{_SCOPE}/SeparableConv2d")
    if "pointwise" in stem._modules:
        yield conv("stem.pointwise", stem.pointwise, f"{_SCOPE}/Conv")
    for i, stage in enumerate(model.stages):
        for j, block in enumerate(stage):
            scope, path = f"{_SCOPE}/Conv2d_{i + 2}_InvResBlock_{j}", f"stages.{i}.{j}"
            yield conv(f"{path}.expand", block.expand, f"{scope}/Conv")
            yield sep(f"{path}.depthwise", block.depthwise, f"{scope}/SeparableConv2d")
            yield conv(f"{path}.project", block.project, f"{scope}/Conv_1")
    last = f"Conv2d_{len(model.stages) + 2}"
    yield _TFLayer("head.conv", head.conv, f"{_ROOT}/{last}/weights/read", f"{_SCOPE}/{last}/Conv2D_bias",
                   f"{_SCOPE}/{last}/mul", False)
    logits = f"{_ROOT}/Logits"
    yield _TFLayer("head.gdconv", head.gdconv, f"{logits}/SeparableConv2d/depthwise_weights/read",
                   f"{logits}/SeparableConv2d/depthwise_bias", None, True)
    if "pointwise" in head._modules:
        yield _TFLayer("head.pointwise", head.pointwise, f"{logits}/Conv/weights/read", f"{logits}/Conv/Conv2D_bias",
                       None, False)
    yield _TFLayer("head.embedding", head.embedding, f"{logits}/LinearConv1x1/weights/read",
                   f"{logits}/LinearConv1x1/Conv2D_bias", None, False)


def expected_tflite_tensors(model: MobileFaceNet) -> dict[str, tuple[int, ...]]:
    """Name -> TFLite shape of every constant the model needs (what a matching .tflite must contain)."""
    out: dict[str, tuple[int, ...]] = {}
    for layer in _layers(model):
        out.update(layer.shapes())
    return out


@torch.no_grad()
def load_tensor_dict(model: MobileFaceNet, tensors: Mapping[str, np.ndarray]) -> MobileFaceNet:
    """Set every parameter and BN buffer of ``model`` from TFLite-layout float constants, by name.

    Raises ValueError naming the tensor if one is missing or mis-shaped, if the file has float constants
    the model does not consume (another architecture), or if some model state is left unset.
    """
    layers = list(_layers(model))
    for layer in layers:
        for name, shape in layer.shapes().items():
            if name not in tensors:
                raise ValueError(f"TFLite tensor {name!r} (for {layer.path}) is missing")
            got = tuple(np.shape(tensors[name]))
            if got != shape:
                raise ValueError(f"TFLite tensor {name!r} (for {layer.path}) has shape {got}, expected {shape}")
    used = {name for layer in layers for name in layer.shapes()}
    unused = sorted(n for n, t in tensors.items() if n not in used and np.asarray(t).dtype.kind == "f")
    if unused:
        raise ValueError(f"{len(unused)} TFLite float tensor(s) not consumed by the model, e.g. {unused[:3]}; "
                         f"the file does not match variant {model.variant!r}")

    assigned: set[str] = set()
    for layer in layers:
        m = layer.module
        w = np.asarray(tensors[layer.weight], dtype=np.float32)
        w = w.transpose(3, 0, 1, 2) if layer.depthwise else w.transpose(0, 3, 1, 2)  # -> (out, in/g, kh, kw)
        m.conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
        bn = m.bn
        bn.weight.fill_(1.0)
        bn.bias.copy_(torch.from_numpy(np.asarray(tensors[layer.bias], dtype=np.float32)))
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)
        names = ["conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"]
        if layer.alpha is not None:
            m.act.weight.copy_(torch.from_numpy(2.0 * np.asarray(tensors[layer.alpha], dtype=np.float32)))
            names.append("act.weight")
        assigned.update(f"{layer.path}.{n}" for n in names)
    unset = [k for k in model.state_dict() if k not in assigned and not k.endswith("num_batches_tracked")]
    if unset:
        raise ValueError(f"model state not set by the TFLite import: {unset}")
    return model


def read_tflite_tensors(path: str | PathLike[str]) -> dict[str, np.ndarray]:
    """All constant tensors of a .tflite file, by name (read with the LiteRT interpreter, no delegate)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_path=str(path),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    # Constants: read by some op, written by none (skips activations, the graph input and scratch tensors).
    ops = interp._get_ops_details()
    produced = {i for op in ops for i in op["outputs"]} | {d["index"] for d in interp.get_input_details()}
    consts = {i for op in ops for i in op["inputs"] if i >= 0} - produced
    out: dict[str, np.ndarray] = {}
    for d in interp.get_tensor_details():
        if d["index"] not in consts:
            continue
        if d["name"] in out:
            raise ValueError(f"{path}: duplicate tensor name {d['name']!r}")
        out[d["name"]] = np.array(interp.get_tensor(d["index"]))
    return out


def load_tflite_weights(model: MobileFaceNet, path: str | PathLike[str]) -> MobileFaceNet:
    """Load a pretrained MobileFaceNet .tflite into ``model`` (in place; see ``load_tensor_dict``)."""
    return load_tensor_dict(model, read_tflite_tensors(path))


def mobilefacenet_from_tflite(path: str | PathLike[str], variant: str = "sirius", **kwargs) -> MobileFaceNet:
    """A ``MobileFaceNet`` holding the weights of ``path``, in eval mode.

    Feed it NCHW RGB normalised as (x - 127.5) / 128, like the TFLite model; it returns the raw embedding.
    """
    model = MobileFaceNet(variant, **kwargs)
    return load_tflite_weights(model, path).eval()
