"""Static building blocks of MobileNetV3 (what an extracted subnet is made of)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "hswish": nn.Hardswish, "none": nn.Identity}


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor`` without dropping more than 10% (MobileNet rule)."""
    min_value = min_value or divisor
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def mid_channels(in_channels: int, expand: float) -> int:
    return make_divisible(round(in_channels * expand), 8)


def se_channels(channels: int, reduction: int = 4) -> int:
    return make_divisible(channels // reduction, 8)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        red = se_channels(channels, reduction)
        self.reduce = nn.Conv2d(channels, red, 1, bias=True)
        self.expand = nn.Conv2d(red, channels, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.gate = nn.Hardsigmoid(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(w))))


class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: str = "relu"):
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), ACTIVATIONS[act]())


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand (omitted when mid == in) -> kxk depthwise -> SE -> 1x1 project."""

    def __init__(self, cin: int, mid: int, cout: int, kernel: int, stride: int, act: str, se: bool,
                 expand_layer: bool = True):
        super().__init__()
        self.spec = {"cin": cin, "mid": mid, "cout": cout, "kernel": kernel, "stride": stride, "act": act, "se": se,
                     "expand_layer": expand_layer}
        self.inverted_bottleneck = ConvBNAct(cin, mid, 1, act=act) if expand_layer else None
        self.depth_conv = ConvBNAct(mid, mid, kernel, stride, groups=mid, act=act)
        self.se = SqueezeExcite(mid) if se else None
        self.point_linear = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inverted_bottleneck(x) if self.inverted_bottleneck is not None else x
        y = self.depth_conv(y)
        if self.se is not None:
            y = self.se(y)
        y = self.point_linear(y)
        return x + y if self.residual else y


class EmbeddingHead(nn.Module):
    """Global pooling -> feature mix (1x1 conv, h-swish) -> linear projection -> L2 normalisation.

    The projection maps every subnet into one target embedding space (e.g. a teacher's), so
    whatever consumes the embeddings works with any subnet.
    """

    def __init__(self, cin: int, feature_width: int, embed_dim: int, normalize: bool = True):
        super().__init__()
        self.feature_mix = nn.Sequential(nn.Conv2d(cin, feature_width, 1, bias=False), nn.Hardswish())
        self.projection = nn.Linear(feature_width, embed_dim)
        self.normalize = normalize

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_mix(x.mean((2, 3), keepdim=True)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.projection(self.features(x))
        return nn.functional.normalize(z, dim=1) if self.normalize else z


# -- weight sharing: the first ``c`` channels of a wider layer ----------------------------------------
def sliced_batch_norm(x: torch.Tensor, bn: nn.BatchNorm2d, c: int) -> torch.Tensor:
    """BatchNorm over the first ``c`` channels of a wider BN layer (sliced statistics)."""
    training = bn.training or not bn.track_running_stats
    return F.batch_norm(x, bn.running_mean[:c] if bn.running_mean is not None else None,
                        bn.running_var[:c] if bn.running_var is not None else None,
                        bn.weight[:c], bn.bias[:c], training, bn.momentum if bn.momentum is not None else 0.1, bn.eps)


@torch.no_grad()
def copy_sliced_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, c: int) -> None:
    """A static BN layer from the first ``c`` channels of a wider one."""
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).copy_(getattr(src, name)[:c])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


def shrink_kernel(weight: torch.Tensor, kernels: "list[int]", kernel: int, transforms: nn.ParameterDict) -> torch.Tensor:
    """OFA's elastic kernel: a smaller depthwise kernel is the centre of the next larger one passed
    through a learned linear transform (``transforms["5to3"]`` etc., identity at initialisation).

    ``weight`` (C, 1, K, K) holds the largest kernel; ``kernels`` are the sorted choices.
    """
    channels, current = weight.shape[0], weight.shape[-1]
    for big, small in zip(kernels[::-1][:-1], kernels[::-1][1:]):
        if current <= kernel:
            break
        start = (big - small) // 2
        centre = weight[:, :, start:start + small, start:start + small]
        weight = (centre.reshape(channels, small * small) @ transforms[f"{big}to{small}"]).reshape(
            channels, 1, small, small)
        current = small
    return weight
