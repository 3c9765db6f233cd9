"""Face glue for the device search: LUT commands, the face accuracy dataset, and the search report.

The mechanisms (LUTs, predictors, QuickSelect evolution) live in ``supernet.nas`` and know
nothing about faces; here they get the face evaluator (LFW set 5) and the trained SuperNet.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from supernet.nas.dataset import build_accuracy_dataset, read_dataset, split_rows
from supernet.nas.efficiency import DeviceProfile, LatencyLUT, NetworkGeometry
from supernet.spaces.staged import StagedSpace

from .config import Config
from .errors import ConfigError
from .reporting import git_commit, write_result

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _supernet(cfg: Config, weights: str | None = None):
    from .descriptor import load_supernet_weights

    return load_supernet_weights(weights or cfg.get_path("search.supernet_weights"))


def geometry_for(net) -> NetworkGeometry:
    """Block shapes of the SuperNet's space (each registered space has its own geometry)."""
    return net.geometry()


def space_name(net) -> str:
    from supernet.spaces import kind_of

    return kind_of(net.supernet_config())


def profile_lut(prof: DeviceProfile, net, calibrated: bool = True) -> LatencyLUT:
    """The profile's LUT over the SuperNet's space; refuses a profile measured for another space."""
    if prof.space != space_name(net):
        raise ConfigError(f"device profile {prof.name!r} holds a LUT of the {prof.space!r} space, but the SuperNet is "
                          f"{space_name(net)!r}: measure one with `hyperver lut measure` for these weights")
    return prof.lut(net.space, calibrated=calibrated)


# -- LUTs ------------------------------------------------------------------------------------------
def lut_measure(cfg: Config, backend: str, threads: int, name: str | None = None, weights: str | None = None,
                out_dir: str | None = None) -> DeviceProfile:
    """Measure a LUT on this machine and write ``<name>.lut.txt`` + ``<name>.json`` (a device profile)."""
    from supernet.nas.measure import measure_lut

    net = _supernet(cfg, weights)
    geom = geometry_for(net)
    name = name or f"this_cpu_{backend}_t{threads}"
    out = Path(out_dir or cfg.get_path("search.devices_dir"))
    lut_path = out / f"{name}.lut.txt"
    # Resumable: keys already in the file are kept, and the file is rewritten after every block.
    lut = LatencyLUT(geom, LatencyLUT.read_text(lut_path) if lut_path.exists() else None)
    p = cfg.get_path("search.lut")
    measure_lut(geom, backend, threads, int(p["warmup"]), int(p["repeats"]), existing=lut,
                on_entry=lambda key, entry: lut.save_text(lut_path), rounds=int(p["rounds"]))
    lut.save_text(lut_path)
    profile = DeviceProfile(name, backend, threads, lut_path.name, net.input_size, net.width_mult, net.embed_dim,
                            space=space_name(net))
    profile.save(out / f"{name}.json")
    return lut_calibrate(cfg, str(out / f"{name}.json"), weights=weights)


def _measure_subnets(net, archs, runtime: str, threads: int, warmup: int, repeats: int, desc: str,
                     rounds: int = 1) -> np.ndarray:
    """Whole-subnet latencies (ms), all subnets timed interleaved over ``rounds`` rounds."""
    from supernet.nas.measure import measure_networks
    from supernet.spaces import build_static

    nets = [build_static(net.net_config(arch)).eval() for arch in archs]
    entries = measure_networks(nets, net.input_size, runtime, threads, warmup, repeats, rounds, progress=True, desc=desc)
    return np.array([e.mean for e in entries])


