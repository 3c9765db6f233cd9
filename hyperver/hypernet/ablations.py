"""The paper's ablations of the hypernetwork, each a config change on one shared short recipe.

Every run trains from scratch with the same step budget, picks its checkpoint on LFW set 5
and is scored on the test folds 6-10, so the rows differ only by what the name says:

- ``baseline``: the recipe itself (reference row for this table);
- ``no_kcs``: uniform identity sampling throughout (no K-means-centred hard negatives);
- ``no_norm_loss``: alpha_norm = 0 (no penalty on the generated weights' norm);
- ``f_37k``: a larger f (last conv 96 channels, head 64: ~37k parameters);
- ``f_embedding``: no hypernetwork at all: f's body trained directly as one shared embedding
  model (distillation to the teacher + ArcFace, as the SuperNet), verification by cosine.

Runs are independent processes (so two can share the machine) and each writes its own
result; ``--collect`` gathers them into ``results/hypernet_ablations.json``::

    python -m hyperver.hypernet.ablations --config configs/hypernet_cpu.yaml --only baseline no_kcs
    python -m hyperver.hypernet.ablations --config configs/hypernet_cpu.yaml --collect
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, load_config, merge
from ..errors import ConfigError

# name -> overrides of the hypernet section (data, not code: add a row here to add an ablation)
ABLATIONS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "no_kcs": {"kcs": {"enabled": False}},
    "no_norm_loss": {"alpha_norm": {"start": 0.0, "target": 0.0}},
    "f_37k": {"f": {"channels": [16, 32, 64, 96], "hidden": 64}},
    "f_embedding": {"_trainer": "embedding"},
}


def _variant_config(cfg: Config, name: str, steps: int, work_dir: Path) -> Config:
    over = {k: v for k, v in ABLATIONS[name].items() if not k.startswith("_")}
    warm = max(1, int(round(steps * int(cfg.get_path("hypernet.warmup_steps")) / int(cfg.get_path("hypernet.steps")))))
    over = merge(over, {"steps": steps, "warmup_steps": warm, "checkpoint_dir": str(work_dir / name),
                        "max_minutes": None})
    return Config(merge(cfg, {"hypernet": over}))


# -- the hypernetwork variants ---------------------------------------------------------------------
def _run_hypernet_variant(cfg: Config) -> dict[str, Any]:
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
class EmbeddingF(nn.Module):
    """f's body (same grouped convs, instance norm, 1x1 mix, pooling, fc1) with a linear
    embedding layer into the teacher's space instead of the one-logit output."""

    def __init__(self, spec, embed_dim: int):
        super().__init__()
        from .verifier import VerifierModule

        self.spec = spec
        self.body = VerifierModule(spec)
        self.embed = nn.Linear(spec.hidden, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec, w = self.spec, {n: getattr(self.body, n.replace(".", "_")) for n, _ in self.spec.layout()}
        h = x
        for i, (g, s) in enumerate(zip(spec.groups, spec.strides)):
            h = F.conv2d(h, w[f"conv{i}.weight"], w[f"conv{i}.bias"], stride=s, padding=spec.kernel // 2, groups=g)
            h = F.relu(F.instance_norm(h, eps=spec.eps))
        h = F.relu(F.instance_norm(F.conv2d(h, w["mix.weight"], w["mix.bias"]), eps=spec.eps)).mean((2, 3))
        h = F.relu(F.linear(h, w["fc1.weight"], w["fc1.bias"]))
        return F.normalize(self.embed(h), dim=1)

    def n_params(self) -> int:
        # fc2 (the verifier's logit) is unused here: count only what the embedding model runs.
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith("body.fc2"))


def _run_embedding_variant(cfg: Config, log: Callable[[str], None] = print) -> dict[str, Any]:
    from supernet.profile import mflops
    from tqdm import tqdm

    from ..descriptor.data import augment
    from ..descriptor.loss import DistillArcFaceLoss
    from ..eval.metrics import best_accuracy_threshold, kfold_verification
    from .data import load_hypernet_data, load_records_data, to_unit_range
    from .train import _optimizer, validation_pairs
    from .verifier import VerifierSpec

    hc = dict(cfg.get_path("hypernet"))
    torch.manual_seed(int(hc["seed"]))
    torch.set_num_threads(int(hc["threads"] or 1))
    spec = VerifierSpec.from_dict(hc["f"])
    # The same images as the hypernetwork: labelled identities (+ UTKFace when the recipe uses it).
    data = load_hypernet_data(cfg, hc["sources"], hc["backbone"], spec.input_size, limit_identities=hc["limit_identities"])
    extra = (load_hypernet_data(cfg, ["utkface"], hc["backbone"], spec.input_size, min_images=0)
             if int(hc["extra_pseudo_identities"]) > 0 else None)
    images = data.images if extra is None else torch.cat([data.images, extra.images])
    teacher = data.teacher if extra is None else torch.cat([data.teacher, extra.teacher])
    labels = torch.from_numpy(data.identity if extra is None else np.r_[data.identity, extra.identity])
    model = EmbeddingF(spec, teacher.shape[1])
    loss_fn = DistillArcFaceLoss(len(data.members), teacher.shape[1], teacher.mean(0))
    opt = _optimizer(list(model.parameters()) + list(loss_fn.parameters()), hc["optimizer"])
    val = validation_pairs(cfg, hc["backbone"], spec.input_size, hc["val_limit_pairs"])

    def embed(x_uint8: torch.Tensor) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            out = torch.cat([model(to_unit_range(x_uint8[i:i + 512])) for i in range(0, len(x_uint8), 512)])
        model.train()
        return out.numpy()

    steps, warm = int(hc["steps"]), int(hc["warmup_steps"])
    batch = 256
    gen = torch.Generator().manual_seed(int(hc["seed"]))
    best, best_state, t0 = -1.0, None, time.time()
    for step in tqdm(range(steps), desc="f as embedding model"):
        lr = float(hc["optimizer"]["lr"]) * ((step + 1) / warm if step < warm else
                                             0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm))))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, len(images), (batch,), generator=gen)
        x = augment(to_unit_range(images[idx]), gen, **hc["augmentation"])
        loss, _ = loss_fn(model(x), {"teacher": teacher[idx], "label": labels[idx]})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % int(hc["eval_every"]) == 0 or step + 1 == steps:
            e = embed(val.data.images)
            _, acc = best_accuracy_threshold(np.sum(e[val.a] * e[val.b], axis=1), val.same)
            log(json.dumps({"step": step + 1, "val_accuracy": acc}))
            if acc > best:
                best, best_state = acc, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    # LFW test folds 6-10, cosine of the embeddings.
    from ..data import LFWSplit, open_dataset, parse_folds

    split = LFWSplit(open_dataset(cfg, "lfw"))
    folds = parse_folds("6-10")
    records = split.records_of_sets(folds)
    test = load_records_data(cfg, "lfw", records, hc["backbone"], spec.input_size)
    index = {r.path: i for i, r in enumerate(records)}
    pairs = split.pairs(folds)
    a, b = np.array([index[p.a.path] for p in pairs]), np.array([index[p.b.path] for p in pairs])
    e = embed(test.images)
    report = kfold_verification(np.sum(e[a] * e[b], axis=1), np.array([p.same for p in pairs]),
                                np.array([p.fold for p in pairs]))
    model.eval()
    return {"f_params": int(model.n_params()), "f_mflops": mflops(model, (1, 3, spec.input_size, spec.input_size)),
            "f_input": spec.input_size, "train_seconds": time.time() - t0, "best_val_accuracy": best,
            "test": report.summary()}


