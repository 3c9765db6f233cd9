"""Aligned crops and embeddings for whole datasets, computed once and cached on disk.

Images are keyed by the SHA-1 of their bytes, so a moved or renamed data root reuses the
cache, and an edited file is recomputed. The aligned-crop cache lives under the aligner's
version; the embedding cache under embedder id + aligner version. Work is spread over
processes (dlib is single-threaded) and flushed in shards, so an interrupted run resumes.
"""
from __future__ import annotations

import hashlib
import multiprocessing as mp
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from .align import AlignedFace, Aligner
from .config import Config
from .data.imageio import decode_image, read_bytes
from .data.records import ImageRecord
from .data.registry import dataset_entry
from .embed import EMBEDDERS, Embedder, FaceInput
from .errors import ConfigError, ImageError
from .store import ShardedStore

ALIGN_FIELDS = ("crop", "landmarks", "box", "n_faces", "fallback", "image_hw")


def build_embedder(cfg: Config, name: str) -> Embedder:
    """An embedder by name: an entry of the config's ``embedders`` section, or a built-in one.

    Factories that read third-party model files get the config's models folder; a composite
    (fusion) gets its members, each built by name the same way.
    """
    entries = cfg.get_path("embedders", {}) or {}
    if name in entries:
        spec = dict(entries[name])
        kind = spec.pop("kind", None)
        if kind is None:
            raise ConfigError(f"embedders.{name} needs a 'kind' (one of {EMBEDDERS.names()})")
        spec.setdefault("name", name)
    else:
        kind, spec = name, {}
    factory = EMBEDDERS.get(kind)
    if getattr(factory, "uses_model_files", False):
        spec.setdefault("models_dir", str(cfg.models_dir))
    if getattr(factory, "composite", False):
        names = list(spec.get("members") or [])
        if name in names:
            raise ConfigError(f"embedder {name!r} lists itself as a member")
        spec["member_names"] = names
        spec["members"] = [build_embedder(cfg, m) for m in names]
    return factory(**spec)


def build_aligner(cfg: Config, dataset: str | None = None) -> Aligner:
    overrides = dataset_entry(cfg, dataset).get("align", {}) if dataset else {}
    return Aligner.from_config(cfg.get_path("align"), overrides, models_dir=str(cfg.models_dir))


def file_key(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _aligned_from_fields(f: Mapping[str, np.ndarray], scheme: str) -> AlignedFace:
    return AlignedFace(crop=np.asarray(f["crop"]), landmarks=np.asarray(f["landmarks"], dtype=np.float64), scheme=scheme,
                       box=np.asarray(f["box"], dtype=np.float64), n_faces=int(f["n_faces"]), fallback=bool(f["fallback"]),
                       image_size=tuple(int(v) for v in f["image_hw"]))


def _fields_from_aligned(a: AlignedFace) -> dict[str, np.ndarray]:
    return {"crop": a.crop, "landmarks": a.landmarks.astype(np.float32), "box": np.asarray(a.box, np.float32),
            "n_faces": np.int16(a.n_faces), "fallback": np.bool_(a.fallback), "image_hw": np.asarray(a.image_size, np.int32)}


# -- worker side ------------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(cfg: dict, dataset: str, embedder_name: str | None) -> None:
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    config = Config(cfg)
    _WORKER["aligner"] = build_aligner(config, dataset)
    _WORKER["embedder"] = build_embedder(config, embedder_name) if embedder_name else None
    _WORKER["image_limits"] = {k: config.get_path(f"image.{k}") for k in ("max_bytes", "max_pixels", "min_side")}


def _work(task: list[tuple[str, str, dict | None]]) -> dict[str, Any]:
    aligner: Aligner = _WORKER["aligner"]
    embedder: Embedder | None = _WORKER["embedder"]
    limits = _WORKER["image_limits"]
    keys, aligned, inputs, errors, new_align = [], [], [], [], []
    for path, key, cached in task:
        try:
            image = None
            if cached is None or (embedder is not None and embedder.needs_source_image):
                image = decode_image(read_bytes(path, limits["max_bytes"]), path, **limits)
            face = _aligned_from_fields(cached, aligner.detector.scheme) if cached else aligner.align_dataset_image(image)
        except ImageError as exc:
            errors.append((path, str(exc)))
            continue
        keys.append(key)
        aligned.append(face)
        new_align.append(cached is None)
        inputs.append(FaceInput(face, image))
    emb = embedder.embed(inputs) if (embedder is not None and inputs) else None
    return {"keys": keys, "align": [(_fields_from_aligned(a) if new else None) for a, new in zip(aligned, new_align)],
            "embeddings": emb, "errors": errors}


# -- main side --------------------------------------------------------------------------------
@dataclass
class FeatureReport:
    dataset: str
    images: int
    aligned_new: int = 0
    embedded_new: int = 0
    fallback_crops: int = 0
    multi_face_images: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "images": self.images, "aligned_new": self.aligned_new,
                "embedded_new": self.embedded_new, "fallback_crops": self.fallback_crops,
                "multi_face_images": self.multi_face_images, "unreadable": len(self.unreadable),
                "seconds": round(self.seconds, 1)}


