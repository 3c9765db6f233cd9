"""Search strategies: evolution with QuickSelect top-K (Algorithm 1), OFA-style sort, random search.

All of them take the pieces they need as callables, so any accuracy predictor and any
efficiency model can be combined:
- ``better(a_list, b_list) -> bool array``: is a[i] predicted more accurate than b[i] (batched);
- ``latency(arch) -> ms`` and optionally ``params(arch) -> count`` for the budgets.
"""
from __future__ import annotations

import json

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from ..space import SearchSpace

Arch = dict
BetterFn = Callable[[Sequence[Arch], Sequence[Arch]], np.ndarray]


class CountingComparator:
    """Wraps a batched comparator and counts pairwise comparisons (the search's cost unit)."""

    def __init__(self, better: BetterFn):
        self._better = better
        self.calls = 0

    def __call__(self, a: Sequence[Arch], b: Sequence[Arch]) -> np.ndarray:
        self.calls += len(a)
        return np.asarray(self._better(a, b), dtype=bool)


def _identity(item) -> str:
    return json.dumps(item, sort_keys=True)


def quickselect_top_k(items: Sequence[Arch], k: int, better: BetterFn, rng: np.random.Generator,
                      key: Callable[[Arch], str] = _identity) -> list[Arch]:
    """The k best items (unordered) with expected O(n) comparisons and no full sort.

    Each round compares every remaining item with one random pivot in a single batched call,
    then recurses into the side that holds the k-th best. Copies of the pivot (same ``key``)
    are set aside with it without being compared: an evolved population is full of duplicates,
    and peeling them off one pivot at a time made late generations cost O(k n) comparisons.
    """
    items = list(items)
    if k <= 0:
        return []
    if k >= len(items):
        return items
    chosen: list[Arch] = []
    while True:
        pivot = items[int(rng.integers(len(items)))]
        pk = key(pivot)
        same = [x for x in items if key(x) == pk]
        others = [x for x in items if key(x) != pk]
        wins = better(others, [pivot] * len(others)) if others else np.zeros(0, bool)
        above = [x for x, w in zip(others, wins) if w]
        below = [x for x, w in zip(others, wins) if not w]
        if len(above) >= k:
            items = above
        elif len(above) + len(same) >= k:
            return chosen + above + same[: k - len(above)]
        else:
            chosen += above + same
            k -= len(above) + len(same)
            items = below
        if k >= len(items):
            return chosen + items


def quickselect_best(items: Sequence[Arch], better: BetterFn, rng: np.random.Generator) -> Arch:
    return quickselect_top_k(items, 1, better, rng)[0]


@dataclass
class Budget:
    """Latency (and optional parameter) budget. ``margin`` is a guard band: candidates must be
    predicted under ``latency_ms * (1 - margin)``, because a LUT prediction carries a few percent
    of error and a subnet predicted just under the budget is measured over it half the time."""
    latency_ms: float
    latency: Callable[[Arch], float]
    max_params: int | None = None
    params: Callable[[Arch], int] | None = None
    margin: float = 0.0

    def ok(self, arch: Arch) -> bool:
        if self.latency(arch) > self.latency_ms * (1.0 - self.margin):
            return False
        if self.max_params is not None and self.params is not None and self.params(arch) > self.max_params:
            return False
        return True


def sample_under_budget(make: Callable[[], Arch], budget: Budget, max_tries: int = 10000) -> Arch:
    """Rejection sampling: draw candidates until one fits the budget."""
    for _ in range(max_tries):
        arch = make()
        if budget.ok(arch):
            return arch
    raise RuntimeError(f"no candidate met the budget ({budget.latency_ms:.3f} ms) in {max_tries} tries; "
                       f"the budget is probably below the smallest subnet's latency")


@dataclass
class SearchResult:
    best: Arch
    method: str
    comparator_calls: int
    seconds: float
    history: list[dict] = field(default_factory=list)   # per generation: calls, best-so-far proxy
    population: list[Arch] = field(default_factory=list)


@dataclass
class EvolutionConfig:
    generations: int = 500      # T
    population: int = 100       # P
    parent_ratio: float = 0.25  # Kr: parents K = floor(P * Kr)
    mutation_ratio: float = 0.5  # Mr: mutations M = floor(P * Mr)
    mutation_prob: float = 0.1  # Pm: per-gene mutation probability
    seed: int = 0