def lut_calibrate(cfg: Config, device: str, n: int | None = None, weights: str | None = None,
                  refit: bool = False) -> DeviceProfile:
    """Fit the profile's calibration (``supernet.nas.efficiency.fit_calibration``) on n whole
    subnets measured on this device (``refit``: on the timings the profile already stores).

    The calibration subnets come from their own seed (``search.lut.calibration_seed``), disjoint
    from the fidelity check's, so ``lut check`` stays a held-out test of the calibrated LUT.
    """
    from dataclasses import replace

    from supernet.nas.efficiency import fit_calibration

    net = _supernet(cfg, weights)
    path = Path(device) if Path(device).suffix else Path(cfg.get_path("search.devices_dir")) / f"{device}.json"
    prof = load_profile(cfg, str(path))
    p = cfg.get_path("search.lut")
    n = int(n or p["calibration_subnets"])
    seed = int(p["calibration_seed"])
    rng = np.random.default_rng(seed)
    # Spread over the latency range: the smallest and largest subnets plus random ones.
    archs = [net.space.smallest(), net.space.largest()] + [net.space.sample(rng) for _ in range(max(0, n - 2))]
    raw = profile_lut(prof, net, calibrated=False)
    sums = np.array([raw.block_sum(a) for a in archs])
    if refit:   # the profile's stored whole-subnet timings, fitted again (a new fit rule, no timing)
        old = prof.calibration or {}
        if old.get("seed") != seed or len(old.get("measured_ms", [])) != n:
            raise ConfigError(f"{prof.name} holds no stored calibration timings for seed {seed} and {n} subnets; "
                              "calibrate without --refit")
        measured = np.array(old["measured_ms"], dtype=np.float64)
    else:
        measured = _measure_subnets(net, archs, prof.runtime, prof.threads, int(p["warmup"]), int(p["repeats"]),
                                    f"calibrate {prof.name}", int(p["rounds"]))
    mparams = np.array([raw.geometry.params(a) / 1e6 for a in archs])
    cal = {**fit_calibration(sums, measured, mparams), "seed": seed,
           "block_sum_ms": sums.round(4).tolist(), "measured_ms": measured.round(4).tolist(),
           "mparams": mparams.round(4).tolist()}
    prof = replace(prof, calibration=cal, lut_file=Path(prof.lut_file).name)
    prof.save(path)
    return prof


def lut_import(cfg: Config, lut_file: str, name: str, runtime: str, threads: int, weights: str | None = None,
               out_dir: str | None = None) -> DeviceProfile:
    """Make a device profile from a LUT measured elsewhere (e.g. a phone); checks it covers the space."""
    import shutil

    net = _supernet(cfg, weights)
    geom = geometry_for(net)
    lut = LatencyLUT(geom, LatencyLUT.read_text(lut_file))
    missing = lut.missing()
    if missing:
        raise ConfigError(f"imported LUT lacks {len(missing)} block(s) of this space, e.g. {missing[0]}")
    out = Path(out_dir or cfg.get_path("search.devices_dir"))
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(lut_file, out / f"{name}.lut.txt")
    profile = DeviceProfile(name, runtime, threads, f"{name}.lut.txt", net.input_size, net.width_mult, net.embed_dim,
                            space=space_name(net))
    profile.save(out / f"{name}.json")
    return profile


def load_profile(cfg: Config, device: str) -> DeviceProfile:
    path = Path(device)
    if not path.suffix:
        path = Path(cfg.get_path("search.devices_dir")) / f"{device}.json"
    try:
        return DeviceProfile.load(path)
    except FileNotFoundError as exc:
        raise ConfigError(f"{exc}; measure one with `hyperver lut measure` or import one with `hyperver lut import`")


