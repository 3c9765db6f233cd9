"""``hyperver supernet-train``: the face SuperNet, distilled from a teacher with ArcFace on labelled faces."""
from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from supernet.spaces import build_supernet
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


def _choice(sc: dict, key: str, registry: dict) -> str:
    value = str(sc[key])
    if value not in registry:
        raise ConfigError(f"supernet.{key}={value!r}; choose one of {sorted(registry)}")
    return value


def _cached_targets(net: torch.nn.Module, channels_last: bool) -> Callable[[Iterator[dict]], Iterator[dict]]:
    """Targets = the teacher's cached embeddings of the un-augmented crops (an augmentation-invariance target)."""
    return lambda batches: batches


def _frozen_self_targets(net: torch.nn.Module, channels_last: bool) -> Callable[[Iterator[dict]], Iterator[dict]]:
    """Targets = a frozen copy of the (seeded) full network, run on the same augmented batch the subnets see.

    With a pretrained largest subnet this is OFA's distillation from the full network and keeps the
    largest anchored to itself; the teacher's cached embeddings still give the centring mean.
    """
    frozen = copy.deepcopy(net).eval()
    frozen.set_active(frozen.space.largest())
    for p in frozen.parameters():
        p.requires_grad_(False)
    if channels_last:
        frozen.to(memory_format=torch.channels_last)

    def targets(batches: Iterator[dict]) -> Iterator[dict]:
        for batch in batches:
            x = batch["image"].contiguous(memory_format=torch.channels_last) if channels_last else batch["image"]
            with torch.no_grad():  # not around the yield: grad mode is global and the consumer trains
                target = frozen(x)
            yield {**batch, "teacher": target}
    return targets


# supernet.distill_from: where each training image's distillation target comes from.
DISTILL_TARGETS: dict[str, Callable[[torch.nn.Module, bool], Callable[[Iterator[dict]], Iterator[dict]]]] = {
    "teacher": _cached_targets,
    "self": _frozen_self_targets,
}


def _phase_archs_loaded(phase: dict[str, Any], space) -> dict[str, Any]:
    """A phase's ``archs`` may name arch JSON files (e.g. a searched subnet); the trainer gets the archs."""
    from supernet.space import load_arch

    archs = [load_arch(a, space) if isinstance(a, str) else space.validate(a) for a in phase.get("archs") or ()]
    return {**phase, "archs": archs}


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
    size = int(sc["input_size"])
    net = build_supernet({"kind": sc["space"], "space": sc["space_options"], "width_mult": float(sc["width_mult"]),
                          "embed_dim": embed_dim, "input_size": size})
    if sc["pretrained"]:
        from .evaluate import bn_batches
        from .seed import seed_supernet

        seed_supernet(net, str(sc["pretrained"]), bn_batches(train, size, int(sc["bn_images"]), seed=1),
                      n_images=int(sc["bn_images"]))
        log(f"largest subnet seeded with pretrained {sc['pretrained']!r}")
    loss = DistillArcFaceLoss(train.n_classes, embed_dim, train.teacher.mean(0), **sc["loss"])
    phases = [Phase(**_phase_archs_loaded(p, net.space)) for p in sc["phases"]]
    tcfg = TrainerConfig(phases=phases, optimizer=str(sc["optimizer"]),
                         weight_decay=float(sc["weight_decay"]),
                         warmup_steps=int(sc["warmup_steps"]), checkpoint_minutes=float(sc["checkpoint_minutes"]),
                         eval_every_steps=int(sc["eval_every_steps"]), grad_clip=float(sc["grad_clip"]),
                         seed=int(sc["seed"]), threads=int(sc["threads"] or 0),
                         channels_last=bool(sc["channels_last"]))
    world = torch.distributed.get_world_size() if is_distributed() else 1
    bs, aug = int(sc["batch_size"]), dict(sc["augmentation"])
    targets = DISTILL_TARGETS[_choice(sc, "distill_from", DISTILL_TARGETS)](net, bool(sc["channels_last"]))
    batches = lambda seed, rank: targets(batch_iterator(train, bs, size, seed, rank, world, aug))  # noqa: E731
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


def init_from(trainer: ProgressiveShrinkingTrainer, weights: str | Path, continue_schedule: bool = False) -> None:
    """Start from exported weights (and the ArcFace head, if its state file is next to them).

    ``continue_schedule``: also take the phase/step position from the state file, so a run exported on
    one machine continues its schedule on another (the optimizer state is not kept: a short re-warm-up).
    """
    from safetensors import safe_open

    from supernet.train import TrainState

    from . import load_supernet_weights

    trainer.net.load_state_dict(load_supernet_weights(weights).state_dict())
    state_path = Path(weights).with_name(Path(weights).stem + "_train_state.safetensors")
    if not state_path.exists():
        if continue_schedule:
            raise ConfigError(f"--continue-schedule needs the training state file {state_path}")
        return
    with safe_open(str(state_path), framework="pt") as f:
        head = {k: f.get_tensor(k) for k in f.keys()}
        state = json.loads((f.metadata() or {}).get("state", "{}"))
    if head["weight"].shape == trainer.loss_module.weight.shape:
        trainer.loss_module.load_state_dict(head)
    if continue_schedule:
        trainer.state = TrainState(**state)
    else:
        trainer.state.history = list(state.get("history", []))


def run_supernet_training(cfg: Config, resume: bool = False, max_minutes: float | None = None,
                          init_weights: str | None = None, export: str | None = None, continue_schedule: bool = False,
                          export_only: bool = False) -> dict[str, Any]:
    init_distributed_from_env()
    trainer, _ = build_trainer(cfg)
    if init_weights:
        if resume:
            raise ConfigError("use either --resume or --init-from, not both")
        init_from(trainer, init_weights, continue_schedule)
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
