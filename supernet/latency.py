"""Wall-clock latency of exported models on a runtime (median of repeats after warm-up)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np


def time_calls(fn: Callable[[], object], warmup: int, repeats: int) -> dict[str, float]:
    """Median, p95, mean and std (ms) of ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    arr = np.array(times)
    return {"median_ms": float(np.median(arr)), "p95_ms": float(np.percentile(arr, 95)), "mean_ms": float(arr.mean()),
            "std_ms": float(arr.std()), "count": int(repeats)}


def tflite_latency(path: str | Path, threads: int = 1, warmup: int = 10, repeats: int = 50) -> dict[str, float]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=threads)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], np.random.default_rng(0).uniform(-1, 1, inp["shape"]).astype(np.float32))
    return time_calls(interp.invoke, warmup, repeats)


def onnx_latency(path: str | Path, threads: int = 1, warmup: int = 10, repeats: int = 50) -> dict[str, float]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [1 if not isinstance(d, int) else d for d in inp.shape]
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    return time_calls(lambda: sess.run(None, {inp.name: x}), warmup, repeats)
