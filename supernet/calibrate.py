"""BatchNorm recalibration: a subnet's BN statistics, re-estimated on a few hundred images."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


@torch.no_grad()
def recalibrate_bn(net: nn.Module, batches: Iterable[torch.Tensor], max_images: int = 500) -> nn.Module:
    """Reset every BN layer's running statistics and re-estimate them as exact averages.

    Weight sharing makes the SuperNet's running statistics wrong for any particular subnet;
    OFA re-estimates them on a small training subset before evaluating or exporting.
    """
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = {m: m.momentum for m in bns}
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average = exact mean over the batches seen
    was_training = net.training
    net.train()
    seen = 0
    for x in batches:
        if seen >= max_images:
            break
        net(x)
        seen += len(x)
    for m in bns:
        m.momentum = saved[m]
    net.train(was_training)
    if seen == 0:
        raise ValueError("BN recalibration got no images")
    return net
