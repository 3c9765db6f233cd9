"""Measuring latency LUTs and whole networks on a runtime (tflite | onnxruntime | torch).

Each distinct block becomes a small standalone model with random weights, exported to the
runtime and timed (warm-up, then repeats, in interleaved rounds; the LUT's "mean" column holds
the best round's median, std the spread of round medians, in ms). Whole subnets are timed the
same way for calibration and the LUT fidelity check.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..latency import time_calls
from ..layers import ConvBNAct, MBConv, mid_channels
from ..models.mobilefacenet import Bottleneck, ConvBN
from .efficiency import BlockSpec, LatencyLUT, LUTEntry, NetworkGeometry

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class _Logits(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.projection = nn.Linear(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.projection(x.flatten(1)), dim=1)


class _MFNHead(nn.Module):
    """A MobileFaceNet head timed as one LUT block: conv, GDConv, [pointwise], embedding, L2 norm."""

    def __init__(self, head: nn.Sequential):
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.head(x).flatten(1), dim=1)


def _mfn_block_module(b: BlockSpec) -> nn.Module:
    from ..models.mobilefacenet import Bottleneck, MobileFaceNet, StageSpec

    if b.kind == "mfn_block":
        return Bottleneck(b.cin, b.cout, 1, b.stride, b.kernel, b.size_in, mid=b.mid)
    # stem/head: cut from a MobileFaceNet of that shape (one single-block stage whose output is the head's input)
    stride = 1 if b.kind == "mfn_stem" else 2
    size = b.size_in if b.kind == "mfn_stem" else b.size_in * 4   # the head sees input / 4 here
    net = MobileFaceNet(embed_dim=b.cout if b.kind == "mfn_head" else 128, extra_pointwise=bool(b.mid),
                        stem_channels=b.cout if b.kind == "mfn_stem" else b.cin,
                        head_channels=b.width or 512, stages=[StageSpec(1, b.cin if b.kind == "mfn_head" else b.cout, 1,
                                                                        stride)],
                        input_size=size)
    return net.stem if b.kind == "mfn_stem" else _MFNHead(net.head)


def block_module(b: BlockSpec) -> nn.Module:
    if b.kind.startswith("mfn_"):
        return _mfn_block_module(b)
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


# -- runtimes: each prepares a model once and returns a zero-argument call to time ---------------------
def _torch_runner(module: nn.Module, shape, threads: int, workdir: Path) -> Callable[[], object]:
    torch.set_num_threads(threads)
    x = torch.randn(shape)

    def call():
        with torch.no_grad():
            return module(x)
    return call


def _onnx_runner(module: nn.Module, shape, threads: int, workdir: Path) -> Callable[[], object]:
    import onnxruntime as ort

    path = workdir / "m.onnx"
    torch.onnx.export(module, (torch.randn(shape),), str(path), input_names=["input"], opset_version=17, dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # Many sessions live side by side during interleaved timing: idle ones must not spin.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return lambda: sess.run(None, {"input": x})


def _tflite_runner(module: nn.Module, shape, threads: int, workdir: Path) -> Callable[[], object]:
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from ..export import _KerasBuilder, to_keras

    if hasattr(module, "net_config"):   # a whole static subnet of any registered space
        model = to_keras(module)
    else:
        model = _keras_block(_KerasBuilder(), module, shape)
    interp = Interpreter(model_content=tf.lite.TFLiteConverter.from_keras_model(model).convert(), num_threads=threads)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], np.random.default_rng(0).standard_normal(inp["shape"]).astype(np.float32))
    return interp.invoke


def time_interleaved(calls: Sequence[Callable[[], object]], warmup: int, repeats: int, rounds: int = 1,
                     seed: int = 0) -> list[LUTEntry]:
    """Time several prepared models in ``rounds`` rounds, each model once per round in a shuffled order.

    Each round gives a model the median of ``repeats`` calls (after ``warmup``); its entry is the
    lowest round median. Why: on a shared machine, slow phases (another job, frequency changes)
    last longer than one model's timing window, so timing models one after another turns them
    into rank noise between models; interleaving spreads them over all models and the best round
    estimates the uncontended latency. ``std`` is the spread of the round medians.
    """
    rng = np.random.default_rng(seed)
    medians = np.empty((len(calls), max(1, rounds)))
    for r in range(medians.shape[1]):
        for i in rng.permutation(len(calls)):
            medians[i, r] = time_calls(calls[i], warmup, repeats)["median_ms"]
    return [LUTEntry(repeats * medians.shape[1], float(m.min()), float(m.std())) for m in medians]


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
    if isinstance(module, (Bottleneck, _MFNHead)) or (isinstance(module, nn.Sequential)
                                                        and all(isinstance(m, ConvBN) for m in module)):
        return tf.keras.Model(inp, builder.mfn_module(inp, module))
    if isinstance(module, MBConv):
        x = builder.mbconv(inp, module)
    elif isinstance(module, ConvBNAct):
        act = "hswish" if isinstance(module[2], nn.Hardswish) else "relu"
        x = builder.conv_bn_act(inp, module, act)
    else:  # feature mix: conv 1x1 + h-swish
        x = builder.act(builder.conv(inp, module[0]), "hswish")
    return tf.keras.Model(inp, x)


RUNNERS = {"torch": _torch_runner, "onnxruntime": _onnx_runner, "tflite": _tflite_runner}


def prepare_module(module: nn.Module, shape, backend: str, threads: int, workdir: Path) -> Callable[[], object]:
    if backend not in RUNNERS:
        raise ValueError(f"unknown backend {backend!r}; use one of {sorted(RUNNERS)}")
    workdir.mkdir(parents=True, exist_ok=True)
    return RUNNERS[backend](module.eval(), shape, threads, workdir)


def measure_modules(modules: Sequence[tuple[nn.Module, tuple[int, ...]]], backend: str, threads: int = 1,
                    warmup: int = 10, repeats: int = 50, rounds: int = 1, progress: bool = False,
                    desc: str = "prepare") -> list[LUTEntry]:
    """(module, input shape) pairs -> one entry each, timed interleaved (see ``time_interleaved``)."""
    from tqdm import tqdm

    with tempfile.TemporaryDirectory() as tmp:
        calls = [prepare_module(m, shape, backend, threads, Path(tmp) / str(i))
                 for i, (m, shape) in enumerate(tqdm(modules, desc=desc, disable=not progress))]
        return time_interleaved(calls, warmup, repeats, rounds)


def measure_lut(geometry: NetworkGeometry, backend: str, threads: int = 1, warmup: int = 10, repeats: int = 50,
                existing: LatencyLUT | None = None, progress: bool = True,
                on_entry: Callable[[str, LUTEntry], None] | None = None, rounds: int = 1,
                chunk: int = 32) -> LatencyLUT:
    """Time every distinct block of the space, ``chunk`` blocks interleaved at a time (resumable:
    keys already in ``existing`` are kept; ``on_entry`` runs after each chunk)."""
    from tqdm import tqdm

    lut = existing or LatencyLUT(geometry)
    todo = [b for b in geometry.all_blocks() if b.key not in lut.entries]
    bar = tqdm(total=len(todo), desc=f"LUT {backend} x{threads}", disable=not progress)
    for c in range(0, len(todo), chunk):
        blocks = todo[c:c + chunk]
        entries = measure_modules([(_init(block_module(b)), block_input_shape(b)) for b in blocks], backend,
                                  threads, warmup, repeats, rounds)
        for b, entry in zip(blocks, entries):
            lut.entries[b.key] = entry
            if on_entry:
                on_entry(b.key, entry)
        bar.update(len(blocks))
    bar.close()
    return lut


def measure_networks(nets: Sequence[nn.Module], input_size: int, backend: str, threads: int = 1, warmup: int = 10,
                     repeats: int = 50, rounds: int = 1, progress: bool = False, desc: str = "prepare") -> list[LUTEntry]:
    shape = (1, 3, input_size, input_size)
    return measure_modules([(n, shape) for n in nets], backend, threads, warmup, repeats, rounds, progress, desc)

