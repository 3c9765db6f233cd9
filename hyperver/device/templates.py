"""Build f's model templates once per f version (TFLite via tf.keras, ONNX via onnx.helper).

Where does each theta value land in the exported file? Rather than trusting what a converter
does with layouts (OHWI filters, (out, in) dense weights, constant deduplication), the template
is exported from a *sentinel* theta whose value i is the float16 with bit pattern 0x0400 + i:
unique, exactly representable in float16 and float32, so every float buffer of the result
decodes back to the theta index of each element. int8 buffers are matched to the float layout
of the same tensor by their dequantised values. A self-check then bakes a random theta into the
template and compares the runtime's output with ``hyperver.hypernet.verifier.forward``, so an
f changed there but not here (the graph below mirrors ``forward``) fails loudly at build time.
Each of f's heads (``verifier.HEADS``) has its tf.keras and ONNX form here (``KERAS_HEADS``,
``ONNX_HEADS``); the f v2 graphs ("gap") are byte for byte what they were before heads existed.

Only the server (or whoever builds artifacts) runs this; it imports torch, and tensorflow for
TFLite. Templates are cached on disk under ``<dir>/<f version>/`` and rebuilt in seconds.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import ConfigError, ModelFileError
from .patching import STORAGE, TEMPLATE_FORMAT, Patch, Template

RUNTIMES = ("tflite", "onnx")
PRECISIONS = ("fp32", "fp16", "int8")
SENTINEL_BASE = 0x0400      # smallest normal float16: no subnormals a converter could flush to zero
ONNX_OPSET = 17
# Parity of the self-check (max |logit difference| vs torch on random faces-like input, per precision).
SELF_CHECK_TOL = {"fp32": 1e-4, "fp16": 0.05, "int8": 0.5}


def sentinel_theta(n: int) -> np.ndarray:
    if SENTINEL_BASE + n >= 0x7C00:
        raise ValueError(f"f has {n} parameters; the float16 sentinel encodes at most {0x7C00 - SENTINEL_BASE}")
    return (np.arange(n, dtype=np.uint16) + SENTINEL_BASE).view(np.float16).astype(np.float32)


def decode_sentinel(values: np.ndarray, n: int) -> np.ndarray | None:
    """Theta indices of float values exported from :func:`sentinel_theta`, or None if they are not."""
    v = np.asarray(values).reshape(-1)
    h = v.astype(np.float16)
    if not np.array_equal(h.astype(np.float32), v.astype(np.float32)):
        return None
    idx = h.view(np.uint16).astype(np.int64) - SENTINEL_BASE
    return idx if idx.size and idx.min() >= 0 and idx.max() < n else None


def _check_precision(runtime: str, precision: str) -> None:
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown artifact runtime {runtime!r}; choose one of {list(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown artifact precision {precision!r}; choose one of {list(PRECISIONS)}")


# -- TFLite ---------------------------------------------------------------------------------------
def _keras_f(spec, theta: np.ndarray):
    """f in tf.keras (NHWC), weights from ``theta`` (torch layout -> Keras layout)."""
    import tensorflow as tf

    L = tf.keras.layers

    class InstanceNorm(L.Layer):   # affine-free, biased variance: torch's F.instance_norm
        def __init__(self, eps: float, **kw):
            super().__init__(**kw)
            self.eps = eps

        def call(self, x):
            ops = tf.keras.ops
            mean = ops.mean(x, axis=(1, 2), keepdims=True)
            var = ops.mean(ops.square(x - mean), axis=(1, 2), keepdims=True)
            return (x - mean) * ops.rsqrt(var + self.eps)

    import torch

    from ..hypernet.verifier import unflatten

    w = {k: v.numpy() for k, v in unflatten(spec, torch.from_numpy(theta)).items()}
    inp = tf.keras.Input((spec.input_size, spec.input_size, 3), batch_size=1, name="face")
    x = inp
    for i, (c, g, s) in enumerate(zip(spec.channels, spec.groups, spec.strides)):
        # Explicit symmetric padding: Keras 'same' pads asymmetrically at stride 2 (PLATFORM_NOTES).
        x = L.ZeroPadding2D(spec.kernel // 2)(x)
        conv = L.Conv2D(c, spec.kernel, s, padding="valid", groups=g)
        x = conv(x)
        conv.set_weights([w[f"conv{i}.weight"].transpose(2, 3, 1, 0), w[f"conv{i}.bias"]])
        x = L.ReLU()(InstanceNorm(spec.eps)(x))
    mix = L.Conv2D(spec.channels[-1], 1)
    x = mix(x)
    mix.set_weights([w["mix.weight"].transpose(2, 3, 1, 0), w["mix.bias"]])
    x = KERAS_HEADS[spec.head](spec, w, L.ReLU()(x))    # no norm after the 1x1 conv (f v2 on)
    fc1, fc2 = L.Dense(spec.hidden, activation="relu"), L.Dense(1, name="logit")
    x = fc2(fc1(x))
    fc1.set_weights([w["fc1.weight"].T, w["fc1.bias"]])
    fc2.set_weights([w["fc2.weight"].T, w["fc2.bias"]])
    return tf.keras.Model(inp, x)


def _keras_gap(spec, w: dict[str, np.ndarray], x):
    import tensorflow as tf

    return tf.keras.layers.GlobalAveragePooling2D()(x)


def _keras_gdconv(spec, w: dict[str, np.ndarray], x):
    import tensorflow as tf

    L = tf.keras.layers
    gdconv = L.DepthwiseConv2D(spec.final_size, padding="valid")
    x = gdconv(x)
    gdconv.set_weights([w["gdconv.weight"].transpose(2, 3, 0, 1), w["gdconv.bias"]])   # (C,1,K,K) -> (K,K,C,1)
    return L.Flatten()(x)


# f's heads (hyperver.hypernet.verifier.HEADS) in tf.keras: (spec, torch-layout weights, last map) -> (1, C)
KERAS_HEADS: dict[str, Callable] = {"gap": _keras_gap, "gdconv": _keras_gdconv}


def _convert_tflite(spec, theta: np.ndarray, precision: str) -> bytes:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import contextlib
    import io

    import tensorflow as tf

    with contextlib.redirect_stdout(io.StringIO()):   # Keras prints its SavedModel signature on export
        return _converter(tf, spec, theta, precision).convert()


def _converter(tf, spec, theta: np.ndarray, precision: str):
    converter = tf.lite.TFLiteConverter.from_keras_model(_keras_f(spec, theta))
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        # Dynamic range: int8 weights (per channel), float activations. Full-int8 would need
        # activation ranges calibrated per user, i.e. a converter run per user.
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter


def _tflite_buffers(model: bytes) -> list[dict]:
    """Every constant tensor of subgraph 0: type, shape, data offset, int8 scale offset/axis."""
    from ai_edge_litert import schema_py_generated as schema

    types = {schema.TensorType.FLOAT32: "float32", schema.TensorType.FLOAT16: "float16",
             schema.TensorType.INT8: "int8"}
    base = np.frombuffer(model, np.uint8).ctypes.data
    m = schema.Model.GetRootAsModel(model, 0)
    if m.SubgraphsLength() != 1:
        raise ModelFileError(f"expected one subgraph in f's TFLite model, got {m.SubgraphsLength()}")
    sg = m.Subgraphs(0)
    out = []
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        buf = m.Buffers(t.Buffer())
        if buf.DataLength() == 0 or t.Type() not in types:
            continue
        data = buf.DataAsNumpy()
        entry = {"name": t.Name().decode(), "dtype": types[t.Type()], "shape": tuple(int(s) for s in t.ShapeAsNumpy()),
                 "offset": int(data.ctypes.data - base), "scale_offset": -1, "axis": 0}
        entry["values"] = np.frombuffer(model, np.dtype(STORAGE[entry["dtype"]]),
                                        count=int(np.prod(entry["shape"], dtype=np.int64)), offset=entry["offset"])
        q = t.Quantization()
        if entry["dtype"] == "int8":
            if q is None or q.ScaleLength() == 0 or np.any(q.ZeroPointAsNumpy() != 0):
                raise ModelFileError(f"int8 tensor {entry['name']} is not symmetric per-channel quantised")
            scales = q.ScaleAsNumpy()
            entry.update(scale_offset=int(scales.ctypes.data - base), axis=int(q.QuantizedDimension()),
                         scales=np.array(scales, np.float32))
            if scales.size != entry["shape"][entry["axis"]]:
                raise ModelFileError(f"int8 tensor {entry['name']}: {scales.size} scales for shape {entry['shape']}")
        out.append(entry)
    return out


def _float_patches(buffers: list[dict], spec) -> tuple[list[Patch], dict[str, np.ndarray]]:
    """Patches for the float buffers that hold a whole theta tensor (decoded from the sentinel)."""
    n, ranges = spec.n_params, spec.offsets()
    patches, layouts = [], {}
    for b in buffers:
        if b["dtype"] == "int8":
            continue
        idx = decode_sentinel(b["values"], n)
        if idx is None:
            continue
        hits = [name for name, (lo, hi, _) in ranges.items()
                if idx.size == hi - lo and np.array_equal(np.sort(idx), np.arange(lo, hi))]
        if not hits:
            continue   # a constant of the graph (epsilon, padding, axes) that happens to decode
        patches.append(Patch(hits[0], b["offset"], b["dtype"], b["shape"], idx))
        layouts[hits[0]] = idx.reshape(b["shape"])
    return patches, layouts


def _int8_patches(buffers: list[dict], spec, float_layout: dict[str, np.ndarray]) -> list[Patch]:
    """int8 buffers matched to theta tensors: dequantised values ~ the sentinel in the fp32 layout."""
    sentinel = sentinel_theta(spec.n_params)
    patches = []
    for b in (b for b in buffers if b["dtype"] == "int8"):
        shape = [1] * len(b["shape"])
        shape[b["axis"]] = -1
        scales = b["scales"].reshape(shape)
        deq = b["values"].reshape(b["shape"]).astype(np.float32) * scales
        match = [name for name, idx in float_layout.items() if idx.shape == b["shape"]
                 and np.all(np.abs(deq - sentinel[idx]) <= 0.51 * scales + 1e-6)]
        if len(match) != 1:
            raise ModelFileError(f"cannot tell which theta tensor int8 buffer {b['name']} holds ({match})")
        patches.append(Patch(match[0], b["offset"], "int8", b["shape"], float_layout[match[0]].reshape(-1),
                             b["scale_offset"], b["axis"]))
    return patches


def build_tflite_template(spec, precision: str = "fp32") -> Template:
    _check_precision("tflite", precision)
    sentinel = sentinel_theta(spec.n_params)
    fp32 = _convert_tflite(spec, sentinel, "fp32")
    _, layout = _float_patches(_tflite_buffers(fp32), spec)
    model = fp32 if precision == "fp32" else _convert_tflite(spec, sentinel, precision)
    buffers = _tflite_buffers(model)
    patches, _ = _float_patches(buffers, spec)
    if precision == "int8":
        patches += _int8_patches(buffers, spec, layout)
    return _finish(Template("tflite", precision, spec.version, spec.n_params, spec.input_size, "NHWC", model, patches,
                            _versions("tensorflow")), spec)


# -- ONNX -----------------------------------------------------------------------------------------
def _onnx_f(spec, theta: np.ndarray, precision: str) -> bytes:
    """f as an ONNX graph (NCHW, torch layouts), theta tensors as named initializers."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits, nodes = [], []
    ranges = spec.offsets()

    def weight(name: str) -> str:
        """Initializer(s) for theta tensor ``name``; returns the float32 value's graph name."""
        lo, hi, shape = ranges[name]
        w = theta[lo:hi].reshape(shape)
        if precision == "int8" and name.endswith(".weight"):
            from .patching import quantize_per_channel

            q, scale = quantize_per_channel(w, 0)
            inits.extend([numpy_helper.from_array(q, name), numpy_helper.from_array(scale, f"{name}_scale"),
                          numpy_helper.from_array(np.zeros(shape[0], np.int8), f"{name}_zero")])
            nodes.append(helper.make_node("DequantizeLinear", [name, f"{name}_scale", f"{name}_zero"],
                                          [f"{name}_f32"], axis=0))
            return f"{name}_f32"
        if precision == "fp16":
            inits.append(numpy_helper.from_array(w.astype(np.float16), name))
            nodes.append(helper.make_node("Cast", [name], [f"{name}_f32"], to=TensorProto.FLOAT))
            return f"{name}_f32"
        inits.append(numpy_helper.from_array(w.astype(np.float32), name))
        return name

    def inorm_relu(x: str, c: int, tag: str) -> str:
        if f"ones{c}" not in {i.name for i in inits}:
            inits.extend([numpy_helper.from_array(np.ones(c, np.float32), f"ones{c}"),
                          numpy_helper.from_array(np.zeros(c, np.float32), f"zeros{c}")])
        nodes.append(helper.make_node("InstanceNormalization", [x, f"ones{c}", f"zeros{c}"], [f"{tag}_in"],
                                      epsilon=spec.eps))
        nodes.append(helper.make_node("Relu", [f"{tag}_in"], [f"{tag}_act"]))
        return f"{tag}_act"

    x, pad = "face", spec.kernel // 2
    for i, (c, g, s) in enumerate(zip(spec.channels, spec.groups, spec.strides)):
        w, b = weight(f"conv{i}.weight"), weight(f"conv{i}.bias")
        nodes.append(helper.make_node("Conv", [x, w, b], [f"conv{i}"], group=g, strides=[s, s], pads=[pad] * 4,
                                      kernel_shape=[spec.kernel, spec.kernel]))
        x = inorm_relu(f"conv{i}", c, f"conv{i}")
    nodes.append(helper.make_node("Conv", [x, weight("mix.weight"), weight("mix.bias")], ["mix"], kernel_shape=[1, 1]))
    nodes.append(helper.make_node("Relu", ["mix"], ["mix_act"]))     # no norm after the 1x1 conv (f v2 on)
    flat = ONNX_HEADS[spec.head](spec, weight, nodes, "mix_act")
    nodes.append(helper.make_node("Gemm", [flat, weight("fc1.weight"), weight("fc1.bias")], ["fc1"], transB=1))
    nodes.append(helper.make_node("Relu", ["fc1"], ["fc1_act"]))
    nodes.append(helper.make_node("Gemm", ["fc1_act", weight("fc2.weight"), weight("fc2.bias")], ["logit"], transB=1))
    s = spec.input_size
    graph = helper.make_graph(nodes, f"f_{spec.version}",
                              [helper.make_tensor_value_info("face", TensorProto.FLOAT, ["N", 3, s, s])],
                              [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["N", 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name="hyperver")
    model.ir_version = 8   # readable by older runtimes on devices
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _onnx_gap(spec, weight: Callable[[str], str], nodes: list, x: str) -> str:
    from onnx import helper

    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"]))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"]))
    return "flat"


