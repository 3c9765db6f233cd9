"""The project's fixed split, as an object every script shares.

LFW View-2 people sets 1-4 train, set 5 validation, sets 6-10 (and their pairs) test only.
CelebA and UTKFace are training data only. The split is fixed so every figure is comparable;
nothing recomputes it. Asking for test data says so explicitly (``role="test"``).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Iterable

from ..errors import DatasetError
from .lfw import LFWDataset, Pair
from .records import ImageRecord

ROLES = ("train", "val", "test")


@dataclass(frozen=True)
class FixedSplit:
    train_sets: tuple[int, ...] = (1, 2, 3, 4)
    val_sets: tuple[int, ...] = (5,)
    test_sets: tuple[int, ...] = (6, 7, 8, 9, 10)
    extra_train_datasets: tuple[str, ...] = ("celeba", "utkface")

    def sets(self, role: str) -> tuple[int, ...]:
        if role not in ROLES:
            raise ValueError(f"unknown split role {role!r}; use one of {ROLES}")
        return {"train": self.train_sets, "val": self.val_sets, "test": self.test_sets}[role]

    def role_of_set(self, set_index: int) -> str:
        for role in ROLES:
            if set_index in self.sets(role):
                return role
        raise ValueError(f"LFW set {set_index} is not in the split")


PROJECT_SPLIT = FixedSplit()


def parse_folds(spec: str | Iterable[int]) -> tuple[int, ...]:
    """'6-10', '1-10', '1,3,5' or an iterable of ints -> sorted tuple of fold numbers (1-based)."""
    if not isinstance(spec, str):
        folds = tuple(sorted({int(f) for f in spec}))
    else:
        folds_set: set[int] = set()
        for part in spec.replace(" ", "").split(","):
            if not part:
                continue
            if "-" in part:
                lo, hi = part.split("-", 1)
                try:
                    a, b = int(lo), int(hi)
                except ValueError:
                    raise ValueError(f"bad fold range {part!r} in {spec!r}") from None
                if a > b:
                    raise ValueError(f"bad fold range {part!r} in {spec!r}")
                folds_set.update(range(a, b + 1))
            else:
                try:
                    folds_set.add(int(part))
                except ValueError:
                    raise ValueError(f"bad fold {part!r} in {spec!r}") from None
        folds = tuple(sorted(folds_set))
    if not folds or folds[0] < 1 or folds[-1] > 10:
        raise ValueError(f"folds must be within 1-10, got {spec!r}")
    return folds


class LFWSplit:
    """LFW people and pairs by split role, read once from the official lists."""

    def __init__(self, lfw: LFWDataset, split: FixedSplit = PROJECT_SPLIT):
        self.lfw = lfw
        self.split = split

    @cached_property
    def people_sets(self) -> list[list[tuple[str, int]]]:
        sets = self.lfw.read_people("people.txt")
        if len(sets) != 10:
            raise DatasetError(f"people.txt should hold 10 sets, found {len(sets)}")
        return sets

    @cached_property
    def pair_folds(self) -> list[list[Pair]]:
        folds = self.lfw.read_pairs("pairs.txt")
        if len(folds) != 10:
            raise DatasetError(f"pairs.txt should hold 10 folds, found {len(folds)}")
        return folds

    def people(self, role: str) -> list[tuple[str, int]]:
        return [p for s in self.split.sets(role) for p in self.people_sets[s - 1]]

    def records(self, role: str, min_images: int = 1) -> list[ImageRecord]:
        return self.lfw.set_records([p for p in self.people(role) if p[1] >= min_images])

    def pairs(self, folds: Iterable[int]) -> list[Pair]:
        return [p for f in folds for p in self.pair_folds[f - 1]]

    def records_of_sets(self, sets: Iterable[int]) -> list[ImageRecord]:
        return self.lfw.set_records([p for s in sets for p in self.people_sets[s - 1]])