def lut_check(cfg: Config, devices: Sequence[str], n: int | None = None, weights: str | None = None,
              out: str = "results/lut_fidelity.json", seed: int = 0) -> dict[str, Any]:
    """LUT-predicted vs measured whole-network latency for n random subnets, per device profile."""
    from scipy.stats import spearmanr

    commit = git_commit()   # before the plot (a tracked output) is written

    net = _supernet(cfg, weights)
    n = int(n or cfg.get_path("search.fidelity_subnets"))
    rng = np.random.default_rng(seed)
    archs = [net.space.sample(rng) for _ in range(n)]
    p = cfg.get_path("search.lut")
    backends: dict[str, Any] = {}
    plots = {}
    for device in devices:
        prof = load_profile(cfg, device)
        lut, raw = profile_lut(prof, net), profile_lut(prof, net, calibrated=False)
        if prof.calibration and int(prof.calibration.get("seed", -1)) == seed:
            raise ConfigError(f"{prof.name} was calibrated on seed {seed}: check on other subnets (another seed)")
        meas_a = _measure_subnets(net, archs, prof.runtime, prof.threads, int(p["warmup"]), int(p["repeats"]),
                                  f"fidelity {prof.name}", int(p["rounds"]))
        pred_a = np.array([lut.predict(a) for a in archs])
        sum_a = np.array([raw.predict(a) for a in archs])
        backends[prof.runtime] = {"device": prof.name, "threads": prof.threads, "n": n,
                                  "spearman": float(spearmanr(pred_a, meas_a).statistic),
                                  "mape": float(np.mean(np.abs(pred_a - meas_a) / meas_a)),
                                  "calibration": {k: prof.calibration.get(k) for k in ("scale", "offset", "per_mparam", "terms",
                                                                                     "loo_mape", "n_subnets")}
                                  if prof.calibration else None,
                                  "mape_uncalibrated_block_sum": float(np.mean(np.abs(sum_a - meas_a) / meas_a)),
                                  "predicted_ms": pred_a.round(4).tolist(), "block_sum_ms": sum_a.round(4).tolist(),
                                  "measured_ms": meas_a.round(4).tolist()}
        plots[prof.name] = (pred_a, meas_a)
    out_p = Path(out)
    png = out_p.with_suffix(".png")
    _plot_fidelity(plots, png)
    write_result(out_p, {"backends": backends, "plot": str(png)}, commit=commit)
    return backends


