"""LFW evaluation of the hypernetwork: enroll from one image of a pair, score the other."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..config import Config
from ..data import LFWSplit, open_dataset, parse_folds
from ..eval.metrics import kfold_verification, threshold_at_far
from .data import load_records_data
from .generator import WeightGenerator
from .train import pair_logits


def pair_scores_on_folds(cfg: Config, gen: WeightGenerator, backbone: str, folds: str = "6-10",
                         refine: Mapping[str, Any] | None = None, both_ways: bool = True) -> dict[str, np.ndarray]:
    """Scores of the LFW pairs of ``folds``: one-way (enroll a, score b), the reverse, and the
    descriptor's cosine; with the labels and each pair's fold.

    ``refine`` (default None: off): enrollment-time refinement of every enrolled theta
    (``hyperver.hypernet.refine``), as ``{"bank": NegativeBank, **refine_theta keyword arguments}``
    or ``{}`` for ``hypernet.refine``'s settings and bank; the same pairs, so a run with and one
    without compare directly. Adds ``refine_ab`` / ``refine_ba``: the refinements' timing summaries."""
    split = LFWSplit(open_dataset(cfg, "lfw"))
    fold_ids = parse_folds(folds)
    records = split.records_of_sets(fold_ids)
    settings, bank = {}, None
    if refine is not None:
        from .refine import refined_pair_logits, refinement_setup

        bank, settings = refinement_setup(cfg, gen.spec.input_size, refine)
    # Refinement grades the bank's negatives by its teacher's cosines: the probes carry that teacher's embeddings.
    data = load_records_data(cfg, "lfw", records, backbone, gen.spec.input_size,
                             teacher=bank.teacher if bank is not None else "dlib")
    index = {r.path: i for i, r in enumerate(records)}
    pairs = split.pairs(fold_ids)
    a = np.array([index[p.a.path] for p in pairs])
    b = np.array([index[p.b.path] for p in pairs])
    emb = data.backbone.numpy()
    out = {"cosine": np.sum(emb[a] * emb[b], axis=1), "same": np.array([p.same for p in pairs]),
           "fold": np.array([p.fold for p in pairs])}
    if bank is None:
        out["ab"] = pair_logits(gen, data, a, b)
        if both_ways:
            out["ba"] = pair_logits(gen, data, b, a)
        return out
    out["ab"], out["refine_ab"] = refined_pair_logits(gen, data, a, b, bank, settings)
    if both_ways:
        out["ba"], out["refine_ba"] = refined_pair_logits(gen, data, b, a, bank, settings)
    return out


def evaluate_pairs(cfg: Config, gen: WeightGenerator, backbone: str, folds: str = "6-10",
                   refine: Mapping[str, Any] | None = None, both_ways: bool = True) -> dict[str, Any]:
    """One-way (enroll a, score b), symmetric (mean of both ways; not with ``both_ways`` False) and
    descriptor cosine on the folds; ``refine``: see ``pair_scores_on_folds`` (default off)."""
    s = pair_scores_on_folds(cfg, gen, backbone, folds, refine, both_ways)
    ab, cosine, same, fold = s["ab"], s["cosine"], s["same"], s["fold"]
    rows = {"hypernet": ab, "descriptor": cosine}
    if both_ways:
        rows["hypernet_symmetric"] = (ab + s["ba"]) / 2
    out = {name: kfold_verification(scores, same, fold).summary() for name, scores in rows.items()}
    out["_scores"] = {**rows, "same": same}
    if "refine_ab" in s:
        out["refine"] = {k: s[f"refine_{k}"] for k in ("ab", "ba") if f"refine_{k}" in s}
    return out


def validation_threshold(cfg: Config, gen: WeightGenerator, backbone: str, far: float = 1e-3) -> float:
    """Decision threshold on the logit for a target false-accept rate, chosen on LFW set 5 (validation)."""
    return validation_thresholds(cfg, gen, backbone, [far])[far]


def validation_thresholds(cfg: Config, gen: WeightGenerator, backbone: str, fars) -> dict[float, float]:
    """validation_threshold for several FARs, from one scoring of the same ~20,000 impostor pairs."""
    split = LFWSplit(open_dataset(cfg, "lfw"))
    records = split.records("val")
    data = load_records_data(cfg, "lfw", records, backbone, gen.spec.input_size)
    rng = np.random.default_rng(0)
    ids = np.array([r.identity for r in records])
    a, b = rng.integers(0, len(records), 20000), rng.integers(0, len(records), 20000)
    keep = ids[a] != ids[b]
    impostors = pair_logits(gen, data, a[keep], b[keep])
    return {far: threshold_at_far(impostors, far) for far in fars}