def _onnx_gdconv(spec, weight: Callable[[str], str], nodes: list, x: str) -> str:
    from onnx import helper

    k = spec.final_size
    nodes.append(helper.make_node("Conv", [x, weight("gdconv.weight"), weight("gdconv.bias")], ["gdconv"],
                                  group=spec.channels[-1], kernel_shape=[k, k]))
    nodes.append(helper.make_node("Flatten", ["gdconv"], ["flat"]))
    return "flat"


# f's heads in ONNX: (spec, theta tensor name -> graph value, node list, last map) -> the (N, C) value
ONNX_HEADS: dict[str, Callable[..., str]] = {"gap": _onnx_gap, "gdconv": _onnx_gdconv}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _onnx_data_offset(model: bytes, name: str, raw: bytes) -> int:
    """Offset of an initializer's raw_data: TensorProto serialises name (field 8) then raw_data (9)."""
    key = b"\x42" + _varint(len(name.encode())) + name.encode() + b"\x4a" + _varint(len(raw))
    starts = [m.start() for m in re.finditer(re.escape(key), model)]
    if len(starts) != 1:
        raise ModelFileError(f"ONNX initializer {name!r} found {len(starts)} times in the template")
    off = starts[0] + len(key)
    if model[off:off + len(raw)] != raw:
        raise ModelFileError(f"ONNX initializer {name!r}: raw data not where expected")
    return off


