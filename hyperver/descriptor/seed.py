"""Seed a SuperNet's largest subnet with a pretrained face network (model files by name).

Registry: pretrained name -> (the space it fits, how to load it as a PyTorch module fed this
project's input convention, RGB (x - 127.5) / 127.5). Seeding also "unfolds" the deployed
model's folded BatchNorm on real faces so that training in train mode starts from the
pretrained function (``supernet.calibrate.unfold_batchnorm``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

from ..errors import ConfigError


def _mobilefacenet() -> nn.Module:
    from supernet.models import fold_input_scale, mobilefacenet_from_tflite

    from ..model_files import require_model_file

    # The TFLite weights want (x - 127.5) / 128; this project feeds (x - 127.5) / 127.5.
    return fold_input_scale(mobilefacenet_from_tflite(require_model_file("mobilefacenet")), 127.5 / 128)


@dataclass(frozen=True)
class PretrainedSeed:
    space: str                      # the registered search space whose largest subnet it is
    load: Callable[[], nn.Module]   # -> module with the space's full shape, in eval mode
    teacher: str                    # the embedder that computes the same embeddings (its cache = distillation targets)


PRETRAINED_SEEDS: dict[str, PretrainedSeed] = {
    "mobilefacenet": PretrainedSeed("elastic_mfn", _mobilefacenet, "mobilefacenet"),
}


def pretrained_seed(name: str) -> PretrainedSeed:
    if name not in PRETRAINED_SEEDS:
        raise ConfigError(f"unknown supernet.pretrained {name!r}; known: {sorted(PRETRAINED_SEEDS)}")
    return PRETRAINED_SEEDS[name]


@torch.no_grad()
def seed_supernet(net: nn.Module, name: str, calibration: Iterable[torch.Tensor], n_images: int = 512) -> nn.Module:
    """Load pretrained weights ``name`` into ``net``'s largest subnet, with BN unfolded on ``calibration``."""
    from supernet.calibrate import unfold_batchnorm
    from supernet.spaces import kind_of

    seed = pretrained_seed(name)
    kind = kind_of(net.supernet_config())
    if kind != seed.space:
        raise ConfigError(f"supernet.pretrained {name!r} seeds the {seed.space!r} space, not {kind!r} "
                          f"(set supernet.space: {seed.space})")
    model = seed.load()
    unfold_batchnorm(model, calibration, max_images=n_images)
    return net.load_pretrained(model)
