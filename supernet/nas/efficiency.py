"""Efficiency prediction: per-block latency look-up tables (LUTs) and device profiles.

A subnet's latency is the sum of its blocks' latencies, each measured once as a small
standalone model on the target runtime. Keys follow OFA's style so LUTs measured elsewhere
(e.g. on a phone) can be imported as a plain ``key count mean std`` text file::

    expanded_conv-input:16x16x24-output:8x8x40-expand:4-kernel:5-stride:2-idskip:0-se:1-hs:0
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ..layers import make_divisible, mid_channels
from ..space import SearchSpace
from ..static import channel_plan


def _out(size: int, stride: int) -> int:
    return (size + stride - 1) // stride  # padding k//2: ceil(size / stride)


@dataclass(frozen=True)
class BlockSpec:
    """One measurable unit of a network and its LUT key."""
    kind: str            # "stem" | "mbconv" | "final_expand" | "feature_mix" | "logits"
    size_in: int
    cin: int
    size_out: int
    cout: int
    kernel: int = 1
    expand: float = 1.0
    stride: int = 1
    act: str = "relu"
    se: bool = False
    mid: int = 0         # MobileFaceNet blocks: expansion channels; stem/head: 1 with the extra pointwise conv
    width: int = 0       # MobileFaceNet head: channels of its 1x1 conv and GDConv

    @property
    def key(self) -> str:
        io = f"input:{self.size_in}x{self.size_in}x{self.cin}-output:{self.size_out}x{self.size_out}x{self.cout}"
        if self.kind == "mfn_block":
            idskip = int(self.stride == 1 and self.cin == self.cout)
            return f"mfn_bottleneck-{io}-mid:{self.mid}-kernel:{self.kernel}-stride:{self.stride}-idskip:{idskip}"
        if self.kind == "mfn_stem":
            return f"mfn_stem-{io}-pw:{self.mid}"
        if self.kind == "mfn_head":
            return f"mfn_head-input:{self.size_in}x{self.size_in}x{self.cin}-width:{self.width}-output:{self.cout}-pw:{self.mid}"
        if self.kind == "mbconv":
            idskip = int(self.stride == 1 and self.cin == self.cout)
            e = f"{self.expand:g}"
            return (f"expanded_conv-{io}-expand:{e}-kernel:{self.kernel}-stride:{self.stride}-idskip:{idskip}"
                    f"-se:{int(self.se)}-hs:{int(self.act == 'hswish')}")
        if self.kind == "logits":
            return f"Logits-input:1x1x{self.cin}-output:{self.cout}"
        name = {"stem": "Conv", "final_expand": "Conv_1", "feature_mix": "Conv_2"}[self.kind]
        return f"{name}-{io}"


class NetworkGeometry:
    """Shapes of every block for a space, width multiplier and input size."""

    def __init__(self, space: SearchSpace, width_mult: float = 1.0, input_size: int = 112, embed_dim: int = 128):
        self.space, self.width_mult, self.input_size, self.embed_dim = space, width_mult, input_size, embed_dim
        self.plan = channel_plan(space, width_mult)

    def blocks(self, arch: Mapping[str, Sequence[int]]) -> list[BlockSpec]:
        p, sp = self.plan, self.space
        size = _out(self.input_size, 2)
        out = [BlockSpec("stem", self.input_size, 3, size, p["stem"], 3, 1, 2, "hswish"),
               BlockSpec("mbconv", size, p["stem"], size, p["stem"], 3, 1, 1, "relu", False)]
        cin = p["stem"]
        for s, j, k, e in sp.active_blocks(arch):
            stage = sp.stages[s]
            stride = stage.stride if j == 0 else 1
            nxt = _out(size, stride)
            out.append(BlockSpec("mbconv", size, cin, nxt, p["stages"][s], k, e, stride, stage.act, stage.se))
            size, cin = nxt, p["stages"][s]
        out.append(BlockSpec("final_expand", size, cin, size, p["final_expand"], 1, 1, 1, "hswish"))
        out.append(BlockSpec("feature_mix", 1, p["final_expand"], 1, p["feature"], 1, 1, 1, "hswish"))
        out.append(BlockSpec("logits", 1, p["feature"], 1, self.embed_dim))
        return out

    def all_blocks(self) -> Iterator[BlockSpec]:
        """Every distinct block any subnet of the space can contain: the largest subnet has every
        block position; each elastic position (index >= 2) comes in every kernel x expand."""
        seen: dict[str, BlockSpec] = {}
        for i, b in enumerate(self.blocks(self.space.largest())):
            is_elastic = b.kind == "mbconv" and i >= 2   # index 1 is the fixed first block
            variants = ([replace(b, kernel=k, expand=e) for k in self.space.kernels for e in self.space.expands]
                        if is_elastic else [b])
            for v in variants:
                seen.setdefault(v.key, v)
        return iter(seen.values())

    def params(self, arch: Mapping[str, Sequence[int]]) -> int:
        """Parameter count, analytically (matches supernet.profile.count_params on the static net)."""
        total = 0
        for b in self.blocks(arch):
            total += block_params(b)
        return total


def block_params(b: BlockSpec) -> int:
    bn = lambda c: 2 * c  # noqa: E731  (weight + bias; running stats are buffers)
    cbp = lambda cin, cout, k=1, groups=1, prelu=True: cin // groups * cout * k * k + bn(cout) + (cout if prelu else 0)  # noqa: E731
    if b.kind == "mfn_block":   # ConvBN + PReLU: expand, depthwise; linear project
        return cbp(b.cin, b.mid) + cbp(b.mid, b.mid, b.kernel, b.mid) + cbp(b.mid, b.cout, prelu=False)
    if b.kind == "mfn_stem":
        pw = cbp(b.cout, b.cout, prelu=False) if b.mid else 0
        return cbp(3, b.cout, 3) + cbp(b.cout, b.cout, 3, b.cout) + pw
    if b.kind == "mfn_head":
        w, k = b.width, b.size_in
        pw = cbp(w, w, prelu=False) if b.mid else 0
        return cbp(b.cin, w) + cbp(w, w, k, w, prelu=False) + pw + cbp(w, b.cout, prelu=False)
    if b.kind == "stem":
        return 3 * b.cout * 9 + bn(b.cout)
    if b.kind in ("final_expand",):
        return b.cin * b.cout + bn(b.cout)
    if b.kind == "feature_mix":
        return b.cin * b.cout
    if b.kind == "logits":
        return b.cin * b.cout + b.cout
    mid = mid_channels(b.cin, b.expand) if b.expand != 1 else b.cin
    n = 0
    if b.expand != 1:
        n += b.cin * mid + bn(mid)
    n += mid * b.kernel * b.kernel + bn(mid)
    if b.se:
        red = make_divisible(mid // 4, 8)
        n += mid * red + red + red * mid + mid
    n += mid * b.cout + bn(b.cout)
    return n


@dataclass
class LUTEntry:
    count: int
    mean: float
    std: float


class LatencyLUT:
    """Per-block latency table (ms). ``predict(arch)`` sums the blocks; a missing key is an error.

    Blocks timed one by one miss what a whole network pays on top (operator dispatch between
    blocks, cache misses on the larger working set): on this CPU the sum under-predicted by a
    near-constant ~30%. An optional linear calibration ``scale * sum + per_mparam * params + offset``,
    fitted on a few whole subnets measured on the same device (``fit_calibration``), corrects it.
    The parameter term is there because blocks timed alone keep their weights in cache, while a
    whole network streams all of them once per call: on ONNX Runtime here the largest subnet
    cost 1.55x its block sum and the smallest 0.84x (the calibration timings in
    assets/devices/ofa_mbv3/this_cpu_onnxruntime_t1.json). ``fit_calibration`` keeps that term only
    when it lowers the leave-one-out error on the calibration subnets.
    """

    def __init__(self, geometry: NetworkGeometry, entries: Mapping[str, LUTEntry] | None = None,
                 calibration: Mapping[str, float] | None = None):
        self.geometry = geometry
        self.entries: dict[str, LUTEntry] = dict(entries or {})
        self.scale = float((calibration or {}).get("scale", 1.0))
        self.offset = float((calibration or {}).get("offset", 0.0))
        self.per_mparam = float((calibration or {}).get("per_mparam", 0.0))
        self._cache: dict[str, float] = {}

    def predict(self, arch: Mapping[str, Sequence[int]]) -> float:
        """Predicted whole-network latency (ms): the calibrated sum of the blocks (+ the memory term)."""
        memory = self.per_mparam * self.geometry.params(arch) / 1e6 if self.per_mparam else 0.0
        return self.scale * self.block_sum(arch) + memory + self.offset

    def block_sum(self, arch: Mapping[str, Sequence[int]]) -> float:
        from ..space import arch_id

        aid = arch_id(arch)
        if aid not in self._cache:
            total = 0.0
            for b in self.geometry.blocks(arch):
                entry = self.entries.get(b.key)
                if entry is None:
                    raise KeyError(f"latency LUT has no entry for {b.key}; measure it or import a complete LUT")
                total += entry.mean
            self._cache[aid] = total
        return self._cache[aid]

    def missing(self) -> list[str]:
        return [b.key for b in self.geometry.all_blocks() if b.key not in self.entries]

    def save_text(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"{k} {e.count} {e.mean:.6f} {e.std:.6f}" for k, e in sorted(self.entries.items())]
        path.write_text("\n".join(lines) + "\n")
        return path

    @staticmethod
    def read_text(path: str | Path) -> dict[str, LUTEntry]:
        """Parse ``key count mean std`` lines (mean/std in ms); '#' starts a comment."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"LUT file not found: {path}")
        entries = {}
        for n, line in enumerate(path.read_text().splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 4:
                raise ValueError(f"{path}:{n}: expected 'key count mean std', got {line!r}")
            try:
                entries[parts[0]] = LUTEntry(int(parts[1]), float(parts[2]), float(parts[3]))
            except ValueError:
                raise ValueError(f"{path}:{n}: count must be an integer and mean/std numbers: {line!r}") from None
        return entries


@dataclass
class DeviceProfile:
    """A device = a LUT + where it was measured (name, runtime, threads) + the network geometry."""
    name: str
    runtime: str
    threads: int
    lut_file: str
    input_size: int
    width_mult: float
    embed_dim: int = 128
    calibration: dict | None = None   # {"scale", "offset", "n_subnets", ...}: see LatencyLUT
    space: str = "ofa_mbv3"           # the search space (supernet.spaces) whose blocks the LUT holds

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.__dict__, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "DeviceProfile":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"device profile not found: {path}")
        data = json.loads(path.read_text())
        missing = {"name", "runtime", "threads", "lut_file", "input_size", "width_mult"} - set(data)
        if missing:
            raise ValueError(f"device profile {path} lacks {sorted(missing)}")
        lut = Path(data["lut_file"])
        if not lut.is_absolute():
            data["lut_file"] = str((path.parent / lut).resolve())
        return cls(**data)

    def lut(self, space: Any, calibrated: bool = True) -> LatencyLUT:
        """The LUT over ``space`` (an object of this profile's search space kind)."""
        from ..spaces import space_kind

        geom = space_kind(self.space).geometry(space, self.input_size, self.width_mult, self.embed_dim)
        return LatencyLUT(geom, LatencyLUT.read_text(self.lut_file), self.calibration if calibrated else None)


