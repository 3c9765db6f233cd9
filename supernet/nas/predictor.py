"""Accuracy prediction: the LightGBM pairwise comparator (NAC) and OFA's MLP accuracy regressor.

Both consume the fixed-length encoding of :meth:`SearchSpace.encode`, so either can drive any
search strategy. The comparator answers "is a more accurate than b?" directly; it is made
antisymmetric by averaging p(a > b) with 1 - p(b > a).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..space import SearchSpace


def pair_features(enc_a: np.ndarray, enc_b: np.ndarray) -> np.ndarray:
    """Both encodings and their difference (the difference makes 'which slot differs' explicit)."""
    return np.concatenate([enc_a, enc_b, enc_a - enc_b], axis=1).astype(np.float32)


def random_pairs(n_items: int, n_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    i = rng.integers(0, n_items, size=n_pairs * 2)
    j = rng.integers(0, n_items, size=n_pairs * 2)
    keep = i != j
    return i[keep][:n_pairs], j[keep][:n_pairs]


class PairwiseComparator:
    """LightGBM binary classifier on (encoding a, encoding b): P(acc(a) > acc(b))."""

    name = "nac_lightgbm"

    def __init__(self, space: SearchSpace, n_pairs: int = 20000, n_estimators: int = 300, learning_rate: float = 0.05,
                 num_leaves: int = 31, seed: int = 0):
        self.space = space
        self.n_pairs, self.seed = n_pairs, seed
        self.params = {"n_estimators": n_estimators, "learning_rate": learning_rate, "num_leaves": num_leaves,
                       "random_state": seed, "verbose": -1, "n_jobs": 1}
        self.model = None

    def fit(self, archs: Sequence[Mapping], accuracies: Sequence[float]) -> "PairwiseComparator":
        import lightgbm as lgb

        enc = np.stack([self.space.encode(a) for a in archs])
        acc = np.asarray(accuracies, dtype=np.float64)
        rng = np.random.default_rng(self.seed)
        i, j = random_pairs(len(enc), self.n_pairs, rng)
        ties = acc[i] == acc[j]
        i, j = i[~ties], j[~ties]
        self.model = lgb.LGBMClassifier(**self.params)
        self.model.fit(pair_features(enc[i], enc[j]), (acc[i] > acc[j]).astype(int))
        return self

    def prob_better(self, a: Sequence[Mapping], b: Sequence[Mapping]) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("comparator is not fitted")
        if len(a) == 0:
            return np.zeros(0)
        ea = np.stack([self.space.encode(x) for x in a])
        eb = np.stack([self.space.encode(x) for x in b])
        p_ab = self.model.predict_proba(pair_features(ea, eb))[:, 1]
        p_ba = self.model.predict_proba(pair_features(eb, ea))[:, 1]
        return 0.5 * (p_ab + 1.0 - p_ba)

    def better(self, a: Sequence[Mapping], b: Sequence[Mapping]) -> np.ndarray:
        return self.prob_better(a, b) > 0.5

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"kind": self.name, "params": self.params, "n_pairs": self.n_pairs,
                                    "booster": self.model.booster_.model_to_string()}))
        return path

    @classmethod
    def load(cls, path: str | Path, space: SearchSpace) -> "PairwiseComparator":
        import lightgbm as lgb

        data = json.loads(Path(path).read_text())
        if data.get("kind") != cls.name:
            raise ValueError(f"{path} is not a {cls.name} model")
        obj = cls(space, n_pairs=data["n_pairs"])
        obj.params = data["params"]
        booster = lgb.Booster(model_str=data["booster"])
        obj.model = _BoosterClassifier(booster)
        return obj


class _BoosterClassifier:
    """predict_proba over a bare Booster (what a saved model reloads as)."""

    def __init__(self, booster):
        self.booster_ = booster

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = self.booster_.predict(x)
        return np.stack([1 - p, p], axis=1)


class MLPAccuracyPredictor:
    """OFA's accuracy predictor: an MLP (3 hidden layers of 400, ReLU) regressing accuracy."""

    name = "mlp_regressor"

    def __init__(self, space: SearchSpace, hidden: int = 400, layers: int = 3, epochs: int = 300, lr: float = 1e-3,
                 seed: int = 0):
        self.space, self.hidden, self.layers, self.epochs, self.lr, self.seed = space, hidden, layers, epochs, lr, seed
        self.net = None
        self.mean = 0.0
        self.scale = 1.0

    def _build(self, dim: int):
        import torch
        from torch import nn

        torch.manual_seed(self.seed)
        mods, d = [], dim
        for _ in range(self.layers):
            mods += [nn.Linear(d, self.hidden), nn.ReLU()]
            d = self.hidden
        mods.append(nn.Linear(d, 1))
        return nn.Sequential(*mods)

    def fit(self, archs: Sequence[Mapping], accuracies: Sequence[float], batch: int = 256) -> "MLPAccuracyPredictor":
        import torch

        x = torch.from_numpy(np.stack([self.space.encode(a) for a in archs]))
        y = torch.tensor(np.asarray(accuracies, dtype=np.float32))
        self.mean, self.scale = float(y.mean()), float(y.std() + 1e-8)
        y = (y - self.mean) / self.scale
        self.net = self._build(x.shape[1])
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, self.epochs)
        gen = torch.Generator().manual_seed(self.seed)
        for _ in range(self.epochs):
            perm = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), batch):
                idx = perm[i:i + batch]
                loss = torch.nn.functional.mse_loss(self.net(x[idx]).squeeze(1), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
        return self

    def predict(self, archs: Sequence[Mapping]) -> np.ndarray:
        import torch

        if self.net is None:
            raise RuntimeError("predictor is not fitted")
        if len(archs) == 0:
            return np.zeros(0)
        with torch.no_grad():
            x = torch.from_numpy(np.stack([self.space.encode(a) for a in archs]))
            return self.net(x).squeeze(1).numpy() * self.scale + self.mean

    def better(self, a: Sequence[Mapping], b: Sequence[Mapping]) -> np.ndarray:
        return self.predict(a) > self.predict(b)


# -- evaluation of predictors -------------------------------------------------------------------------
def pairwise_accuracy(prob_or_better: np.ndarray, true_a: np.ndarray, true_b: np.ndarray) -> float:
    """Fraction of (non-tied) pairs whose order is predicted correctly."""
    pred = np.asarray(prob_or_better) > 0.5 if np.asarray(prob_or_better).dtype != bool else prob_or_better
    truth = np.asarray(true_a) > np.asarray(true_b)
    keep = np.asarray(true_a) != np.asarray(true_b)
    return float(np.mean(pred[keep] == truth[keep]))


def kendall_tau_from_comparator(archs: Sequence[Mapping], accuracies: Sequence[float], better) -> float:
    """Kendall's tau between the true order and the comparator's answers over all pairs."""
    n = len(archs)
    i, j = np.triu_indices(n, k=1)
    pred = np.asarray(better([archs[k] for k in i], [archs[k] for k in j]), dtype=bool)
    acc = np.asarray(accuracies)
    truth = np.sign(acc[i] - acc[j])
    keep = truth != 0
    agree = np.where(pred[keep], 1, -1) * truth[keep]
    return float(agree.mean())
