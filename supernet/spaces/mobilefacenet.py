"""An elastic MobileFaceNet: a search space whose largest subnet is a (pretrained) MobileFaceNet.

Stages are MobileFaceNet's three resolutions (Table 1 of Chen et al. 2018, rows 2+3 and 4+5
merged): 64 channels at 28 px (5 blocks), 128 at 14 px (1 + 6 blocks), 128 at 7 px (1 + 2). The
first block of a stage (the strided one) always runs; the later, residual ones are what elastic
depth drops (OFA: a stage runs its first ``d`` blocks).

Elastic expand: ``e`` is the share (percent) of the block's pretrained expansion width that is
used, e.g. 50 = half of the 128 (or 256, 512) channels; channels are sorted by importance before
expand shrinking, so the kept ones are the useful ones (OFA).

Elastic kernel (optional, ``kernels=(3, 5)``): the depthwise weight holds the largest kernel; a
5x5 initialised as the zero-padded pretrained 3x3 keeps the seeded network exact, and the 3x3 is
the 5x5's centre through a learned transform (identity at start), as in OFA.

Stem (3x3 conv, depthwise 3x3, sirius-ai's extra pointwise) and head (1x1 conv to 512, the
global depthwise conv over the 7x7 map, pointwise, linear embedding) are not elastic: the
GDConv's kernel is tied to the feature map, i.e. to the input resolution.

Padding is TensorFlow's SAME computed from each layer's actual input size (the pretrained
weights come from TF, whose stride-2 SAME pads only at the bottom/right).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import copy_sliced_bn, make_divisible, shrink_kernel, sliced_batch_norm
from ..models.mobilefacenet import Bottleneck, ConvBN, MobileFaceNet, StageSpec as MFNRow, tf_same_padding
from .staged import StagedSpace

KIND = "elastic_mfn"


@dataclass(frozen=True)
class MFNStage:
    channels: int
    stride: int          # of the stage's first block
    first_expand: int    # pretrained expansion ratio of the first block
    expand: int          # ... and of the others


# MobileFaceNet's table with the single-block rows merged into the stage they start.
MFN_STAGES = (MFNStage(64, 2, 2, 2), MFNStage(128, 2, 4, 2), MFNStage(128, 2, 4, 2))


@dataclass(frozen=True)
class MobileFaceNetSpace(StagedSpace):
    """The elastic MobileFaceNet space; ``e`` values are percentages of the pretrained expansion."""

    stage_depths: tuple[tuple[int, ...], ...] = ((2, 3, 4, 5), (3, 4, 5, 6, 7), (1, 2, 3))  # type: ignore[assignment]
    kernels: tuple[int, ...] = (3,)
    expands: tuple[int, ...] = (50, 75, 100)
    stages: tuple[MFNStage, ...] = MFN_STAGES
    stem_channels: int = 64
    head_channels: int = 512
    extra_pointwise: bool = True      # sirius-ai's MobileFaceNet_TF (the pretrained TFLite file)

    def __post_init__(self) -> None:
        if len(self.stages) != len(self.stage_depths):
            raise ValueError(f"{len(self.stages)} stages but {len(self.stage_depths)} depth choice lists")
        if max(self.expands) != 100:
            raise ValueError(f"expand choices are percentages of the pretrained width; the largest must be 100, "
                             f"got {list(self.expands)}")

    def block_channels(self, stage: int, block: int, expand_percent: int) -> tuple[int, int, int]:
        """(in, mid, out) channels of a block at an expand choice."""
        st = self.stages[stage]
        cin = (self.stages[stage - 1].channels if stage else self.stem_channels) if block == 0 else st.channels
        full = cin * (st.first_expand if block == 0 else st.expand)
        return cin, make_divisible(full * expand_percent / 100, 8), st.channels

    def to_config(self) -> dict[str, Any]:
        return {"kind": KIND, "stage_depths": [list(c) for c in self.stage_depths], "kernels": list(self.kernels),
                "expands": list(self.expands), "stages": [dataclasses.asdict(s) for s in self.stages],
                "stem_channels": self.stem_channels, "head_channels": self.head_channels,
                "extra_pointwise": self.extra_pointwise}

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> "MobileFaceNetSpace":
        c = dict(config or {})
        c.pop("kind", None)
        unknown = set(c) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown {KIND} space keys: {sorted(unknown)}")
        if "stage_depths" in c:
            c["stage_depths"] = tuple(tuple(int(x) for x in s) for s in c["stage_depths"])
        for key in ("kernels", "expands"):
            if key in c:
                c[key] = tuple(int(x) for x in c[key])
        if "stages" in c:
            c["stages"] = tuple(MFNStage(**s) for s in c["stages"])
        return cls(**c)


def _same_pad(x: torch.Tensor, kernel: int, stride: int) -> tuple[torch.Tensor, int]:
    """TF SAME padding for this input: symmetric -> conv padding; asymmetric -> explicit pad."""
    before, after = tf_same_padding(x.shape[-1], kernel, stride)
    if before == after:
        return x, before
    return F.pad(x, (before, after, before, after)), 0


class DynamicBottleneck(nn.Module):
    """A MobileFaceNet bottleneck holding the largest expansion and kernel; runs any (kernel, expand)."""

    def __init__(self, cin: int, cout: int, max_mid: int, stride: int, kernels: Sequence[int],
                 mids: Mapping[int, int]):
        super().__init__()
        self.cin, self.cout, self.stride, self.max_mid = cin, cout, stride, max_mid
        self.kernels = sorted(kernels)
        self.mids = dict(mids)  # expand choice -> mid channels
        k_max = max(kernels)
        self.expand = ConvBN(cin, max_mid, 1)
        self.depthwise = ConvBN(max_mid, max_mid, k_max, stride, groups=max_mid, padding="valid")
        self.project = ConvBN(max_mid, cout, 1, act=False)
        self.kernel_transforms = nn.ParameterDict({
            f"{big}to{small}": nn.Parameter(torch.eye(small * small))
            for big, small in zip(self.kernels[::-1][:-1], self.kernels[::-1][1:])})
        self.residual = stride == 1 and cin == cout
        self.active_kernel = k_max
        self.active_expand = max(self.mids)

    def depthwise_kernel(self, kernel: int, mid: int) -> torch.Tensor:
        return shrink_kernel(self.depthwise.conv.weight[:mid], self.kernels, kernel, self.kernel_transforms)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mid, k = self.mids[self.active_expand], self.active_kernel
        e, d, p = self.expand, self.depthwise, self.project
        y = F.prelu(sliced_batch_norm(F.conv2d(x, e.conv.weight[:mid]), e.bn, mid), e.act.weight[:mid])
        y, pad = _same_pad(y, k, self.stride)
        y = F.conv2d(y, self.depthwise_kernel(k, mid), None, self.stride, pad, 1, mid)
        y = F.prelu(sliced_batch_norm(y, d.bn, mid), d.act.weight[:mid])
        y = sliced_batch_norm(F.conv2d(y, p.conv.weight[:, :mid]), p.bn, self.cout)
        return x + y if self.residual else y

    @torch.no_grad()
    def load_pretrained(self, block: Bottleneck) -> None:
        """Copy a full-width MobileFaceNet bottleneck; a smaller pretrained kernel is zero-padded to the largest."""
        self.expand.load_state_dict(block.expand.state_dict())
        self.project.load_state_dict(block.project.state_dict())
        self.depthwise.bn.load_state_dict(block.depthwise.bn.state_dict())
        self.depthwise.act.load_state_dict(block.depthwise.act.state_dict())
        w = block.depthwise.conv.weight
        big, small = self.depthwise.conv.weight.shape[-1], w.shape[-1]
        if small > big or (big - small) % 2:
            raise ValueError(f"cannot seed a {big}x{big} depthwise kernel from a {small}x{small} one")
        start = (big - small) // 2
        self.depthwise.conv.weight.zero_()
        self.depthwise.conv.weight[:, :, start:start + small, start:start + small] = w

    @torch.no_grad()
    def sort_channels(self) -> None:
        """Order expansion channels by importance (L1 norm of their projection weights), OFA style."""
        order = torch.argsort(self.project.conv.weight.abs().sum((0, 2, 3)), descending=True)
        self.project.conv.weight.copy_(self.project.conv.weight[:, order])
        for layer in (self.expand, self.depthwise):
            layer.conv.weight.copy_(layer.conv.weight[order])
            layer.act.weight.copy_(layer.act.weight[order])
            for t in (layer.bn.weight, layer.bn.bias, layer.bn.running_mean, layer.bn.running_var):
                t.copy_(t[order])

    @torch.no_grad()
    def to_static(self, in_size: int) -> Bottleneck:
        mid, k = self.mids[self.active_expand], self.active_kernel
        block = Bottleneck(self.cin, self.cout, 1, self.stride, k, in_size, mid=mid)
        for name in ("expand", "depthwise"):
            src, dst = getattr(self, name), getattr(block, name)
            copy_sliced_bn(dst.bn, src.bn, mid)
            dst.act.weight.copy_(src.act.weight[:mid])
        block.expand.conv.weight.copy_(self.expand.conv.weight[:mid])
        block.depthwise.conv.weight.copy_(self.depthwise_kernel(k, mid))
        block.project.conv.weight.copy_(self.project.conv.weight[:, :mid])
        block.project.bn.load_state_dict(self.project.bn.state_dict())
        return block


def _stem_and_head(space: MobileFaceNetSpace, input_size: int, embed_dim: int) -> MobileFaceNet:
    """A MobileFaceNet of the space's stem/head shape (its stages are replaced by the caller)."""
    rows = tuple(MFNRow(s.first_expand, s.channels, 1, s.stride) for s in space.stages)
    return MobileFaceNet("sirius" if space.extra_pointwise else "standard", embed_dim=embed_dim, stages=rows,
                         stem_channels=space.stem_channels, head_channels=space.head_channels,
                         extra_pointwise=space.extra_pointwise, input_size=input_size)