def store_generator_thresholds(cfg: Config, generator: str | None = None, fars=(1e-2,)) -> dict[str, Any]:
    """Choose the thresholds for ``fars`` on LFW set 5 and store them in the generator file's metadata
    (``thresholds``, by FAR); the weights and the other metadata are kept as they are."""
    from .model_io import generator_thresholds, load_generator, update_generator_metadata

    path = generator or str(cfg.get_path("hypernet.generator_path"))
    gen, meta = load_generator(path)
    chosen = validation_thresholds(cfg, gen, meta["backbone"], [float(f) for f in fars])
    update_generator_metadata(path, {"thresholds": {**generator_thresholds(meta),
                                                    **{f"{far:g}": float(t) for far, t in chosen.items()}},
                                     "thresholds_data": "LFW set 5"})
    return {"generator": str(path), "thresholds": generator_thresholds(load_generator(path)[1]),
            "data": "LFW set 5 (20,000 random impostor pairs, seed 0)"}


def load_trained(generator: str | None = None, checkpoint: str | None = None) -> tuple[WeightGenerator, dict[str, Any]]:
    """A trained generator from its (fp16) file or from a training checkpoint (``best.pt``)."""
    import json

    import torch

    from ..errors import ConfigError
    from .model_io import load_generator
    from .verifier import VerifierSpec

    if generator:
        return load_generator(generator)
    if not checkpoint:
        raise ConfigError("give a generator file (--generator) or a training checkpoint (--checkpoint)")
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    spec = VerifierSpec.from_dict(json.loads(ckpt["spec"]))
    gen = WeightGenerator(spec, **json.loads(ckpt["generator_config"]))
    gen.load_state_dict(ckpt["generator"])
    hc = json.loads(ckpt["hypernet"])
    return gen.eval(), {"backbone": hc["backbone"], "step": json.loads(ckpt["state"])["step"]}


def backbone_config(cfg: Config, backbone: str) -> tuple[Config, str]:
    """``name`` (a configured or built-in embedder) or ``name=path.safetensors`` (an exported subnet)."""
    from ..config import merge

    if "=" not in backbone:
        return cfg, backbone
    name, path = backbone.split("=", 1)
    return Config(merge(cfg, {"embedders": {name: {"kind": "subnet", "path": path}}})), name


def f_cost(spec) -> dict[str, Any]:
    """f's parameters and MFLOPs (multiply-adds) counted by torch's FlopCounterMode."""
    from supernet.profile import count_params, mflops

    from .verifier import VerifierModule

    module = VerifierModule(spec)
    return {"f_params": count_params(module), "f_mflops": mflops(module, (1, 3, spec.input_size, spec.input_size)),
            "f_input": spec.input_size, "f_version": spec.version}