def _plot_fidelity(plots: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=110)
    hi = 0.0
    for name, (pred, meas) in plots.items():
        ax.scatter(meas, pred, s=14, label=name)
        hi = max(hi, pred.max(), meas.max())
    ax.plot([0, hi * 1.05], [0, hi * 1.05], "k--", lw=0.8)
    ax.set_xlabel("measured whole-network latency (ms)")
    ax.set_ylabel("LUT-predicted latency (ms)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


# -- accuracy dataset -------------------------------------------------------------------------------
def face_subnet_evaluator(cfg: Config, net, calibration_data=None):
    """Evaluate one subnet on LFW set 5: BN recalibration (on ``calibration_data``, loaded if not
    given), pair accuracy (fold 5), AUC over all set-5 genuine pairs vs sampled impostors, rank-1
    identification, cosine to the teacher."""
    import torch

    from .descriptor.data import load_bn_calibration
    from supernet.calibrate import recalibrate_bn

    from .descriptor.evaluate import EMBEDDERS, bn_batches
    from .descriptor.train import load_validation_set
    from .eval.metrics import best_accuracy_threshold, identification_accuracy, roc_auc

    teacher = cfg.get_path("search.teacher")
    calib = calibration_data if calibration_data is not None else load_bn_calibration(cfg)
    val = load_validation_set(cfg, teacher)
    labels = val.data.labels.numpy()
    rng = np.random.default_rng(0)
    pos_i, pos_j = np.nonzero((labels[:, None] == labels[None, :]) & (labels[:, None] >= 0))
    keep = pos_i < pos_j
    pos_i, pos_j = pos_i[keep], pos_j[keep]
    neg_i, neg_j = rng.integers(0, len(labels), 20000), rng.integers(0, len(labels), 20000)
    keep = (labels[neg_i] != labels[neg_j]) | (labels[neg_i] < 0)
    neg_i, neg_j = neg_i[keep], neg_j[keep]
    ai, aj = np.r_[pos_i, neg_i], np.r_[pos_j, neg_j]
    same = np.r_[np.ones(len(pos_i), bool), np.zeros(len(neg_i), bool)]
    ident = labels >= 0
    bn_images = int(cfg.get_path("supernet.bn_images"))
    # Fixed BN calibration batches for every subnet: differences come from architectures only.
    calib_batches = list(bn_batches(calib, net.input_size, bn_images))
    teacher_emb = val.data.teacher.numpy()

    embed = EMBEDDERS[cfg.get_path("search.dataset.runtime")]

    def evaluate(arch: dict) -> dict[str, float]:
        # channels_last: ~1.3x faster depthwise convolutions on CPU for the BN pass (measured on elastic_mfn).
        sub = net.get_subnet(arch).to(memory_format=torch.channels_last)
        recalibrate_bn(sub, calib_batches, max_images=bn_images)
        with torch.no_grad():
            emb = embed(sub, val.data.crops, net.input_size)
        pair_scores = np.sum(emb[val.pair_a] * emb[val.pair_b], axis=1)
        _, pair_acc = best_accuracy_threshold(pair_scores, val.same)
        auc_all = roc_auc(np.sum(emb[ai] * emb[aj], axis=1), same)
        rank1 = identification_accuracy(emb[ident], labels[ident].astype(str), repeats=5, seed=0)["rank1"]
        tcos = float(np.mean(np.sum(emb * teacher_emb, axis=1)))
        # One scalar for the predictors: identification and verification quality together.
        return {"val_pair_accuracy": pair_acc, "val_auc_all": auc_all, "val_rank1": rank1, "teacher_cosine": tcos,
                "val_score": 0.5 * rank1 + 0.5 * auc_all}

    return evaluate


def build_dataset(cfg: Config, n: int | None = None, weights: str | None = None, path: str | None = None) -> list[dict]:
    import hashlib

    weights_path = Path(weights or cfg.get_path("search.supernet_weights"))
    net = _supernet(cfg, weights)
    dc = cfg.get_path("search.dataset")
    path_p = Path(path or dc["path"])
    # The dataset is only meaningful for the weights it was measured with: a sidecar records
    # them and a resume with other weights (or another evaluator) is refused rather than mixed.
    meta = {"supernet_weights": str(weights_path),
            "supernet_sha1": hashlib.sha1(weights_path.read_bytes()).hexdigest(),
            "teacher": cfg.get_path("search.teacher"), "bn_images": int(cfg.get_path("supernet.bn_images")),
            "seed": int(dc["seed"]), "metrics": "LFW set 5 (val_pair_accuracy, val_auc_all, val_rank1, teacher_cosine)"}
    meta_p = path_p.with_suffix(".meta.json")
    if meta_p.exists() and path_p.exists():
        old = json.loads(meta_p.read_text())
        changed = [k for k in ("supernet_sha1", "teacher", "bn_images", "seed") if old.get(k) != meta[k]]
        if changed:
            raise ConfigError(f"{path_p} was built with other settings ({', '.join(changed)} differ); "
                              "move it away or pass another search.dataset.path")
    path_p.parent.mkdir(parents=True, exist_ok=True)
    meta_p.write_text(json.dumps(meta, indent=1) + "\n")
    return build_accuracy_dataset(net.space, face_subnet_evaluator(cfg, net), int(n or dc["n"]), path_p,
                                  seed=int(dc["seed"]))


# -- predictors -------------------------------------------------------------------------------------
def search_space(cfg: Config, weights: str | None = None):
    """The search space of the configured SuperNet (read from its file's metadata, no weights loaded)."""
    from supernet.io import read_supernet_config
    from supernet.spaces import space_of

    return space_of(read_supernet_config(weights or cfg.get_path("search.supernet_weights")))


def fit_predictors(cfg: Config, rows: Sequence[dict], space):
    from supernet.nas.predictor import MLPAccuracyPredictor, PairwiseComparator

    metric = cfg.get_path("search.target_metric")
    archs = [r["arch"] for r in rows]
    acc = [r[metric] for r in rows]
    nac = PairwiseComparator(space, **cfg.get_path("search.comparator")).fit(archs, acc)
    mlp = MLPAccuracyPredictor(space, **cfg.get_path("search.mlp")).fit(archs, acc)
    return nac, mlp


def evaluate_predictors(cfg: Config, out: str = "results/comparator.json", path: str | None = None) -> dict[str, Any]:
    from supernet.nas.predictor import kendall_tau_from_comparator, pairwise_accuracy, random_pairs

    dc = cfg.get_path("search.dataset")
    rows = read_dataset(path or dc["path"])
    if len(rows) < 20:
        raise ConfigError(f"the accuracy dataset has {len(rows)} subnets; build it first (hyperver search build-dataset)")
    train, held = split_rows(rows, float(dc["holdout"]), int(dc["seed"]))
    t0 = time.time()
    nac, mlp = fit_predictors(cfg, train, search_space(cfg))
    fit_s = time.time() - t0
    metric = cfg.get_path("search.target_metric")
    archs = [r["arch"] for r in held]
    acc = np.array([r[metric] for r in held])
    i, j = random_pairs(len(held), 20000, np.random.default_rng(1))
    a, b = [archs[k] for k in i], [archs[k] for k in j]
    pred = mlp.predict(archs)
    figures = {"target_metric": metric, "train_subnets": len(train), "heldout_subnets": len(held),
               "fit_seconds": fit_s,
               "nac": {"pairwise_accuracy": pairwise_accuracy(nac.prob_better(a, b), acc[i], acc[j]),
                       "kendall_tau": kendall_tau_from_comparator(archs, acc, nac.better)},
               "mlp": {"pairwise_accuracy": pairwise_accuracy(mlp.better(a, b), acc[i], acc[j]),
                       "kendall_tau": kendall_tau_from_comparator(archs, acc, mlp.better),
                       "rmse": float(np.sqrt(np.mean((pred - acc) ** 2)))}}
    write_result(out, figures)
    return figures


# -- search -------------------------------------------------------------------------------------------
def guard_margin(cfg: Config, calibration: Mapping[str, Any] | None) -> float:
    """``search.budget_margin``: a fraction, or ``auto``: from the profile's leave-one-out
    calibration ratios (measured / predicted), the margin that keeps a subnet at the edge of the
    guarded budget within the budget at quantile ``search.budget_quantile`` of them (3 % for a
    profile without them). A mean error would let about half of the edge subnets run over."""
    margin = cfg.get_path("search.budget_margin")
    if margin != "auto":
        return float(margin)
    ratios = (calibration or {}).get("loo_ratios")
    if not ratios:
        return 0.03
    q = float(np.quantile(np.asarray(ratios, dtype=np.float64), float(cfg.get_path("search.budget_quantile"))))
    return float(min(0.5, max(0.0, 1.0 - 1.0 / q)))


def budget_for(cfg: Config, lut: LatencyLUT, budget_ms: float | None, budget_rel: float | None,
               reference: str | None, max_params: int | None, space: StagedSpace,
               calibration: Mapping[str, Any] | None = None):
    from supernet.nas.search import Budget
    from supernet.space import load_arch

    if budget_ms is None:
        if budget_rel is None:
            raise ConfigError("give --budget-ms or --budget-rel (with --reference, default: the largest subnet)")
        ref = space.largest() if reference in (None, "largest") else load_arch(reference, space)
        budget_ms = budget_rel * lut.predict(ref)
    return Budget(float(budget_ms), lut.predict, max_params, lut.geometry.params,
                  margin=guard_margin(cfg, calibration))


def check_feasible(budget, lut: LatencyLUT, space: StagedSpace, device: str) -> None:
    """Refuse, with the figures, a budget under the smallest subnet's predicted latency (after the guard
    band), instead of letting rejection sampling give up after thousands of draws."""
    from .errors import BudgetInfeasibleError

    limit = budget.latency_ms * (1.0 - budget.margin)
    smallest, largest = lut.predict(space.smallest()), lut.predict(space.largest())
    if smallest > limit:
        raise BudgetInfeasibleError(
            f"no subnet fits {budget.latency_ms:.2f} ms on {device}: the smallest subnet is predicted at "
            f"{smallest:.2f} ms ({smallest / largest:.2f}x the largest) and the guard band "
            f"({budget.margin:.1%}) leaves {limit:.2f} ms")


def run_search(cfg: Config, device: str, budget_ms: float | None = None, budget_rel: float | None = None,
               reference: str | None = None, max_params: int | None = None, weights: str | None = None,
               out_dir: str = "results/search", methods: Sequence[str] = ("nac_quickselect", "mlp_sort", "random"),
               export: bool = True, progress: bool = True, calibration_sources: Sequence[str] | None = None,
               calibration_limit: int | None = None, net=None, calibration_data=None,
               predictors=None) -> list[dict[str, Any]]:
    """Search one device/budget with each method; export each winner (BN recalibrated on the first
    ``calibration_limit`` images of each calibration source, default ``BN_CALIBRATION_SOURCES``)
    as a descriptor.

    ``net`` / ``calibration_data`` / ``predictors``: an already loaded SuperNet, BN-calibration images
    and fitted (comparator, MLP) pair (``fit_search_predictors``), so that a caller searching many
    budgets (the search report) loads and fits them once."""
    from supernet.nas.search import EvolutionConfig, evolution_search, random_search, sort_evolution_search
    from supernet.space import arch_id, save_arch

    net = net if net is not None else _supernet(cfg, weights)
    prof = load_profile(cfg, device)
    lut = profile_lut(prof, net)
    budget = budget_for(cfg, lut, budget_ms, budget_rel, reference, max_params, net.space, prof.calibration)
    check_feasible(budget, lut, net.space, prof.name)
    nac, mlp = predictors if predictors is not None else fit_search_predictors(cfg, net.space)
    evo = EvolutionConfig(**cfg.get_path("search.evolution"))
    results = []
    for method in methods:
        if method == "nac_quickselect":
            res = evolution_search(net.space, nac.better, budget, evo, progress=progress)
        elif method == "mlp_sort":
            res = sort_evolution_search(net.space, mlp.predict, budget, evo)
        elif method == "random":
            res = random_search(net.space, mlp.predict, budget, int(cfg.get_path("search.random_candidates")))
        else:
            raise ConfigError(f"unknown search method {method!r}")
        results.append({"method": method, "backend": prof.runtime, "device": prof.name, "budget_ms": budget.latency_ms,
                        "guard_margin": budget.margin,
                        "predicted_latency_ms": lut.predict(res.best), "params": lut.geometry.params(res.best),
                        "search_s": res.seconds, "comparator_calls": res.comparator_calls, "arch": res.best,
                        "arch_id": arch_id(res.best), "history": res.history[-1:] if res.history else []})
    out = Path(out_dir)
    best = results[0]["arch"]
    save_arch(best, out / f"{prof.name}_{budget.latency_ms:.2f}ms.arch.json", id=arch_id(best),
              predicted_latency_ms=lut.predict(best), device=prof.name, space=space_name(net),
              input_size=net.input_size, width_mult=net.width_mult)
    if export:
        from .descriptor.data import load_bn_calibration
        from .descriptor.report import export_subnet

        calib = calibration_data if calibration_data is not None else load_bn_calibration(
            cfg, calibration_sources, calibration_limit)
        for r in results:
            exp = export_subnet(net, r["arch"], out, calib, name=f"{prof.name}_{budget.latency_ms:.2f}ms_{r['method']}",
                                bn_images=int(cfg.get_path("supernet.bn_images")))
            r["files"] = exp["files"]
    return results


def fit_search_predictors(cfg: Config, space):
    """(comparator, MLP) fitted on the accuracy dataset's training split (the held-out rows stay unseen)."""
    rows = read_dataset(cfg.get_path("search.dataset.path"))
    if len(rows) < 20:
        raise ConfigError("build the accuracy dataset first: hyperver search build-dataset")
    train, _ = split_rows(rows, float(cfg.get_path("search.dataset.holdout")), int(cfg.get_path("search.dataset.seed")))
    return fit_predictors(cfg, train, space)


def calls_vs_population(cfg: Config, device: str, budget_rel: float = 0.6, generations: int = 20,
                        weights: str | None = None, comparator=None) -> dict[str, float]:
    """Mean comparator calls per generation for P = 50, 100, 200 (should grow linearly)."""
    from supernet.nas.search import EvolutionConfig, evolution_search

    net = _supernet(cfg, weights)
    prof = load_profile(cfg, device)
    lut = profile_lut(prof, net)
    budget = budget_for(cfg, lut, None, budget_rel, None, None, net.space, prof.calibration)
    nac = comparator if comparator is not None else fit_search_predictors(cfg, net.space)[0]
    out = {}
    for p in (50, 100, 200):
        evo = EvolutionConfig(**{**cfg.get_path("search.evolution"), "population": p, "generations": generations})
        res = evolution_search(net.space, nac.better, budget, evo)
        out[str(p)] = float(np.mean([h["comparator_calls"] for h in res.history]))
    return out


def search_report(cfg: Config, devices: Sequence[str], budgets_rel: Sequence[float] | None = None,
                  weights: str | None = None, out: str = "results/search.json") -> dict[str, Any]:
    """The paper-style table: per device and budget, each method's subnet with LFW test accuracy
    and measured latency; comparator calls vs population; a Pareto plot of the accuracy dataset.
    The found subnets (arch JSON + exports) go to the folder named after ``out`` (results/search/).
    Budgets (``search.report_budgets_rel`` by default) are fractions of the largest subnet's latency;
    one that no subnet fits on a device is recorded under ``infeasible`` with the reason."""
    from .descriptor.data import load_bn_calibration
    from .descriptor.report import eval_subnet_on_test_folds
    from .errors import BudgetInfeasibleError

    budgets_rel = list(budgets_rel or cfg.get_path("search.report_budgets_rel"))

    commit = git_commit()   # before the plot (a tracked output) is written
    runs, infeasible = [], []
    metric = cfg.get_path("search.target_metric")
    net = _supernet(cfg, weights)
    calib = load_bn_calibration(cfg)
    validate = face_subnet_evaluator(cfg, net, calib)
    subnets_dir = Path(out).with_suffix("")   # results/search.json -> results/search/ (arch JSON + exports)
    predictors = fit_search_predictors(cfg, net.space)   # once: every device and budget searches with the same
    for device in devices:
        prof = load_profile(cfg, device)
        found = []
        for rel in budgets_rel:
            try:
                searched = run_search(cfg, device, budget_rel=rel, weights=weights, progress=False, net=net,
                                      calibration_data=calib, predictors=predictors, out_dir=str(subnets_dir))
            except BudgetInfeasibleError as exc:
                print(f"{prof.name} at {rel:g}x: {exc}")
                infeasible.append({"device": prof.name, "budget_rel": rel, "reason": str(exc)})
                continue
            for r in searched:
                weights_file = Path(r["files"]["safetensors"])
                test = eval_subnet_on_test_folds(cfg, weights_file.stem, weights_file)
                found.append({**{k: r[k] for k in ("method", "backend", "device", "budget_ms", "guard_margin",
                                                   "predicted_latency_ms", "params", "search_s", "comparator_calls",
                                                   "arch_id")},
                              "budget_rel": rel, "accuracy": test["accuracy"], "val_at_far_1e3": test["val_at_far_1e3"],
                              metric: validate(r["arch"])[metric], "arch": r["arch"]})
        time_found_subnets(cfg, net, prof, found)
        for r in found:
            print(json.dumps({k: v for k, v in r.items() if k != "arch"}))
        runs += found
    calls = calls_vs_population(cfg, devices[0], weights=weights, comparator=predictors[0])
    png = Path(out).with_name(Path(out).stem + "_pareto.png")   # results/search.json -> search_pareto.png
    _plot_pareto(cfg, devices[0], runs, png, weights)
    figures = {"runs": runs, "infeasible": infeasible, "budgets_rel": budgets_rel,
               "calls_vs_population": calls, "pareto_png": str(png)}
    write_result(out, figures, commit=commit)
    return figures


def time_found_subnets(cfg: Config, net, prof: DeviceProfile, found: list[dict]) -> None:
    """Measured latency of each found subnet, in place: ``latency_ms``, ``latency_rel`` (to the
    largest subnet timed in the same batch) and the budget checks.

    All of one device's subnets and the largest subnet are timed together, interleaved, as the
    LUT check times its subnets. Budgets given as a fraction of the largest subnet's latency are
    checked on that ratio (``within_budget``): this machine's speed drifts by ~10 % between runs
    minutes apart, which the ratio cancels and an absolute figure cannot (``within_budget_ms``
    compares with the LUT-predicted budget in ms, for the record)."""
    p = cfg.get_path("search.lut")
    largest = net.space.largest()
    lat = _measure_subnets(net, [r["arch"] for r in found] + [largest], prof.runtime, prof.threads, int(p["warmup"]),
                           int(p["repeats"]), f"measure {prof.name}", int(p["rounds"]))
    ref = float(lat[-1])
    for r, ms in zip(found, lat[:-1]):
        r.update(latency_ms=float(ms), largest_ms_same_batch=ref, latency_rel=float(ms / ref),
                 within_budget_ms=bool(ms <= r["budget_ms"]))
        r["within_budget"] = bool(r["latency_rel"] <= r["budget_rel"]) if r.get("budget_rel") else r["within_budget_ms"]


def retime_search_report(cfg: Config, path: str = "results/search.json", weights: str | None = None) -> dict[str, Any]:
    """Time the found subnets of an existing report again (no search, no export, no accuracy)."""
    data = json.loads(Path(path).read_text())
    net = _supernet(cfg, weights)
    for device in dict.fromkeys(r["device"] for r in data["runs"]):
        time_found_subnets(cfg, net, load_profile(cfg, device), [r for r in data["runs"] if r["device"] == device])
    figures = {k: v for k, v in data.items() if k not in ("command", "commit")}
    # the search, exports and accuracies come from the report; only the timings are new
    figures["report_command"] = data.get("report_command") or data.get("command")
    figures["report_commit"] = data.get("report_commit") or data.get("commit")
    figures["retimed"] = True
    write_result(path, figures)
    return figures


def _plot_pareto(cfg: Config, device: str, runs: Sequence[dict], path: Path, weights: str | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    net = _supernet(cfg, weights)
    lut = profile_lut(load_profile(cfg, device), net)
    metric = cfg.get_path("search.target_metric")
    rows = read_dataset(cfg.get_path("search.dataset.path"))
    lat = np.array([lut.predict(r["arch"]) for r in rows])
    acc = np.array([r[metric] for r in rows])
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=110)
    ax.scatter(lat, acc, s=6, alpha=0.4, label="accuracy dataset (random subnets)")
    order = np.argsort(lat)
    front, best = [], -np.inf
    for k in order:
        if acc[k] > best:
            best = acc[k]
            front.append(k)
    ax.plot(lat[front], acc[front], "k-", lw=1, label="Pareto front")
    markers = {"nac_quickselect": "*", "mlp_sort": "s", "random": "^"}
    name = load_profile(cfg, device).name
    for r in (r for r in runs if r["device"] == name):
        ax.axvline(r["budget_ms"], color="grey", lw=0.6, ls=":")
        ax.scatter([r["predicted_latency_ms"]], [r[metric]], marker=markers.get(r["method"], "o"), s=80,
                   label=f"{r['method']} @ {r['budget_rel']:g}x")
    ax.set_xlabel(f"LUT latency on {device} (ms)")
    ax.set_ylabel(f"{metric} (LFW set 5)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