class _Embed(nn.Module):
    """Shared forward: stem -> blocks -> head -> flatten [-> L2 normalise]."""

    normalize: bool
    input_size: int

    def _blocks(self) -> Sequence[nn.Module]:
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self._blocks():
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(f"built for {self.input_size}px input, got {tuple(x.shape[-2:])}")
        z = self.head(self.forward_features(x)).flatten(1)
        return F.normalize(z, dim=1) if self.normalize else z


class ElasticMobileFaceNet(_Embed):
    """The SuperNet. ``set_active(arch)`` picks a subnet; ``get_subnet(arch)`` extracts it."""

    kind = KIND

    def __init__(self, space: MobileFaceNetSpace | None = None, input_size: int = 112, embed_dim: int = 192,
                 normalize: bool = True):
        super().__init__()
        self.space = space or MobileFaceNetSpace()
        self.input_size, self.embed_dim, self.normalize = int(input_size), int(embed_dim), bool(normalize)
        frame = _stem_and_head(self.space, self.input_size, self.embed_dim)
        self.stem, self.head = frame.stem, frame.head
        stages = []
        for s, slots in enumerate(self.space.stage_slots):
            blocks = []
            for j in range(slots):
                cin, max_mid, cout = self.space.block_channels(s, j, 100)
                mids = {e: self.space.block_channels(s, j, e)[1] for e in self.space.expands}
                stride = self.space.stages[s].stride if j == 0 else 1
                blocks.append(DynamicBottleneck(cin, cout, max_mid, stride, self.space.kernels, mids))
            stages.append(nn.ModuleList(blocks))
        self.stages = nn.ModuleList(stages)
        self.active_arch = self.space.largest()

    def _blocks(self) -> list[nn.Module]:
        return [b for s, blocks in enumerate(self.stages) for b in blocks[: self.active_arch["d"][s]]]

    def set_active(self, arch: Mapping[str, Sequence[int]]) -> None:
        arch = self.space.validate(arch)
        for s, blocks in enumerate(self.stages):
            for j, block in enumerate(blocks):
                slot = self.space.slot(s, j)
                block.active_kernel, block.active_expand = arch["k"][slot], arch["e"][slot]
        self.active_arch = arch

    def sort_channels(self) -> None:
        for blocks in self.stages:
            for block in blocks:
                block.sort_channels()

    width_mult = 1.0  # no width multiplier: the channels are the pretrained network's

    def geometry(self) -> "MobileFaceNetGeometry":
        return MobileFaceNetGeometry(self.space, self.input_size, self.embed_dim)

    def supernet_config(self) -> dict[str, Any]:
        return {"kind": KIND, "input_size": self.input_size, "embed_dim": self.embed_dim,
                "normalize": self.normalize, "space": self.space.to_config()}

    def net_config(self, arch: Mapping[str, Sequence[int]] | None = None) -> dict[str, Any]:
        return {**self.supernet_config(), "arch": self.space.validate(arch or self.active_arch)}

    @torch.no_grad()
    def get_subnet(self, arch: Mapping[str, Sequence[int]]) -> "StaticMobileFaceNet":
        """A standalone static module with this arch's weights (BN statistics as trained; recalibrate)."""
        self.set_active(arch)
        net = StaticMobileFaceNet(self.net_config(arch))
        net.stem.load_state_dict(self.stem.state_dict())
        net.head.load_state_dict(self.head.state_dict())
        size = math.ceil(self.input_size / 2)
        for i, block in enumerate(self._blocks()):
            net.blocks[i].load_state_dict(block.to_static(size).state_dict())
            size = math.ceil(size / block.stride)
        return net.train(self.training)

    @torch.no_grad()
    def load_pretrained(self, model: MobileFaceNet) -> "ElasticMobileFaceNet":
        """Make the largest subnet ``model`` exactly (``model`` must have the space's full shape)."""
        blocks = [b for stage in model.stages for b in stage]
        slots = [b for stage in self.stages for b in stage]
        if len(blocks) != len(slots):
            raise ValueError(f"the pretrained net has {len(blocks)} bottlenecks, the space's largest {len(slots)}")
        self.stem.load_state_dict(model.stem.state_dict())
        self.head.load_state_dict(model.head.state_dict())
        for dst, src in zip(slots, blocks):
            dst.load_pretrained(src)
        return self


