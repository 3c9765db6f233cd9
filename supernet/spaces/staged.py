"""A staged search space with per-stage depth choices: configs, sampling, evolution, encoding.

An architecture is ``{"d": [depth per stage], "k": [kernel per slot], "e": [expand per slot]}``;
stage ``s`` owns ``max(stage_depths[s])`` consecutive slots. Slots beyond a stage's depth are
inactive and normalised to the smallest choice, so equal networks compare equal.

Choice restrictions (progressive shrinking phases, ``sample``/``smallest``): ``kernels`` and
``expands`` are global lists; ``depths`` is a list intersected with each stage's choices (a stage
with no allowed value keeps its largest depth), so ``[max(space.depths)]`` means "full depth".
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

Arch = dict[str, list[int]]


class StagedSpace:
    """Everything derived from three attributes a subclass provides (as dataclass fields or properties):
    ``stage_depths`` (depth choices per stage), ``kernels`` and ``expands`` (choices per block slot)."""

    stage_depths: tuple[tuple[int, ...], ...]
    kernels: tuple[int, ...]
    expands: tuple[int, ...]

    # -- shape ------------------------------------------------------------------------------------
    @property
    def n_stages(self) -> int:
        return len(self.stage_depths)

    @property
    def depths(self) -> tuple[int, ...]:
        """Every depth some stage allows (the vocabulary of the ``depths`` restriction)."""
        return tuple(sorted({d for choices in self.stage_depths for d in choices}))

    @property
    def stage_slots(self) -> tuple[int, ...]:
        return tuple(max(c) for c in self.stage_depths)

    @property
    def n_slots(self) -> int:
        return sum(self.stage_slots)

    def slot(self, stage: int, block: int) -> int:
        return sum(self.stage_slots[:stage]) + block

    def _stage_choices(self, stage: int, depths: Sequence[int] | None) -> tuple[int, ...]:
        full = self.stage_depths[stage]
        if depths is None:
            return full
        allowed = tuple(d for d in full if d in set(depths))
        return allowed or (max(full),)

    # -- configs ----------------------------------------------------------------------------------
    def validate(self, arch: Mapping[str, Sequence[int]]) -> Arch:
        """Check an arch dict and return its normalised copy (inactive slots set to the minimum)."""
        if not isinstance(arch, Mapping) or set(arch) != {"d", "k", "e"}:
            keys = sorted(arch) if isinstance(arch, Mapping) else type(arch).__name__
            raise ValueError(f"an architecture needs exactly the keys d, k, e; got {keys}")
        d, k, e = (list(map(int, arch[x])) for x in ("d", "k", "e"))
        if len(d) != self.n_stages or len(k) != self.n_slots or len(e) != self.n_slots:
            raise ValueError(f"need {self.n_stages} depths and {self.n_slots} kernels/expands, "
                             f"got {len(d)}, {len(k)}, {len(e)}")
        bad_depths = sorted({depth for s, depth in enumerate(d) if depth not in self.stage_depths[s]})
        if bad_depths:
            raise ValueError(f"depth values {bad_depths} are outside the stage choices "
                             f"{[list(c) for c in self.stage_depths]}")
        for name, vals, allowed in (("kernel", k, self.kernels), ("expand", e, self.expands)):
            bad = sorted(set(vals) - set(allowed))
            if bad:
                raise ValueError(f"{name} values {bad} are outside the space {list(allowed)}")
        return self._normalise({"d": d, "k": k, "e": e})

    def _normalise(self, arch: Mapping[str, Sequence[int]]) -> Arch:
        k, e = list(arch["k"]), list(arch["e"])
        for s, depth in enumerate(arch["d"]):
            for j in range(depth, self.stage_slots[s]):
                k[self.slot(s, j)] = min(self.kernels)
                e[self.slot(s, j)] = min(self.expands)
        return {"d": [int(x) for x in arch["d"]], "k": [int(x) for x in k], "e": [int(x) for x in e]}

    def largest(self) -> Arch:
        return {"d": [max(c) for c in self.stage_depths], "k": [max(self.kernels)] * self.n_slots,
                "e": [max(self.expands)] * self.n_slots}

    def smallest(self, depths: Sequence[int] | None = None, kernels: Sequence[int] | None = None,
                 expands: Sequence[int] | None = None) -> Arch:
        """The smallest architecture, optionally among restricted choices (as ``sample``)."""
        kernels, expands = kernels or self.kernels, expands or self.expands
        return self._normalise({"d": [min(self._stage_choices(s, depths)) for s in range(self.n_stages)],
                                "k": [min(kernels)] * self.n_slots, "e": [min(expands)] * self.n_slots})

    def active_blocks(self, arch: Mapping[str, Sequence[int]]) -> list[tuple[int, int, int, int]]:
        """(stage, block-in-stage, kernel, expand) of every active block."""
        out = []
        for s, depth in enumerate(arch["d"]):
            for j in range(int(depth)):
                slot = self.slot(s, j)
                out.append((s, j, int(arch["k"][slot]), int(arch["e"][slot])))
        return out

    # -- sampling and evolution -------------------------------------------------------------------
    def sample(self, rng: np.random.Generator, depths: Sequence[int] | None = None,
               kernels: Sequence[int] | None = None, expands: Sequence[int] | None = None) -> Arch:
        """A uniformly random architecture, optionally from restricted choices (progressive shrinking)."""
        kernels, expands = kernels or self.kernels, expands or self.expands
        arch = {"d": [int(rng.choice(self._stage_choices(s, depths))) for s in range(self.n_stages)],
                "k": [int(rng.choice(kernels)) for _ in range(self.n_slots)],
                "e": [int(rng.choice(expands)) for _ in range(self.n_slots)]}
        return self._normalise(arch)

    def mutate(self, arch: Mapping[str, Sequence[int]], prob: float, rng: np.random.Generator) -> Arch:
        """Resample each gene (depth per stage, kernel and expand per slot) with probability ``prob``."""
        d, k, e = list(arch["d"]), list(arch["k"]), list(arch["e"])
        for s in range(len(d)):
            if rng.random() < prob:
                d[s] = int(rng.choice(self.stage_depths[s]))
        for i in range(len(k)):
            if rng.random() < prob:
                k[i] = int(rng.choice(self.kernels))
            if rng.random() < prob:
                e[i] = int(rng.choice(self.expands))
        return self._normalise({"d": d, "k": k, "e": e})

    def crossover(self, a: Mapping[str, Sequence[int]], b: Mapping[str, Sequence[int]],
                  rng: np.random.Generator) -> Arch:
        """Each gene from one parent at random (uniform crossover, as in OFA's evolution finder)."""
        pick = lambda x, y: [int(x[i] if rng.random() < 0.5 else y[i]) for i in range(len(x))]  # noqa: E731
        return self._normalise({"d": pick(a["d"], b["d"]), "k": pick(a["k"], b["k"]), "e": pick(a["e"], b["e"])})

    # -- encoding ---------------------------------------------------------------------------------
    @property
    def encoding_size(self) -> int:
        return sum(len(c) for c in self.stage_depths) + self.n_slots * (len(self.kernels) + len(self.expands))

    def encode(self, arch: Mapping[str, Sequence[int]]) -> np.ndarray:
        """Fixed-length vector: one-hot depth per stage, one-hot k and e per slot (zeros beyond depth)."""
        vec = np.zeros(self.encoding_size, dtype=np.float32)
        pos = 0
        for s, choices in enumerate(self.stage_depths):
            vec[pos + choices.index(int(arch["d"][s]))] = 1
            pos += len(choices)
        nk, ne = len(self.kernels), len(self.expands)
        for s in range(self.n_stages):
            for j in range(self.stage_slots[s]):
                slot = self.slot(s, j)
                if j < arch["d"][s]:
                    vec[pos + self.kernels.index(int(arch["k"][slot]))] = 1
                    vec[pos + nk + self.expands.index(int(arch["e"][slot]))] = 1
                pos += nk + ne
        return vec

    def decode(self, vec: np.ndarray) -> Arch:
        vec = np.asarray(vec)
        pos, d = 0, []
        for choices in self.stage_depths:
            d.append(choices[int(np.argmax(vec[pos:pos + len(choices)]))])
            pos += len(choices)
        k, e = [], []
        nk, ne = len(self.kernels), len(self.expands)
        for _ in range(self.n_slots):
            block = vec[pos:pos + nk + ne]
            k.append(self.kernels[int(np.argmax(block[:nk]))] if block[:nk].any() else min(self.kernels))
            e.append(self.expands[int(np.argmax(block[nk:]))] if block[nk:].any() else min(self.expands))
            pos += nk + ne
        return self._normalise({"d": d, "k": k, "e": e})
