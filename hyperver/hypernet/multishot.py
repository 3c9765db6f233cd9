"""More than one shot (issue #17 item 6), reported beside the one-shot headline.

Enrollment from ``n`` photos (the unit mean of their descriptor embeddings, as ``Enroller.embed``
does) and a decision over ``k`` probe photos (the mean of f's logits), on the LFW people of the
test sets who have at least ``max(shots) + max(probes)`` images. Every person's probe photos are
drawn first and the enrollment photos from the rest, so all (n, k) rows score the same probes and
differ only in what they vary. Genuine trials: each person's verifier on their own probes;
impostor trials: each verifier on every other person's probes (U x (U - 1)). The descriptor row
does the same with cosines (mean enrollment embedding vs mean probe embedding), as a reference.
With ``refine`` (``hypernet.multi_shot.refine``), each person's generated theta is also refined on all
n enrollment photos (``hyperver.hypernet.refine``: they are the positives, with augmented views) and
scored as ``hypernet_refined`` on the same probes.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

import numpy as np
import torch

from ..config import Config
from ..data import LFWSplit, open_dataset, parse_folds
from ..eval.metrics import equal_error_rate, roc_auc, tar_at_far
from .batched import score_matrix
from .data import load_records_data, to_unit_range
from .generator import WeightGenerator


def draw_people(records: Sequence, n_enroll: int, n_probe: int, seed: int = 0,
                limit_people: int | None = None) -> tuple[list[str], dict[str, list[int]], dict[str, list[int]]]:
    """(people, probe record indices, enrollment record indices) for everyone with enough images.

    A person's photos are permuted with a generator seeded by ``seed`` and the person's place in
    the sorted list, so a person's draw does not depend on who else qualifies."""
    by_person: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_person[r.identity].append(i)
    people = sorted(p for p, idx in by_person.items() if len(idx) >= n_enroll + n_probe)
    if limit_people is not None:
        people = people[:limit_people]
    probes, enroll = {}, {}
    for j, person in enumerate(people):
        order = np.random.default_rng([seed, j]).permutation(by_person[person])
        probes[person] = [int(i) for i in order[:n_probe]]
        enroll[person] = [int(i) for i in order[n_probe:n_probe + n_enroll]]
    return people, probes, enroll


def _metrics(matrix: np.ndarray) -> dict[str, float]:
    """Genuine = the diagonal of a (verifier x probe person) score matrix, impostors = the rest."""
    same = np.eye(len(matrix), dtype=bool)
    scores, labels = matrix.ravel(), same.ravel()
    tar, far, _ = tar_at_far(scores, labels, 1e-3)
    return {"auc": roc_auc(scores, labels), "eer": equal_error_rate(scores, labels),
            "tar_at_far_1e3": tar, "far_at_that_threshold": far}


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


@torch.no_grad()
def multi_shot_rows(cfg: Config, gen: WeightGenerator, backbone: str, folds: str = "6-10",
                    shots: Sequence[int] = (1, 3, 5), probes: Sequence[int] = (1, 3), seed: int = 0,
                    limit_people: int | None = None, impl: str = "stacked",
                    refine: bool | dict[str, Any] = False) -> list[dict[str, Any]]:
    """One row per (shots, probes): AUC, EER and TAR at FAR 1e-3 (threshold on these trials' own
    impostors, as VAL@1e-3 elsewhere) for the per-user verifiers and the descriptor; ``refine``
    (True: ``hypernet.refine``'s settings and bank; a dict overrides them, its ``bank`` a NegativeBank) adds
    ``hypernet_refined``."""
    if min(shots) < 1 or min(probes) < 1:
        raise ValueError(f"shots and probes must be >= 1, got {list(shots)} and {list(probes)}")
    split = LFWSplit(open_dataset(cfg, "lfw"))
    records = split.records_of_sets(parse_folds(folds))
    people, probe_idx, enroll_idx = draw_people(records, max(shots), max(probes), seed, limit_people)
    if len(people) < 2:
        raise ValueError(f"only {len(people)} people of LFW sets {folds} have {max(shots) + max(probes)} images")
    used = sorted({i for p in people for i in probe_idx[p] + enroll_idx[p]})
    row_of = {i: r for r, i in enumerate(used)}
    bank, settings = None, {}
    if refine:
        from .refine import refinement_setup, warm_up

        bank, settings = refinement_setup(cfg, gen.spec.input_size, refine)
        warm_up(gen.spec, bank)
    # refinement grades the bank's negatives by its teacher's cosines: the photos carry that teacher's embeddings
    data = load_records_data(cfg, "lfw", [records[i] for i in used], backbone, gen.spec.input_size,
                             **({"teacher": bank.teacher} if bank is not None else {}))
    emb = data.backbone.float()
    k_max = max(probes)
    probe_rows = [row_of[i] for p in people for i in probe_idx[p]]            # person-major, k_max each
    x = to_unit_range(data.images[probe_rows])
    probe_emb = emb[probe_rows].reshape(len(people), k_max, -1)
    gen.eval()
    out = []
    for n in shots:
        enrolled = _unit(torch.stack([emb[[row_of[i] for i in enroll_idx[p][:n]]].mean(0) for p in people]))
        thetas = gen(enrolled)
        logits = score_matrix(gen.spec, thetas, x, impl, chunk=16)     # (U, U * k_max); chunks bound memory
        logits = logits.reshape(len(people), len(people), k_max)
        refined, seconds = None, []
        if bank is not None:
            from .refine import refine_theta

            new = []
            for j, p in enumerate(people):
                rows = [row_of[i] for i in enroll_idx[p][:n]]
                teacher = _unit(data.teacher[rows].float().mean(0)).numpy()
                theta, stats = refine_theta(gen.spec, thetas[j], data.images[rows].numpy(), teacher, bank, **settings)
                new.append(theta)
                seconds.append(stats["seconds"])
            refined = score_matrix(gen.spec, torch.stack(new), x, impl, chunk=16).reshape(len(people), len(people), k_max)
        for k in probes:
            hyper = logits[:, :, :k].mean(-1).numpy()
            desc = (enrolled @ _unit(probe_emb[:, :k].mean(1)).T).numpy()
            row = {"shots": int(n), "probes": int(k), "people": len(people), "genuine": len(people),
                   "impostor": len(people) * (len(people) - 1),
                   "hypernet": _metrics(hyper), "descriptor": _metrics(desc)}
            if refined is not None:
                row["hypernet_refined"] = {**_metrics(refined[:, :, :k].mean(-1).numpy()),
                                           "median_refine_s": float(np.median(seconds))}
            out.append(row)
    return out
