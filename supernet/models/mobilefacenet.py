"""MobileFaceNet (Chen et al. 2018) and sirius-ai's MobileFaceNet_TF variant, as one trainable definition.

Every layer is Conv2d(bias=False) + BatchNorm2d (+ PReLU), so the net trains like any other and the
pretrained TFLite weights (BN folded into conv biases) load as an exact identity BN (see ``tflite_import``).

Padding: the pretrained weights come from TensorFlow, whose "SAME" padding for a stride-2 3x3 conv on
an even input pads one pixel at the bottom/right only. PyTorch's symmetric ``padding=1`` shifts the
sampling grid by one pixel and ruins the pretrained embedding, so with ``same_pad=True`` (default) each
stride-2 layer gets an explicit ``nn.ZeroPad2d`` computed the way TF does from kernel, stride and the
layer's input size. The net is built for one ``input_size`` anyway (the GDConv kernel equals the last
feature map), so these static pads are exact for that size.

The input is an NCHW float tensor, normalised by the caller (the pretrained weights want (x - 127.5) / 128
on RGB); the output is the raw (not L2-normalised) embedding, shape (N, embed_dim).
"""
from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn


@dataclass(frozen=True)
class StageSpec:
    """One stage of bottlenecks: expansion ratio t, output channels c, repeats n, first stride s."""

    expand: int
    channels: int
    repeats: int
    stride: int
    kernel: int = 3


# Table 1 of the MobileFaceNet paper; sirius-ai's TF model uses the same table.
STANDARD_STAGES: tuple[StageSpec, ...] = (
    StageSpec(2, 64, 5, 2),
    StageSpec(4, 128, 1, 2),
    StageSpec(2, 128, 6, 1),
    StageSpec(4, 128, 1, 2),
    StageSpec(2, 128, 2, 1),
)


@dataclass(frozen=True)
class MobileFaceNetSpec:
    """Everything that defines the architecture, as data.

    ``extra_pointwise``: sirius-ai's two extra linear 1x1 convs (stem: after the depthwise 3x3,
    stem_channels -> stem_channels; head: between the GDConv and the embedding, head_channels -> head_channels).
    """

    stem_channels: int = 64
    stages: tuple[StageSpec, ...] = STANDARD_STAGES
    head_channels: int = 512
    embed_dim: int = 128
    extra_pointwise: bool = False


