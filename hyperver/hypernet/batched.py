"""Many verifiers at once, never a Python loop over users.

Two implementations of the same maths (checked against each other in the tests; the
benchmark ``benchmarks/hypernet_batched.py`` measures both):

- ``stacked``: the U verifiers become ONE network whose convolutions have ``groups = U * g``;
  user u's images sit in channel block u. Instance norm is per (image, channel), so it needs
  no change, nor does either head (average pooling and a depthwise conv are per channel).
- ``vmap``: ``torch.func.vmap`` over :func:`verifier.forward`.

Both accept either a shared image set (every verifier scores the same M images -> (U, M)) or
per-user image sets (x of shape (U, S, 3, H, W) -> (U, S)), the latter for the CPU recipe
where each verifier sees its positives plus a sample of negatives instead of the full matrix.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .verifier import HEADS, VerifierSpec, forward, unflatten


def _stacked_core(spec: VerifierSpec, thetas: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x: (S, U*3, H, W), channel block u = user u's image -> logits (U, S)."""
    U = thetas.shape[0]
    w = unflatten(spec, thetas)  # each (U, *shape)
    h = x
    for i, (g, s) in enumerate(zip(spec.groups, spec.strides)):
        weight = w[f"conv{i}.weight"].reshape(-1, *w[f"conv{i}.weight"].shape[2:])
        h = F.conv2d(h, weight, w[f"conv{i}.bias"].reshape(-1), stride=s, padding=spec.kernel // 2, groups=U * g)
        h = F.relu(F.instance_norm(h, eps=spec.eps))
    mix = w["mix.weight"].reshape(-1, *w["mix.weight"].shape[2:])
    h = F.relu(F.conv2d(h, mix, w["mix.bias"].reshape(-1), groups=U))
    S = h.shape[0]
    # The head's tensors stacked like the convs' (users along the output channels): its pool
    # then sees one map of U*C channels.
    head = {name: w[name].reshape(-1, *w[name].shape[2:]) for name, _ in spec.head_layout()}
    h = HEADS[spec.head].pool(head, h).reshape(S, U, -1)                    # (S, U, C)
    h = F.relu(torch.einsum("suc,uhc->suh", h, w["fc1.weight"]) + w["fc1.bias"])
    out = torch.einsum("suh,uoh->suo", h, w["fc2.weight"]) + w["fc2.bias"]  # (S, U, 1)
    return out[..., 0].T


def stacked_scores(spec: VerifierSpec, thetas: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """thetas (U, P); x (M, 3, H, W) shared -> (U, M), or x (U, S, 3, H, W) per user -> (U, S)."""
    U = thetas.shape[0]
    if x.dim() == 4:
        xs = x.repeat(1, U, 1, 1)                          # (M, U*3, H, W)
    elif x.dim() == 5 and x.shape[0] == U:
        xs = x.transpose(0, 1).reshape(x.shape[1], U * 3, *x.shape[3:])
    else:
        raise ValueError(f"images must be (M, 3, H, W) or (U={U}, S, 3, H, W), got {tuple(x.shape)}")
    return _stacked_core(spec, thetas, xs)


def vmap_scores(spec: VerifierSpec, thetas: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    from torch.func import vmap

    if x.dim() == 4:
        return vmap(lambda t: forward(spec, t, x))(thetas)
    if x.dim() == 5 and x.shape[0] == thetas.shape[0]:
        return vmap(lambda t, xi: forward(spec, t, xi))(thetas, x)
    raise ValueError(f"images must be (M, 3, H, W) or (U, S, 3, H, W), got {tuple(x.shape)}")


IMPLEMENTATIONS = {"stacked": stacked_scores, "vmap": vmap_scores}


def score_matrix(spec: VerifierSpec, thetas: torch.Tensor, x: torch.Tensor, impl: str = "stacked",
                 chunk: int | None = None) -> torch.Tensor:
    """Scores of every verifier on its images, optionally in user chunks to bound memory."""
    fn = IMPLEMENTATIONS[impl]
    if chunk is None or thetas.shape[0] <= chunk:
        return fn(spec, thetas, x)
    parts = []
    for i in range(0, thetas.shape[0], chunk):
        xi = x if x.dim() == 4 else x[i:i + chunk]
        parts.append(fn(spec, thetas[i:i + chunk], xi))
    return torch.cat(parts)
