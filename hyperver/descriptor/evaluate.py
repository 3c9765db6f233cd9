"""Validation of SuperNet subnets on LFW set 5 (the fixed split's validation people)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from supernet.calibrate import recalibrate_bn

from ..eval.metrics import best_accuracy_threshold, roc_auc
from .data import FaceTensors, to_input


@torch.no_grad()
def embed_crops(net: torch.nn.Module, crops: torch.Tensor, input_size: int, batch: int = 128) -> np.ndarray:
    net.eval()
    out = [net(to_input(crops[i:i + batch], input_size)) for i in range(0, len(crops), batch)]
    return torch.cat(out).numpy()


def embed_crops_onnx(net: torch.nn.Module, crops: torch.Tensor, input_size: int, threads: int | None = None,
                     batch: int = 128) -> np.ndarray:
    """``embed_crops`` through ONNX Runtime (the same function to ~1e-6; faster on CPU, see
    ``supernet.export.onnx_runner``)."""
    import warnings

    from supernet.export import onnx_runner

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the exporter's tracer warnings, once per subnet
        run = onnx_runner(net, input_size, threads or torch.get_num_threads())
    return np.concatenate([run(to_input(crops[i:i + batch], input_size).numpy()) for i in range(0, len(crops), batch)])


EMBEDDERS = {"torch": embed_crops, "onnxruntime": embed_crops_onnx}


def bn_batches(train: FaceTensors, input_size: int, n_images: int, seed: int = 0, batch: int = 100):
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(train), generator=gen)[:n_images]
    for i in range(0, len(idx), batch):
        yield to_input(train.crops[idx[i:i + batch]], input_size)


@dataclass
class ValidationSet:
    """LFW set 5: its images (crops + teacher embeddings) and the fold-5 pairs as index pairs."""
    data: FaceTensors
    pair_a: np.ndarray
    pair_b: np.ndarray
    same: np.ndarray


def validate_subnet(subnet: torch.nn.Module, val: ValidationSet, train: FaceTensors, input_size: int,
                    bn_images: int = 500) -> dict[str, float]:
    """Recalibrate BN on training images, then fold-5 pair accuracy/AUC and agreement with the teacher."""
    recalibrate_bn(subnet, bn_batches(train, input_size, bn_images), max_images=bn_images)
    emb = embed_crops(subnet, val.data.crops, input_size)
    scores = np.sum(emb[val.pair_a] * emb[val.pair_b], axis=1)
    _, acc = best_accuracy_threshold(scores, val.same)
    return {"val_pair_accuracy": acc, "val_auc": roc_auc(scores, val.same),
            "teacher_cosine": float(np.mean(np.sum(emb * val.data.teacher.numpy(), axis=1)))}


def make_evaluator(val: ValidationSet, train: FaceTensors, input_size: int, bn_images: int = 500):
    def evaluate(net: torch.nn.Module, arch: Mapping[str, Sequence[int]]) -> dict[str, float]:
        was = net.active_arch
        subnet = net.get_subnet(arch)
        net.set_active(was)
        return validate_subnet(subnet, val, train, input_size, bn_images)
    return evaluate