VARIANTS: dict[str, MobileFaceNetSpec] = {
    "standard": MobileFaceNetSpec(),
    "sirius": MobileFaceNetSpec(embed_dim=192, extra_pointwise=True),
}


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (before, after) along one axis: the extra pixel, if any, goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class ConvBN(nn.Module):
    """Conv2d(bias=False) -> BatchNorm2d -> PReLU (or nothing when ``act=False``).

    ``padding``: "same" (TF SAME when ``same_pad``, else PyTorch's symmetric kernel // 2) or "valid".
    ``in_size`` is the layer's input height = width, needed to compute TF SAME padding.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True,
                 padding: str = "same", in_size: int | None = None, same_pad: bool = True):
        super().__init__()
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', not {padding!r}")
        sym = 0
        self.pad: nn.ZeroPad2d | None = None
        if padding == "same":
            if same_pad:
                if in_size is None and stride > 1:
                    raise ValueError("TF SAME padding of a strided conv needs the layer's input size")
                # At stride 1 the TF padding does not depend on the input size.
                before, after = tf_same_padding(in_size or kernel, kernel, stride)
                if before == after:
                    sym = before
                else:  # asymmetric: (left, right, top, bottom)
                    self.pad = nn.ZeroPad2d((before, after, before, after))
            else:
                sym = kernel // 2
        self.conv = nn.Conv2d(cin, cout, kernel, stride, sym, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act: nn.Module = nn.PReLU(cout) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad is not None:
            x = self.pad(x)
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """Inverted residual: 1x1 expand (PReLU) -> kxk depthwise (PReLU) -> 1x1 linear project, + x if shapes match."""

    def __init__(self, cin: int, cout: int, expand: int, stride: int, kernel: int, in_size: int,
                 same_pad: bool = True, mid: int | None = None):
        super().__init__()
        mid = cin * expand if mid is None else mid  # an explicit ``mid``: a channel-sliced subnet block
        self.expand = ConvBN(cin, mid, 1)
        self.depthwise = ConvBN(mid, mid, kernel, stride, groups=mid, in_size=in_size, same_pad=same_pad)
        self.project = ConvBN(mid, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class MobileFaceNet(nn.Module):
    """MobileFaceNet; ``variant`` picks a spec from ``VARIANTS``, keyword arguments override its fields.

    Modules: ``stem`` (conv, dw[, pointwise]), ``stages`` (Sequential of Sequentials of ``Bottleneck``),
    ``head`` (conv 1x1 PReLU, linear GDConv, [pointwise], linear 1x1 embedding).
    """

    def __init__(self, variant: str = "standard", *, embed_dim: int | None = None,
                 stages: Sequence[StageSpec] | None = None, stem_channels: int | None = None,
                 head_channels: int | None = None, extra_pointwise: bool | None = None,
                 input_size: int = 112, same_pad: bool = True):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown MobileFaceNet variant {variant!r}; known: {sorted(VARIANTS)}")
        overrides = {"embed_dim": embed_dim, "stages": None if stages is None else tuple(stages),
                     "stem_channels": stem_channels, "head_channels": head_channels,
                     "extra_pointwise": extra_pointwise}
        spec = dataclasses.replace(VARIANTS[variant], **{k: v for k, v in overrides.items() if v is not None})
        self.spec, self.variant, self.input_size, self.same_pad = spec, variant, input_size, same_pad

        size = input_size
        c = spec.stem_channels
        stem: OrderedDict[str, nn.Module] = OrderedDict()
        stem["conv"] = ConvBN(3, c, 3, 2, in_size=size, same_pad=same_pad)
        size = math.ceil(size / 2)
        stem["dw"] = ConvBN(c, c, 3, 1, groups=c, in_size=size, same_pad=same_pad)
        if spec.extra_pointwise:
            stem["pointwise"] = ConvBN(c, c, 1, act=False)
        self.stem = nn.Sequential(stem)

        stage_modules = []
        for st in spec.stages:
            blocks = []
            for i in range(st.repeats):
                stride = st.stride if i == 0 else 1
                blocks.append(Bottleneck(c, st.channels, st.expand, stride, st.kernel, size, same_pad))
                size = math.ceil(size / stride)
                c = st.channels
            stage_modules.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stage_modules)
        self.feature_size = size  # spatial size of the last feature map = GDConv kernel

        h = spec.head_channels
        head: OrderedDict[str, nn.Module] = OrderedDict()
        head["conv"] = ConvBN(c, h, 1)
        head["gdconv"] = ConvBN(h, h, size, groups=h, act=False, padding="valid")
        if spec.extra_pointwise:
            head["pointwise"] = ConvBN(h, h, 1, act=False)
        head["embedding"] = ConvBN(h, spec.embed_dim, 1, act=False)
        self.head = nn.Sequential(head)
        self.embed_dim = spec.embed_dim
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal convs, unit BN, PReLU 0.25: a sane start for training from scratch."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()
                m.reset_running_stats()
            elif isinstance(m, nn.PReLU):
                nn.init.constant_(m.weight, 0.25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(f"MobileFaceNet built for {self.input_size}px input, got {tuple(x.shape[-2:])}")
        return self.head(self.stages(self.stem(x))).flatten(1)


@torch.no_grad()
def fold_input_scale(model: MobileFaceNet, scale: float) -> MobileFaceNet:
    """Feed ``model`` inputs ``x / scale`` instead of ``x`` with the same outputs, e.g. scale = 127.5 / 128 for
    weights trained on (x - 127.5) / 128 and inputs normalised as (x - 127.5) / 127.5.

    Exact: the first conv is linear and its zero padding is unchanged by scaling.
    """
    model.stem.conv.conv.weight.mul_(scale)
    return model


def count_params_and_macs(model: nn.Module, input_size: int = 112) -> tuple[int, int]:
    """(parameters, multiply-accumulates of one 1x3xSxS forward), via ``supernet.profile``'s tool-based counters."""
    from supernet.profile import count_macs, count_params

    return count_params(model), count_macs(model, (1, 3, input_size, input_size))
