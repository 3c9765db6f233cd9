"""``hyperver hypernet-train``: the generator h_gen, trained so that each generated f verifies its user.

Per step: B identities x n images; verifier u is generated from the backbone embedding of
identity u's first image and scores every image of the batch (or its positives plus sampled
negatives, the CPU option); loss = weighted BCE (lambda = 1 - beta/B) + alpha_norm * mean
||theta||^2. Warm-up: uniform identity sampling while B doubles up to ``batch_growth`` x and
alpha_norm ramps up; afterwards K-means-centred sampling (KCS). Checkpoints every few minutes,
``--resume``, best-on-validation (LFW set 5) kept separately.
"""
from __future__ import annotations

import json
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Config
from ..data import LFWSplit, open_dataset
from ..descriptor.data import augment
from ..errors import ConfigError
from ..eval.metrics import best_accuracy_threshold, roc_auc
from .batched import score_matrix
from .data import HypernetData, load_hypernet_data, load_records_data, to_unit_range
from .generator import WeightGenerator
from .losses import positive_weight, theta_norm_penalty, weighted_bce
from .sampling import IdentitySampler, nearest_faces, pick_extra_faces
from .verifier import VerifierSpec


@dataclass
class HypernetState:
    step: int = 0
    best_val_auc: float = -1.0
    history: list[dict[str, Any]] = field(default_factory=list)


def build_generator(hc: dict, embed_dim: int) -> WeightGenerator:
    spec = VerifierSpec.from_dict(hc["f"])
    return WeightGenerator(spec, embed_dim=embed_dim, seed=int(hc["seed"]), **hc["generator"])


def noisy_embeddings(emb: torch.Tensor, input_mean: torch.Tensor, share: float,
                     generator: torch.Generator) -> torch.Tensor:
    """Enrollment embeddings + Gaussian noise whose expected norm is ``share`` of each centred
    embedding's (``hypernet.embedding_noise``), so h_gen cannot memorise the few training people's
    exact points; ``share`` 0 returns ``emb`` itself."""
    if share <= 0:
        return emb
    centred_norm = (emb - input_mean).norm(dim=1, keepdim=True)
    noise = torch.randn(emb.shape, generator=generator)
    return emb + noise * (share * centred_norm / emb.shape[1] ** 0.5)


def _optimizer(params, oc: dict) -> torch.optim.Optimizer:
    name = oc.get("name", "sgd")
    if name == "sgd":
        return torch.optim.SGD(params, lr=float(oc["lr"]), momentum=float(oc.get("momentum", 0.9)),
                               weight_decay=float(oc.get("weight_decay", 0)))
    if name == "adamw":
        return torch.optim.AdamW(params, lr=float(oc["lr"]), weight_decay=float(oc.get("weight_decay", 0)))
    raise ConfigError(f"unknown hypernet optimizer {name!r}; use sgd or adamw")


class ValidationPairs:
    """LFW set 5 fold pairs as (enrollment index, probe index) into a HypernetData."""

    def __init__(self, data: HypernetData, a: np.ndarray, b: np.ndarray, same: np.ndarray):
        self.data, self.a, self.b, self.same = data, a, b, same