class StaticMobileFaceNet(_Embed):
    """A standalone subnet rebuilt from its JSON ``net_config`` (weights travel as safetensors)."""

    kind = KIND

    def __init__(self, net_config: Mapping[str, Any]):
        super().__init__()
        self.net_config = dict(net_config)
        space = MobileFaceNetSpace.from_config(net_config.get("space"))
        arch = space.validate(net_config["arch"])
        self.input_size, self.normalize = int(net_config.get("input_size", 112)), bool(net_config.get("normalize", True))
        frame = _stem_and_head(space, self.input_size, int(net_config.get("embed_dim", 192)))
        self.stem, self.head = frame.stem, frame.head
        size = math.ceil(self.input_size / 2)
        blocks = []
        for s, j, k, e in space.active_blocks(arch):
            cin, mid, cout = space.block_channels(s, j, e)
            stride = space.stages[s].stride if j == 0 else 1
            blocks.append(Bottleneck(cin, cout, 1, stride, k, size, mid=mid))
            size = math.ceil(size / stride)
        self.blocks = nn.ModuleList(blocks)

    def _blocks(self) -> nn.ModuleList:
        return self.blocks



class MobileFaceNetGeometry:
    """Shapes of every LUT block (``supernet.nas.efficiency.BlockSpec``) of the space's subnets."""

    def __init__(self, space: MobileFaceNetSpace, input_size: int = 112, embed_dim: int = 192):
        self.space, self.input_size, self.embed_dim = space, int(input_size), int(embed_dim)

    def blocks(self, arch: Mapping[str, Sequence[int]]) -> list:
        from ..nas.efficiency import BlockSpec

        sp = self.space
        pw = int(sp.extra_pointwise)
        size = math.ceil(self.input_size / 2)
        out = [BlockSpec("mfn_stem", self.input_size, 3, size, sp.stem_channels, 3, stride=2, mid=pw)]
        for s, j, k, e in sp.active_blocks(arch):
            cin, mid, cout = sp.block_channels(s, j, e)
            stride = sp.stages[s].stride if j == 0 else 1
            nxt = math.ceil(size / stride)
            out.append(BlockSpec("mfn_block", size, cin, nxt, cout, k, stride=stride, mid=mid))
            size = nxt
        out.append(BlockSpec("mfn_head", size, sp.stages[-1].channels, 1, self.embed_dim, size, mid=pw,
                             width=sp.head_channels))
        return out

    def all_blocks(self):
        """Every distinct block of the space: each block position in every kernel x expand."""
        seen: dict[str, Any] = {}
        largest = self.space.largest()
        for k in self.space.kernels:
            for e in self.space.expands:
                arch = {**largest, "k": [k] * self.space.n_slots, "e": [e] * self.space.n_slots}
                for b in self.blocks(arch):
                    seen.setdefault(b.key, b)
        return iter(seen.values())

    def params(self, arch: Mapping[str, Sequence[int]]) -> int:
        from ..nas.efficiency import block_params

        return sum(block_params(b) for b in self.blocks(arch))
