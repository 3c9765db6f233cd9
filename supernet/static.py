"""A standalone MobileNetV3 subnet rebuilt from its small JSON config.

``net_config`` = ``{"arch": {"d","k","e"}, "width_mult", "input_size", "embed_dim"}`` plus the
search-space constants it was made with. ``build_static(net_config)`` gives the module;
weights travel separately as safetensors.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from .layers import ConvBNAct, EmbeddingHead, MBConv, make_divisible, mid_channels
from .space import DEFAULT_SPACE, OFA_MBV3_STAGES, SearchSpace, StageSpec


def space_from_config(net_config: Mapping[str, Any]) -> SearchSpace:
    if not net_config.get("space"):
        return DEFAULT_SPACE
    sp = dict(net_config["space"])
    stages = tuple(StageSpec(**s) for s in sp.pop("stages", [s.__dict__ for s in OFA_MBV3_STAGES]))
    return SearchSpace(stages=stages, **{k: tuple(v) if isinstance(v, list) else v for k, v in sp.items()})


def space_to_config(space: SearchSpace) -> dict[str, Any]:
    return {"depths": list(space.depths), "kernels": list(space.kernels), "expands": list(space.expands),
            "stages": [dict(s.__dict__) for s in space.stages], "stem_width": space.stem_width,
            "final_expand_width": space.final_expand_width, "feature_width": space.feature_width}


def channel_plan(space: SearchSpace, width_mult: float) -> dict[str, Any]:
    w = lambda c: make_divisible(c * width_mult, 8)  # noqa: E731
    return {"stem": w(space.stem_width), "stages": [w(s.width) for s in space.stages],
            "final_expand": w(space.final_expand_width), "feature": w(space.feature_width)}


class StaticMobileNetV3(nn.Module):
    def __init__(self, net_config: Mapping[str, Any]):
        super().__init__()
        self.net_config = dict(net_config)
        space = space_from_config(net_config)
        arch = space.validate(net_config["arch"])
        plan = channel_plan(space, float(net_config.get("width_mult", 1.0)))
        self.stem = ConvBNAct(3, plan["stem"], 3, 2, act="hswish")
        self.first_block = MBConv(plan["stem"], plan["stem"], plan["stem"], 3, 1, "relu", False, expand_layer=False)
        blocks = []
        cin = plan["stem"]
        for s, j, k, e in space.active_blocks(arch):
            stage = space.stages[s]
            cout = plan["stages"][s]
            blocks.append(MBConv(cin, mid_channels(cin, e), cout, k, stage.stride if j == 0 else 1, stage.act, stage.se))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.final_expand = ConvBNAct(cin, plan["final_expand"], 1, act="hswish")
        self.head = EmbeddingHead(plan["final_expand"], plan["feature"], int(net_config.get("embed_dim", 128)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_block(self.stem(x))
        for block in self.blocks:
            x = block(x)
        return self.final_expand(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def build_static(net_config: Mapping[str, Any]) -> StaticMobileNetV3:
    return StaticMobileNetV3(net_config)
