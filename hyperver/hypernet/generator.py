"""h_gen: a descriptor embedding in, the flat weights theta of a per-user verifier f out.

The MLP trunk is shared; how its features become theta is the generator's *output*
parametrisation (``OUTPUTS``, chosen by ``hypernet.generator.output``):

- ``full``: one linear layer predicts a change for every one of f's P weights (hidden x P params);
- ``lowrank``: the per-user change lies in a learned rank-r subspace of theta (P x r + hidden x r);
- ``modulation``: FiLM-like, one scale per channel of each weight tensor and one shift per bias of a
  shared base f, placed where f's instance norm lets them act (a few hundred predicted values).

The smaller outputs are meant to generalise from few identities (issue #17, item 4).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..errors import ConfigError
from .verifier import VerifierSpec, init_theta, normalised_layers

# Std of the last layer's init: the per-user change starts small next to theta_base.
_OUT_INIT_STD = 1e-3


class FullOutput(nn.Linear):
    """``theta = theta_base + delta_scale * W h``: a change for every parameter of f.

    A plain ``nn.Linear`` so its state-dict keys stay ``out.weight`` / ``out.bias`` and the
    generator files written before outputs existed load unchanged."""

    def __init__(self, spec: VerifierSpec, hidden: int, delta_scale: float, rank: int):
        super().__init__(hidden, spec.n_params)
        nn.init.normal_(self.weight, std=_OUT_INIT_STD)
        nn.init.zeros_(self.bias)

    def generate(self, features: torch.Tensor, theta_base: torch.Tensor, delta_scale: torch.Tensor) -> torch.Tensor:
        return theta_base + delta_scale * self(features)


class LowRankOutput(nn.Module):
    """``theta = theta_base + delta_scale * (basis @ z)``, ``z = Linear(hidden, rank)(h)``.

    Every user's change lies in the span of ``basis`` (P, rank), shared by all users and learned.
    Like LoRA, one factor starts small (the coefficients) and the other at unit scale, so the
    initial change matches the full output's (entries ~1e-3 * |h|) yet both factors get gradients."""

    def __init__(self, spec: VerifierSpec, hidden: int, delta_scale: float, rank: int):
        super().__init__()
        if rank < 1:
            raise ConfigError(f"hypernet.generator.rank must be >= 1, got {rank}")
        self.coefficients = nn.Linear(hidden, rank)
        nn.init.normal_(self.coefficients.weight, std=_OUT_INIT_STD)
        nn.init.zeros_(self.coefficients.bias)
        # std 1/sqrt(rank): basis @ z has the scale of one coefficient, whatever the rank.
        self.basis = nn.Parameter(torch.randn(spec.n_params, rank) / rank ** 0.5)

    def generate(self, features: torch.Tensor, theta_base: torch.Tensor, delta_scale: torch.Tensor) -> torch.Tensor:
        return theta_base + delta_scale * (self.coefficients(features) @ self.basis.T)


