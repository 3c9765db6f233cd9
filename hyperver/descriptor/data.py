"""Training data for the face SuperNet: cached aligned crops, teacher embeddings, identity labels.

Sources follow the fixed split: LFW View-2 sets 1-4, CelebA and UTKFace for training
(UTKFace unlabelled: distillation only); LFW set 5 for validation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..config import Config
from ..data import LFWSplit, open_dataset
from ..data.records import ImageRecord
from ..features import FeatureCache


@dataclass
class FaceTensors:
    crops: torch.Tensor        # (N, S, S, 3) uint8
    teacher: torch.Tensor      # (N, D) float32, unit length
    labels: torch.Tensor       # (N,) int64, -1 = no identity label
    n_classes: int
    sources: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def _records(cfg: Config, source: str, split: LFWSplit | None) -> list[ImageRecord]:
    if source == "lfw_train":
        return split.records("train")
    if source == "lfw_val":
        return split.records("val")
    return open_dataset(cfg, source).records()


# Labelled training faces a subnet's BatchNorm statistics are recalibrated on (never validation or test).
BN_CALIBRATION_SOURCES = ("lfw_train", "celeba")


def load_face_tensors(cfg: Config, sources: Sequence[str], teacher: str | None = "dlib", min_images_per_label: int = 2,
                      limit_per_source: int | None = None) -> FaceTensors:
    """Crops + teacher embeddings of the given sources (``lfw_train``, ``lfw_val`` or dataset names).

    ``teacher=None``: crops only (``teacher`` is then an (N, 0) tensor).
    """
    split = LFWSplit(open_dataset(cfg, "lfw"))
    crops, teach, labels, names = [], [], [], []
    class_ids: dict[str, int] = {}
    for source in sources:
        dataset = "lfw" if source.startswith("lfw") else source
        records = _records(cfg, source, split)[:limit_per_source]
        cache = FeatureCache(cfg, dataset, teacher)
        keys = cache.keys_for(records, progress=False)
        store = cache.embed_store if teacher is not None else cache.align_store
        ok = [i for i, k in enumerate(keys) if k in store and k in cache.align_store]
        if len(ok) < len(records):
            cache.build(records)
            ok = [i for i, k in enumerate(cache.keys_for(records, progress=False)) if k in store]
        records = [records[i] for i in ok]
        counts: dict[str, int] = {}
        for r in records:
            if r.identity is not None:
                counts[r.identity] = counts.get(r.identity, 0) + 1
        for r in records:
            ident = r.identity
            if ident is not None and counts[ident] >= min_images_per_label:
                labels.append(class_ids.setdefault(f"{source}/{ident}", len(class_ids)))
            else:
                labels.append(-1)
            names.append(source)
        crops.append(torch.from_numpy(np.ascontiguousarray(cache.crops(records))))
        teach.append(torch.from_numpy(cache.embeddings(records, build=False)) if teacher is not None
                     else torch.zeros(len(records), 0))
    return FaceTensors(torch.cat(crops), torch.cat(teach), torch.tensor(labels, dtype=torch.int64), len(class_ids), names)


def load_bn_calibration(cfg: Config, sources: Sequence[str] | None = None,
                        limit_per_source: int | None = None) -> FaceTensors:
    """The BN-recalibration images (``sources``, else config ``supernet.bn_sources``, else
    ``BN_CALIBRATION_SOURCES``): crops only, so recalibrating a subnet does not depend on which teacher
    its SuperNet was distilled from. A SuperNet trained on another mixture (e.g. with UTKFace) may want its
    own: chosen on LFW set 5."""
    sources = sources or cfg.get_path("supernet.bn_sources") or BN_CALIBRATION_SOURCES
    return load_face_tensors(cfg, list(sources), None, limit_per_source=limit_per_source)


def to_input(crops_uint8: torch.Tensor, size: int) -> torch.Tensor:
    """(N, S, S, 3) uint8 -> (N, 3, size, size) float in [-1, 1] (the insightface convention)."""
    x = crops_uint8.permute(0, 3, 1, 2).float()
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x - 127.5) / 127.5


def augment(x: torch.Tensor, generator: torch.Generator, flip: float = 0.5, scale: float = 0.08,
            shift: float = 0.05, rotate_deg: float = 5.0, brightness: float = 0.2, contrast: float = 0.2,
            saturation: float = 0.2) -> torch.Tensor:
    """Batch augmentation on [-1, 1] images: flip, small affine jitter, colour jitter."""
    n = x.shape[0]
    rand = lambda *s: torch.rand(*s, generator=generator)  # noqa: E731
    sign = torch.where(rand(n) < flip, -1.0, 1.0)
    sc = 1.0 + (rand(n) * 2 - 1) * scale
    ang = (rand(n) * 2 - 1) * rotate_deg * np.pi / 180
    tx, ty = (rand(n) * 2 - 1) * shift, (rand(n) * 2 - 1) * shift
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.stack([torch.stack([cos * sign, -sin, tx], 1), torch.stack([sin * sign, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    b = 1.0 + (rand(n, 1, 1, 1) * 2 - 1) * brightness
    c = 1.0 + (rand(n, 1, 1, 1) * 2 - 1) * contrast
    s = 1.0 + (rand(n, 1, 1, 1) * 2 - 1) * saturation
    gray = x.mean(1, keepdim=True)
    x = gray + (x - gray) * s
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * c + mean
    x = (x + 1) * b - 1
    return x.clamp(-1, 1)


def batch_iterator(data: FaceTensors, batch_size: int, input_size: int, seed: int, rank: int = 0, world: int = 1,
                   augmentation: dict | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """One epoch of shuffled, augmented batches (this rank's share under data parallelism)."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=gen)[rank::world]
    aug_gen = torch.Generator().manual_seed(seed * 7919 + rank)
    for i in range(0, len(order) - batch_size + 1, batch_size):
        idx = order[i:i + batch_size]
        x = to_input(data.crops[idx], input_size)
        if augmentation is not None:
            x = augment(x, aug_gen, **augmentation)
        yield {"image": x.contiguous(), "teacher": data.teacher[idx], "label": data.labels[idx]}
