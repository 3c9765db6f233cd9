"""f's budget: parameters, MFLOPs and TFLite latency of today's f v2 and the f v3 candidates (issue #17, item 2).

    python benchmarks/f_budget.py                      # writes results/f_budget.json
    python benchmarks/f_budget.py --repeats 50 --out /tmp/f_budget.json

f v3 = a MobileFaceNet-style global depthwise conv head (``head: gdconv``) on 96-112 px input.
The budget is the paper's: ~23k parameters (within 15 %: at most 26.5k) and ~5 MFLOPs (at most 6).

- params: ``supernet.profile.count_params`` on ``VerifierModule`` (checked against the layout);
- MFLOPs: ``supernet.profile.mflops``, millions of multiply-adds (torch's FlopCounterMode, the unit
  every result here calls MFLOPs, as MobileNet/OFA do). Instance norm and ReLU are not counted;
- latency: the fp32 TFLite model (the default artifact precision) and the int8 one, ai-edge-litert,
  1 thread, batch 1, median (and p95) over --repeats invocations; plus the device's numpy
  preprocessing of the aligned 112 px crop to f's input (a resize below 112 px, none at 112).
  The load average is recorded next to them: figures taken on a busy machine are inflated.

The recommended v3 spec: the candidate within budget closest to 23k parameters and 5 MFLOPs
(|params / 23k - 1| + |MFLOPs / 5 - 1|), among those that keep v2's classifier (hidden 32), so an
A/B run against v2 changes only the input size, the body's widths and the head.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
from typing import Any

import numpy as np

from hyperver.reporting import current_command, write_result
from supernet.latency import time_calls

MAX_PARAMS = 26_500          # ~23k +- 15 %
MAX_MFLOPS = 6.0
TARGET_PARAMS, TARGET_MFLOPS = 23_000, 5.0
V2 = {"channels": [16, 32, 64, 64], "groups": [1, 2, 4, 4], "strides": [2, 2, 2, 2], "kernel": 3, "hidden": 32}

# name -> spec (data: add a row to measure another candidate)
CANDIDATES: dict[str, dict[str, Any]] = {
    "v2_64_gap": {**V2, "input_size": 64},                                      # today's default f
    "v2_112_gap": {**V2, "input_size": 112},                                    # head cost, by difference
    "v3_112_c64": {**V2, "input_size": 112, "head": "gdconv"},                  # issue #17's example, 7x7 map
    "v3_112_c64_h16": {**V2, "input_size": 112, "head": "gdconv", "hidden": 16},
    "v3_112_c56": {**V2, "input_size": 112, "head": "gdconv", "channels": [16, 32, 64, 56]},
    "v3_112_c48_56": {**V2, "input_size": 112, "head": "gdconv", "channels": [16, 32, 48, 56],
                      "groups": [1, 2, 2, 4]},
    "v3_112_c48_56_h16": {**V2, "input_size": 112, "head": "gdconv", "channels": [16, 32, 48, 56],
                          "groups": [1, 2, 2, 4], "hidden": 16},
    "v3_96_c64": {**V2, "input_size": 96, "head": "gdconv"},                    # 6x6 map
    "v3_96_c24_56": {**V2, "input_size": 96, "head": "gdconv", "channels": [24, 32, 64, 56]},
    "v3_96_g1": {**V2, "input_size": 96, "head": "gdconv", "channels": [16, 32, 64, 48], "groups": [1, 1, 4, 4]},
}


def tflite_ms(model: bytes, repeats: int, threads: int = 1) -> dict[str, float]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model, num_threads=threads)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], np.random.default_rng(0).uniform(-1, 1, inp["shape"]).astype(np.float32))
    t = time_calls(interp.invoke, warmup=max(10, repeats // 10), repeats=repeats)
    return {"median": round(t["median_ms"], 4), "p95": round(t["p95_ms"], 4)}


def preprocess_ms(size: int, repeats: int, threads: int = 1) -> dict[str, float]:
    from threadpoolctl import threadpool_limits   # scikit-learn's dependency

    from hyperver.device.preprocess import face_array

    crop = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    # The resize is two BLAS matmuls: held to the device's thread count (a busy machine's idle BLAS
    # threads otherwise cost ~30 ms a call).
    with threadpool_limits(threads):
        t = time_calls(lambda: face_array(crop, size, "NHWC"), warmup=max(10, repeats // 10), repeats=repeats)
    return {"median": round(t["median_ms"], 4), "p95": round(t["p95_ms"], 4)}


def measure(name: str, spec_dict: dict[str, Any], repeats: int, threads: int) -> dict[str, Any]:
    import torch

    from hyperver.device.templates import _convert_tflite
    from hyperver.hypernet.verifier import VerifierModule, VerifierSpec, init_theta
    from supernet.profile import count_params, mflops

    spec = VerifierSpec.from_dict(spec_dict)
    module = VerifierModule(spec)
    params = count_params(module)
    if params != spec.n_params:
        raise AssertionError(f"{name}: the module has {params} parameters, the layout {spec.n_params}")
    size = spec.input_size
    row = {"name": name, "spec": spec.to_dict(), "head": spec.head, "f_version": spec.version,
           "final_map": spec.final_size, "params": params, "mflops": round(mflops(module, (1, 3, size, size)), 3)}
    row["within_budget"] = row["params"] <= MAX_PARAMS and row["mflops"] <= MAX_MFLOPS
    theta = init_theta(spec, torch.Generator().manual_seed(0)).numpy()
    row["tflite_ms"] = {}
    for precision in ("fp32", "int8"):
        with contextlib.redirect_stdout(io.StringIO()):
            model = _convert_tflite(spec, theta, precision)
        row["tflite_ms"][precision] = tflite_ms(model, repeats, threads)
        row.setdefault("tflite_bytes", {})[precision] = len(model)
    row["preprocess_ms"] = preprocess_ms(size, repeats, threads)
    return row


def recommend(rows: list[dict[str, Any]]) -> str:
    def distance(r: dict[str, Any]) -> float:
        return abs(r["params"] / TARGET_PARAMS - 1) + abs(r["mflops"] / TARGET_MFLOPS - 1)

    pool = [r for r in rows if r["head"] == "gdconv" and r["within_budget"] and r["spec"]["hidden"] == V2["hidden"]]
    return min(pool, key=distance)["name"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="results/f_budget.json")
    ap.add_argument("--repeats", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", nargs="*", choices=sorted(CANDIDATES), help="measure these candidates only")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    load_before = [round(x, 2) for x in os.getloadavg()]
    rows = []
    for name in args.only or CANDIDATES:
        rows.append(measure(name, CANDIDATES[name], args.repeats, args.threads))
        r = rows[-1]
        ms = {k: v["median"] for k, v in r["tflite_ms"].items()}
        print(f"{name:<20} {r['spec']['input_size']:>3}px {r['head']:<6} map {r['final_map']}x{r['final_map']} "
              f"{r['params']:>6,} params {r['mflops']:>5.2f} MFLOPs  TFLite fp32 {ms['fp32']:.3f} ms"
              f"  int8 {ms['int8']:.3f} ms  preprocess {r['preprocess_ms']['median']:.3f} ms"
              f"{'' if r['within_budget'] else '  OVER BUDGET'}", flush=True)
    best = recommend(rows)
    print(f"recommended f v3: {best} {CANDIDATES[best]}")
    figures = {"budget": {"max_params": MAX_PARAMS, "max_mflops": MAX_MFLOPS, "target_params": TARGET_PARAMS,
                          "target_mflops": TARGET_MFLOPS},
               "units": {"mflops": "millions of multiply-adds (supernet.profile.mflops; norm and ReLU not counted)",
                         "tflite_ms": f"TFLite (ai-edge-litert), {args.threads} thread(s), batch 1, "
                                      f"over {args.repeats} invocations",
                         "preprocess_ms": f"numpy resize of the aligned 112 px crop to f's input (device path), "
                                          f"{args.threads} BLAS thread(s)"},
               "load_average": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()],
                                "cpus": os.cpu_count(), "niceness": os.nice(0),
                                "note": "latency is inflated when the load average is near or above the CPU count"},
               "candidates": rows, "recommended": best,
               "rule": "within budget, hidden 32 (v2's classifier), min |params/23k - 1| + |MFLOPs/5 - 1|"}
    print(f"wrote {write_result(args.out, figures, command=f'python {current_command()}')}")


if __name__ == "__main__":
    main()
