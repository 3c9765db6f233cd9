"""Feature packs: the expensive part of the feature cache (detections + teacher embeddings) in a
small committed file, so a fresh machine rebuilds the crop cache in a minute instead of ~30.

A pack holds, per image content key (SHA-1): landmarks, box, face count, fallback flag, image
size and the teacher embedding (float16). Importing re-reads each image and re-warps its crop
from the stored landmarks (no detection, no descriptor), then fills the normal cache stores.
Plain npz, no pickles.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from .align.detectors import FaceDetection
from .config import Config
from .data import open_dataset
from .data.imageio import decode_image, read_bytes
from .features import ALIGN_FIELDS, FeatureCache

PACK_FIELDS = ("landmarks", "box", "n_faces", "fallback", "image_hw")


def pack_path(out_dir: str | Path, cache: FeatureCache) -> Path:
    return Path(out_dir) / f"{cache.dataset}__{cache.aligner.version}__{cache.embedder.cache_id}.npz"


def export_pack(cfg: Config, dataset: str, embedder: str, out_dir: str | Path) -> Path:
    cache = FeatureCache(cfg, dataset, embedder)
    records = open_dataset(cfg, dataset).records()
    keys = [k for k in dict.fromkeys(cache.keys_for(records)) if k in cache.align_store and k in cache.embed_store]
    fields = {f: cache.align_store.get_field(keys, f) for f in PACK_FIELDS}
    emb = cache.embed_store.get_field(keys, "embedding").astype(np.float16)
    path = pack_path(out_dir, cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, keys=np.array(keys, dtype="U40"), embedding=emb,
                        **{f: v.astype(np.float32) if v.dtype == np.float64 else v for f, v in fields.items()})
    return path


def import_pack(cfg: Config, dataset: str, embedder: str, pack_dir: str | Path, workers_chunk: int = 1024) -> dict:
    """Fill the caches of ``dataset`` from a pack made with the same aligner and embedder versions."""
    cache = FeatureCache(cfg, dataset, embedder)
    path = pack_path(pack_dir, cache)
    if not path.exists():
        raise FileNotFoundError(f"no feature pack for this aligner/embedder: {path}")
    with np.load(path, allow_pickle=False) as npz:   # read each array once: NpzFile decompresses on every access
        pack = {k: npz[k] for k in npz.files}
    index = {k: i for i, k in enumerate(pack["keys"].tolist())}
    records = open_dataset(cfg, dataset).records()
    keys = cache.keys_for(records)
    scheme = cache.aligner.detector.scheme
    todo = list({k: r for r, k in zip(records, keys)}.items())  # unique content keys
    pending_keys: list[str] = []
    pending: dict[str, list] = {f: [] for f in ALIGN_FIELDS}
    pending_emb: list[np.ndarray] = []
    emb_only_keys: list[str] = []
    emb_only: list[np.ndarray] = []
    imported = 0

    def flush() -> None:
        if pending_keys:
            cache.align_store.put_many(list(pending_keys), {f: np.stack(pending[f]) for f in ALIGN_FIELDS})
            cache.embed_store.put_many(list(pending_keys), {"embedding": np.stack(pending_emb).astype(np.float32)})
        if emb_only_keys:
            cache.embed_store.put_many(list(emb_only_keys), {"embedding": np.stack(emb_only).astype(np.float32)})
        for v in (pending_keys, pending_emb, emb_only_keys, emb_only, *pending.values()):
            v.clear()

    for key, record in tqdm(todo, desc=f"import {dataset}"):
        if key not in index or (key in cache.align_store and key in cache.embed_store):
            continue
        i = index[key]
        if key in cache.align_store:   # crop already cached (another embedder's pack): embedding only
            emb_only_keys.append(key)
            emb_only.append(pack["embedding"][i])
            imported += 1
            if len(emb_only_keys) >= workers_chunk:
                flush()
            continue
        image = decode_image(read_bytes(record.path), str(record.path))
        det = FaceDetection(pack["box"][i].astype(np.float64), 0.0, pack["landmarks"][i].astype(np.float64), scheme)
        face = cache.aligner._finish(image, det, int(pack["n_faces"][i]), bool(pack["fallback"][i]))
        pending_keys.append(key)
        for f, v in (("crop", face.crop), ("landmarks", pack["landmarks"][i]), ("box", pack["box"][i]),
                     ("n_faces", pack["n_faces"][i]), ("fallback", pack["fallback"][i]),
                     ("image_hw", pack["image_hw"][i])):
            pending[f].append(v)
        pending_emb.append(pack["embedding"][i])
        imported += 1
        if len(pending_keys) >= workers_chunk:
            flush()
    flush()
    return {"dataset": dataset, "imported": imported, "pack": str(path)}


def datasets_with_packs(pack_dir: str | Path) -> Sequence[str]:
    return sorted({p.name.split("__")[0] for p in Path(pack_dir).glob("*.npz")})
