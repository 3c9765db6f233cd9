"""Training throughput of the elastic SuperNet on this CPU (forward + backward + SGD step).

    python benchmarks/supernet_train_speed.py --sizes 64 80 96 112 --threads 2

Prints ms per image for the largest and smallest subnet at each input size, and for one
progressive-shrinking "sandwich" step (largest + 2 random subnets). Used to size the CPU preset.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from supernet.elastic import OFAMobileNetV3
from supernet.space import DEFAULT_SPACE


def step_time(net, archs, x, opt, repeats: int) -> float:
    for i in range(repeats + 1):
        if i == 1:
            t = time.perf_counter()
        opt.zero_grad()
        for arch in archs:
            net.set_active(arch)
            net(x).sum().backward()
        opt.step()
    return (time.perf_counter() - t) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 80, 96, 112])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--channels-last", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    sandwich = [DEFAULT_SPACE.largest(), DEFAULT_SPACE.sample(rng), DEFAULT_SPACE.sample(rng)]
    for size in args.sizes:
        net = OFAMobileNetV3(width_mult=args.width, input_size=size).train()
        x = torch.randn(args.batch, 3, size, size)
        if args.channels_last:
            net = net.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
        row = {"size": size, "threads": args.threads, "batch": args.batch, "channels_last": args.channels_last}
        for name, archs in (("largest", [DEFAULT_SPACE.largest()]), ("smallest", [DEFAULT_SPACE.smallest()]),
                            ("sandwich_3", sandwich)):
            row[f"{name}_ms_per_img"] = round(1000 * step_time(net, archs, x, opt, args.repeats) / args.batch, 2)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
