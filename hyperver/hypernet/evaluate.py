"""LFW evaluation of the hypernetwork: enroll from one image of a pair, score the other."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..config import Config
from ..data import LFWSplit, open_dataset, parse_folds
from ..eval.metrics import kfold_verification, threshold_at_far
from .data import HypernetData, resize_crops
from .generator import WeightGenerator
from .train import pair_logits


def evaluate_pairs(cfg: Config, gen: WeightGenerator, backbone: str, folds: str = "6-10") -> dict[str, Any]:
    """One-way (enroll a, score b), symmetric (mean of both ways) and descriptor cosine on the folds."""
    split = LFWSplit(open_dataset(cfg, "lfw"))
    fold_ids = parse_folds(folds)
    records = split.records_of_sets(fold_ids)
    data = _data_for_records(cfg, records, backbone, gen.spec.input_size)
    index = {r.path: i for i, r in enumerate(records)}
    pairs = split.pairs(fold_ids)
    a = np.array([index[p.a.path] for p in pairs])
    b = np.array([index[p.b.path] for p in pairs])
    same = np.array([p.same for p in pairs])
    fold = np.array([p.fold for p in pairs])
    ab = pair_logits(gen, data, a, b)
    ba = pair_logits(gen, data, b, a)
    emb = data.backbone.numpy()
    cosine = np.sum(emb[a] * emb[b], axis=1)
    out = {}
    for name, scores in (("hypernet", ab), ("hypernet_symmetric", (ab + ba) / 2), ("descriptor", cosine)):
        out[name] = kfold_verification(scores, same, fold).summary()
    out["_scores"] = {"hypernet": ab, "hypernet_symmetric": (ab + ba) / 2, "descriptor": cosine, "same": same}
    return out


def _data_for_records(cfg: Config, records, backbone: str, size: int) -> HypernetData:
    """Crops at f's size + backbone embeddings of LFW records (no identity structure needed)."""
    import torch

    from ..features import FeatureCache

    cache = FeatureCache(cfg, "lfw", backbone)
    emb = torch.from_numpy(cache.embeddings(records))
    return HypernetData(resize_crops(cache.crops(records), size), emb, emb, np.full(len(records), -1), [])


def validation_threshold(cfg: Config, gen: WeightGenerator, backbone: str, far: float = 1e-3) -> float:
    """Decision threshold on the logit for a target false-accept rate, chosen on LFW set 5 (validation)."""
    split = LFWSplit(open_dataset(cfg, "lfw"))
    records = split.records("val")
    data = _data_for_records(cfg, records, backbone, gen.spec.input_size)
    rng = np.random.default_rng(0)
    ids = np.array([r.identity for r in records])
    a, b = rng.integers(0, len(records), 20000), rng.integers(0, len(records), 20000)
    keep = ids[a] != ids[b]
    return threshold_at_far(pair_logits(gen, data, a[keep], b[keep]), far)
