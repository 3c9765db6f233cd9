"""Evaluation protocols on the fixed split, built on :mod:`hyperver.eval.metrics`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..config import Config
from ..data import LFWSplit, PROJECT_SPLIT, open_dataset, parse_folds
from ..data.lfw import Pair
from ..data.records import ImageRecord
from ..errors import ConfigError
from ..reporting import write_result
from .metrics import folds_label, identification_accuracy, kfold_verification, plot_roc

EmbedFn = Callable[[Sequence[ImageRecord]], np.ndarray]


def pair_scores(pairs: Sequence[Pair], records: Sequence[ImageRecord], embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarity of each pair, given unit embeddings of ``records``."""
    index = {r.path: i for i, r in enumerate(records)}
    a = embeddings[[index[p.a.path] for p in pairs]]
    b = embeddings[[index[p.b.path] for p in pairs]]
    return np.sum(a * b, axis=1)


def check_folds_allowed(folds: Sequence[int], lfw_free: bool, model: str) -> None:
    """Only a model that has seen no LFW image may be reported on the training/validation folds."""
    outside = sorted(set(folds) - set(PROJECT_SPLIT.test_sets))
    if outside and not lfw_free:
        raise ConfigError(f"model {model!r} may have seen LFW sets {outside} in training; report it on the "
                          f"test folds {PROJECT_SPLIT.test_sets[0]}-{PROJECT_SPLIT.test_sets[-1]} only")


def evaluate_lfw_pairs(split: LFWSplit, embed: EmbedFn, fold_specs: Sequence[str | Sequence[int]],
                       far_target: float = 1e-3) -> dict[str, Any]:
    """k-fold verification for each fold set; ``embed`` maps records to unit embeddings."""
    fold_sets = [parse_folds(s) for s in fold_specs]
    all_folds = sorted({f for fs in fold_sets for f in fs})
    pairs = split.pairs(all_folds)
    records = list({r.path: r for p in pairs for r in (p.a, p.b)}.values())
    emb = embed(records)
    scores = pair_scores(pairs, records, emb)
    labels = np.array([p.same for p in pairs])
    fold_of = np.array([p.fold for p in pairs])
    out: dict[str, Any] = {"records": records, "scores": scores, "labels": labels, "folds": fold_of, "reports": {}}
    for fs in fold_sets:
        mask = np.isin(fold_of, fs)
        out["reports"][folds_label(fs)] = kfold_verification(scores[mask], labels[mask], fold_of[mask], far_target)
    return out


def markdown_table(rows: dict[str, dict[str, float]], far_key: str) -> str:
    lines = [f"| folds | accuracy | {far_key} | AUC | EER | pairs |", "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {100 * r['accuracy']:.2f} ± {100 * r['accuracy_std']:.2f} | "
                     f"{100 * r[far_key]:.2f} | {r['auc']:.4f} | {100 * r['eer']:.2f} | {r['n_pairs']} |")
    return "\n".join(lines)


def run_lfw_evaluation(cfg: Config, model: str, fold_specs: Sequence[str], identification: bool = True,
                       out: str | None = None, workers: int | None = None) -> dict[str, Any]:
    """``hyperver eval --protocol lfw``: verification per fold set, identification on the test people."""
    from ..features import FeatureCache
    from .metrics import far_key

    cache = FeatureCache(cfg, "lfw", model)
    fold_sets = [parse_folds(s) for s in fold_specs]
    for fs in fold_sets:
        check_folds_allowed(fs, cache.embedder.lfw_free, model)
    split = LFWSplit(open_dataset(cfg, "lfw"))
    far_target = float(cfg.get_path("eval.far_targets")[0])
    res = evaluate_lfw_pairs(split, lambda recs: cache.embeddings(recs, workers=workers), fold_sets, far_target)
    summaries = {name: rep.summary() for name, rep in res["reports"].items()}
    stats = cache.alignment_stats(res["records"])
    figures: dict[str, Any] = {"model": model, "embedder": cache.embedder.cache_id, "aligner": cache.aligner.version,
                               **summaries, "fallback_crops": stats["fallback_crops"],
                               "fallback_images_total": len(res["records"]),
                               "multi_face_images": stats["multi_face_images"]}
    if identification:
        test_records = split.records("test", min_images=2)
        emb = cache.embeddings(test_records, workers=workers)
        figures["identification_test_sets_6_10"] = identification_accuracy(
            emb, [r.identity for r in test_records], repeats=int(cfg.get_path("eval.identification_repeats")),
            seed=int(cfg.get_path("eval.seed")))
    path = Path(out) if out else cfg.results_dir / f"eval_{model}_lfw.json"
    roc_path = path.with_name(path.stem + "_roc.png")
    roc_path.parent.mkdir(parents=True, exist_ok=True)
    plot_roc({f"{model} {name.replace('_', ' ', 1).replace('_', '-')}": rep.roc[:2] for name, rep in res["reports"].items()},
             str(roc_path), title=f"{model} on LFW View 2")
    figures["roc_png"] = str(roc_path.relative_to(Path.cwd()) if roc_path.is_relative_to(Path.cwd()) else roc_path)
    written = write_result(path, figures)
    md = markdown_table(summaries, far_key(far_target))
    if identification:
        ident = figures["identification_test_sets_6_10"]
        md += (f"\n\nIdentification, LFW test people (sets 6-10) with 2+ images: rank-1 "
               f"{100 * ident['rank1']:.2f} ± {100 * ident['rank1_std']:.2f} ({ident['people']} people, "
               f"{ident['probes']} probes, {ident['repeats']} repeats)")
    md += f"\n\nFallback (centred) crops among the {len(res['records'])} evaluated images: {stats['fallback_crops']}"
    return {"figures": figures, "markdown": md, "path": str(written)}