def _fit_relative(design: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.linalg.lstsq(design / y[:, None], np.ones_like(y), rcond=None)[0]


def fit_calibration(block_sums: Sequence[float], measured: Sequence[float],
                    mparams: Sequence[float] | None = None) -> dict[str, Any]:
    """``measured ~ scale * block_sum (+ per_mparam * Mparams) + offset`` over whole subnets of one
    device, minimising the *relative* error (weights 1/measured): plain least squares let the
    slowest subnet dominate and pushed the fastest subnets' predictions below zero.

    With ``mparams`` (millions of parameters per subnet) and 5+ subnets, the parameter term is
    kept only if it lowers the leave-one-out MAPE on these same subnets, so the choice never
    looks at the subnets a fidelity check will use."""
    x, y = np.asarray(block_sums, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError("calibration needs at least 2 subnets of different predicted latency")
    if (y <= 0).any():
        raise ValueError("measured latencies must be positive")
    # columns: block sum, millions of parameters, constant; a candidate model is a set of columns
    m = np.zeros_like(x) if mparams is None else np.asarray(mparams, dtype=np.float64)
    design = np.stack([x, m, np.ones_like(x)], 1)
    candidates = {"block_sum": [0, 2]}
    if mparams is not None and len(x) >= 5:
        candidates["block_sum+params"] = [0, 1, 2]

    def loo_ratios(cols: list[int]) -> np.ndarray:
        """measured / predicted for each subnet, predicted by a fit on the others."""
        out = []
        for i in range(len(y)):
            keep = np.arange(len(y)) != i
            coef = _fit_relative(design[keep][:, cols], y[keep])
            out.append(y[i] / max(float(design[i, cols] @ coef), 1e-9))
        return np.array(out)

    ratios = {name: loo_ratios(cols) for name, cols in candidates.items()} if len(x) >= 3 else {}
    loo = {name: float(np.mean(np.abs(1.0 - 1.0 / r))) for name, r in ratios.items()} or {"block_sum": float("nan")}
    # the simpler model wins ties (to 0.01 % MAPE)
    terms = min(loo, key=lambda k: (round(float(np.nan_to_num(loo[k], nan=0.0)), 4), k != "block_sum"))
    cols = candidates[terms]
    coef = dict(zip(cols, _fit_relative(design[:, cols], y)))
    return {"scale": float(coef[0]), "per_mparam": float(coef.get(1, 0.0)), "offset": float(coef[2]),
            "terms": terms, "loo_mape": {k: round(v, 4) for k, v in loo.items()},
            "loo_ratios": [round(float(v), 4) for v in ratios.get(terms, [])], "n_subnets": int(len(x))}
