"""Parameter and FLOP counts, measured by tools rather than by hand."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(net: nn.Module) -> int:
    return int(sum(p.numel() for p in net.parameters()))


@torch.no_grad()
def count_macs(net: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass (torch's FlopCounterMode counts 2 FLOPs per MAC)."""
    was_training = net.training
    net.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        net(torch.zeros(input_shape))
    net.train(was_training)
    return int(counter.get_total_flops() // 2)


def mflops(net: nn.Module, input_shape: tuple[int, ...]) -> float:
    """Millions of multiply-adds, the unit MobileNet/OFA papers call MFLOPs."""
    return count_macs(net, input_shape) / 1e6
