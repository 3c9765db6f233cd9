"""Time of enrollment-time refinement (issue #17, item 5) per enrollment on ONE thread.

    python benchmarks/refine_time.py                   # writes results/refine_time.json
    python benchmarks/refine_time.py --enrollments 3 --out /tmp/refine_time.json

For the shipped generator's f (v2, 64 px) and the f v3 candidate (112 px, gdconv head), each
(steps, negatives, views) setting refines the thetas of ``--enrollments`` real LFW training
photos (set 1-4; theta0 from the shipped generator for v2, a freshly initialised theta for v3,
whose cost does not depend on the weights) against a negative bank of training people, with no
time budget, so the full cost is measured. Reported per setting: median and max seconds per
enrollment (everything refine_theta does: views, negatives, steps) and per step. The load
average is recorded: a busy machine inflates the figures, re-run quietly for the record.
"""
from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np
import torch

from hyperver.config import load_config
from hyperver.hypernet.refine import build_negative_bank, refine_theta
from hyperver.hypernet.verifier import VerifierSpec, init_theta
from hyperver.reporting import current_command, git_commit, write_result

V3 = VerifierSpec(input_size=112, channels=(16, 32, 48, 56), groups=(1, 2, 2, 4), strides=(2, 2, 2, 2), hidden=32,
                  head="gdconv")
SETTINGS = [  # (steps, negatives, views); (10, 64, 8) is hypernet.refine's default
    (5, 32, 4), (5, 64, 4), (10, 32, 4), (10, 64, 8), (10, 128, 8), (10, 256, 8), (20, 128, 8)]


def enrollment_examples(cfg, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` LFW training photos (people sets 1-4): aligned 112 px crops and unit dlib embeddings."""
    from hyperver.data import LFWSplit, open_dataset
    from hyperver.features import FeatureCache

    records = LFWSplit(open_dataset(cfg, "lfw")).records("train")
    pick = np.random.default_rng(seed).choice(len(records), size=count, replace=False)
    chosen = [records[i] for i in pick]
    cache = FeatureCache(cfg, "lfw", "dlib")
    return cache.crops(chosen), cache.embeddings(chosen)


def time_setting(spec: VerifierSpec, thetas: list[torch.Tensor], crops: np.ndarray, embeddings: np.ndarray,
                 bank, steps: int, negatives: int, views: int) -> dict[str, Any]:
    seconds, per_step = [], []
    for theta0, crop, emb in zip(thetas, crops, embeddings):
        _, stats = refine_theta(spec, theta0, crop, emb, bank, steps=steps, lr=1e-3, time_budget_s=None,
                                views=views, negatives=negatives)
        seconds.append(stats["seconds"])
        per_step.append(stats["seconds"] / max(1, stats["steps_done"]))
    return {"steps": steps, "negatives": negatives, "views": views, "median_s": float(np.median(seconds)),
            "max_s": float(np.max(seconds)), "median_s_per_step": float(np.median(per_step))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--enrollments", type=int, default=5, help="enrollments timed per setting")
    ap.add_argument("--out", default="results/refine_time.json")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    commit = git_commit()
    cfg = load_config()
    from hyperver.hypernet.model_io import load_generator

    gen, meta = load_generator(cfg.get_path("hypernet.generator_path"))
    if meta["backbone"] != "dlib":
        raise SystemExit(f"this benchmark embeds with dlib; the generator was trained on {meta['backbone']!r}")
    crops, embeddings = enrollment_examples(cfg, args.enrollments, args.seed)
    bank = build_negative_bank(cfg, max(n for _, n, _ in SETTINGS), args.seed, input_size=112)
    load_before = os.getloadavg()
    with torch.no_grad():
        v2_thetas = list(gen(torch.from_numpy(embeddings)))
    v3_thetas = [init_theta(V3, torch.Generator().manual_seed(i)) for i in range(len(crops))]
    rows = []
    for name, spec, thetas in (("f v2 (shipped generator, 64 px, gap)", gen.spec, v2_thetas),
                               ("f v3 candidate (112 px, gdconv)", V3, v3_thetas)):
        time_setting(spec, thetas[:1], crops[:1], embeddings[:1], bank, 2, 16, 2)   # warm-up
        for steps, negatives, views in SETTINGS:
            row = {"f": name, "f_version": spec.version, "f_params": spec.n_params,
                   **time_setting(spec, thetas, crops, embeddings, bank, steps, negatives, views)}
            rows.append(row)
            print(f"{name:38s} steps={steps:3d} negatives={negatives:4d} views={views:2d}  "
                  f"median {row['median_s']:.3f} s  max {row['max_s']:.3f} s  per step {row['median_s_per_step']:.4f} s",
                  flush=True)
    defaults = cfg.get_path("hypernet.refine")
    write_result(args.out, {
        "what": "seconds per enrollment of refine_theta on one thread (views + negatives + steps, no budget)",
        "enrollments_per_setting": args.enrollments, "torch_threads": 1,
        "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg()), "cpu_count": os.cpu_count(),
        "defaults": {k: defaults[k] for k in ("steps", "negatives", "views", "time_budget_s")},
        "rows": rows}, command=current_command(), commit=commit)


if __name__ == "__main__":
    main()