def validation_pairs(cfg: Config, backbone: str, size: int, limit_pairs: int | None = None) -> ValidationPairs:
    """LFW set 5's View-2 pairs (the first ``limit_pairs`` of them, for smoke tests) and their images."""
    split = LFWSplit(open_dataset(cfg, "lfw"))
    pairs = split.pairs(split.split.val_sets)
    if limit_pairs:  # balanced: LFW lists a fold's genuine pairs before its impostor pairs
        pairs = [p for p in pairs if p.same][: limit_pairs // 2] + [p for p in pairs if not p.same][: limit_pairs // 2]
    records = list({r.path: r for p in pairs for r in (p.a, p.b)}.values())
    index = {r.path: i for i, r in enumerate(records)}
    data = load_records_data(cfg, "lfw", records, backbone, size)
    return ValidationPairs(data, np.array([index[p.a.path] for p in pairs]),
                           np.array([index[p.b.path] for p in pairs]), np.array([p.same for p in pairs]))


@torch.no_grad()
def pair_logits(gen: WeightGenerator, data: HypernetData, enroll: np.ndarray, probe: np.ndarray,
                impl: str = "stacked", chunk: int = 200) -> np.ndarray:
    """Enroll from image ``enroll[i]``, score image ``probe[i]``: one logit per pair."""
    gen.eval()
    out = []
    for i in range(0, len(enroll), chunk):
        e, p = enroll[i:i + chunk], probe[i:i + chunk]
        thetas = gen(data.backbone[e])
        x = to_unit_range(data.images[p]).unsqueeze(1)  # (U, 1, 3, S, S): each verifier its own probe
        out.append(score_matrix(gen.spec, thetas, x, impl)[:, 0])
    gen.train()
    return torch.cat(out).numpy()


class HypernetTrainer:
    def __init__(self, cfg: Config, log=print):
        self.cfg = cfg
        self.hc = dict(cfg.get_path("hypernet"))
        self.log = log
        hc = self.hc
        torch.manual_seed(int(hc["seed"]))
        if hc["threads"]:
            torch.set_num_threads(int(hc["threads"]))
        self.spec = VerifierSpec.from_dict(hc["f"])
        size = self.spec.input_size
        t0 = time.time()
        self.data = load_hypernet_data(cfg, hc["sources"], hc["backbone"], size, teacher=hc["teacher"],
                                       limit_identities=hc["limit_identities"],
                                       identity_fraction=hc["identity_fraction"], seed=int(hc["seed"]))
        self.val = validation_pairs(cfg, hc["backbone"], size, hc["val_limit_pairs"])
        self.extra = (load_hypernet_data(cfg, ["utkface"], hc["backbone"], size, min_images=0, teacher=hc["teacher"])
                      if int(hc["extra_pseudo_identities"]) > 0 else None)
        log(f"identities: {len(self.data.members)}, images: {len(self.data)}, validation pairs: {len(self.val.same)}"
            f"; f: {self.spec.n_params} params, input {size}px; loaded in {time.time() - t0:.0f}s")
        self.gen = build_generator(hc, self.data.backbone.shape[1])
        self.gen.set_input_mean(self.data.backbone)
        self.opt = _optimizer(self.gen.parameters(), hc["optimizer"])
        # KCS clusters people by look: in h_bb's space (the paper) or in the (stronger) teacher's.
        self.sampler = IdentitySampler(self.data.identity_means(hc["kcs"]["space"]),
                                       int(hc["kcs"]["clusters"]), int(hc["seed"]))
        self.rng = np.random.default_rng(int(hc["seed"]))
        self.aug_gen = torch.Generator().manual_seed(int(hc["seed"]))
        self.state = HypernetState()
        self.ckpt_dir = Path(hc["checkpoint_dir"])
        self._stop = False
        self.teacher_mean = self.data.teacher.mean(0)
        # Hard pseudo-identities: each labelled person's nearest unlabelled faces in the teacher's space.
        mode = hc["extra_sampling"]["mode"]
        if mode not in ("random", "teacher_nn"):
            raise ConfigError(f"hypernet.extra_sampling.mode must be random or teacher_nn, got {mode!r}")
        self.extra_neighbours = None
        if self.extra is not None and mode == "teacher_nn":
            self.extra_neighbours = nearest_faces(self.data.identity_means("teacher"), self.extra.teacher.numpy(),
                                                  self.teacher_mean.numpy(), int(hc["extra_sampling"]["k"]))

    @torch.no_grad()
    def seed_body(self, tensors: dict[str, torch.Tensor]) -> None:
        """Start theta_base from trained f tensors (by layout name); the rest keep their init."""
        offsets = self.spec.offsets()
        for name, t in tensors.items():
            a, b, shape = offsets[name]
            if tuple(t.shape) != tuple(shape):
                raise ValueError(f"{name}: got {tuple(t.shape)}, f needs {shape}")
            self.gen.theta_base[a:b] = t.flatten()

    @torch.no_grad()
    def init_theta_base(self, path: str | Path) -> None:
        """Start theta_base (f's shared weights) from another run's: a training checkpoint (.pt)
        or an exported generator file. theta_base does not depend on h_bb, so a run on another
        backbone (or generator output) can start from a body that earlier training already shaped."""
        from .evaluate import load_trained

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"hypernet.init_theta_base: {path} does not exist")
        src, _ = load_trained(**({"checkpoint": str(path)} if path.suffix == ".pt" else {"generator": str(path)}))
        if src.spec.to_dict() != self.spec.to_dict():
            raise ConfigError(f"hypernet.init_theta_base: {path} holds f {src.spec.version}, "
                              f"this run trains {self.spec.version}")
        self.gen.theta_base.copy_(src.theta_base.detach().float())

    def init_from_generator(self, path: str | Path) -> None:
        """Copy an exported generator's weights; it must have this run's f layout and generator shape."""
        from .model_io import load_generator

        src, meta = load_generator(path)
        if src.spec.to_dict() != self.spec.to_dict():
            raise ConfigError(f"{path} generates f {src.spec.version}, this run trains {self.spec.version}")
        if src.config != self.gen.config:
            raise ConfigError(f"{path} has generator {src.config}, this run builds {self.gen.config}")
        if meta.get("backbone") != self.hc["backbone"]:
            raise ConfigError(f"{path} was trained on backbone {meta.get('backbone')!r}, this run uses {self.hc['backbone']!r}")
        self.gen.load_state_dict(src.state_dict())

    # -- schedules -------------------------------------------------------------------------------
    def batch_identities(self, step: int) -> int:
        hc = self.hc
        b0, growth, warm = int(hc["batch_identities"]), int(hc["batch_growth"]), int(hc["warmup_steps"])
        if warm <= 0 or growth <= 1:
            return b0
        doublings = int(math.log2(growth))
        k = min(doublings, int(step * (doublings + 1) / warm))
        return b0 * 2 ** k

    def alpha_norm(self, step: int) -> float:
        a = self.hc["alpha_norm"]
        warm = max(1, int(self.hc["warmup_steps"]))
        t = min(1.0, step / warm)
        return float(a["start"] + t * (a["target"] - a["start"]))

    def lr(self, step: int) -> float:
        base, warm, total = float(self.hc["optimizer"]["lr"]), int(self.hc["warmup_steps"]), int(self.hc["steps"])
        if step < warm:
            return base * (step + 1) / warm
        return 0.5 * base * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    # -- one step --------------------------------------------------------------------------------
    def make_batch(self, step: int) -> dict[str, torch.Tensor]:
        hc, d = self.hc, self.data
        B, n = self.batch_identities(step), int(hc["images_per_identity"])
        use_kcs = bool(hc["kcs"]["enabled"]) and step >= int(hc["warmup_steps"])
        ids = self.sampler.sample(B, use_kcs)
        idx = np.stack([self.rng.choice(d.members[i], size=n, replace=len(d.members[i]) < n) for i in ids])
        images = d.images[idx.ravel()]
        enroll_emb = d.backbone[idx[:, 0]]
        teacher = d.teacher[idx.ravel()]
        owner = np.repeat(np.arange(len(ids)), n)
        extra = int(hc["extra_pseudo_identities"])
        if extra and self.extra is not None:
            # Look-alike faces only once KCS starts: warm-up stays easy, as the identity sampling does.
            pick = pick_extra_faces(self.extra_neighbours if use_kcs else None, ids, extra, len(self.extra), self.rng)
            images = torch.cat([images, self.extra.images[np.repeat(pick, n)]])
            enroll_emb = torch.cat([enroll_emb, self.extra.backbone[pick]])
            teacher = torch.cat([teacher, self.extra.teacher[np.repeat(pick, n)]])
            owner = np.r_[owner, np.repeat(np.arange(len(ids), len(ids) + extra), n)]
        U = enroll_emb.shape[0]
        x = augment(to_unit_range(images), self.aug_gen, **hc["augmentation"])
        targets = torch.from_numpy(owner[None, :] == np.arange(U)[:, None]).float()
        mask = torch.ones_like(targets, dtype=torch.bool)
        mask[np.arange(U), np.arange(U) * n] = False  # never score a verifier on its own enrollment image
        return {"x": x, "emb": enroll_emb, "targets": targets, "mask": mask, "teacher": teacher, "n": n,
                "enroll_rows": torch.arange(U) * n}

    def loss(self, batch: dict[str, torch.Tensor], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        hc = self.hc
        thetas = self.gen(noisy_embeddings(batch["emb"], self.gen.input_mean, float(hc["embedding_noise"]), self.aug_gen))
        targets, mask = batch["targets"].clone(), batch["mask"]
        n_neg = hc["negatives_per_user"]
        U, M = targets.shape
        soft = hc["soft_targets"]
        if float(soft["weight"]) > 0:
            # Teacher knowledge for the negatives: look-alikes get a small positive target
            # (centred teacher cosine through a sigmoid) instead of a hard 0.
            t = torch.nn.functional.normalize(batch["teacher"] - self.teacher_mean, dim=1)
            sim = t[batch["enroll_rows"]] @ t.T
            neg_soft = float(soft["weight"]) * torch.sigmoid((sim - 0.5) / float(soft["temperature"]))
            targets = torch.where(targets > 0.5, targets, neg_soft)
        if n_neg is None:
            logits = score_matrix(self.spec, thetas, batch["x"], hc["impl"])
        else:
            # Each verifier: its positives + n_neg sampled negatives (the quadratic-cost fix). Every
            # user has the same number of scored positives (n - 1), so the choice is one tensor op:
            # positives rank first, then negatives in random order, keep the first n - 1 + n_neg.
            is_pos = batch["targets"] > 0.5
            pos = is_pos & mask
            n_pos = int(pos.sum(1).min())
            rank = torch.rand(targets.shape, generator=self.aug_gen)
            rank = torch.where(pos, rank + 2.0, torch.where(~is_pos, rank, torch.full_like(rank, -1.0)))
            cols_t = rank.topk(n_pos + min(int(n_neg), int((~is_pos).sum(1).min())), dim=1).indices
            logits = score_matrix(self.spec, thetas, batch["x"][cols_t], hc["impl"])
            targets = torch.gather(targets, 1, cols_t)
            mask = torch.ones_like(targets, dtype=torch.bool)
        lam = positive_weight(U, float(hc["beta"]))
        bce = weighted_bce(logits, targets, lam, mask)
        norm = theta_norm_penalty(thetas)
        alpha = self.alpha_norm(step)
        total = bce + alpha * norm
        with torch.no_grad():
            pos = logits[(targets > 0.5) & mask]
            neg = logits[(targets < 0.5) & mask]
            margin = float(pos.mean() - neg.mean()) if len(pos) and len(neg) else 0.0
        return total, {"loss": float(total.detach()), "bce": float(bce.detach()), "theta_sq": float(norm.detach()),
                       "alpha": alpha, "margin": margin, "B": U}

    # -- loop ------------------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        v = self.val
        logits = pair_logits(self.gen, v.data, v.a, v.b, self.hc["impl"])
        _, acc = best_accuracy_threshold(logits, v.same)
        return {"val_accuracy": acc, "val_auc": roc_auc(logits, v.same)}

    def save(self, name: str = "last.pt") -> None:
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.ckpt_dir / (name + ".tmp")
        torch.save({"generator": self.gen.state_dict(), "optimizer": self.opt.state_dict(),
                    "state": json.dumps(self.state.__dict__), "hypernet": json.dumps(self.hc),
                    "spec": json.dumps(self.spec.to_dict()), "generator_config": json.dumps(self.gen.config),
                    "rng": json.dumps(self.rng.bit_generator.state), "aug_rng": self.aug_gen.get_state()}, tmp)
        os.replace(tmp, self.ckpt_dir / name)

    def load(self) -> bool:
        path = self.ckpt_dir / "last.pt"
        if not path.exists():
            return False
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        self.gen.load_state_dict(ckpt["generator"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.state = HypernetState(**json.loads(ckpt["state"]))
        self.rng.bit_generator.state = json.loads(ckpt["rng"])
        self.aug_gen.set_state(ckpt["aug_rng"])
        return True

    def train(self, max_minutes: float | None = None) -> HypernetState:
        from tqdm import tqdm

        hc = self.hc
        total = int(hc["steps"])
        start = last_ckpt = time.time()

        def on_sigint(signum, frame):
            self._stop = True
            self.log("stop requested: saving a checkpoint")

        previous = signal.signal(signal.SIGINT, on_sigint)
        bar = tqdm(total=total, initial=self.state.step, desc="hypernet", dynamic_ncols=True)
        try:
            while self.state.step < total and not self._stop:
                step = self.state.step
                for g in self.opt.param_groups:
                    g["lr"] = self.lr(step)
                batch = self.make_batch(step)
                loss, logs = self.loss(batch, step)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.gen.parameters(), 5.0)
                self.opt.step()
                self.state.step += 1
                bar.update(1)
                bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items() if k in ("bce", "margin")} | {"B": logs["B"]})
                if self.state.step % 25 == 0:
                    self.state.history.append({"step": self.state.step, **logs})
                if self.state.step % int(hc["eval_every"]) == 0 or self.state.step == total:
                    val = self.validate()
                    self.state.history.append({"step": self.state.step, **val})
                    self.log(json.dumps({"step": self.state.step, **val}))
                    if val["val_auc"] > self.state.best_val_auc:
                        self.state.best_val_auc = val["val_auc"]
                        self.save("best.pt")
                if time.time() - last_ckpt > 60 * float(hc["checkpoint_minutes"]):
                    self.save()
                    last_ckpt = time.time()
                if max_minutes is not None and time.time() - start > 60 * max_minutes:
                    self.log(f"time budget of {max_minutes} min reached")
                    break
        finally:
            bar.close()
            self.save()
            signal.signal(signal.SIGINT, previous)
        return self.state


