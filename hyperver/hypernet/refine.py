"""Enrollment-time refinement (issue #17, item 5): a few gradient steps on a generated theta.

h_gen maps ONE enrollment photo's descriptor to f's weights theta0 in one shot. On the server we
can afford a little more: starting from theta0, a few Adam steps on f's weights (a copy; h_gen is
untouched) minimising the training loss's weighted BCE over

- positives: augmented views of the enrollment crop(s) (target 1), and
- negatives: a fixed bank of training-set faces (``NegativeBank``) whose targets are graded by
  the teacher: ``target_max * sigmoid((cos_c(enroll, neg) - margin) / T)`` with ``cos_c`` the
  teacher cosine of centred embeddings (as the trainer's soft targets), so look-alikes are softer
  negatives; targets stay below 0.5, so every bank face counts as a negative,

plus ``proximity * ||theta - theta0||^2`` that keeps the generated solution (one photo is easy
to overfit). Steps stop at ``steps`` or before the wall-time budget would be exceeded, on one
thread (``single_thread``), deterministically for a seed.

The bank holds training people only (LFW people sets 1-4 and CelebA; never LFW set 5, the
validation set, nor sets 6-10, the test set) and is stored as a plain ``.npz`` read with
``allow_pickle=False``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..config import Config
from ..descriptor.data import augment
from .data import resize_crops, to_unit_range
from .losses import weighted_bce
from .verifier import VerifierSpec, forward

BANK_FORMAT = "hyperver-negative-bank-v1"
TRAINING_SOURCES = ("lfw_train", "celeba")   # never lfw_val (set 5) nor the test sets 6-10
DEFAULT_AUGMENTATION = {"flip": 0.5, "scale": 0.08, "shift": 0.05, "rotate_deg": 5.0,
                        "brightness": 0.2, "contrast": 0.2, "saturation": 0.2}

log = logging.getLogger(__name__)


class NegativeBankError(ValueError):
    """A negative bank file that is missing, not an .npz of ours, corrupt, or holds pickled objects."""


@dataclass
class NegativeBank:
    crops: np.ndarray          # (N, S, S, 3) uint8 aligned faces at f's input size S
    embeddings: np.ndarray     # (N, D) unit teacher embeddings
    teacher_mean: np.ndarray   # (D,) mean teacher embedding of the training images (centres the cosines)
    identities: np.ndarray     # (N,) str "source:identity", one image per person
    teacher: str               # the embedder that made ``embeddings``
    sources: tuple[str, ...]

    def __post_init__(self):
        n = len(self.crops)
        if self.crops.ndim != 4 or self.crops.shape[-1] != 3 or self.crops.dtype != np.uint8:
            raise NegativeBankError(f"bank crops must be (N, S, S, 3) uint8, got {self.crops.shape} {self.crops.dtype}")
        if self.embeddings.shape[0] != n or len(self.identities) != n or self.embeddings.ndim != 2:
            raise NegativeBankError("bank crops, embeddings and identities disagree in length")
        if self.teacher_mean.shape != (self.embeddings.shape[1],):
            raise NegativeBankError("bank teacher_mean does not match the embeddings' dimension")

    def __len__(self) -> int:
        return len(self.crops)

    @property
    def input_size(self) -> int:
        return int(self.crops.shape[1])

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": BANK_FORMAT, "teacher": self.teacher, "sources": list(self.sources)}
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, crops=self.crops, embeddings=self.embeddings.astype(np.float32),
                            teacher_mean=self.teacher_mean.astype(np.float32),
                            identities=np.asarray(self.identities, dtype=str), meta=np.array(json.dumps(meta)))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "NegativeBank":
        path = Path(path)
        if not path.is_file():
            raise NegativeBankError(f"negative bank {path} not found; build one with "
                                    "hyperver.hypernet.refine.load_or_build_bank (enrollment does it)")
        try:
            with np.load(path, allow_pickle=False) as z:
                fields = {k: z[k] for k in ("crops", "embeddings", "teacher_mean", "identities", "meta")}
        except ValueError as e:  # numpy's answer to an object (pickled) array under allow_pickle=False
            raise NegativeBankError(f"negative bank {path} holds pickled objects, refused: {e}") from None
        except (OSError, KeyError, zipfile.BadZipFile, EOFError) as e:
            raise NegativeBankError(f"negative bank {path} is corrupt or not a bank: {e}") from None
        try:
            meta = json.loads(str(fields["meta"]))
        except json.JSONDecodeError as e:
            raise NegativeBankError(f"negative bank {path} is corrupt: bad metadata ({e})") from None
        if meta.get("format") != BANK_FORMAT:
            raise NegativeBankError(f"{path} is not a {BANK_FORMAT} file (format {meta.get('format')!r})")
        return cls(fields["crops"], fields["embeddings"], fields["teacher_mean"], fields["identities"],
                   str(meta["teacher"]), tuple(meta["sources"]))


def build_negative_bank(cfg: Config, n: int, seed: int, path: str | Path | None = None,
                        teacher: str = "dlib", input_size: int | None = None,
                        sources: Sequence[str] = TRAINING_SOURCES) -> NegativeBank:
    """``n`` negatives, one image per person drawn at random (``seed``) from the training
    sources' already cached crops and teacher embeddings (nothing is aligned or embedded here),
    resized to ``input_size`` (default: ``hypernet.f``'s); saved to ``path`` when given."""
    from ..data import LFWSplit, open_dataset
    from ..features import FeatureCache
    from .data import _records

    unknown = set(sources) - set(TRAINING_SOURCES)
    if unknown:
        raise ValueError(f"a negative bank takes training sources only {TRAINING_SOURCES}, got {sorted(unknown)}")
    size = int(input_size or cfg.get_path("hypernet.f")["input_size"])
    split = LFWSplit(open_dataset(cfg, "lfw"))
    rng = np.random.default_rng(seed)
    candidates: list[tuple[str, Any, FeatureCache, str]] = []   # (source, record, cache, key)
    all_embeddings = []
    for source in sources:
        dataset, records = _records(cfg, source, split)
        cache = FeatureCache(cfg, dataset, teacher)
        keys = cache.keys_for(records, progress=False)
        cached = [(r, k) for r, k in zip(records, keys) if k in cache.embed_store and k in cache.align_store]
        if not cached:
            continue
        all_embeddings.append(cache.embed_store.get_field([k for _, k in cached], "embedding"))
        by_person: dict[str, list[tuple[Any, str]]] = {}
        for i, (r, k) in enumerate(cached):
            by_person.setdefault(r.identity if r.identity is not None else f"#{i}", []).append((r, k))
        for person, items in by_person.items():   # one image per person: more distinct negatives
            r, k = items[int(rng.integers(len(items)))]
            candidates.append((source, r, cache, f"{source}:{person}"))
    if len(candidates) < n:
        raise ValueError(f"only {len(candidates)} cached training people for a bank of {n}; build the "
                         f"feature caches of {list(sources)} first (hyperver features)")
    pick = np.sort(rng.choice(len(candidates), size=n, replace=False))
    crops, embeddings, identities = [], [], []
    for i in pick:
        source, record, cache, name = candidates[i]
        crops.append(cache.crops([record])[0])
        embeddings.append(cache.embeddings([record], build=False)[0])
        identities.append(name)
    emb = np.stack(embeddings).astype(np.float32)
    bank = NegativeBank(resize_crops(np.stack(crops), size).numpy(),
                        emb / np.linalg.norm(emb, axis=1, keepdims=True),
                        np.concatenate(all_embeddings).mean(0).astype(np.float32),
                        np.array(identities, dtype=str), teacher, tuple(sources))
    if path is not None:
        bank.save(path)
    return bank


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """torch on one thread inside, the previous thread count restored after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def graded_targets(enroll_embedding: np.ndarray | torch.Tensor, bank_embeddings: np.ndarray | torch.Tensor,
                   teacher_mean: np.ndarray | torch.Tensor, margin: float, temperature: float,
                   target_max: float) -> torch.Tensor:
    """Teacher-graded negative targets in [0, target_max]: look-alikes of the enrolled face get more."""
    if not 0.0 <= target_max < 0.5:
        raise ValueError(f"target_max must be in [0, 0.5) so bank faces stay negatives, got {target_max}")
    mean = torch.as_tensor(np.asarray(teacher_mean), dtype=torch.float32)
    e = F.normalize(torch.as_tensor(np.asarray(enroll_embedding), dtype=torch.float32) - mean, dim=0)
    b = F.normalize(torch.as_tensor(np.asarray(bank_embeddings), dtype=torch.float32) - mean, dim=1)
    return target_max * torch.sigmoid((b @ e - margin) / temperature)


class RefinementProblem:
    """The fixed objective one enrollment's refinement minimises (views and negatives drawn once)."""

    def __init__(self, spec: VerifierSpec, theta0: torch.Tensor, positive_crops: np.ndarray,
                 enroll_embedding: np.ndarray, bank: NegativeBank, views: int = 8, negatives: int | None = None,
                 proximity: float = 1e-2, positive_weight: float = 0.5, target_margin: float = 0.5,
                 target_temperature: float = 0.05, target_max: float = 0.4,
                 augmentation: Mapping[str, float] | None = None, seed: int = 0):
        crops = np.asarray(positive_crops, dtype=np.uint8)
        if crops.ndim == 3:
            crops = crops[None]
        if views < 1:
            raise ValueError(f"refinement needs at least one positive view, got views={views}")
        self.spec, self.proximity, self.positive_weight = spec, float(proximity), float(positive_weight)
        self.theta0 = theta0.detach().clone().float()
        gen = torch.Generator().manual_seed(int(seed))
        plain = to_unit_range(resize_crops(crops, spec.input_size))
        # The plain crops are views too (the enrolled photo itself must score high); the rest augmented.
        extra = views - len(plain)
        if extra > 0:
            source = plain[torch.arange(extra) % len(plain)]
            positives = torch.cat([plain, augment(source, gen, **(augmentation or DEFAULT_AUGMENTATION))])
        else:
            positives = plain[:views]
        count = len(bank) if negatives is None else min(int(negatives), len(bank))
        rows = np.sort(np.random.default_rng(int(seed)).choice(len(bank), size=count, replace=False))
        bank_crops = bank.crops[rows]
        if bank.input_size != spec.input_size:
            bank_crops = resize_crops(bank_crops, spec.input_size).numpy()
        neg_x = to_unit_range(torch.from_numpy(np.ascontiguousarray(bank_crops)))
        neg_t = graded_targets(enroll_embedding, bank.embeddings[rows], bank.teacher_mean, target_margin,
                               target_temperature, target_max)
        self.x = torch.cat([positives, neg_x])
        self.targets = torch.cat([torch.ones(len(positives)), neg_t])
        self.n_positive = len(positives)

    def logits(self, theta: torch.Tensor) -> torch.Tensor:
        return forward(self.spec, theta, self.x)

    def loss_of_logits(self, theta: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        bce = weighted_bce(logits, self.targets, self.positive_weight)
        return bce + self.proximity * ((theta - self.theta0) ** 2).sum()

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        return self.loss_of_logits(theta, self.logits(theta))


def refine_theta(spec: VerifierSpec, theta0: torch.Tensor | np.ndarray, positive_crops: np.ndarray,
                 enroll_embedding: np.ndarray, bank: NegativeBank, steps: int = 10, lr: float = 1e-3,
                 time_budget_s: float | None = 1.0, views: int = 8, negatives: int | None = 64,
                 proximity: float = 1e-2, positive_weight: float = 0.5, target_margin: float = 0.5,
                 target_temperature: float = 0.05, target_max: float = 0.4,
                 augmentation: Mapping[str, float] | None = None, seed: int = 0) -> tuple[torch.Tensor, dict[str, Any]]:
    """theta0 refined by up to ``steps`` Adam steps on one thread -> (new theta, stats).

    ``positive_crops``: the enrollment's aligned crop(s), (S, S, 3) or (K, S, S, 3) uint8 at any
    size (resized as ``enroll.face_input`` does); ``enroll_embedding``: its unit teacher embedding
    (the bank's teacher). The budget counts everything from the call on (views, negatives, steps):
    a step is not started when the steps so far say it would end past ``time_budget_s``.
    ``stats``: steps done, seconds, why it stopped, loss and logits before/after."""
    start = time.perf_counter()
    theta0 = torch.as_tensor(np.asarray(theta0) if not isinstance(theta0, torch.Tensor) else theta0)
    with single_thread(), torch.enable_grad():   # enable_grad: callers may run under no_grad
        torch.manual_seed(int(seed))
        problem = RefinementProblem(spec, theta0, positive_crops, enroll_embedding, bank, views, negatives,
                                    proximity, positive_weight, target_margin, target_temperature, target_max,
                                    augmentation, seed)
        theta = problem.theta0.clone().requires_grad_(True)
        opt = torch.optim.Adam([theta], lr=float(lr))
        losses: list[float] = []
        first_logits: torch.Tensor | None = None
        stopped_by, done = "steps", 0
        loop_start = time.perf_counter()
        while done < int(steps):
            now = time.perf_counter()
            per_step = (now - loop_start) / done if done else 0.0
            if time_budget_s is not None and (now - start) + per_step > float(time_budget_s):
                stopped_by = "time_budget"   # the next step would end past the budget
                break
            logits = problem.logits(theta)
            loss = problem.loss_of_logits(theta, logits)
            if first_logits is None:
                first_logits = logits.detach()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            done += 1
        result = theta.detach()
    n_pos = problem.n_positive
    stats: dict[str, Any] = {
        "refined": done > 0, "steps_done": done, "steps": int(steps), "stopped_by": stopped_by,
        "seconds": round(time.perf_counter() - start, 4), "time_budget_s": time_budget_s,
        "lr": float(lr), "views": n_pos, "negatives": len(problem.targets) - n_pos,
        "loss_first": losses[0] if losses else None, "loss_last_step": losses[-1] if losses else None}
    if first_logits is not None:
        stats["own_logit_before"] = float(first_logits[0])
        stats["negative_mean_logit_before"] = float(first_logits[n_pos:].mean()) if len(first_logits) > n_pos else None
    return result, stats


def bank_path(cfg: Config) -> Path:
    """``hypernet.refine.bank_path``: relative paths live under cache.root."""
    return cfg.cache_dir("hypernet.refine.bank_path", "refine/negative_bank.npz")


def load_or_build_bank(cfg: Config, input_size: int | None = None) -> NegativeBank:
    """The configured bank; built first (``hypernet.refine.bank_size`` people, ``seed``) from the
    training sources' cached crops when the file is missing, like f's templates."""
    path = bank_path(cfg)
    teacher = str(cfg.get_path("hypernet.teacher"))
    if not path.is_file():
        rc = cfg.get_path("hypernet.refine")
        log.info("building the negative bank %s (%d training people)", path, int(rc["bank_size"]))
        return build_negative_bank(cfg, int(rc["bank_size"]), int(rc["seed"]), path=path, teacher=teacher,
                                   input_size=input_size)
    bank = NegativeBank.load(path)
    if bank.teacher != teacher:
        raise NegativeBankError(f"{path} holds {bank.teacher!r} embeddings but hypernet.teacher is {teacher!r}; "
                                "point hypernet.refine.bank_path at another file (it is built on first use)")
    return bank


def warm_up(spec: VerifierSpec, bank: NegativeBank) -> None:
    """One tiny refinement: torch's first backward in a process costs seconds of one-off set-up,
    which must not land in the first enrollment's time budget."""
    from .verifier import init_theta

    refine_theta(spec, init_theta(spec), bank.crops[:1], bank.embeddings[0], bank, steps=1, time_budget_s=None,
                 views=1, negatives=1)


def refine_settings(cfg: Config) -> dict[str, Any]:
    """``hypernet.refine`` as keyword arguments of ``refine_theta`` (without the enabled flag and bank path)."""
    rc = dict(cfg.get_path("hypernet.refine"))
    keys = ("steps", "lr", "time_budget_s", "views", "negatives", "proximity", "positive_weight",
            "target_margin", "target_temperature", "target_max", "seed")
    return {k: rc[k] for k in keys if k in rc}


def refinement_setup(cfg: Config, input_size: int, refine: Mapping[str, Any] | bool) -> tuple[NegativeBank, dict[str, Any]]:
    """(bank, refine_theta keyword arguments) for an evaluation's ``refine`` option: True or ``{}`` for
    ``hypernet.refine``'s settings and bank (built on first use), or a dict that overrides them, whose
    ``bank`` (a NegativeBank) replaces the configured one."""
    overrides = dict(refine) if isinstance(refine, Mapping) else {}
    bank = overrides.pop("bank", None)
    bank = load_or_build_bank(cfg, input_size) if bank is None else bank
    return bank, {**refine_settings(cfg), **overrides}


def refined_pair_logits(gen, data, enroll: np.ndarray, probe: np.ndarray, bank: NegativeBank,
                        settings: Mapping[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Like ``train.pair_logits`` (enroll from image ``enroll[i]``, score ``probe[i]``) with every
    enrollment's theta refined first, once per distinct enrollment image. ``data`` is a
    ``HypernetData`` (crops at f's size, backbone and teacher embeddings); its teacher must be
    the bank's. Returns the logits and a summary of the refinements' stats."""
    from .batched import score_matrix

    settings = dict(settings or {})
    warm_up(gen.spec, bank)
    distinct, where = np.unique(np.asarray(enroll), return_inverse=True)
    with torch.no_grad():
        theta0 = gen(data.backbone[distinct])
    from tqdm import tqdm

    refined, seconds, steps_done = [], [], []
    for row, index in enumerate(tqdm(distinct, desc="refine enrollments", leave=False)):
        theta, stats = refine_theta(gen.spec, theta0[row], data.images[index].numpy(),
                                    data.teacher[index].numpy(), bank, **settings)
        refined.append(theta)
        seconds.append(stats["seconds"])
        steps_done.append(stats["steps_done"])
    thetas = torch.stack(refined)[torch.from_numpy(where)]
    with torch.no_grad():
        x = to_unit_range(data.images[np.asarray(probe)]).unsqueeze(1)   # each verifier its own probe
        logits = torch.cat([score_matrix(gen.spec, thetas[i:i + 200], x[i:i + 200])[:, 0]
                            for i in range(0, len(thetas), 200)])
    summary = {"enrollments": len(distinct), "median_s": float(np.median(seconds)), "max_s": float(np.max(seconds)),
               "mean_steps_done": float(np.mean(steps_done)), "settings": settings}
    return logits.numpy(), summary
