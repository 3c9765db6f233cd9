"""How well a model fits the people it was trained on vs new people: the diagnostic behind
"what limits it" for the SuperNet subnets and the per-user verifiers.

One protocol on three LFW View-2 pair sets: sets 1-4 (the training people: a fit figure, never a
generalisation result), set 5 (validation) and sets 6-10 (test). Per set: AUC and the accuracy at
the best threshold chosen on that set itself (in-sample on all three, so the rows compare; the
test-fold figures of the reports use 10-fold thresholds instead). Low accuracy on the training
people with a small gap to the test people says the model underfits (compute or capacity bound);
a large gap says it has memorised its training people (data bound).

    hyperver fit-gap --embedders mobilefacenet largest=cache/subnets/supernet_mfn/largest.safetensors \
        --generator assets/hypernet/generator_v3.safetensors --out results/fit_gap.json
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .config import Config
from .data import LFWSplit, open_dataset, parse_folds
from .eval.metrics import best_accuracy_threshold, roc_auc

# name -> LFW View-2 people sets (the project's fixed split)
PAIR_SETS: dict[str, str] = {"train_people_sets_1_4": "1-4", "val_set_5": "5", "test_sets_6_10": "6-10"}


def per_set_figures(scores: np.ndarray, same: np.ndarray, fold: np.ndarray) -> dict[str, dict[str, float]]:
    """AUC and best-threshold accuracy of the scores on each of ``PAIR_SETS`` (plus train - test gaps)."""
    out: dict[str, Any] = {}
    for name, sets in PAIR_SETS.items():
        m = np.isin(fold, parse_folds(sets))
        if not m.any():
            continue
        _, acc = best_accuracy_threshold(scores[m], same[m])
        out[name] = {"accuracy": float(acc), "auc": float(roc_auc(scores[m], same[m])), "pairs": int(m.sum())}
    train, test = out.get("train_people_sets_1_4"), out.get("test_sets_6_10")
    if train and test:
        out["gap_train_minus_test"] = {k: train[k] - test[k] for k in ("accuracy", "auc")}
    return out


def descriptor_fit_gap(cfg: Config, embedder: str) -> dict[str, Any]:
    """Cosine of an embedder's (cached) embeddings on every pair of LFW sets 1-10."""
    from .eval.protocols import evaluate_lfw_pairs
    from .features import FeatureCache

    cache = FeatureCache(cfg, "lfw", embedder)
    # The shared pair scorer; its 10-fold report is not used (set 5 alone has no k-fold split).
    res = evaluate_lfw_pairs(LFWSplit(open_dataset(cfg, "lfw")), cache.embeddings, ["1-10"])
    return {"kind": "descriptor cosine", "embedder": cache.embedder.cache_id,
            **per_set_figures(res["scores"], res["labels"], res["folds"])}


def hypernet_fit_gap(cfg: Config, generator: str) -> dict[str, Any]:
    """The generator's per-user verifiers, one-way (enroll one image of a pair, score the other)."""
    from .hypernet.evaluate import load_trained, pair_scores_on_folds

    gen, meta = load_trained(generator)
    s = pair_scores_on_folds(cfg, gen, meta["backbone"], "1-10")
    return {"kind": "per-user verifier, one-way", "generator": generator, "backbone": meta["backbone"],
            **per_set_figures(s["ab"], s["same"], s["fold"])}


def run_fit_gap(cfg: Config, embedders: Sequence[str], generator: str | None, out: str) -> dict[str, Any]:
    """Rows for each embedder (``name`` or ``name=subnet.safetensors``) and the generator."""
    from .hypernet.evaluate import backbone_config
    from .reporting import write_result

    rows: dict[str, Any] = {}
    for entry in embedders:
        ecfg, name = backbone_config(cfg, entry)
        rows[name] = descriptor_fit_gap(ecfg, name)
    if generator:
        rows["per_user_verifier"] = hypernet_fit_gap(cfg, generator)
    figures = {"protocol": "LFW View-2 pairs; best threshold chosen on each pair set itself (in-sample); "
                           "sets 1-4 are training people (a fit figure, not a generalisation result)",
               "models": rows}
    write_result(out, figures)
    return figures
