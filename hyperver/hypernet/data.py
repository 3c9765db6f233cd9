"""Data for the hypernetwork: identities, crops at f's input size, backbone and teacher embeddings."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..config import Config
from ..errors import ConfigError
from ..data import LFWSplit, open_dataset
from ..data.records import ImageRecord
from ..features import FeatureCache


@dataclass
class HypernetData:
    images: torch.Tensor        # (N, S, S, 3) uint8 at f's input size
    backbone: torch.Tensor      # (N, D) h_bb embeddings (unit)
    teacher: torch.Tensor       # (N, Dt) teacher embeddings (unit), for soft targets
    identity: np.ndarray        # (N,) int, -1 = unlabelled
    members: list[np.ndarray]   # image indices per identity

    def __len__(self) -> int:
        return len(self.identity)

    def subset_identities(self, fraction: float, seed: int = 0) -> "HypernetData":
        """A random ``fraction`` of the identities (at least one) with all their images, renumbered."""
        n_keep = max(1, int(round(fraction * len(self.members))))
        keep = np.sort(np.random.default_rng(seed).permutation(len(self.members))[:n_keep])
        rows = np.concatenate([self.members[i] for i in keep])
        remap = np.full(len(self.members), -1, dtype=np.int64)
        remap[keep] = np.arange(n_keep)
        identity = remap[self.identity[rows]]
        return HypernetData(self.images[rows], self.backbone[rows], self.teacher[rows], identity,
                            [np.nonzero(identity == i)[0] for i in range(n_keep)])

    def identity_means(self, space: str = "backbone") -> np.ndarray:
        """Per-identity mean embedding in ``space``: ``backbone`` (h_bb's) or ``teacher``."""
        if space not in ("backbone", "teacher"):
            raise ConfigError(f"identity means come from 'backbone' or 'teacher' embeddings, not {space!r}")
        emb = self.backbone if space == "backbone" else self.teacher
        return np.stack([emb[m].mean(0).numpy() for m in self.members])


def resize_crops(crops: np.ndarray, size: int) -> torch.Tensor:
    x = torch.from_numpy(np.array(crops, dtype=np.uint8, copy=True)).permute(0, 3, 1, 2).float()
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _records(cfg: Config, source: str, split: LFWSplit) -> tuple[str, list[ImageRecord]]:
    if source == "lfw_train":
        return "lfw", split.records("train")
    if source == "lfw_val":
        return "lfw", split.records("val")
    if source == "lfw_test":
        return "lfw", split.records("test")
    return source, open_dataset(cfg, source).records()


def load_hypernet_data(cfg: Config, sources: Sequence[str], backbone: str, size: int, min_images: int = 2,
                       teacher: str = "dlib", workers: int | None = None,
                       limit_identities: int | None = None, identity_fraction: float = 1.0,
                       seed: int = 0) -> HypernetData:
    """Images of the sources' identities with >= ``min_images`` images (0: keep everything, unlabelled).

    ``identity_fraction`` < 1 keeps a random share (by ``seed``) of the labelled identities, for
    measuring how accuracy scales with the number of training people."""
    if not 0.0 < float(identity_fraction) <= 1.0:
        raise ConfigError(f"hypernet.identity_fraction must be in (0, 1], got {identity_fraction}")
    split = LFWSplit(open_dataset(cfg, "lfw"))
    imgs, bb, te, ident = [], [], [], []
    next_id = 0
    for source in sources:
        dataset, records = _records(cfg, source, split)
        if limit_identities and min_images > 0:
            # Limit before aligning/embedding anything: a smoke test must not embed a whole dataset.
            counts: dict[str, int] = {}
            for r in records:
                counts[r.identity] = counts.get(r.identity, 0) + 1
            eligible = [i for i in dict.fromkeys(r.identity for r in records)
                        if i is not None and counts[i] >= min_images]
            keep = set(eligible[:limit_identities])
            records = [r for r in records if r.identity in keep]
        t_cache = FeatureCache(cfg, dataset, teacher)
        b_cache = t_cache if backbone == teacher else FeatureCache(cfg, dataset, backbone)
        t_cache.build(records, workers=workers)
        keys = t_cache.keys_for(records, progress=False)
        ok = [i for i, k in enumerate(keys) if k in t_cache.embed_store]
        records = [records[i] for i in ok]
        if min_images > 0:
            counts: dict[str, int] = {}
            for r in records:
                counts[r.identity] = counts.get(r.identity, 0) + 1
            records = [r for r in records if r.identity is not None and counts[r.identity] >= min_images]
            if limit_identities:
                keep = set(list(dict.fromkeys(r.identity for r in records))[:limit_identities])
                records = [r for r in records if r.identity in keep]
        ids: dict[str, int] = {}
        for r in records:
            if min_images > 0:
                if r.identity not in ids:
                    ids[r.identity] = next_id
                    next_id += 1
                ident.append(ids[r.identity])
            else:
                ident.append(-1)
        imgs.append(resize_crops(t_cache.crops(records), size))
        te.append(torch.from_numpy(t_cache.embeddings(records, build=False)))
        bb.append(torch.from_numpy(b_cache.embeddings(records, workers=workers)))
    identity = np.array(ident, dtype=np.int64)
    members = [np.nonzero(identity == i)[0] for i in range(next_id)]
    data = HypernetData(torch.cat(imgs), torch.cat(bb), torch.cat(te), identity, members)
    if float(identity_fraction) < 1.0 and min_images > 0:
        data = data.subset_identities(float(identity_fraction), seed)
    return data


def load_records_data(cfg: Config, dataset: str, records: Sequence[ImageRecord], backbone: str, size: int,
                      teacher: str = "dlib") -> HypernetData:
    """Crops at f's size + backbone and teacher embeddings of given records (no identity structure)."""
    b_cache = FeatureCache(cfg, dataset, backbone)
    t_cache = b_cache if backbone == teacher else FeatureCache(cfg, dataset, teacher)
    emb = torch.from_numpy(b_cache.embeddings(records))
    te = emb if t_cache is b_cache else torch.from_numpy(t_cache.embeddings(records))
    return HypernetData(resize_crops(b_cache.crops(records), size), emb, te, np.full(len(records), -1), [])


def to_unit_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """(N, S, S, 3) uint8 -> (N, 3, S, S) float in [-1, 1]."""
    return (images_uint8.permute(0, 3, 1, 2).float() - 127.5) / 127.5
