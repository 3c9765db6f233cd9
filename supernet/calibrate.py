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


@torch.no_grad()
def unfold_batchnorm(net: nn.Module, batches: Iterable[torch.Tensor], max_images: int = 500) -> nn.Module:
    """Give BN layers real statistics without changing the eval-mode function.

    Weights imported from a deployed model have BN folded into the conv (an identity BN: mean 0,
    var 1 - eps, weight 1). Trained in train mode, such a layer normalises by batch statistics and
    the pretrained function is lost at step 0. Here each BN's input mean/var are measured in eval
    mode (i.e. under the pretrained function) and become the layer's running statistics, with weight
    and bias rewritten so that the eval-mode affine map is unchanged; in train mode the batch
    statistics are then close to these, so training starts from ~the pretrained function.
    """
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    sums = {m: [0.0, 0.0, 0] for m in bns}

    def hook(module, inputs, _output):
        x = inputs[0].transpose(0, 1).reshape(inputs[0].shape[1], -1).double()
        acc = sums[module]
        acc[0] = acc[0] + x.sum(1)
        acc[1] = acc[1] + (x * x).sum(1)
        acc[2] += x.shape[1]

    handles = [m.register_forward_hook(hook) for m in bns]
    was_training = net.training
    net.eval()
    seen = 0
    try:
        for x in batches:
            if seen >= max_images:
                break
            net(x)
            seen += len(x)
    finally:
        for h in handles:
            h.remove()
        net.train(was_training)
    if seen == 0:
        raise ValueError("BN unfolding got no images")
    for m in bns:
        s, ss, n = sums[m]
        if not n:
            continue  # a layer this net's active path does not use
        mu = (s / n).to(m.running_mean.dtype)
        var = (ss / n - (s / n) ** 2).clamp_min(0).to(m.running_var.dtype)
        # The eval-mode map is a * x + c with a = w / sqrt(v0 + eps), c = b - a * mu0; keep it.
        a = m.weight / torch.sqrt(m.running_var + m.eps)
        c = m.bias - a * m.running_mean
        std = torch.sqrt(var + m.eps)
        m.running_mean.copy_(mu)
        m.running_var.copy_(var)
        m.weight.copy_(a * std)
        m.bias.copy_(c + a * mu)
    return net
