"""h_gen: a descriptor embedding in, the flat weights theta of a per-user verifier f out."""
from __future__ import annotations

import torch
from torch import nn

from .verifier import VerifierSpec, init_theta


class WeightGenerator(nn.Module):
    """``theta = theta_base + delta_scale * MLP(unit(embedding - input_mean))``.

    The MLP has ``n_linear`` linear layers (4 in the paper) with LayerNorm + GELU between them.
    ``theta_base`` is a learned vector initialised like a freshly built f (He init, zero biases)
    and the last layer starts near zero, so at step 0 every generated f has sensible activations
    (instance norm keeps them unit-scale) and users differ only slightly; training grows the
    per-user part.
    """

    def __init__(self, spec: VerifierSpec, embed_dim: int = 128, hidden: int = 512, n_linear: int = 4,
                 delta_scale: float = 0.1, seed: int = 0):
        super().__init__()
        if n_linear < 2:
            raise ValueError("the generator needs at least 2 linear layers")
        self.spec, self.embed_dim = spec, embed_dim
        self.config = {"embed_dim": embed_dim, "hidden": hidden, "n_linear": n_linear, "delta_scale": delta_scale}
        layers: list[nn.Module] = [nn.LayerNorm(embed_dim)]
        d = embed_dim
        for _ in range(n_linear - 1):
            layers += [nn.Linear(d, hidden), nn.LayerNorm(hidden), nn.GELU()]
            d = hidden
        self.mlp = nn.Sequential(*layers)
        self.out = nn.Linear(d, spec.n_params)
        nn.init.normal_(self.out.weight, std=1e-3)
        nn.init.zeros_(self.out.bias)
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

    @torch.no_grad()
    def set_input_mean(self, embeddings: torch.Tensor) -> None:
        self.input_mean.copy_(embeddings.float().mean(0))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """(U, embed_dim) -> (U, P)."""
        if embedding.dim() != 2 or embedding.shape[1] != self.embed_dim:
            raise ValueError(f"embeddings must be (U, {self.embed_dim}), got {tuple(embedding.shape)}")
        e = torch.nn.functional.normalize(embedding - self.input_mean, dim=1)
        return self.theta_base + self.delta_scale * self.out(self.mlp(e))
