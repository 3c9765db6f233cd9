"""The accuracy dataset: random subnets and their measured accuracy, built once, resumable.

Stored as JSON lines (one subnet per line: index, arch, metrics), appended and flushed as each
subnet is evaluated, so an interrupted build continues where it stopped. The i-th subnet is a
pure function of (seed, i), so resumed and uninterrupted builds hold the same architectures.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ..space import SearchSpace

Evaluator = Callable[[dict], Mapping[str, float]]


def arch_for_index(space: SearchSpace, seed: int, index: int) -> dict:
    return space.sample(np.random.default_rng([seed, index]))


def read_dataset(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            # A last line cut by a kill mid-write is dropped (re-evaluated on resume); elsewhere it is corruption.
            if n != len(lines):
                raise ValueError(f"{path}:{n}: corrupt line in the accuracy dataset") from None
    return rows


def build_accuracy_dataset(space: SearchSpace, evaluate: Evaluator, n: int, path: str | Path, seed: int = 0,
                           progress: bool = True) -> list[dict]:
    from tqdm import tqdm

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = read_dataset(path)
    done = {r["index"] for r in rows}
    # Rewrite without a possibly truncated last line before appending.
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    todo = [i for i in range(n) if i not in done]
    with path.open("a") as f:
        for i in tqdm(todo, desc="accuracy dataset", disable=not progress, initial=len(done), total=n):
            arch = arch_for_index(space, seed, i)
            row = {"index": i, "arch": arch, **{k: float(v) for k, v in evaluate(arch).items()}}
            f.write(json.dumps(row) + "\n")
            f.flush()
            rows.append(row)
    return sorted(rows, key=lambda r: r["index"])


def split_rows(rows: Sequence[dict], holdout: float = 0.2, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Deterministic train/held-out split of the dataset's subnets (by index)."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(rows))
    cut = int(round(len(rows) * (1 - holdout)))
    return [rows[i] for i in idx[:cut]], [rows[i] for i in idx[cut:]]