def build_onnx_template(spec, precision: str = "fp32") -> Template:
    import onnx
    from onnx import numpy_helper

    _check_precision("onnx", precision)
    model = _onnx_f(spec, sentinel_theta(spec.n_params), precision)
    inits = {i.name: i for i in onnx.load_from_string(model).graph.initializer}
    dtypes = {np.dtype(np.float32): "float32", np.dtype(np.float16): "float16", np.dtype(np.int8): "int8"}
    patches = []
    for name, (lo, hi, shape) in spec.offsets().items():
        arr = numpy_helper.to_array(inits[name])
        off = _onnx_data_offset(model, name, inits[name].raw_data)
        scale_off = (_onnx_data_offset(model, f"{name}_scale", inits[f"{name}_scale"].raw_data)
                     if arr.dtype == np.int8 else -1)
        patches.append(Patch(name, off, dtypes[arr.dtype], tuple(shape), np.arange(lo, hi), scale_off, 0))
    return _finish(Template("onnx", precision, spec.version, spec.n_params, spec.input_size, "NCHW", model, patches,
                            _versions("onnx")), spec)


# -- checks, cache ---------------------------------------------------------------------------------
def _versions(pkg: str) -> dict[str, str]:
    """Builder and exporter versions, recorded in the template (not part of its cache key)."""
    module = __import__(pkg)
    return {"builder": TEMPLATE_FORMAT, pkg: str(module.__version__)}