def run_hypernet_training(cfg: Config, resume: bool = False, max_minutes: float | None = None,
                          init_from: str | Path | None = None) -> dict[str, Any]:
    """Train (or ``resume``) the generator; ``init_from`` starts from an exported generator file
    (e.g. the committed asset) instead of a pre-trained f body: a new run with its own schedule."""
    trainer = HypernetTrainer(cfg)
    if resume and trainer.load():
        print(f"resumed at step {trainer.state.step}")
    elif not resume and (trainer.ckpt_dir / "last.pt").exists():
        raise ConfigError(f"{trainer.ckpt_dir / 'last.pt'} exists: pass --resume or choose another hypernet.checkpoint_dir")
    elif init_from is not None:
        trainer.init_from_generator(init_from)
        trainer.state.history.append({"step": 0, "init_from": str(init_from)})
        print(f"initialised from {init_from}")
    elif cfg.get_path("hypernet.init_theta_base"):
        source = cfg.get_path("hypernet.init_theta_base")
        trainer.init_theta_base(source)
        trainer.state.history.append({"step": 0, "init_theta_base": str(source)})
        print(f"theta_base from {source}")
    else:
        pre = cfg.get_path("hypernet.pretrain_body")
        if int(pre["steps"]) > 0:
            from .pretrain import train_embedding_f

            model, info = train_embedding_f(cfg, int(pre["steps"]), int(pre["batch"]))
            trainer.seed_body(model.body_theta())
            trainer.state.history.append({"step": 0, "pretrain": info})
            print(json.dumps({"pretrained_body": info}))
    budget = max_minutes if max_minutes is not None else cfg.get_path("hypernet.max_minutes")
    state = trainer.train(budget)
    (trainer.ckpt_dir / "history.json").write_text(json.dumps(state.history, indent=1))
    return {"step": state.step, "best_val_auc": state.best_val_auc, "checkpoint": str(trainer.ckpt_dir / "best.pt")}