def modulation_slots(spec: VerifierSpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """For each of f's P parameters: the index of the modulation value that moves it, whether it is
    scaled (weights) or shifted (biases), whether it is moved at all, and the number of values.

    A scale must survive f's instance norm (``verifier.normalised_layers``): a conv followed by it is
    scaled per *input* channel (a gain on the previous layer's normalised, rectified map, as FiLM after
    the norm), its bias not at all; the layers after the norm (mix, head) per output channel and per bias.
    Scaling the normalised convs per output channel had no effect on f at all (the first version)."""
    normalised = normalised_layers(spec)
    slot = torch.zeros(spec.n_params, dtype=torch.long)
    scaled = torch.zeros(spec.n_params, dtype=torch.bool)
    moved = torch.zeros(spec.n_params, dtype=torch.bool)
    n_values = 0
    for name, (a, b, shape) in spec.offsets().items():
        layer, kind = name.rsplit(".", 1)
        if kind == "bias":
            if layer not in normalised:
                slot[a:b] = torch.arange(n_values, n_values + (b - a))
                moved[a:b] = True
                n_values += b - a
            continue
        out, per_group = shape[0], shape[1]
        if layer in normalised:     # input channel (group of o) * per_group + j for weight [o, j, ...]
            groups = spec.groups[int(layer.removeprefix("conv"))]
            o, j = torch.meshgrid(torch.arange(out), torch.arange(per_group), indexing="ij")
            index = (o // (out // groups)) * per_group + j
            slot[a:b] = n_values + index[:, :, None, None].expand(shape).flatten()
            n_values += groups * per_group
        else:
            slot[a:b] = torch.arange(n_values, n_values + out).repeat_interleave((b - a) // out)
            n_values += out
        scaled[a:b] = moved[a:b] = True
    return slot, scaled, moved, n_values


class ModulationOutput(nn.Module):
    """Per-layer modulation of the shared base: ``w * (1 + delta_scale * gamma_c)`` per channel c of each
    weight tensor, ``b + delta_scale_b * beta`` per bias, where f's instance norm lets them act
    (``modulation_slots``).

    Users can only re-weight and re-bias f's channels, not change their filters: few values per
    user, so little to fit per identity."""

    def __init__(self, spec: VerifierSpec, hidden: int, delta_scale: float, rank: int):
        super().__init__()
        slot, scaled, moved, n_values = modulation_slots(spec)
        self.values = nn.Linear(hidden, n_values)
        nn.init.normal_(self.values.weight, std=_OUT_INIT_STD)
        nn.init.zeros_(self.values.bias)
        self.scale_strength = float(delta_scale)
        # Derived from the spec, so not saved (and not cast to float by save_generator).
        self.register_buffer("slot", slot, persistent=False)
        self.register_buffer("scaled", scaled, persistent=False)
        self.register_buffer("moved", moved, persistent=False)

    def generate(self, features: torch.Tensor, theta_base: torch.Tensor, delta_scale: torch.Tensor) -> torch.Tensor:
        per_param = self.values(features)[:, self.slot]                        # (U, P)
        # theta_base * (1 + s * gamma) for weights, theta_base + delta_scale * beta for biases.
        coefficient = torch.where(self.scaled, theta_base * self.scale_strength, delta_scale) * self.moved
        return theta_base + coefficient * per_param


@dataclass(frozen=True)
class OutputKind:
    build: Callable[[VerifierSpec, int, float, int], nn.Module]
    uses_rank: bool
    summary: str


OUTPUTS: dict[str, OutputKind] = {
    "full": OutputKind(FullOutput, False, "a change for every parameter (hidden x P)"),
    "lowrank": OutputKind(LowRankOutput, True, "a change in a learned rank-r subspace (P x r + hidden x r)"),
    "modulation": OutputKind(ModulationOutput, False, "a scale per channel and a shift per bias, where the norm lets them act"),
}


def output_kind(name: str) -> OutputKind:
    if name not in OUTPUTS:
        raise ConfigError(f"unknown hypernet.generator.output {name!r}; choose one of {sorted(OUTPUTS)}")
    return OUTPUTS[name]


class WeightGenerator(nn.Module):
    """``theta = theta_base + delta_scale * MLP(unit(embedding - input_mean))`` (output ``full``;
    see ``OUTPUTS`` for the others).

    The MLP has ``n_linear`` linear layers (4 in the paper) with LayerNorm + GELU between them;
    the last one is the output. ``theta_base`` is a learned vector initialised like a freshly
    built f (He init, zero biases) and the output starts near zero, so at step 0 every generated
    f has sensible activations (instance norm keeps them unit-scale) and users differ only
    slightly; training grows the per-user part.
    """

    def __init__(self, spec: VerifierSpec, embed_dim: int = 128, hidden: int = 512, n_linear: int = 4,
                 delta_scale: float = 0.1, seed: int = 0, output: str = "full", rank: int = 64):
        super().__init__()
        if n_linear < 2:
            raise ValueError("the generator needs at least 2 linear layers")
        kind = output_kind(output)
        self.spec, self.embed_dim = spec, embed_dim
        self.config = {"embed_dim": embed_dim, "hidden": hidden, "n_linear": n_linear, "delta_scale": delta_scale,
                       "output": output}
        if kind.uses_rank:
            self.config["rank"] = rank
        layers: list[nn.Module] = [nn.LayerNorm(embed_dim)]
        d = embed_dim
        for _ in range(n_linear - 1):
            layers += [nn.Linear(d, hidden), nn.LayerNorm(hidden), nn.GELU()]
            d = hidden
        self.mlp = nn.Sequential(*layers)
        self.out = kind.build(spec, d, delta_scale, rank)
        gen = torch.Generator().manual_seed(seed)
        self.theta_base = nn.Parameter(init_theta(spec, gen))
        # Per-parameter scale: the change of each weight is proportional to its init scale.
        scale = init_theta(spec, gen).abs().mean() * torch.ones(spec.n_params)
        for name, (a, b, _) in spec.offsets().items():
            if name.endswith(".weight"):
                fan_in = int(torch.Size(spec.offsets()[name][2][1:]).numel())
                scale[a:b] = (2.0 / fan_in) ** 0.5
            else:
                scale[a:b] = 0.1
        self.register_buffer("delta_scale", delta_scale * scale)
        # The descriptor's mean embedding, set from the training data (``set_input_mean``) and
        # saved with the generator. Spaces like dlib's are far from centred (unrelated faces have
        # a high cosine), so raw embeddings differ little from user to user; centred and
        # re-normalised, they differ as much as the people do.
        self.register_buffer("input_mean", torch.zeros(embed_dim))

    @property
    def n_output_params(self) -> int:
        """Learned parameters of the output parametrisation (the part that maps MLP features to theta)."""
        return sum(p.numel() for p in self.out.parameters())

    @torch.no_grad()
    def set_input_mean(self, embeddings: torch.Tensor) -> None:
        self.input_mean.copy_(embeddings.float().mean(0))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """(U, embed_dim) -> (U, P)."""
        if embedding.dim() != 2 or embedding.shape[1] != self.embed_dim:
            raise ValueError(f"embeddings must be (U, {self.embed_dim}), got {tuple(embedding.shape)}")
        e = torch.nn.functional.normalize(embedding - self.input_mean, dim=1)
        return self.out.generate(self.mlp(e), self.theta_base, self.delta_scale)
