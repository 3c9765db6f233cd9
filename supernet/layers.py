"""Static building blocks of MobileNetV3 (what an extracted subnet is made of)."""
from __future__ import annotations

import torch
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
