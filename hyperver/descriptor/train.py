"""``hyperver supernet-train``: the face SuperNet, distilled from a teacher with ArcFace on labelled faces."""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from supernet.elastic import OFAMobileNetV3
from supernet.train import Phase, ProgressiveShrinkingTrainer, TrainerConfig, init_distributed_from_env, is_distributed

from ..config import Config
from ..data import LFWSplit, open_dataset
from ..errors import ConfigError
from .data import batch_iterator, load_face_tensors
from .evaluate import ValidationSet, make_evaluator
from .loss import DistillArcFaceLoss


def load_validation_set(cfg: Config, teacher: str, limit: int | None = None) -> ValidationSet:
    data = load_face_tensors(cfg, ["lfw_val"], teacher, limit_per_source=limit)
    split = LFWSplit(open_dataset(cfg, "lfw"))
    records = split.records("val")[:limit]
    index = {r.path: i for i, r in enumerate(records)}
    pairs = [p for p in split.pairs(split.split.val_sets) if p.a.path in index and p.b.path in index]
    return ValidationSet(data, np.array([index[p.a.path] for p in pairs]), np.array([index[p.b.path] for p in pairs]),
                         np.array([p.same for p in pairs]))


def build_trainer(cfg: Config, log=print) -> tuple[ProgressiveShrinkingTrainer, dict[str, Any]]:
    sc = cfg.get_path("supernet")
    torch.manual_seed(int(sc["seed"]))
    if sc["threads"]:
        torch.set_num_threads(int(sc["threads"]))
    limit = sc.get("limit_per_source")
    t0 = time.time()
    # Under torchrun, rank 0 fills the feature cache first; the others then only read it.
    if is_distributed() and torch.distributed.get_rank() != 0:
        torch.distributed.barrier()
    train = load_face_tensors(cfg, sc["sources"], sc["teacher"], int(sc["min_images_per_label"]), limit)
    val = load_validation_set(cfg, sc["teacher"], limit)
    if is_distributed() and torch.distributed.get_rank() == 0:
        torch.distributed.barrier()
    # null: the teacher's dimension (every subnet is projected into the teacher's space)
    embed_dim = int(train.teacher.shape[1]) if sc["embed_dim"] is None else int(sc["embed_dim"])
    if train.teacher.shape[1] != embed_dim:
        raise ConfigError(f"supernet.embed_dim={sc['embed_dim']} but the teacher {sc['teacher']!r} gives "
                          f"{train.teacher.shape[1]}-D embeddings")
    log(f"training images: {len(train)} ({int((train.labels >= 0).sum())} labelled, {train.n_classes} identities); "
        f"validation images: {len(val.data)}, pairs: {len(val.same)}; loaded in {time.time() - t0:.0f}s")
    net = OFAMobileNetV3(width_mult=float(sc["width_mult"]), embed_dim=embed_dim,
                         input_size=int(sc["input_size"]))
    loss = DistillArcFaceLoss(train.n_classes, embed_dim, train.teacher.mean(0), **sc["loss"])
    phases = [Phase(**p) for p in sc["phases"]]
    tcfg = TrainerConfig(phases=phases, optimizer=str(sc["optimizer"]),
                         weight_decay=float(sc["weight_decay"]),
                         warmup_steps=int(sc["warmup_steps"]), checkpoint_minutes=float(sc["checkpoint_minutes"]),
                         eval_every_steps=int(sc["eval_every_steps"]), grad_clip=float(sc["grad_clip"]),
                         seed=int(sc["seed"]), threads=int(sc["threads"] or 0),
                         channels_last=bool(sc["channels_last"]))
    world = torch.distributed.get_world_size() if is_distributed() else 1
    size, bs, aug = int(sc["input_size"]), int(sc["batch_size"]), dict(sc["augmentation"])
    batches = lambda seed, rank: batch_iterator(train, bs, size, seed, rank, world, aug)  # noqa: E731
    steps = max(1, len(train) // (bs * world))
    trainer = ProgressiveShrinkingTrainer(net, loss, loss, batches, steps, tcfg, Path(sc["checkpoint_dir"]),
                                          evaluate=make_evaluator(val, train, size, int(sc["bn_images"])), log=log)
    return trainer, {"train": train, "val": val}


def export_training_state(trainer: ProgressiveShrinkingTrainer, weights: str | Path) -> dict[str, str]:
    """Weights for users (fp16 SuperNet) + a small training-state file (loss head, history) that lets
    a later session continue with ``--init-from`` on a fresh machine (the optimizer state is not kept)."""
    from safetensors.torch import save_file

    from supernet.io import save_supernet

    weights = Path(weights)
    save_supernet(trainer.net, weights, extra={"phase": trainer.state.phase, "global_step": trainer.state.global_step})
    state_path = weights.with_name(weights.stem + "_train_state.safetensors")
    save_file({k: v.contiguous() for k, v in trainer.loss_module.state_dict().items()}, str(state_path),
              metadata={"state": json.dumps(asdict(trainer.state))})
    return {"weights": str(weights), "train_state": str(state_path)}


def init_from(trainer: ProgressiveShrinkingTrainer, weights: str | Path) -> None:
    """Start from exported weights (and the ArcFace head, if its state file is next to them)."""
    from safetensors import safe_open

    from . import load_supernet_weights

    trainer.net.load_state_dict(load_supernet_weights(weights).state_dict())
    state_path = Path(weights).with_name(Path(weights).stem + "_train_state.safetensors")
    if state_path.exists():
        with safe_open(str(state_path), framework="pt") as f:
            head = {k: f.get_tensor(k) for k in f.keys()}
            history = json.loads((f.metadata() or {}).get("state", "{}")).get("history", [])
        if head["weight"].shape == trainer.loss_module.weight.shape:
            trainer.loss_module.load_state_dict(head)
        trainer.state.history = list(history)


def run_supernet_training(cfg: Config, resume: bool = False, max_minutes: float | None = None,
                          init_weights: str | None = None, export: str | None = None,
                          export_only: bool = False) -> dict[str, Any]:
    init_distributed_from_env()
    trainer, _ = build_trainer(cfg)
    if init_weights:
        if resume:
            raise ConfigError("use either --resume or --init-from, not both")
        init_from(trainer, init_weights)
        print(f"initialised from {init_weights}")
    if resume and trainer.load_checkpoint():
        print(f"resumed from {trainer.checkpoint_path}: phase {trainer.state.phase}, step {trainer.state.global_step}")
    elif not resume and trainer.checkpoint_path.exists():
        raise ConfigError(f"{trainer.checkpoint_path} exists: pass --resume to continue it, or choose another "
                          f"supernet.checkpoint_dir")
    if export_only:
        if not export:
            raise ConfigError("--export-only needs --export PATH")
        return {"exported": export_training_state(trainer, export), "phase": trainer.state.phase,
                "step": trainer.state.global_step}
    budget = max_minutes if max_minutes is not None else cfg.get_path("supernet.max_minutes")
    state = trainer.train(max_minutes=budget)
    done = state.phase >= len(trainer.cfg.phases)
    if not is_distributed() or torch.distributed.get_rank() == 0:
        (trainer.ckpt_dir / "history.json").write_text(json.dumps(state.history, indent=1))
    exported = export_training_state(trainer, export) if export and (not is_distributed() or
                                                                      torch.distributed.get_rank() == 0) else None
    if is_distributed():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return {"exported": exported, "finished": done, "phase": state.phase, "step": state.global_step, "elapsed_min": state.elapsed_s / 60,
            "checkpoint": str(trainer.checkpoint_path)}
