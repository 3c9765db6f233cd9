"""Throughput of the vectorised verifier step: stacked grouped convolutions vs torch.func.vmap.

    python benchmarks/hypernet_batched.py --users 16 32 64 --images-per-user 2 --size 64 --threads 2

For U generated verifiers scoring all U*n images of a batch (the full matrix) and for the CPU
option (each verifier: its positives + N sampled negatives), prints forward+backward time and
verifier-image pairs per second for both implementations.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from hyperver.hypernet.batched import score_matrix
from hyperver.hypernet.generator import WeightGenerator
from hyperver.hypernet.verifier import VerifierSpec


def timed(fn, repeats: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--images-per-user", type=int, default=2)
    ap.add_argument("--negatives", type=int, default=16, help="sampled negatives per verifier (CPU option)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    spec = VerifierSpec(input_size=args.size)
    gen = WeightGenerator(spec, embed_dim=128)
    for U in args.users:
        n = args.images_per_user
        emb = torch.nn.functional.normalize(torch.randn(U, 128), dim=1)
        x_full = torch.randn(U * n, 3, args.size, args.size)
        x_sub = torch.randn(U, n - 1 + args.negatives, 3, args.size, args.size)
        for mode, x in (("full", x_full), ("sampled", x_sub)):
            for impl in ("stacked", "vmap"):
                def step():
                    gen.zero_grad()
                    score_matrix(spec, gen(emb), x, impl).sum().backward()
                sec = timed(step, args.repeats)
                pairs = U * (x.shape[0] if x.dim() == 4 else x.shape[1])
                print(json.dumps({"users": U, "mode": mode, "impl": impl, "size": args.size, "threads": args.threads,
                                  "pairs": pairs, "step_s": round(sec, 3), "pairs_per_s": round(pairs / sec)}),
                      flush=True)


if __name__ == "__main__":
    main()
