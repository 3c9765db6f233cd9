"""Verification and identification metrics: the one module every experiment reports with.

Conventions: higher score = more likely the same person; a pair is accepted when
``score >= threshold``. ROC points are computed exactly from sorted scores (no threshold grid).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np


# -- ROC building blocks ------------------------------------------------------------------------
def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in length")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or inf")
    if labels.all() or (~labels).all():
        raise ValueError("need both genuine (label 1) and impostor (label 0) pairs")
    return scores, labels


def roc_curve(scores: Sequence[float], labels: Sequence[bool]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(far, tar, thresholds): one point per distinct score, from (0, 0) at +inf to (1, 1)."""
    scores, labels = _check(np.asarray(scores), np.asarray(labels))
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(y)[distinct]
    fp = np.cumsum(~y)[distinct]
    tar = np.r_[0.0, tp / y.sum()]
    far = np.r_[0.0, fp / (~y).sum()]
    thresholds = np.r_[np.inf, s[distinct]]
    return far, tar, thresholds


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    far, tar, _ = roc_curve(scores, labels)
    return float(np.trapezoid(tar, far))


def equal_error_rate(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """The rate where false accepts equal false rejects, linearly interpolated on the ROC."""
    far, tar, _ = roc_curve(scores, labels)
    frr = 1.0 - tar
    diff = far - frr                       # rises from -1 to +1 along the curve
    i = int(np.searchsorted(diff, 0.0))    # first point with far >= frr
    if i == 0:
        return float(far[0])
    d0, d1 = diff[i - 1], diff[i]
    t = 0.0 if d1 == d0 else -d0 / (d1 - d0)
    return float(far[i - 1] + t * (far[i] - far[i - 1]))


def accuracy_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    scores, labels = np.asarray(scores), np.asarray(labels).astype(bool)
    return float(np.mean((scores >= threshold) == labels))


def best_accuracy_threshold(scores: Sequence[float], labels: Sequence[bool]) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy; the threshold is a midpoint between scores."""
    scores, labels = _check(np.asarray(scores), np.asarray(labels))
    far, tar, thr = roc_curve(scores, labels)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    correct = tar * n_pos + (1.0 - far) * n_neg
    i = int(np.argmax(correct))
    # Accepting everything at or above thr[i]; put the cut halfway to the next lower score.
    lower = scores[scores < thr[i]]
    if not np.isfinite(thr[i]):
        threshold = float(scores.max()) + 1e-6
    elif lower.size:
        threshold = float((thr[i] + lower.max()) / 2)
    else:
        threshold = float(thr[i]) - 1e-6
    return threshold, float(correct[i] / len(scores))


def threshold_at_far(impostor_scores: Sequence[float], far_target: float) -> float:
    """Smallest threshold whose false-accept rate on these impostor scores is <= ``far_target``."""
    neg = np.sort(np.asarray(impostor_scores, dtype=np.float64))[::-1]
    if neg.size == 0:
        raise ValueError("no impostor scores")
    allowed = int(np.floor(far_target * neg.size + 1e-9))
    if allowed >= neg.size:
        return float(neg[-1])
    # Accept strictly above the (allowed+1)-th highest impostor score; ties stay rejected.
    return float(np.nextafter(neg[allowed], np.inf))


def tar_at_far(scores: Sequence[float], labels: Sequence[bool], far_target: float) -> tuple[float, float, float]:
    """(tar, far, threshold) with the threshold chosen on these same impostors (optimistic)."""
    scores, labels = _check(np.asarray(scores), np.asarray(labels))
    thr = threshold_at_far(scores[~labels], far_target)
    return float(np.mean(scores[labels] >= thr)), float(np.mean(scores[~labels] >= thr)), thr


def far_key(far_target: float) -> str:
    """Result key for a FAR target: 1e-3 -> 'val_at_far_1e3' (insightface's VAL@FAR naming)."""
    exp = -np.log10(far_target)
    return f"val_at_far_1e{int(round(exp))}" if abs(exp - round(exp)) < 1e-9 else f"val_at_far_{far_target:g}"


# -- k-fold verification ----------------------------------------------------------------------
@dataclass
class FoldResult:
    fold: int
    threshold: float
    accuracy: float
    far_threshold: float
    tar_at_far: float
    far_at_far_threshold: float
    auc: float
    eer: float


@dataclass
class VerificationReport:
    folds: list[FoldResult]
    far_target: float
    pooled_auc: float
    pooled_eer: float
    n_pairs: int
    roc: tuple[np.ndarray, np.ndarray, np.ndarray] = field(repr=False, default=None)

    def _stat(self, attr: str) -> tuple[float, float]:
        vals = np.array([getattr(f, attr) for f in self.folds], dtype=np.float64)
        return float(vals.mean()), float(vals.std())

    def summary(self) -> dict[str, float]:
        acc, acc_std = self._stat("accuracy")
        tar, tar_std = self._stat("tar_at_far")
        auc, auc_std = self._stat("auc")
        eer, eer_std = self._stat("eer")
        far, _ = self._stat("far_at_far_threshold")
        return {"accuracy": acc, "accuracy_std": acc_std, far_key(self.far_target): tar,
                far_key(self.far_target).replace("val_at", "val_std_at"): tar_std,
                far_key(self.far_target).replace("val_at", "achieved"): far,
                "auc": auc, "auc_std": auc_std, "eer": eer, "eer_std": eer_std,
                "auc_pooled": self.pooled_auc, "eer_pooled": self.pooled_eer,
                "n_folds": len(self.folds), "n_pairs": self.n_pairs}


def kfold_verification(scores: Sequence[float], labels: Sequence[bool], folds: Sequence[int],
                       far_target: float = 1e-3) -> VerificationReport:
    """LFW-style k-fold verification over the distinct values of ``folds``.

    For each fold, the accuracy threshold and the FAR threshold are chosen on the *other*
    folds and applied to it (the official protocol; with folds 6-10 only, the other test
    folds). AUC and EER are threshold-free and computed per fold. Mean and std over folds.
    """
    scores, labels = _check(np.asarray(scores), np.asarray(labels))
    folds = np.asarray(folds)
    if folds.shape != scores.shape:
        raise ValueError("folds must give one fold id per pair")
    fold_ids = np.unique(folds)
    if len(fold_ids) < 2:
        raise ValueError("k-fold verification needs at least 2 folds")
    results = []
    for f in fold_ids:
        test, train = folds == f, folds != f
        thr, _ = best_accuracy_threshold(scores[train], labels[train])
        far_thr = threshold_at_far(scores[train & ~labels], far_target)
        s, y = scores[test], labels[test]
        results.append(FoldResult(
            fold=int(f), threshold=thr, accuracy=accuracy_at(s, y, thr), far_threshold=far_thr,
            tar_at_far=float(np.mean(s[y] >= far_thr)), far_at_far_threshold=float(np.mean(s[~y] >= far_thr)),
            auc=roc_auc(s, y), eer=equal_error_rate(s, y)))
    return VerificationReport(results, far_target, roc_auc(scores, labels), equal_error_rate(scores, labels),
                              len(scores), roc_curve(scores, labels))


# -- identification ------------------------------------------------------------------------------
ScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def identification_trials(identities: Sequence[str], repeats: int = 5, seed: int = 0,
                          max_probes_per_person: int | None = None) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """The closed-set protocol's draws: people with 2+ images; per repeat one random image per
    person is the gallery and their other images (at most ``max_probes_per_person``, drawn at
    random) are probes. Returns each image's person index and (gallery, probes) per repeat."""
    ids = np.asarray(identities)
    uniq, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    eligible = np.nonzero(counts >= 2)[0]
    if len(eligible) < 2:
        raise ValueError("identification needs at least 2 people with 2+ images")
    rng = np.random.default_rng(seed)
    members = {p: np.nonzero(inverse == p)[0] for p in eligible}
    trials = []
    for _ in range(repeats):
        gallery = np.array([rng.choice(members[p]) for p in eligible])
        probes = [np.setdiff1d(members[p], [g]) for p, g in zip(eligible, gallery)]
        if max_probes_per_person:
            probes = [rng.choice(pr, min(len(pr), max_probes_per_person), replace=False) for pr in probes]
        trials.append((gallery, np.concatenate(probes)))
    return inverse, trials


def identification_from_scores(score_fn: ScoreFn, identities: Sequence[str], repeats: int = 5, seed: int = 0,
                               max_probes_per_person: int | None = None,
                               threshold: float | None = None) -> dict[str, float]:
    """Rank-1 identification for any scorer: ``score_fn(gallery, probes)`` -> (probes, gallery)
    scores (cosine of embeddings, or each enrolled user's verifier on each probe). Columns beyond
    the gallery are distractors: a best match there is always a miss.

    With ``threshold`` (open set): a probe counts as detected and identified when its best
    score is both right and >= threshold (DIR); ``reject_rate`` is the share of probes whose
    best score is below it.
    """
    inverse, trials = identification_trials(identities, repeats, seed, max_probes_per_person)
    accs, dirs, rejects = [], [], []
    for gallery, probes in trials:
        scores = np.asarray(score_fn(gallery, probes))
        best = np.argmax(scores, axis=1)
        in_gallery = best < len(gallery)
        right = in_gallery & (inverse[gallery][np.where(in_gallery, best, 0)] == inverse[probes])
        accs.append(float(np.mean(right)))
        if threshold is not None:
            top = scores[np.arange(len(probes)), best]
            dirs.append(float(np.mean(right & (top >= threshold))))
            rejects.append(float(np.mean(top < threshold)))
    out = {"rank1": float(np.mean(accs)), "rank1_std": float(np.std(accs)), "repeats": repeats,
           "people": int(len(trials[0][0])), "probes": int(len(trials[0][1]))}
    if threshold is not None:
        out.update(threshold=float(threshold), dir=float(np.mean(dirs)), reject_rate=float(np.mean(rejects)))
    return out


def identification_accuracy(embeddings: np.ndarray, identities: Sequence[str], repeats: int = 5, seed: int = 0,
                            distractors: np.ndarray | None = None) -> dict[str, float]:
    """Closed-set rank-1 identification by cosine nearest neighbour.

    People with at least 2 images; per repeat one random image per person is the gallery and
    all their other images are probes. ``distractors`` (unit embeddings of other people) may
    be added to the gallery. Returns mean and std of rank-1 accuracy over the repeats.
    """
    emb = np.asarray(embeddings, dtype=np.float32)
    extra = np.zeros((0, emb.shape[1]), np.float32) if distractors is None else distractors.astype(np.float32)

    def cosine(gallery: np.ndarray, probes: np.ndarray) -> np.ndarray:
        return emb[probes] @ np.concatenate([emb[gallery], extra]).T

    out = identification_from_scores(cosine, identities, repeats, seed)
    out["distractors"] = int(len(extra))
    return out


# -- plots ---------------------------------------------------------------------------------------
def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str, title: str = "ROC") -> str:
    """Save a log-FAR ROC plot of one or more (far, tar) curves as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=120)
    for label, (far, tar) in curves.items():
        keep = far > 0
        ax.plot(far[keep], tar[keep], label=label)
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(0.5, 1.0)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def folds_label(folds: Iterable[int]) -> str:
    f = sorted(folds)
    return f"folds_{f[0]}_{f[-1]}" if f == list(range(f[0], f[-1] + 1)) else "folds_" + "_".join(map(str, f))