TRAINERS: dict[str, Callable[[Config], dict[str, Any]]] = {"hypernet": _run_hypernet_variant,
                                                            "embedding": _run_embedding_variant}


def run_ablation(cfg: Config, name: str, steps: int, work_dir: str | Path) -> dict[str, Any]:
    if name not in ABLATIONS:
        raise ConfigError(f"unknown ablation {name!r}; known: {sorted(ABLATIONS)}")
    work = Path(work_dir)
    vcfg = _variant_config(cfg, name, steps, work)
    result = TRAINERS[ABLATIONS[name].get("_trainer", "hypernet")](vcfg)
    row = {"name": name, "steps": steps, "overrides": {k: v for k, v in ABLATIONS[name].items()},
           **{k: result["test"][k] for k in ("accuracy", "accuracy_std", "val_at_far_1e3", "auc", "eer")},
           **{k: v for k, v in result.items() if k != "test"}}
    (work / name).mkdir(parents=True, exist_ok=True)
    (work / name / "result.json").write_text(json.dumps(row, indent=1))
    return row


def collect(work_dir: str | Path, out: str | Path, commands: list[str]) -> dict[str, Any]:
    from ..reporting import write_result

    rows = []
    for name in ABLATIONS:
        p = Path(work_dir) / name / "result.json"
        if p.exists():
            rows.append(json.loads(p.read_text()))
    if not rows:
        raise ConfigError(f"no ablation results under {work_dir}; run some first")
    write_result(out, {"runs": rows, "protocol": "each run trains from scratch with the same step budget; "
                       "checkpoint picked on LFW set 5; accuracy etc. on LFW test folds 6-10 (one-way enrollment)"},
                 command=" && ".join(commands))
    return {"runs": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hyperver.hypernet.ablations", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/hypernet_cpu.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--only", nargs="+", default=list(ABLATIONS), help=f"subset of {list(ABLATIONS)}")
    p.add_argument("--steps", type=int, default=1200, help="training steps of every run")
    p.add_argument("--work-dir", default="checkpoints/hypernet_ablations")
    p.add_argument("--collect", action="store_true", help="gather finished runs into --out")
    p.add_argument("--out", default="results/hypernet_ablations.json")
    args = p.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if args.collect:
        cmds = [f"python -m hyperver.hypernet.ablations --config {args.config} --steps {args.steps} --only {n}"
                for n in ABLATIONS]
        print(json.dumps(collect(args.work_dir, args.out, cmds), indent=1))
        return 0
    for name in args.only:
        print(json.dumps(run_ablation(cfg, name, args.steps, args.work_dir)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
