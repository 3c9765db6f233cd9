"""How repeatable whole-subnet latencies are on this machine, per timing protocol.

    python benchmarks/timing_repeatability.py --backend onnxruntime

Times the same random subnets (seed 0, the LUT check's) twice in a row with each protocol and
prints the Spearman rank correlation between the two passes (test-retest): the ceiling of any
LUT fidelity check on this machine.

- ``sequential``: the old protocol, each subnet timed on its own (one round of 50 calls);
- ``interleaved``: ``search.lut`` (25 rounds x 10 calls, every subnet once per round, best round).
"""
from __future__ import annotations

import argparse
import json

import numpy as np
from scipy.stats import spearmanr

from hyperver.config import load_config
from hyperver.device_search import _measure_subnets, _supernet

PROTOCOLS = {"sequential": {"warmup": 10, "repeats": 50, "rounds": 1}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "tflite", "torch"])
    ap.add_argument("--n", type=int, default=30)
    args = ap.parse_args()
    cfg = load_config()
    net = _supernet(cfg)
    rng = np.random.default_rng(0)
    archs = [net.space.sample(rng) for _ in range(args.n)]
    lut = cfg.get_path("search.lut")
    protocols = {**PROTOCOLS, "interleaved": {k: int(lut[k]) for k in ("warmup", "repeats", "rounds")}}
    out = {}
    for name, p in protocols.items():
        passes = [_measure_subnets(net, archs, args.backend, 1, p["warmup"], p["repeats"], f"{name} pass {i + 1}",
                                   p["rounds"]) for i in range(2)]
        out[name] = {**p, "test_retest_spearman": round(float(spearmanr(*passes).statistic), 3),
                     "max_ratio_between_passes": round(float(np.max(np.maximum(passes[0] / passes[1],
                                                                               passes[1] / passes[0]))), 3)}
    print(json.dumps({"backend": args.backend, "subnets": args.n, **out}, indent=1))


if __name__ == "__main__":
    main()
