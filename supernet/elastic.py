"""The elastic (weight-shared) OFA MobileNetV3 and subnet extraction.

Elastic kernel: a smaller depthwise kernel is the centre of the larger one passed through a
learned per-layer linear transform (7->5, then 5->3), initialised to identity (OFA).
Elastic expand: the first ``mid`` channels of the expansion are used; before shrinking the
expand ratio, channels are sorted by importance so the kept ones are the useful ones.
Elastic depth: a stage runs its first ``d`` blocks.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ACTIVATIONS, ConvBNAct, EmbeddingHead, MBConv, mid_channels, se_channels, shrink_kernel
from .layers import copy_sliced_bn as _copy_bn
from .layers import sliced_batch_norm as _bn
from .space import DEFAULT_SPACE, SearchSpace
from .static import StaticMobileNetV3, channel_plan, space_to_config


class DynamicMBConv(nn.Module):
    """An MBConv holding the largest kernel/expansion; runs any (kernel, expand) of the space."""

    def __init__(self, cin: int, cout: int, kernels: Sequence[int], expands: Sequence[int], stride: int, act: str,
                 se: bool):
        super().__init__()
        self.cin, self.cout, self.stride, self.act_name, self.use_se = cin, cout, stride, act, se
        self.kernels = sorted(kernels)
        self.expands = sorted(expands)
        self.max_mid = mid_channels(cin, max(expands))
        k_max = max(kernels)
        self.expand_conv = nn.Conv2d(cin, self.max_mid, 1, bias=False)
        self.expand_bn = nn.BatchNorm2d(self.max_mid)
        self.depth_weight = nn.Parameter(torch.empty(self.max_mid, 1, k_max, k_max))
        nn.init.kaiming_normal_(self.depth_weight, mode="fan_out")
        self.depth_bn = nn.BatchNorm2d(self.max_mid)
        # Kernel transforms, from each kernel to the next smaller one (e.g. "7to5", "5to3").
        self.kernel_transforms = nn.ParameterDict({
            f"{big}to{small}": nn.Parameter(torch.eye(small * small))
            for big, small in zip(self.kernels[::-1][:-1], self.kernels[::-1][1:])})
        if se:
            max_red = se_channels(self.max_mid)
            self.se_reduce = nn.Conv2d(self.max_mid, max_red, 1, bias=True)
            self.se_expand = nn.Conv2d(max_red, self.max_mid, 1, bias=True)
        self.project_conv = nn.Conv2d(self.max_mid, cout, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(cout)
        self.act = ACTIVATIONS[act]()
        self.residual = stride == 1 and cin == cout
        self.active_kernel = max(kernels)
        self.active_expand = max(expands)

    def depthwise_kernel(self, kernel: int, mid: int) -> torch.Tensor:
        return shrink_kernel(self.depth_weight[:mid], self.kernels, kernel, self.kernel_transforms)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mid = mid_channels(self.cin, self.active_expand)
        k = self.active_kernel
        y = self.act(_bn(F.conv2d(x, self.expand_conv.weight[:mid]), self.expand_bn, mid))
        y = F.conv2d(y, self.depthwise_kernel(k, mid), None, self.stride, k // 2, 1, mid)
        y = self.act(_bn(y, self.depth_bn, mid))
        if self.use_se:
            red = se_channels(mid)
            w = y.mean((2, 3), keepdim=True)
            w = F.relu(F.conv2d(w, self.se_reduce.weight[:red, :mid], self.se_reduce.bias[:red]))
            w = F.hardsigmoid(F.conv2d(w, self.se_expand.weight[:mid, :red], self.se_expand.bias[:mid]))
            y = y * w
        y = _bn(F.conv2d(y, self.project_conv.weight[:, :mid]), self.project_bn, self.cout)
        return x + y if self.residual else y

    @torch.no_grad()
    def sort_channels(self) -> None:
        """Order expansion channels by importance (L1 norm of their projection weights), OFA style."""
        importance = self.project_conv.weight.abs().sum((0, 2, 3))
        order = torch.argsort(importance, descending=True)
        self.project_conv.weight.copy_(self.project_conv.weight[:, order])
        self.expand_conv.weight.copy_(self.expand_conv.weight[order])
        self.depth_weight.copy_(self.depth_weight[order])
        for bn in (self.expand_bn, self.depth_bn):
            for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
                t.copy_(t[order])
        if self.use_se:
            self.se_reduce.weight.copy_(self.se_reduce.weight[:, order])
            self.se_expand.weight.copy_(self.se_expand.weight[order])
            self.se_expand.bias.copy_(self.se_expand.bias[order])
            red_importance = self.se_expand.weight.abs().sum((0, 2, 3))
            red_order = torch.argsort(red_importance, descending=True)
            self.se_expand.weight.copy_(self.se_expand.weight[:, red_order])
            self.se_reduce.weight.copy_(self.se_reduce.weight[red_order])
            self.se_reduce.bias.copy_(self.se_reduce.bias[red_order])

    @torch.no_grad()
    def to_static(self) -> MBConv:
        mid = mid_channels(self.cin, self.active_expand)
        k = self.active_kernel
        block = MBConv(self.cin, mid, self.cout, k, self.stride, self.act_name, self.use_se)
        block.inverted_bottleneck[0].weight.copy_(self.expand_conv.weight[:mid])
        _copy_bn(block.inverted_bottleneck[1], self.expand_bn, mid)
        block.depth_conv[0].weight.copy_(self.depthwise_kernel(k, mid))
        _copy_bn(block.depth_conv[1], self.depth_bn, mid)
        if self.use_se:
            red = se_channels(mid)
            block.se.reduce.weight.copy_(self.se_reduce.weight[:red, :mid])
            block.se.reduce.bias.copy_(self.se_reduce.bias[:red])
            block.se.expand.weight.copy_(self.se_expand.weight[:mid, :red])
            block.se.expand.bias.copy_(self.se_expand.bias[:mid])
        block.point_linear[0].weight.copy_(self.project_conv.weight[:, :mid])
        _copy_bn(block.point_linear[1], self.project_bn, self.cout)
        return block


class OFAMobileNetV3(nn.Module):
    """The SuperNet. ``set_active(arch)`` picks a subnet; ``get_subnet(arch)`` extracts it."""

    def __init__(self, space: SearchSpace = DEFAULT_SPACE, width_mult: float = 1.0, embed_dim: int = 128,
                 input_size: int = 112):
        super().__init__()
        self.space, self.width_mult, self.embed_dim, self.input_size = space, width_mult, embed_dim, input_size
        plan = channel_plan(space, width_mult)
        self.stem = ConvBNAct(3, plan["stem"], 3, 2, act="hswish")
        self.first_block = MBConv(plan["stem"], plan["stem"], plan["stem"], 3, 1, "relu", False, expand_layer=False)
        stages = []
        cin = plan["stem"]
        for s, stage in enumerate(space.stages):
            blocks = []
            for j in range(space.max_depth):
                blocks.append(DynamicMBConv(cin, plan["stages"][s], space.kernels, space.expands,
                                            stage.stride if j == 0 else 1, stage.act, stage.se))
                cin = plan["stages"][s]
            stages.append(nn.ModuleList(blocks))
        self.stages = nn.ModuleList(stages)
        self.final_expand = ConvBNAct(cin, plan["final_expand"], 1, act="hswish")
        self.head = EmbeddingHead(plan["final_expand"], plan["feature"], embed_dim)
        self.active_arch = space.largest()

    def set_active(self, arch: Mapping[str, Sequence[int]]) -> None:
        arch = self.space.validate(arch)
        for s, blocks in enumerate(self.stages):
            for j, block in enumerate(blocks):
                slot = s * self.space.max_depth + j
                block.active_kernel = arch["k"][slot]
                block.active_expand = arch["e"][slot]
        self.active_arch = arch

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_block(self.stem(x))
        for s, blocks in enumerate(self.stages):
            for block in blocks[: self.active_arch["d"][s]]:
                x = block(x)
        return self.final_expand(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def sort_channels(self) -> None:
        for blocks in self.stages:
            for block in blocks:
                block.sort_channels()

    def net_config(self, arch: Mapping[str, Sequence[int]] | None = None) -> dict[str, Any]:
        arch = self.space.validate(arch or self.active_arch)
        return {"arch": arch, "width_mult": self.width_mult, "input_size": self.input_size,
                "embed_dim": self.embed_dim, "space": space_to_config(self.space)}

    def geometry(self):
        """Block shapes for latency LUTs (``supernet.nas.efficiency``)."""
        from .nas.efficiency import NetworkGeometry

        return NetworkGeometry(self.space, self.width_mult, self.input_size, self.embed_dim)

    def supernet_config(self) -> dict[str, Any]:
        return {"width_mult": self.width_mult, "input_size": self.input_size, "embed_dim": self.embed_dim,
                "space": space_to_config(self.space)}

    @torch.no_grad()
    def get_subnet(self, arch: Mapping[str, Sequence[int]]) -> StaticMobileNetV3:
        """A standalone static module with this arch's weights (BN statistics as trained; recalibrate)."""
        self.set_active(arch)
        net = StaticMobileNetV3(self.net_config(arch))
        net.stem.load_state_dict(self.stem.state_dict())
        net.first_block.load_state_dict(self.first_block.state_dict())
        i = 0
        for s, blocks in enumerate(self.stages):
            for block in blocks[: self.active_arch["d"][s]]:
                net.blocks[i].load_state_dict(block.to_static().state_dict())
                i += 1
        net.final_expand.load_state_dict(self.final_expand.state_dict())
        net.head.load_state_dict(self.head.state_dict())
        return net.train(self.training)
