"""SuperNet weights (any registered space) as safetensors, fp16 by default, with their construction config as metadata."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from torch import nn

from .spaces import build_supernet

FORMAT = "hyperver-supernet-v1"


def save_supernet(net: nn.Module, path: str | Path, dtype: torch.dtype = torch.float16,
                  extra: dict | None = None) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in net.state_dict().items()}
    meta = {"format": FORMAT, "config": json.dumps(net.supernet_config()), **{k: json.dumps(v) for k, v in (extra or {}).items()}}
    save_file(tensors, str(path), metadata=meta)
    return path


def _build(config: dict) -> nn.Module:
    return build_supernet(config)


def read_supernet_config(path: str | Path) -> dict:
    """The architecture config stored in a SuperNet safetensors file, without loading its weights."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SuperNet weights not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:
        raise ValueError(f"corrupt or unreadable SuperNet file {path}: {exc}") from exc
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} file (format={meta.get('format')!r})")
    return json.loads(meta["config"])


def load_supernet(path: str | Path) -> nn.Module:
    """From a safetensors export or a training checkpoint (``last.pt``, loaded with weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SuperNet weights not found: {path}")
    if path.suffix == ".pt":
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        net = _build(json.loads(ckpt["supernet"]))
        net.load_state_dict(ckpt["net"])
        return net.eval()
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise ValueError(f"corrupt or unreadable SuperNet file {path}: {exc}") from exc
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} file (format={meta.get('format')!r})")
    net = _build(json.loads(meta["config"]))
    net.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in state.items()})
    return net.eval()