def evolution_search(space: SearchSpace, better: BetterFn, budget: Budget, cfg: EvolutionConfig = EvolutionConfig(),
                     score: Callable[[Arch], float] | None = None, progress: bool = False) -> SearchResult:
    """Algorithm 1: evolution whose selection uses only pairwise comparisons via QuickSelect.

    ``score`` (optional, e.g. a regressor) is used only to log search progress, never to select.
    """
    rng = np.random.default_rng(cfg.seed)
    comparator = CountingComparator(better)
    t0 = time.time()
    P = cfg.population
    K = max(1, int(np.floor(P * cfg.parent_ratio)))
    M = int(np.floor(P * cfg.mutation_ratio))
    population = [sample_under_budget(lambda: space.sample(rng), budget) for _ in range(P)]
    history = []
    iterator = range(cfg.generations)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="evolution", unit="gen")
    for gen in iterator:
        calls_before = comparator.calls
        parents = quickselect_top_k(population, K, comparator, rng)
        mutants = [sample_under_budget(lambda: space.mutate(parents[int(rng.integers(K))], cfg.mutation_prob, rng),
                                       budget) for _ in range(M)]
        n_cross = P - K - M
        children = [sample_under_budget(lambda: space.crossover(parents[int(rng.integers(K))],
                                                                parents[int(rng.integers(K))], rng), budget)
                    for _ in range(n_cross)]
        population = parents + mutants + children
        entry = {"generation": gen, "comparator_calls": comparator.calls - calls_before}
        if score is not None:
            entry["best_parent_score"] = float(max(score(p) for p in parents))
        history.append(entry)
    best = quickselect_best(population, comparator, rng)
    return SearchResult(best, "nac_quickselect", comparator.calls, time.time() - t0, history, population)


def sort_evolution_search(space: SearchSpace, predict: Callable[[Sequence[Arch]], np.ndarray], budget: Budget,
                          cfg: EvolutionConfig = EvolutionConfig()) -> SearchResult:
    """OFA's evolution finder: same loop, parents by fully sorting the population by a regressor."""
    rng = np.random.default_rng(cfg.seed)
    t0 = time.time()
    P = cfg.population
    K = max(1, int(np.floor(P * cfg.parent_ratio)))
    M = int(np.floor(P * cfg.mutation_ratio))
    population = [sample_under_budget(lambda: space.sample(rng), budget) for _ in range(P)]
    evaluations = 0
    history = []
    for gen in range(cfg.generations):
        scores = predict(population)
        evaluations += len(population)
        order = np.argsort(-scores)
        parents = [population[i] for i in order[:K]]
        mutants = [sample_under_budget(lambda: space.mutate(parents[int(rng.integers(K))], cfg.mutation_prob, rng),
                                       budget) for _ in range(M)]
        children = [sample_under_budget(lambda: space.crossover(parents[int(rng.integers(K))],
                                                                parents[int(rng.integers(K))], rng), budget)
                    for _ in range(P - K - M)]
        population = parents + mutants + children
        history.append({"generation": gen, "best_parent_score": float(scores[order[0]])})
    scores = predict(population)
    evaluations += len(population)
    best = population[int(np.argmax(scores))]
    return SearchResult(best, "mlp_sort", evaluations, time.time() - t0, history, population)


def random_search(space: SearchSpace, predict: Callable[[Sequence[Arch]], np.ndarray], budget: Budget,
                  n: int = 1000, seed: int = 0) -> SearchResult:
    """Baseline: n random subnets under the budget, the best by the predictor."""
    rng = np.random.default_rng(seed)
    t0 = time.time()
    cands = [sample_under_budget(lambda: space.sample(rng), budget) for _ in range(n)]
    scores = predict(cands)
    return SearchResult(cands[int(np.argmax(scores))], "random", n, time.time() - t0, [], cands)


def best_in_dataset(archs: Sequence[Mapping], accuracies: Sequence[float], budget: Budget) -> tuple[Arch, float]:
    """The measured-best architecture of an accuracy dataset that fits the budget (an oracle reference)."""
    fits = [(a, acc) for a, acc in zip(archs, accuracies) if budget.ok(dict(a))]
    if not fits:
        raise ValueError("no architecture of the dataset fits the budget")
    return max(fits, key=lambda t: t[1])
