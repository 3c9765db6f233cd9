"""Share of the elastic MobileFaceNet's multiply-adds spent in depthwise convolutions, per kernel choice.

Why elastic kernel is off by default in the `elastic_mfn` space: it can only move this share.
    python benchmarks/mfn_depthwise_share.py
"""
from __future__ import annotations

import torch
from torch import nn

from supernet.profile import count_macs, count_params
from supernet.spaces.mobilefacenet import ElasticMobileFaceNet, MobileFaceNetSpace


def depthwise_macs(net: nn.Module, size: int = 112) -> int:
    total = 0

    def hook(m: nn.Conv2d, _inputs, output) -> None:
        nonlocal total
        if m.groups > 1 and m.groups == m.in_channels:
            total += output.numel() * m.kernel_size[0] * m.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        net.eval()(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return total


def main() -> None:
    for kernels in [(3,), (3, 5)]:
        space = MobileFaceNetSpace(kernels=kernels)
        net = ElasticMobileFaceNet(space)
        for name, arch in [("largest", space.largest()), ("smallest", space.smallest())]:
            sub = net.get_subnet(arch)
            macs = count_macs(sub, (1, 3, 112, 112))
            print(f"kernels {list(kernels)} {name}: {macs / 1e6:.1f} M MACs, {count_params(sub):,} params, "
                  f"depthwise share {depthwise_macs(sub) / macs:.3f}")


if __name__ == "__main__":
    main()
