"""f's body trained as one shared embedding model (distillation to the teacher + ArcFace).

Two uses: (1) the ablation "f trained directly as a small embedding model"; (2) the start of
the hypernetwork's shared weights ``theta_base``. With 900 identities, the per-user BCE signal
alone barely teaches f's convolutions what a face identity looks like (training sat at chance
for hundreds of steps); the teacher's 128-D embeddings are a much denser signal. Starting from
a body that already embeds faces, each generated verifier begins as "embedding + per-user
linear head" and training specialises it.
"""
from __future__ import annotations

import json
import math
import time
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from .verifier import VerifierModule, VerifierSpec, hidden_features


class EmbeddingF(nn.Module):
    """f's body (same grouped convs, instance norm, 1x1 mix, head, fc1) with a linear
    embedding layer into the teacher's space instead of the one-logit output."""

    def __init__(self, spec: VerifierSpec, embed_dim: int):
        super().__init__()
        self.spec = spec
        self.body = VerifierModule(spec)
        self.embed = nn.Linear(spec.hidden, embed_dim)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        w = {n: getattr(self.body, n.replace(".", "_")) for n, _ in self.spec.layout()}
        return hidden_features(self.spec, w, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.embed(self.hidden(x)), dim=1)

    def n_params(self) -> int:
        # fc2 (the verifier's logit) is unused here: count only what the embedding model runs.
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith("body.fc2"))

    def body_theta(self) -> dict[str, torch.Tensor]:
        """f's tensors except the logit layer, by layout name (to seed theta_base)."""
        return {n: getattr(self.body, n.replace(".", "_")).detach().clone()
                for n, _ in self.spec.layout() if not n.startswith("fc2")}

    @torch.no_grad()
    def embed_images(self, images_uint8: torch.Tensor, chunk: int = 512) -> np.ndarray:
        from .data import to_unit_range

        was = self.training
        self.eval()
        out = torch.cat([self(to_unit_range(images_uint8[i:i + chunk])) for i in range(0, len(images_uint8), chunk)])
        self.train(was)
        return out.numpy()


def train_embedding_f(cfg: Config, steps: int, batch: int = 256, log: Callable[[str], None] = print,
                      progress: bool = True) -> tuple[EmbeddingF, dict[str, Any]]:
    """Train f's body as an embedding model on the hypernetwork's training images; the best
    state on LFW set 5 (pair accuracy of cosine scores) is returned."""
    from tqdm import tqdm

    from ..descriptor.data import augment
    from ..descriptor.loss import DistillArcFaceLoss
    from ..eval.metrics import best_accuracy_threshold
    from .data import load_hypernet_data, to_unit_range
    from .train import _optimizer, validation_pairs

    hc = dict(cfg.get_path("hypernet"))
    torch.manual_seed(int(hc["seed"]))
    spec = VerifierSpec.from_dict(hc["f"])
    # The same images as the hypernetwork: labelled identities (+ UTKFace when the recipe uses it).
    data = load_hypernet_data(cfg, hc["sources"], hc["backbone"], spec.input_size, teacher=hc["teacher"],
                              limit_identities=hc["limit_identities"],
                              identity_fraction=hc["identity_fraction"], seed=int(hc["seed"]))
    extra = (load_hypernet_data(cfg, ["utkface"], hc["backbone"], spec.input_size, min_images=0, teacher=hc["teacher"])
             if int(hc["extra_pseudo_identities"]) > 0 else None)
    images = data.images if extra is None else torch.cat([data.images, extra.images])
    teacher = data.teacher if extra is None else torch.cat([data.teacher, extra.teacher])
    labels = torch.from_numpy(data.identity if extra is None else np.r_[data.identity, extra.identity])
    model = EmbeddingF(spec, teacher.shape[1])
    loss_fn = DistillArcFaceLoss(len(data.members), teacher.shape[1], teacher.mean(0))
    opt = _optimizer(list(model.parameters()) + list(loss_fn.parameters()), hc["optimizer"])
    val = validation_pairs(cfg, hc["backbone"], spec.input_size, hc["val_limit_pairs"])
    warm = max(1, steps // 10)
    gen = torch.Generator().manual_seed(int(hc["seed"]))
    best, best_state, t0 = -1.0, None, time.time()
    eval_every = max(1, min(int(hc["eval_every"]), steps))
    for step in tqdm(range(steps), desc="f body as embedding model", disable=not progress):
        lr = float(hc["optimizer"]["lr"]) * ((step + 1) / warm if step < warm else
                                             0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm))))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, len(images), (batch,), generator=gen)
        x = augment(to_unit_range(images[idx]), gen, **hc["augmentation"])
        loss, _ = loss_fn(model(x), {"teacher": teacher[idx], "label": labels[idx]})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            e = model.embed_images(val.data.images)
            _, acc = best_accuracy_threshold(np.sum(e[val.a] * e[val.b], axis=1), val.same)
            log(json.dumps({"pretrain_step": step + 1, "val_accuracy": acc}))
            if acc > best:
                best, best_state = acc, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return model.eval(), {"best_val_accuracy": best, "train_seconds": time.time() - t0, "steps": steps}