def _finish(t: Template, spec) -> Template:
    covered = np.zeros(spec.n_params, bool)
    for p in t.patches:
        covered[p.index] = True
    if not covered.all():
        missing = sorted({name for name, (lo, hi, _) in spec.offsets().items() if not covered[lo:hi].all()})
        raise ModelFileError(f"{t.runtime}/{t.precision} template of f {spec.version}: no buffer found for {missing}")
    self_check(t, spec)
    return t


def self_check(t: Template, spec, seed: int = 0) -> float:
    """Bake a random theta into the template and compare with torch's forward; raise if off."""
    import torch

    from ..hypernet.verifier import forward, init_theta
    from .runtime import make_runner

    g = torch.Generator().manual_seed(seed)
    theta = init_theta(spec, g)
    theta = theta + 0.05 * torch.randn(theta.shape, generator=g)   # non-zero biases too
    x = torch.rand(2, 3, spec.input_size, spec.input_size, generator=g) * 2 - 1
    ref = forward(spec, theta, x).numpy()
    runner = make_runner(t.runtime, t.instantiate(theta.numpy()), threads=1)
    got = np.array([runner(xi[None] if t.layout == "NCHW" else xi.transpose(1, 2, 0)[None])
                    for xi in x.numpy()])
    err = float(np.abs(got - ref).max())
    if not err <= SELF_CHECK_TOL[t.precision]:
        raise ModelFileError(f"{t.runtime}/{t.precision} template of f {spec.version} fails its self-check: "
                             f"max |logit - torch| = {err:.3g} > {SELF_CHECK_TOL[t.precision]}")
    t.info["self_check_max_abs"] = err
    return err


BUILDERS: dict[str, Callable[..., Template]] = {"tflite": build_tflite_template, "onnx": build_onnx_template}


class TemplateStore:
    """Templates on disk, ``<root>/<f version>/<runtime>-<precision>.npz``; built when missing."""

    def __init__(self, root: str | Path):
        import threading

        self.root = Path(os.path.expanduser(str(root)))
        self._loaded: dict[tuple[str, str, str], Template] = {}
        self._lock = threading.Lock()     # server threads asking for a missing template build it once

    def path(self, f_version: str, runtime: str, precision: str) -> Path:
        return self.root / f_version / f"{runtime}-{precision}.npz"

    def get(self, spec, runtime: str, precision: str) -> Template:
        _check_precision(runtime, precision)
        key = (spec.version, runtime, precision)
        with self._lock:
            if key not in self._loaded:
                path = self.path(*key)
                try:
                    t = Template.load(path) if path.is_file() else None
                except ModelFileError:
                    t = None     # another builder format or a torn file: rebuild
                if t is None:
                    t = BUILDERS[runtime](spec, precision)
                    t.save(path)
                self._loaded[key] = t
            return self._loaded[key]
