"""The paper's ablations of the hypernetwork, each a config change on one shared short recipe.

Every run trains from scratch with the same step budget, picks its checkpoint on LFW set 5
and is scored on the test folds 6-10, so the rows differ only by what the name says:

- ``baseline``: the recipe itself (reference row for this table);
- ``no_kcs``: uniform identity sampling throughout (no K-means-centred hard negatives);
- ``no_norm_loss``: alpha_norm = 0 (no penalty on the generated weights' norm);
- ``f_37k``: a larger f (last conv 96 channels, head 64: ~37k parameters);
- ``f_embedding``: no hypernetwork at all: f's body trained directly as one shared embedding
  model (distillation to the teacher + ArcFace, as the SuperNet), verification by cosine;
- ``ids_25pct_no_kcs``, ``ids_50pct_no_kcs``: ``no_kcs`` trained on a random quarter / half of
  the labelled identities (with ``no_kcs`` as the 100 % point: how accuracy scales with people).

The levers of issue #17 (per-user verifiers that unlock), one change each on the same recipe:

- ``backbone_mobilefacenet``: h_bb = MobileFaceNet (99.3 % on the test folds) instead of the recipe's;
- ``f_v3_gdconv``: f at 112 px with MobileFaceNet's global depthwise head (~23.7k params, ~5 MFLOPs);
- ``f_v3_embedding``: f v3's body alone as an embedding model (as ``f_embedding``): what its pixels-to-identity
  capacity allows before any per-user generation;
- ``teacher_fusion``: the fused teacher grades the negatives and clusters people for KCS, with 4x
  more UTKFace pseudo-identities per batch, drawn among the batch people's teacher look-alikes;
- ``generator_lowrank``, ``generator_modulation``: theta = shared base + a rank-64 change / a
  per-channel modulation, instead of a change per parameter;
- ``embedding_noise``: noise on the enrollment embedding while training (30 % of its centred norm);
- ``refine``: the shipped generator (``hypernet.generator_path``; ``_from`` may instead name a run
  of this table), every one-way enrollment refined at enrollment time (``hypernet.refine``),
  beside the same generator unrefined on the same pairs (``without_refine``).

Runs are independent processes (so two can share the machine) and each writes its own
result; ``--collect`` gathers them into ``results/hypernet_ablations.json``::

    python -m hyperver.hypernet.ablations --config configs/hypernet_cpu.yaml --only baseline no_kcs
    python -m hyperver.hypernet.ablations --config configs/hypernet_cpu.yaml --collect
    python -m hyperver.hypernet.ablations --restore --collect   # on a fresh machine: keep the committed rows
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..config import Config, load_config, merge
from ..errors import ConfigError

# f v3 (issue #17): 112 px, MobileFaceNet's global depthwise head; 23,697 params, 4.97 M multiply-adds
F_V3 = {"input_size": 112, "channels": [16, 32, 48, 56], "groups": [1, 2, 2, 4], "strides": [2, 2, 2, 2], "kernel": 3,
        "hidden": 32, "head": "gdconv"}

# name -> overrides of the hypernet section (data, not code: add a row here to add an ablation)
ABLATIONS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "no_kcs": {"kcs": {"enabled": False}},
    "no_norm_loss": {"alpha_norm": {"start": 0.0, "target": 0.0}},
    "f_37k": {"f": {"channels": [16, 32, 64, 96], "hidden": 64}},
    "f_embedding": {"_trainer": "embedding"},
    "ids_25pct_no_kcs": {"kcs": {"enabled": False}, "identity_fraction": 0.25},
    "ids_50pct_no_kcs": {"kcs": {"enabled": False}, "identity_fraction": 0.5},
    # issue #17's levers
    "backbone_mobilefacenet": {"backbone": "mobilefacenet"},
    "f_v3_gdconv": {"f": F_V3},
    "f_v3_embedding": {"_trainer": "embedding", "f": F_V3},
    "teacher_fusion": {"teacher": "fusion_sface_dlib", "kcs": {"space": "teacher"}, "extra_pseudo_identities": 32,
                       "extra_sampling": {"mode": "teacher_nn"}},
    "generator_lowrank": {"generator": {"output": "lowrank", "rank": 64}},
    "generator_modulation": {"generator": {"output": "modulation"}},
    "embedding_noise": {"embedding_noise": 0.3},
    "refine": {"_trainer": "refine", "_from": "shipped"},
}


def _variant_config(cfg: Config, name: str, steps: int, work_dir: Path) -> Config:
    over = {k: v for k, v in ABLATIONS[name].items() if not k.startswith("_")}
    warm = max(1, int(round(steps * int(cfg.get_path("hypernet.warmup_steps")) / int(cfg.get_path("hypernet.steps")))))
    over = merge(over, {"steps": steps, "warmup_steps": warm, "checkpoint_dir": str(work_dir / name),
                        "max_minutes": None})
    return Config(merge(cfg, {"hypernet": over}))


# -- the hypernetwork variants ---------------------------------------------------------------------
def _run_hypernet_variant(cfg: Config, row: dict[str, Any], work: Path) -> dict[str, Any]:
    from .evaluate import evaluate_pairs, f_cost, load_trained
    from .train import run_hypernet_training

    ckpt_dir = Path(cfg.get_path("hypernet.checkpoint_dir"))
    resume = (ckpt_dir / "last.pt").exists()
    t0 = time.time()
    train = run_hypernet_training(cfg, resume=resume)
    gen, _ = load_trained(checkpoint=train["checkpoint"])
    res = evaluate_pairs(cfg, gen, cfg.get_path("hypernet.backbone"))
    return {**f_cost(gen.spec), "train_seconds": time.time() - t0, "best_val_auc": train["best_val_auc"],
            "test": res["hypernet"], "test_symmetric": res["hypernet_symmetric"]}


# -- f as a plain embedding model ------------------------------------------------------------------
def _run_embedding_variant(cfg: Config, row: dict[str, Any], work: Path) -> dict[str, Any]:
    from supernet.profile import mflops

    from ..data import LFWSplit, open_dataset, parse_folds
    from ..eval.metrics import kfold_verification
    from .data import load_records_data
    from .pretrain import train_embedding_f

    hc = cfg.get_path("hypernet")
    torch.set_num_threads(int(hc["threads"] or 1))
    model, info = train_embedding_f(cfg, int(hc["steps"]))
    split = LFWSplit(open_dataset(cfg, "lfw"))
    folds = parse_folds("6-10")
    records = split.records_of_sets(folds)
    test = load_records_data(cfg, "lfw", records, hc["backbone"], model.spec.input_size)
    index = {r.path: i for i, r in enumerate(records)}
    pairs = split.pairs(folds)
    a, b = np.array([index[p.a.path] for p in pairs]), np.array([index[p.b.path] for p in pairs])
    e = model.embed_images(test.images)
    report = kfold_verification(np.sum(e[a] * e[b], axis=1), np.array([p.same for p in pairs]),
                                np.array([p.fold for p in pairs]))
    size = model.spec.input_size
    return {"f_params": int(model.n_params()), "f_mflops": mflops(model, (1, 3, size, size)), "f_input": size,
            **info, "test": report.summary()}


# -- enrollment-time refinement of another run's generator ----------------------------------------
def _run_refine_variant(cfg: Config, row: dict[str, Any], work: Path) -> dict[str, Any]:
    """A trained generator evaluated one-way with every enrollment refined, and without, on the
    same pairs: ``row["_from"]`` is "shipped" (``hypernet.generator_path``) or a run of this table."""
    from .evaluate import evaluate_pairs, f_cost, load_trained

    if row["_from"] == "shipped":
        source = Path(cfg.get_path("hypernet.generator_path"))
        gen, meta = load_trained(generator=str(source))
    else:
        source = work / row["_from"] / "best.pt"
        if not source.is_file():
            raise ConfigError(f"{source} is missing: train {row['_from']!r} first (--only {row['_from']})")
        gen, meta = load_trained(checkpoint=str(source))
    torch.set_num_threads(1)   # the refinement budget is per enrollment on one core
    t0 = time.time()
    plain = evaluate_pairs(cfg, gen, meta["backbone"], both_ways=False)
    res = evaluate_pairs(cfg, gen, meta["backbone"], refine={}, both_ways=False)
    return {**f_cost(gen.spec), "eval_seconds": time.time() - t0, "source": str(source),
            "source_backbone": meta["backbone"], "refinement": res["refine"]["ab"],
            "without_refine": plain["hypernet"], "test": res["hypernet"]}


# row["_trainer"] -> how a row is made: (variant config, the row, the work folder) -> result
TRAINERS: dict[str, Callable[[Config, dict[str, Any], Path], dict[str, Any]]] = {
    "hypernet": _run_hypernet_variant, "embedding": _run_embedding_variant, "refine": _run_refine_variant}


def run_ablation(cfg: Config, name: str, steps: int, work_dir: str | Path, sets: list[str] | None = None) -> dict[str, Any]:
    """Train and score one row; ``sets`` (the ``--set`` overrides ``cfg`` was loaded with) are recorded
    in the row, so the collected table's command reproduces each row as it was run."""
    if name not in ABLATIONS:
        raise ConfigError(f"unknown ablation {name!r}; known: {sorted(ABLATIONS)}")
    work = Path(work_dir)
    vcfg = _variant_config(cfg, name, steps, work)
    result = TRAINERS[ABLATIONS[name].get("_trainer", "hypernet")](vcfg, ABLATIONS[name], work)
    row = {"name": name, "steps": steps, "sets": list(sets or []), "overrides": {k: v for k, v in ABLATIONS[name].items()},
           **{k: result["test"][k] for k in ("accuracy", "accuracy_std", "val_at_far_1e3", "auc", "eer")},
           **{k: v for k, v in result.items() if k != "test"}}
    (work / name).mkdir(parents=True, exist_ok=True)
    (work / name / "result.json").write_text(json.dumps(row, indent=1))
    return row


