"""The OFA MobileNetV3 search space, architecture configs and their fixed-length encoding.

An architecture is a small JSON object ``{"d": [5 depths], "k": [20 kernels], "e": [20 expands]}``
(4 block slots per stage; slots beyond a stage's depth are ignored and normalised to the
smallest choice so equal networks compare equal). Sampling, mutation, crossover and the
encoding come from ``supernet.spaces.staged.StagedSpace``, so every space and search strategy shares them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from .spaces.staged import StagedSpace


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
class SearchSpace(StagedSpace):
    """Every stage has the same depth choices; sampling, evolution and the encoding are
    ``StagedSpace``'s (shared with the other registered spaces)."""

    depths: tuple[int, ...] = (2, 3, 4)  # type: ignore[assignment]
    kernels: tuple[int, ...] = (3, 5, 7)
    expands: tuple[int, ...] = (3, 4, 6)
    stages: tuple[StageSpec, ...] = OFA_MBV3_STAGES
    stem_width: int = 16
    final_expand_width: int = 960
    feature_width: int = 1280

    @property
    def stage_depths(self) -> tuple[tuple[int, ...], ...]:  # type: ignore[override]
        return (tuple(self.depths),) * len(self.stages)

    @property
    def max_depth(self) -> int:
        return max(self.depths)


DEFAULT_SPACE = SearchSpace()


def arch_id(arch: Mapping[str, Sequence[int]]) -> str:
    """A compact readable id, e.g. 'd43234-k7735...-e6643...' (inactive slots included); a list holding
    multi-digit values is dot-separated ('e100.75.50...'), so ids stay unambiguous in every space."""
    def part(values: Sequence[int]) -> str:
        text = [str(int(v)) for v in values]
        return ("." if any(len(t) > 1 for t in text) else "").join(text)
    return "d" + part(arch["d"]) + "-k" + part(arch["k"]) + "-e" + part(arch["e"])


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