def plot_history(history: list[dict], path: str) -> str:
    """Training curves of the hypernetwork: BCE and margin per step, validation (set 5) per eval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    train = [h for h in history if "bce" in h]
    ax1.plot([h["step"] for h in train], [h["bce"] for h in train], label="weighted BCE")
    ax1b = ax1.twinx()
    ax1b.plot([h["step"] for h in train], [h["margin"] for h in train], color="tab:orange", alpha=0.6,
              label="mean logit margin (pos - neg)")
    ax1.set_xlabel("step")
    ax1.set_ylabel("weighted BCE")
    ax1b.set_ylabel("logit margin")
    ax1.legend(loc="upper left", fontsize=7)
    ax1b.legend(loc="upper right", fontsize=7)
    val = [h for h in history if "val_auc" in h]
    ax2.plot([h["step"] for h in val], [h["val_accuracy"] for h in val], "o-", label="pair accuracy")
    ax2.plot([h["step"] for h in val], [h["val_auc"] for h in val], "s-", label="AUC")
    pre = [h["pretrain"] for h in history if "pretrain" in h]
    if pre:
        ax2.axhline(pre[0]["best_val_accuracy"], color="grey", ls="--", lw=0.8,
                    label="f body as embedding model (start)")
    ax2.set_xlabel("step")
    ax2.set_ylabel("LFW set 5 (validation)")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def run_hypernet_eval(cfg: Config, generator: str | None = None, checkpoint: str | None = None,
                      backbones: list[str] | None = None, out: str = "results/hypernet_lfw.json",
                      far: float = 1e-3, history: str | None = None) -> dict[str, Any]:
    """LFW test folds 6-10 for the per-user verifiers (one-way and symmetric) and the descriptor,
    with the training backbone and with each swapped-in backbone (generator unchanged); the
    decision threshold for a target FAR is chosen on LFW set 5 only."""
    import json
    from pathlib import Path

    from ..eval.metrics import plot_roc, roc_curve
    from ..reporting import write_result

    if not checkpoint:
        generator = generator or cfg.get_path("hypernet.generator_path")
    gen, meta = load_trained(generator, checkpoint)
    trained_on = meta["backbone"]
    res = evaluate_pairs(cfg, gen, trained_on)
    scores = res.pop("_scores")
    figures: dict[str, Any] = {**f_cost(gen.spec), "generator": generator or checkpoint, "trained_backbone": trained_on,
                               **{k: res[k] for k in ("hypernet", "hypernet_symmetric", "descriptor")}}
    figures["validation_threshold_far_1e3"] = validation_threshold(cfg, gen, trained_on, far)
    # More than one shot, beside the one-shot headline (hyperver.hypernet.multishot; hypernet.multi_shot).
    from .multishot import multi_shot_rows

    figures["multi_shot"] = multi_shot_rows(cfg, gen, trained_on, **cfg.get_path("hypernet.multi_shot"))
    figures["backbones"] = {"teacher" if trained_on == cfg.get_path("supernet.teacher") else trained_on:
                            {"hypernet": res["hypernet"], "descriptor": res["descriptor"]}}
    curves = {name: roc_curve(scores[name], scores["same"])[:2] for name in ("hypernet", "hypernet_symmetric", "descriptor")}
    for entry in backbones or []:
        bcfg, name = backbone_config(cfg, entry)
        r = evaluate_pairs(bcfg, gen, name)
        s = r.pop("_scores")
        figures["backbones"][name] = {k: r[k] for k in ("hypernet", "hypernet_symmetric", "descriptor")}
        curves[f"hypernet, h_bb={name}"] = roc_curve(s["hypernet"], s["same"])[:2]
    png = Path(out).with_name(Path(out).stem + "_roc.png")
    if history:
        figures["training_png"] = plot_history(json.loads(Path(history).read_text()),
                                               str(Path(out).with_name(Path(out).stem + "_training.png")))
    figures["roc_png"] = plot_roc({k: (far_, tar) for k, (far_, tar) in curves.items()}, str(png),
                                  "LFW folds 6-10: per-user verifiers vs descriptor")
    write_result(out, figures)
    return figures


def export_generator(cfg: Config, checkpoint: str, out: str | None = None, far: float = 1e-3) -> dict[str, Any]:
    """Training checkpoint -> the fp16 generator file enrollment loads, with its decision
    threshold for ``far`` chosen on LFW set 5 (validation) stored inside."""
    import json
    from pathlib import Path

    import torch

    from .model_io import save_generator

    gen, meta = load_trained(checkpoint=checkpoint)
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = json.loads(ckpt["state"])
    # The decision threshold (``far``) and the browser page's lenient one (server.unlock_far, 1e-2).
    thresholds = validation_thresholds(cfg, gen, meta["backbone"], sorted({far, 1e-2}))
    threshold = thresholds[far]
    path = save_generator(gen, out or cfg.get_path("hypernet.generator_path"), meta["backbone"],
                          extra={"threshold": threshold, "threshold_far": far, "threshold_data": "LFW set 5",
                                 "thresholds": {f"{f:g}": float(t) for f, t in thresholds.items()},
                                 "thresholds_data": "LFW set 5",
                                 "step": meta["step"], "best_val_auc": state.get("best_val_auc")})
    return {"generator": str(path), "bytes": Path(path).stat().st_size, "threshold": threshold, "far": far,
            "thresholds": {f"{f:g}": t for f, t in thresholds.items()}, "step": meta["step"], **f_cost(gen.spec)}