def plot_ablations(rows: list[dict[str, Any]], path: str | Path) -> str:
    """One bar per row: LFW test-fold accuracy (one-way, with the fold std) and, where the row has it, the
    set-5 AUC that chose its checkpoint; the baseline's accuracy as a line, so each lever reads against it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"] for r in rows]
    # a row built on a trained generator (refine) is not an 800-step run: say which file it started from
    labels = [f"{r['name']} ({Path(r['source']).name})" if r.get("source") else r["name"] for r in rows]
    acc = [100 * float(r.get("accuracy", float("nan"))) for r in rows]
    std = [100 * float(r.get("accuracy_std", 0.0) or 0.0) for r in rows]
    val = [float(r["best_val_auc"]) if r.get("best_val_auc") is not None else float("nan") for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.38 * len(rows) + 1.6), dpi=110, sharey=True)
    y = list(range(len(rows)))
    left.barh(y, acc, xerr=std, color="tab:blue", alpha=0.8)
    base = next((a for n, a in zip(names, acc) if n == "baseline"), None)
    if base is not None:
        left.axvline(base, color="k", lw=0.8, ls="--", label=f"baseline {base:.1f} %")
        left.legend(loc="lower right", fontsize=8)
    left.set_xlim(50, 100)
    left.set_xlabel("LFW test folds 6-10, one-way accuracy (%)")
    right.barh(y, val, color="tab:orange", alpha=0.8)
    right.set_xlim(0.5, 1.0)
    right.set_xlabel("LFW set 5 AUC (checkpoint choice; blank: no hypernet training)")
    left.set_yticks(y, labels, fontsize=8)
    left.invert_yaxis()
    for ax in (left, right):
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle("Per-user verifier ablations (each row one change, same budget)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)


def collect(work_dir: str | Path, out: str | Path, command_for: Callable[[dict], str]) -> dict[str, Any]:
    """Gather the finished runs' result files into ``out`` (and a bar chart next to it, ``.png``); its
    command lists how each row was made (``command_for(row)``: a row records its own step budget and
    ``--set`` overrides)."""
    from ..reporting import write_result

    rows = []
    for name in ABLATIONS:
        p = Path(work_dir) / name / "result.json"
        if p.exists():
            rows.append(json.loads(p.read_text()))
    if not rows:
        raise ConfigError(f"no ablation results under {work_dir}; run some first")
    png = plot_ablations(rows, Path(out).with_suffix(".png"))
    write_result(out, {"runs": rows, "png": png, "protocol": "each run trains from scratch with the same step budget; "
                       "checkpoint picked on LFW set 5; accuracy etc. on LFW test folds 6-10 (one-way enrollment)"},
                 command=" && ".join(command_for(r) for r in rows))
    return {"runs": rows}


def restore(results_file: str | Path, work_dir: str | Path) -> list[str]:
    """Write the rows of an existing results file back as per-run result files (a fresh machine
    keeps the committed table, not the work folder), so new runs join it on ``--collect``."""
    rows = json.loads(Path(results_file).read_text())["runs"]
    for row in rows:
        if row["name"] not in ABLATIONS:
            raise ConfigError(f"{results_file}: unknown ablation {row['name']!r}")
        target = Path(work_dir) / row["name"] / "result.json"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(row, indent=1))
    return [r["name"] for r in rows]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hyperver.hypernet.ablations", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/hypernet_cpu.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--only", nargs="+", default=list(ABLATIONS), help=f"subset of {list(ABLATIONS)}")
    p.add_argument("--steps", type=int, default=1200, help="training steps of every run")
    p.add_argument("--work-dir", default="checkpoints/hypernet_ablations")
    p.add_argument("--collect", action="store_true", help="gather finished runs into --out")
    p.add_argument("--restore", action="store_true",
                   help="first write --out's existing rows back into --work-dir (runs already there win)")
    p.add_argument("--out", default="results/hypernet_ablations.json")
    args = p.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if args.restore:
        print(json.dumps({"restored": restore(args.out, args.work_dir)}))
    if args.collect:
        def command_for(row: dict) -> str:
            # rows written before they recorded their overrides take this invocation's --set
            sets = "".join(f" --set {o}" for o in row.get("sets", args.overrides))
            return (f"python -m hyperver.hypernet.ablations --config {args.config} --steps {row['steps']}{sets} "
                    f"--only {row['name']}")

        print(json.dumps(collect(args.work_dir, args.out, command_for), indent=1))
        return 0
    if args.restore:
        return 0
    for name in args.only:
        print(json.dumps(run_ablation(cfg, name, args.steps, args.work_dir, args.overrides)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
