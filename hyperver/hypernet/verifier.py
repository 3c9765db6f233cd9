"""The tiny per-user verifier f and its flat weight vector theta.

f: aligned face crop -> one logit ("is this the enrolled person?"). A stack of strided 3x3
grouped convolutions, each followed by affine-free instance normalisation (non-parametric:
nothing per-user to store beyond the convs) and ReLU, a 1x1 conv + ReLU, a head that turns the
last feature map into one value per channel (see ``HEADS``) and a 2-layer classifier. The 1x1
conv is deliberately NOT normalised: instance norm right before global pooling zeroes every
channel's spatial mean, so the pooled features would keep only each channel's distribution
shape (they barely vary across images, and training stalled at chance). All of f's weights live
in ONE flat vector theta whose layout is ``VerifierSpec.layout()``: a list of (name, shape) in
order, weights before biases per layer::

    conv{i}.weight (C_out, C_in/groups, k, k), conv{i}.bias (C_out,)  for each conv
    mix.weight (C, C, 1, 1), mix.bias (C,)
    gdconv.weight (C, 1, K, K), gdconv.bias (C,)                      head "gdconv" only
    fc1.weight (H, C), fc1.bias (H,), fc2.weight (1, H), fc2.bias (1,)

Heads: ``gap`` (f v2) averages each channel over the map; ``gdconv`` (f v3, MobileFaceNet's
global depthwise convolution) weighs every position of the K x K final map per channel, since
an aligned face keeps its geometry (eyes, nose, mouth land on the same cells).

The same definition serves enrollment (one theta), training (many thetas at once, see
``batched``) and export (the layout tells where each tensor sits in the TFLite/ONNX buffers;
``hyperver.device.templates`` rebuilds each head in tf.keras and ONNX).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Callable, Mapping

import torch
import torch.nn.functional as F

Layout = list[tuple[str, tuple[int, ...]]]


# -- heads: the last feature map (N, C, K, K) -> (N, C) -----------------------------------------
def _gap_layout(channels: int, final_size: int) -> Layout:
    return []


def _gap_pool(w: Mapping[str, torch.Tensor], h: torch.Tensor) -> torch.Tensor:
    return h.mean((2, 3))


def _gdconv_layout(channels: int, final_size: int) -> Layout:
    return [("gdconv.weight", (channels, 1, final_size, final_size)), ("gdconv.bias", (channels,))]


def _gdconv_pool(w: Mapping[str, torch.Tensor], h: torch.Tensor) -> torch.Tensor:
    # groups = the map's channels: C for one verifier, U*C for ``batched``'s stacked users.
    return F.conv2d(h, w["gdconv.weight"], w["gdconv.bias"], groups=h.shape[1]).flatten(1)


@dataclass(frozen=True)
class Head:
    """One way to pool f's last map. ``pool`` gets the head's tensors in conv shape (batched
    users stacked along the channels, as ``batched`` stacks the convs) and the map (N, C', K, K)."""
    layout: Callable[[int, int], Layout]     # (channels, final map size) -> tensors between mix and fc1
    pool: Callable[[Mapping[str, torch.Tensor], torch.Tensor], torch.Tensor]
    version: str                             # prefix of f's version string


HEADS: dict[str, Head] = {
    "gap": Head(_gap_layout, _gap_pool, "f-v2"),          # global average pooling
    "gdconv": Head(_gdconv_layout, _gdconv_pool, "f-v3"),  # global depthwise conv (MobileFaceNet)
}


@dataclass(frozen=True)
class VerifierSpec:
    input_size: int = 64
    channels: tuple[int, ...] = (16, 32, 64, 64)
    groups: tuple[int, ...] = (1, 2, 4, 4)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    kernel: int = 3
    hidden: int = 32
    eps: float = 1e-5
    head: str = "gap"

    def __post_init__(self):
        if not (len(self.channels) == len(self.groups) == len(self.strides)):
            raise ValueError("channels, groups and strides need one entry per conv")
        cin = 3
        for c, g in zip(self.channels, self.groups):
            if cin % g or c % g:
                raise ValueError(f"groups={g} must divide both {cin} input and {c} output channels")
            cin = c
        if self.head not in HEADS:
            raise ValueError(f"unknown verifier head {self.head!r}; choose one of {sorted(HEADS)}")

    @classmethod
    def from_dict(cls, d: dict) -> "VerifierSpec":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown verifier spec keys {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def to_dict(self) -> dict:
        """JSON-ready fields. An f v2 spec (head "gap") leaves ``head`` out, so it serialises (and
        digests into its version) exactly as before heads existed: code that predates them still
        reads its files."""
        out = json.loads(json.dumps(asdict(self)))
        if out["head"] == "gap":
            del out["head"]
        return out

    @property
    def final_size(self) -> int:
        """Side of the last feature map (every conv pads kernel // 2)."""
        size, pad = self.input_size, self.kernel // 2
        for s in self.strides:
            size = (size + 2 * pad - self.kernel) // s + 1
        return size

    def head_layout(self) -> Layout:
        """The head's own tensors (between mix and fc1 in ``layout``)."""
        return HEADS[self.head].layout(self.channels[-1], self.final_size)

    def layout(self) -> Layout:
        out, cin = [], 3
        for i, (c, g) in enumerate(zip(self.channels, self.groups)):
            out += [(f"conv{i}.weight", (c, cin // g, self.kernel, self.kernel)), (f"conv{i}.bias", (c,))]
            cin = c
        out += [("mix.weight", (cin, cin, 1, 1)), ("mix.bias", (cin,))]
        out += self.head_layout()
        out += [("fc1.weight", (self.hidden, cin)), ("fc1.bias", (self.hidden,)),
                ("fc2.weight", (1, self.hidden)), ("fc2.bias", (1,))]
        return out

    @property
    def n_params(self) -> int:
        return sum(int(torch.Size(s).numel()) for _, s in self.layout())

    @property
    def version(self) -> str:
        """Identifies f's architecture and theta layout; a user model for another version is refused."""
        # An f v2 spec digests as it did before heads existed (see ``to_dict``): its version must
        # not move, the shipped generator and signed artifacts carry it.
        digest = hashlib.sha1(json.dumps([self.to_dict(), self.layout()]).encode()).hexdigest()[:10]
        return f"{HEADS[self.head].version}-{digest}"

    def offsets(self) -> dict[str, tuple[int, int, tuple[int, ...]]]:
        pos, out = 0, {}
        for name, shape in self.layout():
            n = int(torch.Size(shape).numel())
            out[name] = (pos, pos + n, shape)
            pos += n
        return out


def unflatten(spec: VerifierSpec, theta: torch.Tensor) -> dict[str, torch.Tensor]:
    """theta (..., P) -> named tensors (..., *shape), views into theta."""
    if theta.shape[-1] != spec.n_params:
        raise ValueError(f"theta has {theta.shape[-1]} values, f {spec.version} needs {spec.n_params}")
    lead = theta.shape[:-1]
    return {name: theta[..., a:b].reshape(*lead, *shape) for name, (a, b, shape) in spec.offsets().items()}


def init_theta(spec: VerifierSpec, generator: torch.Generator | None = None) -> torch.Tensor:
    """A theta with He-initialised weights and zero biases (what a freshly built f would hold).
    fan_in is every weight's shape past its output axis: K*K for the head's depthwise conv."""
    parts = []
    for name, shape in spec.layout():
        if name.endswith(".bias"):
            parts.append(torch.zeros(shape).flatten())
        else:
            fan_in = int(torch.Size(shape[1:]).numel())
            gain = 1.0 if name.startswith("fc2") else 2.0 ** 0.5
            parts.append((torch.randn(shape, generator=generator) * gain / fan_in ** 0.5).flatten())
    return torch.cat(parts)


def normalised_layers(spec: VerifierSpec) -> frozenset[str]:
    """The layers whose output goes through the affine-free instance norm in ``hidden_features``: a
    per-output-channel scale of their weights, and their biases, are undone by it (no effect on f)."""
    return frozenset(f"conv{i}" for i in range(len(spec.channels)))


def hidden_features(spec: VerifierSpec, w: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """f up to fc1 + ReLU: images (N, 3, S, S) -> (N, hidden); ``w`` holds the layout's tensors."""
    h = x
    for i, (g, s) in enumerate(zip(spec.groups, spec.strides)):
        h = F.conv2d(h, w[f"conv{i}.weight"], w[f"conv{i}.bias"], stride=s, padding=spec.kernel // 2, groups=g)
        h = F.relu(F.instance_norm(h, eps=spec.eps))
    h = F.relu(F.conv2d(h, w["mix.weight"], w["mix.bias"]))  # no norm here: see the module docstring
    h = HEADS[spec.head].pool(w, h)
    return F.relu(F.linear(h, w["fc1.weight"], w["fc1.bias"]))


def forward(spec: VerifierSpec, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """One verifier (theta of shape (P,)) on images x (N, 3, S, S) in [-1, 1] -> logits (N,)."""
    w = unflatten(spec, theta)
    return F.linear(hidden_features(spec, w, x), w["fc2.weight"], w["fc2.bias"]).squeeze(-1)


class VerifierModule(torch.nn.Module):
    """f as an ordinary module (for counting tools and export); its parameters follow the layout."""

    def __init__(self, spec: VerifierSpec, theta: torch.Tensor | None = None):
        super().__init__()
        self.spec = spec
        theta = init_theta(spec) if theta is None else theta.detach().float()
        for name, tensor in unflatten(spec, theta).items():
            self.register_parameter(name.replace(".", "_"), torch.nn.Parameter(tensor.clone()))

    def theta(self) -> torch.Tensor:
        return torch.cat([getattr(self, n.replace(".", "_")).detach().flatten() for n, _ in self.spec.layout()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return forward(self.spec, torch.cat([getattr(self, n.replace(".", "_")).flatten()
                                            for n, _ in self.spec.layout()]), x)
