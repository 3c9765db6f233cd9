"""Search spaces by name: each knows its architecture space, its SuperNet and its static subnet.

A SuperNet's config and a subnet's ``net_config`` carry ``"kind"`` (the space's name; configs
written before there was a choice have none and are the OFA MobileNetV3), so weights rebuild
themselves without the caller knowing which space they came from.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from torch import nn

DEFAULT_KIND = "ofa_mbv3"


@dataclass(frozen=True)
class SpaceKind:
    """How to build one space's objects from JSON-able configs."""

    space: Callable[[Mapping[str, Any] | None], Any]          # space config (or None: default) -> space
    supernet: Callable[[Mapping[str, Any]], nn.Module]         # supernet_config -> elastic net
    static: Callable[[Mapping[str, Any]], nn.Module]           # net_config -> static subnet
    geometry: Callable[..., Any]    # (space, input_size, width_mult, embed_dim) -> LUT block shapes
    description: str


def _mbv3() -> SpaceKind:
    from ..elastic import OFAMobileNetV3
    from ..static import StaticMobileNetV3, space_from_config

    def space(config):
        return space_from_config({"space": config} if config else {})

    def supernet(c):
        return OFAMobileNetV3(space=space_from_config(c), width_mult=float(c.get("width_mult", 1.0)),
                              embed_dim=int(c.get("embed_dim", 128)), input_size=int(c.get("input_size", 112)))

    def geometry(sp, input_size, width_mult, embed_dim):
        from ..nas.efficiency import NetworkGeometry

        return NetworkGeometry(sp, width_mult, input_size, embed_dim)

    return SpaceKind(space, supernet, StaticMobileNetV3, geometry,
                     "OFA MobileNetV3 (Cai et al. 2020), trained from scratch: the GPU baseline")


def _mfn() -> SpaceKind:
    from .mobilefacenet import ElasticMobileFaceNet, MobileFaceNetGeometry, MobileFaceNetSpace, StaticMobileFaceNet

    def supernet(c):
        return ElasticMobileFaceNet(MobileFaceNetSpace.from_config(c.get("space")), int(c.get("input_size", 112)),
                                    int(c.get("embed_dim", 192)), bool(c.get("normalize", True)))

    def geometry(sp, input_size, width_mult, embed_dim):
        return MobileFaceNetGeometry(sp, input_size, embed_dim)

    return SpaceKind(MobileFaceNetSpace.from_config, supernet, StaticMobileFaceNet, geometry,
                     "elastic MobileFaceNet seeded from pretrained weights: depth x expand (x kernel)")


# Factories, so that importing the registry does not import every space's modules.
SPACES: dict[str, Callable[[], SpaceKind]] = {"ofa_mbv3": _mbv3, "elastic_mfn": _mfn}


def space_kind(name: str | None) -> SpaceKind:
    name = name or DEFAULT_KIND
    if name not in SPACES:
        raise ValueError(f"unknown search space {name!r}; known: {sorted(SPACES)}")
    return SPACES[name]()


def kind_of(config: Mapping[str, Any]) -> str:
    return str(config.get("kind") or DEFAULT_KIND)


def build_supernet(config: Mapping[str, Any]) -> nn.Module:
    """The elastic SuperNet a ``supernet_config()`` describes."""
    return space_kind(kind_of(config)).supernet(config)


def build_static(net_config: Mapping[str, Any]) -> nn.Module:
    """The static subnet a ``net_config`` describes (weights are loaded separately)."""
    return space_kind(kind_of(net_config)).static(net_config)


def space_of(config: Mapping[str, Any]) -> Any:
    """The search space of a SuperNet config or a subnet's net_config."""
    return space_kind(kind_of(config)).space(config.get("space"))
