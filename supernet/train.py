"""Progressive shrinking (OFA) for any task: the loss and the evaluator are passed in.

Phases widen the sampled space step by step: full network -> elastic kernel -> elastic depth ->
elastic expand. Every step trains the largest subnet plus ``n_subnets`` sampled ones from the
phase's choices ("sandwich"), summing their gradients. Checkpoints are written every few
minutes and on Ctrl-C; ``resume`` continues from the last one. Under ``torchrun`` the same
code runs data-parallel (gloo on CPU, nccl on GPU) with identical subnet samples on every rank.
"""
from __future__ import annotations

import json
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from .elastic import OFAMobileNetV3

LossFn = Callable[[torch.Tensor, Mapping[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]
EvalFn = Callable[[OFAMobileNetV3, dict], dict[str, float]]


@dataclass
class Phase:
    name: str
    epochs: float
    lr: float
    kernels: Sequence[int] | str | None = None   # None: the largest only; "all": the space's choices
    depths: Sequence[int] | str | None = None
    expands: Sequence[int] | str | None = None
    n_subnets: int = 0                      # sampled subnets per step besides the largest
    sort_channels: bool = False             # OFA sorts expansion channels before elastic expand
    include_smallest: bool = False          # BigNAS sandwich rule: the smallest subnet in every step too
    largest_weight: float = 1.0             # the largest subnet's share of the step's loss relative to each
                                            # other subnet's (>1 holds the largest near a seeded network;
                                            # 0 leaves it out of the step)
    archs: Sequence[Mapping[str, Sequence[int]]] = ()   # fixed subnets trained in every step, e.g. a searched
                                            # subnet fine-tuned in place (OFA fine-tunes what the search found)

    def choices(self, space) -> dict[str, Sequence[int]]:
        """The phase's allowed values per dimension: a list, "all" (the space's choices) or None (the largest)."""
        def pick(given, full):
            return list(full) if given == "all" else (list(given) if given else [max(full)])
        return {"kernels": pick(self.kernels, space.kernels), "depths": pick(self.depths, space.depths),
                "expands": pick(self.expands, space.expands)}


@dataclass
class TrainerConfig:
    phases: list[Phase]
    optimizer: str = "sgd"                  # "sgd" (OFA's choice, Nesterov) or "adamw"
    weight_decay: float = 3e-5
    momentum: float = 0.9
    warmup_steps: int = 200
    checkpoint_minutes: float = 5.0
    eval_every_steps: int = 0               # 0: at the end of each phase only
    eval_archs: Sequence[str] = ("largest", "smallest")
    grad_clip: float = 5.0
    seed: int = 0
    threads: int = 0                        # 0: leave torch's default
    channels_last: bool = False             # ~1.6x faster depthwise convs on CPU (measured)


@dataclass
class TrainState:
    phase: int = 0
    step_in_phase: int = 0
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0


OPTIMIZERS: dict[str, Callable[[list, "TrainerConfig"], torch.optim.Optimizer]] = {
    "sgd": lambda params, c: torch.optim.SGD(params, lr=c.phases[0].lr, momentum=c.momentum,
                                             weight_decay=c.weight_decay, nesterov=True),
    "adamw": lambda params, c: torch.optim.AdamW(params, lr=c.phases[0].lr, weight_decay=c.weight_decay),
}


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def init_distributed_from_env() -> None:
    """Join the process group torchrun describes (WORLD_SIZE > 1); no-op otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not is_distributed():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)


class ProgressiveShrinkingTrainer:
    def __init__(self, net: OFAMobileNetV3, loss_module: nn.Module, loss_fn: LossFn,
                 batches: Callable[[int, int], Iterator[Mapping[str, torch.Tensor]]], steps_per_epoch: int,
                 config: TrainerConfig, checkpoint_dir: str | Path, evaluate: EvalFn | None = None,
                 log: Callable[[str], None] = print):
        """``batches(epoch_seed, rank)`` yields dicts with at least ``"image"`` (N, 3, H, W)."""
        self.net = net
        self.loss_module = loss_module
        self.loss_fn = loss_fn
        self.batches = batches
        self.steps_per_epoch = int(steps_per_epoch)
        self.cfg = config
        self.ckpt_dir = Path(checkpoint_dir)
        self.evaluate = evaluate
        self.log = log
        self.state = TrainState()
        if config.channels_last:
            net.to(memory_format=torch.channels_last)
        self.model: nn.Module = net
        if is_distributed():
            self.model = nn.parallel.DistributedDataParallel(net, find_unused_parameters=True)
        params = [p for p in list(net.parameters()) + list(loss_module.parameters()) if p.requires_grad]
        self.optimizer = OPTIMIZERS[config.optimizer](params, config)
        self._stop = False

    # -- schedule -------------------------------------------------------------------------------
    def phase_steps(self, phase: Phase) -> int:
        return max(1, int(round(phase.epochs * self.steps_per_epoch)))

    def lr_at(self, phase: Phase, step: int) -> float:
        total = self.phase_steps(phase)
        warm = min(self.cfg.warmup_steps, total // 10) if self.state.phase == 0 else 0
        if step < warm:
            return phase.lr * (step + 1) / warm
        return 0.5 * phase.lr * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    # -- checkpoints ----------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.ckpt_dir / "last.pt"

    def save_checkpoint(self) -> None:
        if rank() != 0:
            return
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint_path.with_suffix(".tmp")
        torch.save({"net": self.net.state_dict(), "loss": self.loss_module.state_dict(),
                    "optimizer": self.optimizer.state_dict(), "state": json.dumps(asdict(self.state)),
                    "supernet": json.dumps(self.net.supernet_config()),
                    "torch_rng": torch.get_rng_state()}, tmp)
        os.replace(tmp, self.checkpoint_path)

    def load_checkpoint(self) -> bool:
        if not self.checkpoint_path.exists():
            return False
        ckpt = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        self.net.load_state_dict(ckpt["net"])
        self.loss_module.load_state_dict(ckpt["loss"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.state = TrainState(**json.loads(ckpt["state"]))
        torch.set_rng_state(ckpt["torch_rng"])
        return True

    # -- loop ----------------------------------------------------------------------------------
    def _step_archs(self, phase: Phase, rng: np.random.Generator) -> list[dict]:
        space = self.net.space
        archs = [space.largest()]
        if phase.include_smallest:
            archs.append(space.smallest(**phase.choices(space)))
        for _ in range(phase.n_subnets):
            archs.append(space.sample(rng, **phase.choices(space)))
        archs += [space.validate(a) for a in phase.archs]
        return archs

    def _install_sigint(self):
        def handler(signum, frame):
            self._stop = True
            self.log("stop requested: finishing this step and saving a checkpoint")
        try:
            return signal.signal(signal.SIGINT, handler)
        except ValueError:  # not in the main thread
            return None

    def train(self, max_minutes: float | None = None) -> TrainState:
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        previous = self._install_sigint()
        start = time.time()
        last_ckpt = time.time()
        try:
            while self.state.phase < len(self.cfg.phases) and not self._stop:
                phase = self.cfg.phases[self.state.phase]
                if self.state.step_in_phase == 0 and phase.sort_channels:
                    self.net.sort_channels()
                total = self.phase_steps(phase)
                bar = tqdm(total=total, initial=self.state.step_in_phase, desc=f"phase {phase.name}",
                           disable=rank() != 0, dynamic_ncols=True)
                epoch = self.state.step_in_phase // self.steps_per_epoch
                data = self.batches(self.cfg.seed * 1000 + self.state.phase * 100 + epoch, rank())
                skip = self.state.step_in_phase % self.steps_per_epoch
                for _ in range(skip):
                    next(data, None)
                while self.state.step_in_phase < total and not self._stop:
                    batch = next(data, None)
                    if batch is None:
                        epoch += 1
                        data = self.batches(self.cfg.seed * 1000 + self.state.phase * 100 + epoch, rank())
                        continue
                    logs = self._train_step(phase, batch)
                    self.state.step_in_phase += 1
                    self.state.global_step += 1
                    bar.update(1)
                    bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items() if k in ("loss", "cos", "ccos", "arc")})
                    if self.state.global_step % 50 == 0:
                        self.state.history.append({"phase": phase.name, "step": self.state.global_step, **logs})
                    if self.cfg.eval_every_steps and self.state.global_step % self.cfg.eval_every_steps == 0:
                        self._evaluate(phase)
                    if time.time() - last_ckpt > 60 * self.cfg.checkpoint_minutes:
                        self.state.elapsed_s += time.time() - last_ckpt
                        last_ckpt = time.time()
                        self.save_checkpoint()
                    if max_minutes is not None and time.time() - start > 60 * max_minutes:
                        self.log(f"time budget of {max_minutes} min reached; saving a checkpoint")
                        self._stop = True
                bar.close()
                if self.state.step_in_phase >= total:
                    self._evaluate(phase)
                    self.state.phase += 1
                    self.state.step_in_phase = 0
                    self.state.elapsed_s += time.time() - last_ckpt
                    last_ckpt = time.time()
                    self.save_checkpoint()
        finally:
            self.state.elapsed_s += time.time() - last_ckpt
            self.save_checkpoint()
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        return self.state

    def _train_step(self, phase: Phase, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        # Same subnet samples on every rank: the generator is seeded by the step only.
        rng = np.random.default_rng(self.cfg.seed * 1_000_003 + self.state.global_step)
        lr = self.lr_at(phase, self.state.step_in_phase)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        archs = self._step_archs(phase, rng)
        # archs[0] is the largest; the step's loss is a weighted mean over its subnets.
        weights = [float(phase.largest_weight)] + [1.0] * (len(archs) - 1)
        total_weight = sum(weights)
        for arch, weight in zip(archs, weights):
            if weight == 0:
                continue
            self.net.set_active(arch)
            image = batch["image"]
            if self.cfg.channels_last:
                image = image.contiguous(memory_format=torch.channels_last)
            emb = self.model(image)
            loss, parts = self.loss_fn(emb, batch)
            (loss * (weight / total_weight)).backward()
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + v * weight / total_weight
            totals["loss"] = totals.get("loss", 0.0) + float(loss.detach()) * weight / total_weight
        if self.cfg.grad_clip:
            nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], self.cfg.grad_clip)
        self.optimizer.step()
        totals["lr"] = lr
        return totals

    def _evaluate(self, phase: Phase) -> None:
        if self.evaluate is None or rank() != 0:
            return
        space = self.net.space
        named = {"largest": space.largest(), "smallest": space.smallest()}
        record: dict[str, Any] = {"phase": phase.name, "step": self.state.global_step, "eval": {}}
        for name in self.cfg.eval_archs:
            record["eval"][name] = self.evaluate(self.net, named[name])
        for i, arch in enumerate(phase.archs):   # the phase's fixed subnets are what it is for: always evaluated
            record["eval"][f"arch_{i}"] = self.evaluate(self.net, space.validate(arch))
        self.state.history.append(record)
        self.log(json.dumps(record))
