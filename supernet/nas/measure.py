"""Measuring latency LUTs and whole networks on a runtime (tflite | onnxruntime | torch).

Each distinct block becomes a small standalone model with random weights, exported to the
runtime and timed (warm-up, then repeats; mean/std/count in ms). Whole subnets are timed the
same way for the LUT fidelity check.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..layers import ConvBNAct, MBConv, mid_channels
from .efficiency import BlockSpec, LatencyLUT, LUTEntry, NetworkGeometry

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class _Logits(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.projection = nn.Linear(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.projection(x.flatten(1)), dim=1)


def block_module(b: BlockSpec) -> nn.Module:
    if b.kind == "stem":
        return ConvBNAct(3, b.cout, 3, 2, act="hswish")
    if b.kind == "final_expand":
        return ConvBNAct(b.cin, b.cout, 1, act="hswish")
    if b.kind == "feature_mix":
        return nn.Sequential(nn.Conv2d(b.cin, b.cout, 1, bias=False), nn.Hardswish())
    if b.kind == "logits":
        return _Logits(b.cin, b.cout)
    expand_layer = b.expand != 1
    mid = mid_channels(b.cin, b.expand) if expand_layer else b.cin
    return MBConv(b.cin, mid, b.cout, b.kernel, b.stride, b.act, b.se, expand_layer=expand_layer)


def block_input_shape(b: BlockSpec) -> tuple[int, ...]:
    return (1, b.cin) if b.kind == "logits" else (1, b.cin, b.size_in, b.size_in)


def _init(module: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 1.5)
    return module.eval()


# -- runtimes ---------------------------------------------------------------------------------------
def _timed(fn: Callable[[], object], warmup: int, repeats: int) -> LUTEntry:
    for _ in range(warmup):
        fn()
    times = np.empty(repeats)
    for i in range(repeats):
        t = time.perf_counter()
        fn()
        times[i] = (time.perf_counter() - t) * 1000
    # The median is robust to scheduler hiccups; std describes the spread.
    return LUTEntry(repeats, float(np.median(times)), float(times.std()))


def _torch_runner(module: nn.Module, shape, threads: int, warmup: int, repeats: int, workdir: Path) -> LUTEntry:
    torch.set_num_threads(threads)
    x = torch.randn(shape)
    with torch.no_grad():
        return _timed(lambda: module(x), warmup, repeats)


def _onnx_runner(module: nn.Module, shape, threads: int, warmup: int, repeats: int, workdir: Path) -> LUTEntry:
    import onnxruntime as ort

    path = workdir / "m.onnx"
    torch.onnx.export(module, (torch.randn(shape),), str(path), input_names=["input"], opset_version=17, dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return _timed(lambda: sess.run(None, {"input": x}), warmup, repeats)


def _tflite_runner(module: nn.Module, shape, threads: int, warmup: int, repeats: int, workdir: Path) -> LUTEntry:
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from ..export import _KerasBuilder, to_keras
    from ..static import StaticMobileNetV3

    if isinstance(module, StaticMobileNetV3):
        model = to_keras(module)
    else:
        model = _keras_block(_KerasBuilder(), module, shape)
    path = workdir / "m.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    interp = Interpreter(model_path=str(path), num_threads=threads)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], np.random.default_rng(0).standard_normal(inp["shape"]).astype(np.float32))
    return _timed(interp.invoke, warmup, repeats)


def _keras_block(builder, module: nn.Module, shape):
    import tensorflow as tf

    L = tf.keras.layers
    if len(shape) == 2:
        inp = tf.keras.Input((shape[1],), batch_size=1)
        dense = L.Dense(module.projection.out_features)
        x = dense(inp)
        dense.set_weights([module.projection.weight.detach().numpy().T, module.projection.bias.detach().numpy()])
        return tf.keras.Model(inp, L.UnitNormalization(axis=-1)(x))
    inp = tf.keras.Input((shape[2], shape[3], shape[1]), batch_size=1)
    if isinstance(module, MBConv):
        x = builder.mbconv(inp, module)
    elif isinstance(module, ConvBNAct):
        act = "hswish" if isinstance(module[2], nn.Hardswish) else "relu"
        x = builder.conv_bn_act(inp, module, act)
    else:  # feature mix: conv 1x1 + h-swish
        x = builder.act(builder.conv(inp, module[0]), "hswish")
    return tf.keras.Model(inp, x)


RUNNERS = {"torch": _torch_runner, "onnxruntime": _onnx_runner, "tflite": _tflite_runner}


def measure_module(module: nn.Module, shape, backend: str, threads: int = 1, warmup: int = 10,
                   repeats: int = 50) -> LUTEntry:
    if backend not in RUNNERS:
        raise ValueError(f"unknown backend {backend!r}; use one of {sorted(RUNNERS)}")
    with tempfile.TemporaryDirectory() as tmp:
        return RUNNERS[backend](module.eval(), shape, threads, warmup, repeats, Path(tmp))


def measure_lut(geometry: NetworkGeometry, backend: str, threads: int = 1, warmup: int = 10, repeats: int = 50,
                existing: LatencyLUT | None = None, progress: bool = True,
                on_entry: Callable[[str, LUTEntry], None] | None = None) -> LatencyLUT:
    """Time every distinct block of the space (resumable: keys already in ``existing`` are kept)."""
    from tqdm import tqdm

    lut = existing or LatencyLUT(geometry)
    todo = [b for b in geometry.all_blocks() if b.key not in lut.entries]
    for b in tqdm(todo, desc=f"LUT {backend} x{threads}", disable=not progress):
        entry = measure_module(_init(block_module(b)), block_input_shape(b), backend, threads, warmup, repeats)
        lut.entries[b.key] = entry
        if on_entry:
            on_entry(b.key, entry)
    return lut


def measure_network(net: nn.Module, input_size: int, backend: str, threads: int = 1, warmup: int = 10,
                    repeats: int = 50) -> LUTEntry:
    return measure_module(net, (1, 3, input_size, input_size), backend, threads, warmup, repeats)


