"""What the routes do, without HTTP: decode, align, embed, generate theta, sign, register, unlock.

Photos arrive as bytes and are decoded in memory (never written to disk). The face pipeline
(dlib detection + descriptor, the generator, the per-user verifiers) runs one photo at a time
behind a lock: dlib is single-threaded and the machine has few cores, so queueing is cheaper than
thrashing (and a TFLite interpreter must not be invoked from two threads at once).

What one photo may cost is bounded: every photo of a request passes the header checks (bytes,
pixels, side) before any is decoded; at most ``server.max_concurrent_photos`` photos are decoded and
held at once, server-wide (enroll_server.limits: requests' first photos before other requests' later
photos, each in arrival order; a photo waiting longer than ``server.queue_timeout_s`` gets 503 busy);
detection sees at most ``align.detect_max_pixels`` pixels (hyperver.align). A 25 MP photo costs
~1-2 s and ~200 MB (benchmarks/server_limits.py, results/server_limits.json).

``unlock`` is the device's check (hyperver.device.runtime) run on the user's stored signed
artifact: the signature must verify with the server's own public key and f's version must be
one of ``device.accepted_f_versions``, exactly as ``hyperver unlock`` would require.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np

from hyperver.config import Config
from hyperver.data.imageio import decode_image, probe_image
from hyperver.errors import ConfigError, HyperVerError, ModelFileError

from .errors import ApiError, from_hyperver
from .limits import Busy, FairSemaphore, return_large_blocks
from .registry import DuplicateUser, RegistryUnavailable, open_registry
from .settings import USER_ID, ServerSettings

log = logging.getLogger("enroll_server")


def check_user_id(user_id: str | None) -> str:
    """``user_id`` if it is a valid id (the whole string: no trailing newline), else 400 bad_user_id."""
    if not user_id or not USER_ID.fullmatch(user_id):
        raise ApiError(400, "bad_user_id", f"user id {user_id!r} is not allowed: use 1-128 characters from "
                                           "A-Z a-z 0-9 . _ @ - starting with a letter or digit")
    return user_id


class EnrollmentService:
    def __init__(self, cfg: Config, settings: ServerSettings):
        import torch

        from hyperver.device.builder import ArtifactBuilder
        from hyperver.hypernet.enroll import Enroller

        torch.set_num_threads(1)   # tiny per-request work: threads only add contention with the server's
        return_large_blocks()      # a photo's buffers go back to the system, not to a worker thread's heap
        self.cfg, self.settings = cfg, settings
        if not settings.generator_path.is_file():
            raise ConfigError(f"generator not found: {settings.generator_path} (train one with `hyperver "
                              "hypernet-train`, or set server.generator_path / HYPERVER_GENERATOR)")
        self.enroller = Enroller(settings.generator_path, cfg)
        self.spec = self.enroller.spec
        self.enroller.aligner.warm()   # detector buffers for the largest detection input, allocated at start
        self.threshold, self.threshold_far = self._resolve_threshold()
        self.enroller.threshold = self.threshold
        self.page_threshold = self._resolve_page_threshold()
        self.builder = ArtifactBuilder(cfg)
        self.builder.warm(self.spec, [(settings.runtime, settings.precision)])
        self.registry = open_registry(settings.registry, self.enroller.embedder.dim, self.enroller.embedder.cache_id,
                                      settings.registry_poll_s)
        try:
            self.registry.check_signing_key(self.builder.signer.key_id)
        except BaseException:
            self.registry.close()
            raise
        self.generator_sha = hashlib.sha256(settings.generator_path.read_bytes()).hexdigest()[:16]
        self._pipeline = threading.Lock()
        self._photos = FairSemaphore(settings.max_concurrent_photos)
        # unlock: the device's trust (this server's key only) and accepted f versions; loaded
        # verifiers by user id -> (model sha256, DeviceVerifier), least recently used first.
        from hyperver.device.signing import TrustedKeys

        self.trusted = TrustedKeys([self.builder.signer.public_raw])
        self.accepted_f_versions = list(cfg.get_path("device.accepted_f_versions") or [])
        if self.spec.version not in self.accepted_f_versions:
            log.warning("this server builds f %s but device.accepted_f_versions is %s: unlock will refuse "
                        "its artifacts", self.spec.version, self.accepted_f_versions)
        self.device_threads = int(cfg.get_path("device.threads"))
        self._verifiers: OrderedDict[str, tuple[str, Any]] = OrderedDict()
        check = self.registry.consistency()
        log.info("registry %r: %d users, index %s (%s)", self.registry, check["users"],
                 "loaded from its snapshot" if self.registry.index_loaded_from == "snapshot" else
                 "built from the database", check)

    def _resolve_threshold(self) -> tuple[float, float | None]:
        """(threshold, its FAR or None when unknown): server.threshold, else the generator's own for
        target_far, else its one stored threshold, else chosen on LFW set 5 at target_far (cached)."""
        from hyperver.hypernet.model_io import stored_threshold

        if self.settings.threshold is not None:
            return self.settings.threshold, None
        far = self.settings.target_far
        stored = stored_threshold(self.enroller.meta, far)
        if stored is not None:
            return stored, far
        if "threshold" in self.enroller.meta:
            stored_far = self.enroller.meta.get("threshold_far")
            return float(self.enroller.meta["threshold"]), None if stored_far is None else float(stored_far)
        sha = hashlib.sha256(self.settings.generator_path.read_bytes()).hexdigest()[:16]
        cache = self.settings.state_dir / f"threshold_{sha}_far{far:g}.json"
        if cache.is_file():
            return float(json.loads(cache.read_text())["threshold"]), far
        from hyperver.hypernet.evaluate import validation_threshold

        log.info("choosing the decision threshold on LFW set 5 at FAR %g (once)", far)
        t = float(validation_threshold(self.cfg, self.enroller.gen, self.enroller.meta["backbone"], far))
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"threshold": t, "far": far}))
        return t, far

    def _resolve_page_threshold(self) -> dict[str, Any] | None:
        """The threshold the browser page decides with (server.unlock_far): the generator file's stored one
        for that FAR, else none, with a note saying so (the page then shows the device's decision)."""
        from hyperver.hypernet.model_io import stored_threshold

        far = self.settings.unlock_far
        if far is None:
            return None
        if self.threshold_far is not None and abs(far - self.threshold_far) <= 1e-12:
            return {"far": far, "threshold": self.threshold, "source": "the signed models' own threshold"}
        stored = stored_threshold(self.enroller.meta, far)
        if stored is not None:
            return {"far": far, "threshold": stored, "source": f"stored in {self.settings.generator_path.name}"}
        own = "" if self.threshold_far is None else f" (FAR {self.threshold_far:g})"
        note = (f"no threshold for FAR {far:g} is stored in the generator file {self.settings.generator_path}, so "
                f"the page decides at the signed models' own threshold {self.threshold:.4f}{own}, as a device "
                f"does; `hyperver hypernet-threshold --far {far:g} --generator {self.settings.generator_path}` "
                "stores one (chosen on LFW set 5)")
        log.warning("server.unlock_far: %s", note)
        return {"far": far, "threshold": None, "source": None, "note": note}

    # -- pipeline ----------------------------------------------------------------------------------
    def _probe(self, data: bytes, context: str) -> None:
        try:
            probe_image(data, context, **self.settings.image_limits)
        except HyperVerError as exc:
            raise from_hyperver(exc, context) from None

    def _decode(self, data: bytes, context: str) -> np.ndarray:
        # In a photo slot but outside the pipeline lock: one photo decodes while another is detected.
        try:
            return decode_image(data, context, **self.settings.image_limits)
        except HyperVerError as exc:
            raise from_hyperver(exc, context) from None

    @contextmanager
    def _photo_slot(self, later: bool = False) -> Iterator[None]:
        """One of server.max_concurrent_photos: decode a photo and run it through the pipeline in it
        (``later``: a request's second or later photo, queued behind other requests' first photos)."""
        try:
            with self._photos.slot(self.settings.queue_timeout_s, later):
                yield
        except Busy:
            raise ApiError(503, "busy", f"the server is busy: no photo slot became free within "
                                        f"{self.settings.queue_timeout_s:g} s; try again later") from None

    def _photo_descriptor(self, data: bytes, context: str, later: bool = False) -> np.ndarray:
        """Decode, align and embed one photo; its pixels are released before the next photo's slot."""
        with self._photo_slot(later):
            image = self._decode(data, context)
            with self._pipeline:
                return self._descriptor(image, context)

    def _descriptor(self, image: np.ndarray, context: str) -> np.ndarray:
        try:
            return self.enroller.embed([image], flip_average=self.settings.flip_average)
        except HyperVerError as exc:
            raise from_hyperver(exc, context) from None

    def enroll(self, user_id: str, photos: Sequence[tuple[str, bytes]], runtime: str | None = None,
               precision: str | None = None, replace: bool = False) -> dict[str, Any]:
        from hyperver.embed import l2_normalize

        check_user_id(user_id)
        runtime, precision = runtime or self.settings.runtime, precision or self.settings.precision
        if not replace and self.registry.get(user_id) is not None:   # fail fast; the insert re-checks
            raise self._duplicate(user_id)
        t0 = time.perf_counter()
        contexts = [f"photo {i + 1} ({name})" for i, (name, _) in enumerate(photos)]
        for (_, data), c in zip(photos, contexts):      # a bad last photo fails before the first is decoded
            self._probe(data, c)
        embs = [self._photo_descriptor(data, c, later=i > 0) for i, ((_, data), c) in enumerate(zip(photos, contexts))]
        emb = l2_normalize(np.mean(embs, axis=0)).astype(np.float32)
        with self._pipeline:
            user = self.enroller.model_for(emb)
        try:
            model = self.builder.build(user, runtime, precision,
                                       {"user_id": user_id, "generator": self.generator_sha,
                                        "descriptor_model": self.enroller.embedder.cache_id})
        except ConfigError as exc:   # unknown runtime / precision
            raise ApiError(422, "bad_parameter", str(exc)) from None
        sha = hashlib.sha256(model).hexdigest()
        info = {"f_version": self.spec.version, "threshold": self.threshold, "runtime": runtime,
                "precision": precision, "photos": len(photos), "model_bytes": len(model),
                "descriptor_model": self.enroller.embedder.cache_id, "signing_key_id": self.builder.signer.key_id}
        try:
            record, replaced = self.registry.add(user_id, emb, model, sha, info, replace)
        except DuplicateUser:
            raise self._duplicate(user_id) from None
        self._forget(user_id)
        # generation: the registry's once this enrollment committed; a replica whose /healthz shows an
        # index_generation at least this high has it in its index.
        return {**record.public(), "replaced": replaced, "generation": record.generation,
                "model_url": f"/v1/users/{user_id}/model",
                "model_b64": base64.b64encode(model).decode(), "descriptor": emb.tolist(),
                "ms": round(1e3 * (time.perf_counter() - t0), 1)}

    @staticmethod
    def _unknown(user_id: str) -> ApiError:
        return ApiError(404, "unknown_user", f"no enrolled user {user_id!r}")

    @staticmethod
    def _duplicate(user_id: str) -> ApiError:
        return ApiError(409, "already_enrolled", f"user {user_id!r} is already enrolled; "
                                                 "send replace=true to replace the enrollment")

    def identify(self, data: bytes, top_k: int) -> dict[str, Any]:
        self._probe(data, "photo")
        emb = self._photo_descriptor(data, "photo")
        return {"matches": [{"user_id": u, "similarity": s} for u, s in self.registry.search(emb, top_k)],
                "descriptor_model": self.enroller.embedder.cache_id}

    def user(self, user_id: str) -> dict[str, Any]:
        record = self.registry.get(check_user_id(user_id))
        if record is None:
            raise self._unknown(user_id)
        return {**record.public(), "descriptor": record.descriptor.tolist()}

    def model(self, user_id: str) -> tuple[bytes, dict[str, Any]]:
        found = self.registry.model(check_user_id(user_id))
        if found is None:
            raise self._unknown(user_id)
        return found

    def delete(self, user_id: str) -> dict[str, Any]:
        if not self.registry.delete(check_user_id(user_id)):
            raise self._unknown(user_id)
        self._forget(user_id)
        return {"deleted": user_id}

    # -- unlock (the on-device check, server side) -------------------------------------------------
    MAX_CACHED_VERIFIERS = 256

    def _forget(self, user_id: str) -> None:
        with self._pipeline:
            self._verifiers.pop(user_id, None)

    def _verifier(self, user_id: str) -> tuple[Any, bool]:
        """The user's verified artifact, loaded once per (user id, model sha256); call with the pipeline lock."""
        from hyperver.device.artifact import open_artifact
        from hyperver.device.runtime import DeviceVerifier

        record = self.registry.get(user_id)
        if record is None:
            raise self._unknown(user_id)
        cached = self._verifiers.get(user_id)
        if cached is not None and cached[0] == record.model_sha256:
            self._verifiers.move_to_end(user_id)
            return cached[1], True
        found = self.registry.model(user_id)
        if found is None:                       # deleted since the lookup above
            raise self._unknown(user_id)
        model, info = found
        try:
            verifier = DeviceVerifier(open_artifact(model, self.trusted, self.accepted_f_versions,
                                                    f"the stored model of {user_id!r}"), self.device_threads)
        except ModelFileError as exc:           # e.g. enrolled for another f or under another signing key
            raise ApiError(409, "model_rejected", f"{exc}; re-enroll this user (replace=true)") from None
        self._verifiers[user_id] = (info["model_sha256"], verifier)
        while len(self._verifiers) > self.MAX_CACHED_VERIFIERS:
            self._verifiers.popitem(last=False)
        return verifier, False

    def unlock(self, user_id: str, data: bytes) -> dict[str, Any]:
        """What ``hyperver unlock`` does on a device, on the stored artifact and a photo held in memory."""
        check_user_id(user_id)
        t0 = time.perf_counter()
        if self.registry.get(user_id) is None:   # fail fast, before decoding; _verifier re-checks
            raise self._unknown(user_id)
        self._probe(data, "photo")
        with self._photo_slot():
            image = self._decode(data, "photo")
            with self._pipeline:
                verifier, cached = self._verifier(user_id)
                t1 = time.perf_counter()
                try:
                    face = self.enroller.aligner.align_photo(image, "photo")
                except HyperVerError as exc:
                    raise from_hyperver(exc) from None
                t2 = time.perf_counter()
                res = verifier.check(face.crop)
                t3 = time.perf_counter()
            del image
        h = verifier.artifact.header
        page = self.page_threshold
        if page is not None and page["threshold"] is not None:
            ok = bool(res["score"] >= page["threshold"])
            page = {"far": page["far"], "threshold": page["threshold"], "unlock": ok,
                    "decision": "unlock" if ok else "deny"}
        return {"user_id": user_id, "decision": "unlock" if res["unlock"] else "deny", **res,
                "threshold_far": self.threshold_far if res["threshold"] == self.threshold else None,
                "unlock_far": page,
                "runtime": h["runtime"], "precision": h["precision"], "f_version": h["f_version"],
                "verifier_cached": cached,
                "ms": {"load": round(1e3 * (t1 - t0), 2), "align": round(1e3 * (t2 - t1), 2),
                       "score": round(1e3 * (t3 - t2), 2), "total": round(1e3 * (t3 - t0), 2)}}

    def health(self) -> dict[str, Any]:
        """status 'ok', or 'degraded' while the registry's database is unreachable (requests that need it get
        503; the process itself is up, so a load balancer keeps it and clients get that clear answer)."""
        try:
            registry, status = self.registry.consistency(), "ok"
        except RegistryUnavailable as exc:
            registry, status = {**self.registry.local_state(), "consistent": False, "database_error": str(exc)}, \
                "degraded"
        return {"status": status, "f_version": self.spec.version, "threshold": self.threshold,
                "threshold_far": self.threshold_far, "unlock_far": self.page_threshold,
                "signing_key_id": self.builder.signer.key_id,
                "index_loaded_from": self.registry.index_loaded_from, **registry}

    def close(self) -> None:
        self.registry.close()
