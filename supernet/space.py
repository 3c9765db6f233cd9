"""The OFA MobileNetV3 search space, architecture configs and their fixed-length encoding.

An architecture is a small JSON object ``{"d": [5 depths], "k": [20 kernels], "e": [20 expands]}``
(4 block slots per stage; slots beyond a stage's depth are ignored and normalised to the
smallest choice so equal networks compare equal). Sampling, mutation and crossover live here
so every search strategy shares them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class StageSpec:
    width: int           # output channels at width multiplier 1.0
    stride: int
    act: str             # "relu" | "hswish"
    se: bool


# OFA MobileNetV3 (Cai et al. 2020): strides 2,2,2,1,2; ReLU in the first two stages; SE in 2, 4, 5.
OFA_MBV3_STAGES = (
    StageSpec(24, 2, "relu", False),
    StageSpec(40, 2, "relu", True),
    StageSpec(80, 2, "hswish", False),
    StageSpec(112, 1, "hswish", True),
    StageSpec(160, 2, "hswish", True),
)


@dataclass(frozen=True)
class SearchSpace:
    depths: tuple[int, ...] = (2, 3, 4)
    kernels: tuple[int, ...] = (3, 5, 7)
    expands: tuple[int, ...] = (3, 4, 6)
    stages: tuple[StageSpec, ...] = OFA_MBV3_STAGES
    stem_width: int = 16
    final_expand_width: int = 960
    feature_width: int = 1280

    @property
    def n_stages(self) -> int:
        return len(self.stages)

    @property
    def max_depth(self) -> int:
        return max(self.depths)

    @property
    def n_slots(self) -> int:
        return self.n_stages * self.max_depth

    # -- configs -------------------------------------------------------------------------------
    def validate(self, arch: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
        """Check an arch dict and return its normalised copy (inactive slots set to the minimum)."""
        if not isinstance(arch, Mapping) or set(arch) != {"d", "k", "e"}:
            keys = sorted(arch) if isinstance(arch, Mapping) else type(arch).__name__
            raise ValueError(f"an architecture needs exactly the keys d, k, e; got {keys}")
        d, k, e = (list(map(int, arch[x])) for x in ("d", "k", "e"))
        if len(d) != self.n_stages or len(k) != self.n_slots or len(e) != self.n_slots:
            raise ValueError(f"need {self.n_stages} depths and {self.n_slots} kernels/expands, "
                             f"got {len(d)}, {len(k)}, {len(e)}")
        for name, vals, allowed in (("depth", d, self.depths), ("kernel", k, self.kernels), ("expand", e, self.expands)):
            bad = sorted(set(vals) - set(allowed))
            if bad:
                raise ValueError(f"{name} values {bad} are outside the space {list(allowed)}")
        return self._normalise({"d": d, "k": k, "e": e})

    def _normalise(self, arch: dict[str, list[int]]) -> dict[str, list[int]]:
        k, e = list(arch["k"]), list(arch["e"])
        for s, depth in enumerate(arch["d"]):
            for j in range(depth, self.max_depth):
                k[s * self.max_depth + j] = min(self.kernels)
                e[s * self.max_depth + j] = min(self.expands)
        return {"d": list(arch["d"]), "k": k, "e": e}

    def largest(self) -> dict[str, list[int]]:
        return {"d": [max(self.depths)] * self.n_stages, "k": [max(self.kernels)] * self.n_slots,
                "e": [max(self.expands)] * self.n_slots}

    def smallest(self, depths: Sequence[int] | None = None, kernels: Sequence[int] | None = None,
                 expands: Sequence[int] | None = None) -> dict[str, list[int]]:
        """The smallest architecture, optionally among restricted choices (as ``sample``)."""
        depths, kernels, expands = depths or self.depths, kernels or self.kernels, expands or self.expands
        return self._normalise({"d": [min(depths)] * self.n_stages, "k": [min(kernels)] * self.n_slots,
                                "e": [min(expands)] * self.n_slots})

    def active_blocks(self, arch: Mapping[str, Sequence[int]]) -> list[tuple[int, int, int, int]]:
        """(stage, block-in-stage, kernel, expand) of every active block."""
        out = []
        for s, depth in enumerate(arch["d"]):
            for j in range(depth):
                slot = s * self.max_depth + j
                out.append((s, j, int(arch["k"][slot]), int(arch["e"][slot])))
        return out

    # -- sampling and evolution ----------------------------------------------------------------
    def sample(self, rng: np.random.Generator, depths: Sequence[int] | None = None,
               kernels: Sequence[int] | None = None, expands: Sequence[int] | None = None) -> dict[str, list[int]]:
        """A uniformly random architecture, optionally from restricted choices (progressive shrinking)."""
        depths, kernels, expands = depths or self.depths, kernels or self.kernels, expands or self.expands
        arch = {"d": [int(rng.choice(depths)) for _ in range(self.n_stages)],
                "k": [int(rng.choice(kernels)) for _ in range(self.n_slots)],
                "e": [int(rng.choice(expands)) for _ in range(self.n_slots)]}
        return self._normalise(arch)

    def mutate(self, arch: Mapping[str, Sequence[int]], prob: float, rng: np.random.Generator) -> dict[str, list[int]]:
        """Resample each gene (depth per stage, kernel and expand per slot) with probability ``prob``."""
        d, k, e = list(arch["d"]), list(arch["k"]), list(arch["e"])
        for i in range(len(d)):
            if rng.random() < prob:
                d[i] = int(rng.choice(self.depths))
        for i in range(len(k)):
            if rng.random() < prob:
                k[i] = int(rng.choice(self.kernels))
            if rng.random() < prob:
                e[i] = int(rng.choice(self.expands))
        return self._normalise({"d": d, "k": k, "e": e})

    def crossover(self, a: Mapping[str, Sequence[int]], b: Mapping[str, Sequence[int]],
                  rng: np.random.Generator) -> dict[str, list[int]]:
        """Each gene from one parent at random (uniform crossover, as in OFA's evolution finder)."""
        pick = lambda x, y: [int(x[i] if rng.random() < 0.5 else y[i]) for i in range(len(x))]  # noqa: E731
        return self._normalise({"d": pick(a["d"], b["d"]), "k": pick(a["k"], b["k"]), "e": pick(a["e"], b["e"])})

    # -- encoding ------------------------------------------------------------------------------
    @property
    def encoding_size(self) -> int:
        return self.n_stages * len(self.depths) + self.n_slots * (len(self.kernels) + len(self.expands))

    def encode(self, arch: Mapping[str, Sequence[int]]) -> np.ndarray:
        """Fixed-length vector: one-hot depth per stage, one-hot k and e per slot (zeros beyond depth)."""
        vec = np.zeros(self.encoding_size, dtype=np.float32)
        pos = 0
        for s in range(self.n_stages):
            vec[pos + self.depths.index(int(arch["d"][s]))] = 1
            pos += len(self.depths)
        nk, ne = len(self.kernels), len(self.expands)
        for s in range(self.n_stages):
            for j in range(self.max_depth):
                slot = s * self.max_depth + j
                if j < arch["d"][s]:
                    vec[pos + self.kernels.index(int(arch["k"][slot]))] = 1
                    vec[pos + nk + self.expands.index(int(arch["e"][slot]))] = 1
                pos += nk + ne
        return vec

    def decode(self, vec: np.ndarray) -> dict[str, list[int]]:
        vec = np.asarray(vec)
        pos, d = 0, []
        for _ in range(self.n_stages):
            d.append(self.depths[int(np.argmax(vec[pos:pos + len(self.depths)]))])
            pos += len(self.depths)
        k, e = [], []
        nk, ne = len(self.kernels), len(self.expands)
        for _ in range(self.n_slots):
            block = vec[pos:pos + nk + ne]
            k.append(self.kernels[int(np.argmax(block[:nk]))] if block[:nk].any() else min(self.kernels))
            e.append(self.expands[int(np.argmax(block[nk:]))] if block[nk:].any() else min(self.expands))
            pos += nk + ne
        return self._normalise({"d": d, "k": k, "e": e})


DEFAULT_SPACE = SearchSpace()


def arch_id(arch: Mapping[str, Sequence[int]]) -> str:
    """A compact readable id, e.g. 'd43234-k7735...-e6643...' (inactive slots included)."""
    return "d" + "".join(map(str, arch["d"])) + "-k" + "".join(map(str, arch["k"])) + "-e" + "".join(map(str, arch["e"]))


def save_arch(arch: Mapping[str, Any], path: str | Path, **extra: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**{k: list(arch[k]) for k in ("d", "k", "e")}, **extra}, indent=1) + "\n")
    return path


def load_arch(path: str | Path, space: SearchSpace = DEFAULT_SPACE) -> dict[str, list[int]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"architecture file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"architecture file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not {"d", "k", "e"} <= set(data):
        raise ValueError(f"architecture file {path} must hold a JSON object with keys d, k, e")
    return space.validate({k: data[k] for k in ("d", "k", "e")})