class FeatureCache:
    """Aligned crops + embeddings of one dataset's images for one (aligner, embedder)."""

    def __init__(self, cfg: Config, dataset: str, embedder: str | None = "dlib"):
        self.cfg = cfg
        self.dataset = dataset
        self.embedder_name = embedder
        self.aligner = build_aligner(cfg, dataset)
        self._embedder: Embedder | None = None
        root = cfg.cache_root
        self.align_store = ShardedStore(root / "aligned" / self.aligner.version,
                                        meta={"aligner": self.aligner.version, "scheme": self.aligner.detector.scheme})
        self.embed_store: ShardedStore | None = None
        if embedder:
            self._embedder = build_embedder(cfg, embedder)
            eid = f"{self._embedder.cache_id}__{self.aligner.version}"
            self.embed_store = ShardedStore(root / "embeddings" / eid, meta={"embedder": self._embedder.cache_id,
                                                                               "aligner": self.aligner.version})
        self._keys: dict[str, str] = {}

    @property
    def embedder(self) -> Embedder | None:
        return self._embedder

    def keys_for(self, records: Sequence[ImageRecord], progress: bool = True) -> list[str]:
        """Content keys of the records' files (SHA-1 of the bytes), memoised per path."""
        limit = self.cfg.get_path("image.max_bytes")
        out = []
        for r in tqdm(records, desc=f"hash {self.dataset}", disable=not progress or len(records) < 2000, leave=False):
            p = str(r.path)
            if p not in self._keys:
                try:
                    self._keys[p] = file_key(read_bytes(p, limit))
                except ImageError:
                    self._keys[p] = f"unreadable:{p}"
            out.append(self._keys[p])
        return out

    def build(self, records: Sequence[ImageRecord], workers: int | None = None, chunk: int = 32,
              flush_every: int = 1024, progress: bool = True) -> FeatureReport:
        """Align (and embed) every record not yet cached. Returns counts, including fallback crops."""
        if getattr(self._embedder, "composite", False):
            return self._build_composite(records, workers=workers, chunk=chunk, flush_every=flush_every,
                                         progress=progress)
        t0 = time.time()
        report = FeatureReport(self.dataset, len(records))
        keys = self.keys_for(records, progress)
        todo: list[tuple[str, str, dict | None]] = []
        seen: set[str] = set()
        for r, k in zip(records, keys):
            if k in seen:
                continue
            seen.add(k)
            need_align = k not in self.align_store
            need_embed = self.embed_store is not None and k not in self.embed_store
            if need_align or need_embed:
                todo.append((str(r.path), k, None if need_align else self.align_store.get(k)))
        workers = int(workers or self.cfg.get_path("embed.workers"))
        tasks = [todo[i:i + chunk] for i in range(0, len(todo), chunk)]
        pending_a: dict[str, list] = {"keys": [], **{f: [] for f in ALIGN_FIELDS}}
        pending_e: dict[str, list] = {"keys": [], "embedding": []}

        def flush() -> None:
            if pending_a["keys"]:
                self.align_store.put_many(pending_a["keys"], {f: np.stack(pending_a[f]) for f in ALIGN_FIELDS})
            if pending_e["keys"] and self.embed_store is not None:
                self.embed_store.put_many(pending_e["keys"], {"embedding": np.stack(pending_e["embedding"])})
            for d in (pending_a, pending_e):
                for v in d.values():
                    v.clear()

        def absorb(res: dict[str, Any]) -> None:
            report.unreadable.extend(res["errors"])
            for i, k in enumerate(res["keys"]):
                if res["align"][i] is not None:
                    pending_a["keys"].append(k)
                    for f in ALIGN_FIELDS:
                        pending_a[f].append(res["align"][i][f])
                    report.aligned_new += 1
                if res["embeddings"] is not None and k not in self.embed_store:
                    pending_e["keys"].append(k)
                    pending_e["embedding"].append(res["embeddings"][i])
                    report.embedded_new += 1
            if len(pending_a["keys"]) + len(pending_e["keys"]) >= flush_every:
                flush()

        init_args = (dict(self.cfg), self.dataset, self.embedder_name)
        bar = tqdm(total=len(todo), desc=f"align+embed {self.dataset}", unit="img", disable=not progress or not todo)
        try:
            if workers <= 1 or len(tasks) <= 1:
                _init_worker(*init_args)
                for t in tasks:
                    absorb(_work(t))
                    bar.update(len(t))
            else:
                ctx = mp.get_context("spawn")  # dlib objects and fork do not mix well
                with ctx.Pool(workers, initializer=_init_worker, initargs=init_args) as pool:
                    for t, res in zip(tasks, pool.imap(_work, tasks)):
                        absorb(res)
                        bar.update(len(t))
        finally:
            flush()  # keep what was done, also on Ctrl-C
            bar.close()
        stats = self.alignment_stats(records)
        report.fallback_crops = stats["fallback_crops"]
        report.multi_face_images = stats["multi_face_images"]
        report.seconds = time.time() - t0
        return report

    def _build_composite(self, records: Sequence[ImageRecord], **build_kw) -> FeatureReport:
        """A fusion is computed from its members' caches (each built, or imported from a pack, once)."""
        t0 = time.time()
        members = [FeatureCache(self.cfg, self.dataset, n) for n in self._embedder.member_names]
        for m in members:
            m.build(records, **build_kw)
        self.align_store.reload()   # the members wrote crops through their own handles of this store
        keys = [k for k in dict.fromkeys(self.keys_for(records, progress=False))
                if k not in self.embed_store and all(k in m.embed_store for m in members)]
        report = FeatureReport(self.dataset, len(records))
        for i in range(0, len(keys), 4096):
            part = keys[i:i + 4096]
            fused = self._embedder.combine([m.embed_store.get_field(part, "embedding") for m in members])
            self.embed_store.put_many(part, {"embedding": fused.astype(np.float32)})
            report.embedded_new += len(part)
        stats = self.alignment_stats(records)
        report.fallback_crops, report.multi_face_images = stats["fallback_crops"], stats["multi_face_images"]
        report.seconds = time.time() - t0
        return report

    def alignment_stats(self, records: Sequence[ImageRecord]) -> dict[str, int]:
        keys = [k for k in dict.fromkeys(self.keys_for(records, progress=False)) if k in self.align_store]
        fallback = self.align_store.get_field(keys, "fallback") if keys else np.zeros(0, bool)
        n_faces = self.align_store.get_field(keys, "n_faces") if keys else np.zeros(0, int)
        return {"aligned": len(keys), "fallback_crops": int(np.sum(fallback)), "multi_face_images": int(np.sum(n_faces > 1))}

    def embeddings(self, records: Sequence[ImageRecord], build: bool = True, **build_kw) -> np.ndarray:
        """(N, dim) embeddings in record order, computing what is missing first."""
        if self.embed_store is None:
            raise ValueError("this FeatureCache has no embedder")
        keys = self.keys_for(records, progress=False)
        if build and self.embed_store.missing(keys):
            self.build(records, **build_kw)
        missing = self.embed_store.missing(keys)
        if missing:
            bad = [str(r.path) for r, k in zip(records, keys) if k in set(missing)][:3]
            raise ImageError(f"{len(missing)} image(s) could not be embedded, e.g. {bad}")
        return self.embed_store.get_field(keys, "embedding").astype(np.float32)

    def crops(self, records: Sequence[ImageRecord]) -> np.ndarray:
        return self.align_store.get_field(self.keys_for(records, progress=False), "crop")
