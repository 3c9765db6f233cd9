"""Training losses of the hypernetwork: weighted BCE over the users x images matrix + weight norm."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def positive_weight(batch_identities: int, beta: float = 2.0) -> float:
    """lambda = 1 - beta / B: positives are ~1/B of each row, so they get most of the weight."""
    if batch_identities <= beta:
        raise ValueError(f"need more than beta={beta} identities per batch, got {batch_identities}")
    return 1.0 - beta / batch_identities


def weighted_bce(logits: torch.Tensor, targets: torch.Tensor, lam: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``lam * BCE`` on positive cells + ``(1 - lam) * BCE`` on negative cells, averaged per class.

    ``targets`` may be soft (e.g. teacher similarities); a cell's class is ``target >= 0.5``.
    ``mask`` selects the cells that exist (per-user sampled negatives).
    """
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    mask = torch.ones_like(targets, dtype=torch.bool) if mask is None else mask
    pos = (targets >= 0.5) & mask
    neg = (targets < 0.5) & mask
    loss_pos = bce[pos].mean() if pos.any() else logits.sum() * 0
    loss_neg = bce[neg].mean() if neg.any() else logits.sum() * 0
    return lam * loss_pos + (1 - lam) * loss_neg


def theta_norm_penalty(thetas: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared L2 norm of the generated weights (of their change from ``reference`` if given)."""
    d = thetas if reference is None else thetas - reference
    return (d ** 2).sum(1).mean()
