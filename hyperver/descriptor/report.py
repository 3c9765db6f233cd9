"""Subnet export and the SuperNet report (``hyperver supernet-export`` / ``hyperver supernet-report``)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from supernet.calibrate import recalibrate_bn
from supernet.export import export_onnx, export_tflite, parity, save_subnet
from supernet.latency import tflite_latency
from supernet.profile import count_macs, count_params
from supernet.space import arch_id, save_arch
from supernet.spaces import kind_of
from torch import nn

from ..config import Config, merge
from ..data import LFWSplit, open_dataset
from ..reporting import git_commit, write_result
from . import load_supernet_weights
from .data import FaceTensors, load_bn_calibration, to_input
from .evaluate import bn_batches, validate_subnet
from .train import load_validation_set

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def calibrated_subnet(net: nn.Module, arch: Mapping[str, Sequence[int]], calib: FaceTensors,
                      n_images: int = 500) -> nn.Module:
    sub = net.get_subnet(arch)
    recalibrate_bn(sub, bn_batches(calib, net.input_size, n_images), max_images=n_images)
    return sub.eval()


def export_subnet(net: nn.Module, arch: Mapping[str, Sequence[int]], out_dir: str | Path, calib: FaceTensors,
                  name: str = "descriptor", bn_images: int = 500, tflite: bool = True) -> dict[str, Any]:
    """Static subnet with recalibrated BN -> safetensors + arch JSON + ONNX (+ TFLite)."""
    out = Path(out_dir)
    sub = calibrated_subnet(net, arch, calib, bn_images)
    size = net.input_size
    files = {"safetensors": save_subnet(sub, out / f"{name}.safetensors"),
             "arch": save_arch(net.space.validate(arch), out / f"{name}.arch.json", id=arch_id(arch),
                               input_size=size, width_mult=net.width_mult),
             "onnx": export_onnx(sub, out / f"{name}.onnx", size)}
    if tflite:
        files["tflite"] = export_tflite(sub, out / f"{name}.tflite")
    return {"subnet": sub, "files": {k: str(v) for k, v in files.items()}}


def eval_subnet_on_test_folds(cfg: Config, name: str, weights: Path) -> dict[str, float]:
    from ..eval.protocols import evaluate_lfw_pairs
    from ..features import FeatureCache

    sub_cfg = Config(merge(cfg, {"embedders": {name: {"kind": "subnet", "path": str(weights)}}}))
    cache = FeatureCache(sub_cfg, "lfw", name)
    split = LFWSplit(open_dataset(sub_cfg, "lfw"))
    res = evaluate_lfw_pairs(split, lambda recs: cache.embeddings(recs, workers=1), ["6-10"])
    return res["reports"]["folds_6_10"].summary()


def plot_training_curves(history: list[dict], path: str | Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    steps = [h for h in history if "loss" in h]
    phases = list(dict.fromkeys(h["phase"] for h in steps))
    for ph in phases:
        pts = [h for h in steps if h["phase"] == ph]
        ax1.plot([h["step"] for h in pts], [h.get("cos", np.nan) for h in pts], label=f"1-cos ({ph})")
    ax1.set_xlabel("step")
    ax1.set_ylabel("distillation loss (1 - cosine to teacher)")
    ax1.set_yscale("log")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=7)
    evals = [h for h in history if "eval" in h]
    for which in ("largest", "smallest"):
        xs = [h["step"] for h in evals if which in h["eval"]]
        ax2.plot(xs, [h["eval"][which]["val_pair_accuracy"] for h in evals if which in h["eval"]], "o-", label=which)
    for h in evals:
        ax2.annotate(h["phase"], (h["step"], h["eval"].get("largest", {}).get("val_pair_accuracy", 0)), fontsize=7)
    ax2.set_xlabel("step")
    ax2.set_ylabel("LFW set 5 pair accuracy (validation)")
    ax2.grid(alpha=0.3)
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)


def run_supernet_report(cfg: Config, weights: str | Path, out: str | Path, n_random: int = 5, seed: int = 0,
                        history: str | Path | None = None) -> dict[str, Any]:
    commit = git_commit()   # before this command writes its own tracked outputs
    sc = cfg.get_path("supernet")
    net = load_supernet_weights(weights)
    calib = load_bn_calibration(cfg)
    val = load_validation_set(cfg, sc["teacher"])
    rng = np.random.default_rng(seed)
    size = net.input_size
    shape = (1, 3, size, size)
    randoms = sorted((net.space.sample(rng) for _ in range(n_random)),
                     key=lambda a: count_macs(net.get_subnet(a), shape))
    named = [("largest", net.space.largest()), ("smallest", net.space.smallest())]
    named += [(f"random_{i + 1}", a) for i, a in enumerate(randoms)]
    work = cfg.cache_root / "subnets" / Path(weights).stem
    rows = []
    for name, arch in named:
        exp = export_subnet(net, arch, work, calib, name=name, bn_images=int(sc["bn_images"]))
        sub = exp["subnet"]
        test = eval_subnet_on_test_folds(cfg, f"{Path(weights).stem}_{name}", Path(exp["files"]["safetensors"]))
        valm = validate_subnet(sub, val, calib, size, int(sc["bn_images"]))
        lat = tflite_latency(exp["files"]["tflite"], threads=1)
        rows.append({"name": name, "arch": arch, "arch_id": arch_id(arch), "accuracy": test["accuracy"],
                     "accuracy_std": test["accuracy_std"], "val_at_far_1e3": test["val_at_far_1e3"],
                     "auc": test["auc"], "eer": test["eer"], "params": count_params(sub),
                     "mflops": count_macs(sub, shape) / 1e6, "tflite_ms": lat["median_ms"],
                     "teacher_cosine": valm["teacher_cosine"], "val_pair_accuracy": valm["val_pair_accuracy"]})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "arch"}))
    # Export parity on 20 real aligned faces (validation crops) for the largest subnet.
    largest = calibrated_subnet(net, net.space.largest(), calib, int(sc["bn_images"]))
    x = to_input(val.data.crops[:20], size).numpy()
    par = parity(largest, work / "largest.onnx", work / "largest.tflite", x)
    figures: dict[str, Any] = {"space": kind_of(net.supernet_config()), "weights": str(weights), "input_size": size,
                               "width_mult": net.width_mult,
                               "subnets": rows, "parity_max_abs": par, "parity_faces": int(len(x))}
    out = Path(out)
    if history and Path(history).exists():
        figures["training_curves_png"] = plot_training_curves(json.loads(Path(history).read_text()),
                                                              out.with_name(out.stem + "_training.png"))
    write_result(out, figures, commit=commit)
    return figures
