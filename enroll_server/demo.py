"""``hyperver demo``: the whole system on this machine, end to end, in a few minutes.

1. the device profile: the shipped TFLite LUT of this CPU, or (``--measure-lut``) a quick one
   measured here;
2. the device's descriptor: NAC + QuickSelect search under a latency budget, the subnet exported
   (BN recalibrated on LFW training images) to TFLite;
3. the enrollment server started on 127.0.0.1 (a temporary registry and an ephemeral signing key);
4. one-shot enrollment of each sample person over HTTP (photo in, signed per-user TFLite model out);
5. unlock checks on the "device": every downloaded artifact, verified against the server's public
   key, scores every probe photo with the device runtime (numpy + TFLite, no torch);
6. 1:N identification of every probe both ways: the searched descriptor + nearest neighbour
   (faiss), and every enrolled user's verifier f (highest score, rejected below its threshold);
7. a short report (printed, and ``results/demo.json``) pointing at the full reports.

The sample photos (``assets/demo_photos``, picked by a fixed rule in
``scripts/pick_demo_photos.py``) are LFW *training* people: the demo shows the system working,
its accuracy figures are the LFW test-fold reports it points at.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hyperver.errors import HyperVerError

STEPS = 7
REPORTS = {"paradigm comparison": "results/paradigms.md", "per-user verifiers": "results/hypernet_lfw.json",
           "device search": "results/search.json", "SuperNet subnets": "results/supernet_subnets_lfw.json",
           "LUT fidelity": "results/lut_fidelity.json", "server load": "results/server_load.json"}


class DemoError(HyperVerError):
    """A demo step failed for a reason outside the user's input (e.g. the server did not start)."""


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--photos", default=None, help="sample photos: a folder with manifest.json (default: demo.photos_dir)")
    p.add_argument("--device", default=None, help="device profile name or JSON (default: demo.device)")
    p.add_argument("--budget-rel", type=float, default=None,
                   help="latency budget as a fraction of the largest subnet's (default: demo.budget_rel)")
    p.add_argument("--measure-lut", action="store_true",
                   help="measure a quick TFLite LUT on this machine instead of using the shipped profile")
    p.add_argument("--out", default=None, help="results JSON (default: demo.out)")


class Progress:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.step = 0

    def __call__(self, what: str) -> None:
        self.step += 1
        print(f"[{self.step}/{STEPS}] {what}  (t={time.perf_counter() - self.t0:.0f} s)", flush=True)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def _load_manifest(photos_dir: Path) -> dict[str, Any]:
    from hyperver.errors import ConfigError

    path = photos_dir / "manifest.json"
    if not path.is_file():
        raise ConfigError(f"no {path}: the demo needs sample photos (python scripts/pick_demo_photos.py)")
    manifest = json.loads(path.read_text())
    files = [v["enroll"] for v in manifest["enrolled"].values()] + \
        [p for v in manifest["enrolled"].values() for p in v["probes"]] + [manifest["stranger"]]
    missing = [f for f in files if not (photos_dir / f).is_file()]
    if missing:
        raise ConfigError(f"sample photos listed in {path} are missing: {missing}")
    return manifest


def _descriptor_runner(tflite_path: str, threads: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """The searched descriptor on the device: aligned 112x112 crop -> unit embedding (TFLite)."""
    from ai_edge_litert.interpreter import Interpreter

    from hyperver.device.preprocess import face_array

    interp = Interpreter(model_path=tflite_path, num_threads=threads)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    shape = tuple(inp["shape"])
    layout = "NHWC" if shape[-1] == 3 else "NCHW"
    size = shape[1] if layout == "NHWC" else shape[2]

    def embed(crop: np.ndarray) -> np.ndarray:
        interp.set_tensor(inp["index"], face_array(crop, size, layout))
        interp.invoke()
        v = interp.get_tensor(out["index"])[0].astype(np.float32)
        return v / max(float(np.linalg.norm(v)), 1e-12)

    return embed


def _embedding_threshold(cfg, descriptor_weights: str, far: float, limit_images: int | None) -> float | None:
    """Cosine threshold at ``far`` on LFW set-5 impostors for this descriptor (None without the data)."""
    from hyperver.config import Config, merge
    from hyperver.errors import HyperVerError
    from hyperver.features import FeatureCache
    from hyperver.paradigms import validation_cosine_threshold

    dcfg = Config(merge(cfg, {"embedders": {"demo_descriptor": {"kind": "subnet", "path": descriptor_weights}}}))
    try:
        return float(validation_cosine_threshold(dcfg, FeatureCache(dcfg, "lfw", "demo_descriptor"), far, limit_images))
    except (HyperVerError, FileNotFoundError) as exc:
        print(f"      (no LFW set 5 here, so no open-set threshold for the descriptor: {exc})")
        return None


def _enroll_over_http(http, manifest: dict[str, Any], photos_dir: Path,
                      models_dir: Path) -> tuple[dict[str, bytes], list[float]]:
    """POST /v1/enroll for each sample person (their first photo); the signed models, also saved."""
    import base64

    models, enroll_ms = {}, []
    models_dir.mkdir(parents=True, exist_ok=True)
    for name, v in manifest["enrolled"].items():
        user = name.lower()
        photo = photos_dir / v["enroll"]
        t = time.perf_counter()
        r = http.post("/v1/enroll", data={"user_id": user, "runtime": "tflite", "replace": "true"},
                      files=[("photos", (photo.name, photo.read_bytes(), "image/jpeg"))])
        if r.status_code != 200:
            raise DemoError(f"enrollment of {user} failed: HTTP {r.status_code} {r.text}")
        enroll_ms.append(1e3 * (time.perf_counter() - t))
        body = r.json()
        models[user] = base64.b64decode(body["model_b64"])
        (models_dir / f"{user}.hva").write_bytes(models[user])
        print(f"      {user:<24} {body['model_bytes']:,} bytes signed TFLite, {enroll_ms[-1]:.0f} ms")
    return models, enroll_ms


def run(args: argparse.Namespace) -> int:
    import base64

    from hyperver.align import Aligner
    from hyperver.config import load_config
    from hyperver.data.imageio import load_image
    from hyperver.errors import ConfigError
    from hyperver.device.artifact import open_artifact
    from hyperver.device.runtime import DeviceVerifier
    from hyperver.device.signing import Signer, TrustedKeys
    from hyperver.device_search import load_profile, lut_measure, run_search
    from hyperver.reporting import write_result
    from supernet.latency import tflite_latency

    from .process import ServerProcess

    progress = Progress()
    cfg = load_config(args.config, args.overrides)
    dc = cfg.get_path("demo")
    photos_dir = Path(args.photos or dc["photos_dir"])
    manifest = _load_manifest(photos_dir)
    work = Path(dc["work_dir"])
    work.mkdir(parents=True, exist_ok=True)
    budget_rel = float(dc["budget_rel"] if args.budget_rel is None else args.budget_rel)
    if budget_rel <= 0:
        raise ConfigError(f"--budget-rel must be a positive fraction of the largest subnet's latency, got {budget_rel}")

    # 1. device profile ------------------------------------------------------------------------------
    if args.measure_lut:
        progress("measuring a quick TFLite LUT on this machine (1 thread)")
        quick = dict(cfg.get_path("search.lut"), **dc["quick_lut"])
        lcfg = load_config(args.config, list(args.overrides) + [f"search.lut={json.dumps(quick)}"])
        with contextlib.redirect_stdout(io.StringIO()):   # the TFLite converter prints every model's signature
            profile = lut_measure(lcfg, "tflite", 1, name="demo_this_cpu_tflite_t1", out_dir=str(work / "devices"))
        device = str(work / "devices" / f"{profile.name}.json")
    else:
        device = args.device or dc["device"]
        profile = load_profile(cfg, device)
        progress(f"device profile {profile.name}: {profile.runtime}, {profile.threads} thread(s), shipped LUT")

    # 2. the device's descriptor ---------------------------------------------------------------------
    progress(f"searching the descriptor: NAC + QuickSelect under {budget_rel:.0%} of the largest subnet's latency, "
             f"{dc['generations']} generations")
    scfg = load_config(args.config, list(args.overrides) + [f"search.evolution.generations={int(dc['generations'])}"])
    with contextlib.redirect_stdout(io.StringIO()):   # the TFLite converter prints its whole signature
        found = run_search(scfg, device, budget_rel=budget_rel, methods=("nac_quickselect",),
                           out_dir=str(work / "descriptor"), calibration_sources=["lfw_train"],
                           calibration_limit=int(dc["bn_images"]))[0]
    d_tflite = found["files"]["tflite"]
    d_ms = tflite_latency(d_tflite, 1, 5, 30)["median_ms"]
    print(f"      found {found['arch_id']}: {found['params'] / 1e6:.2f} M params, LUT {found['predicted_latency_ms']:.2f} ms "
          f"(budget {found['budget_ms']:.2f} ms), measured {d_ms:.2f} ms, search {found['search_s']:.1f} s, "
          f"{found['comparator_calls']:,} comparator calls", flush=True)

    # 3. the enrollment server -------------------------------------------------------------------------
    progress("starting the enrollment server on 127.0.0.1")
    state = Path(tempfile.mkdtemp(prefix="state_", dir=work))
    api_key = secrets.token_urlsafe(16)
    overrides = [f"server.state_dir={state}", f"artifacts.signing_key={Signer.generate().private_b64()}",
                 *args.overrides]
    try:
        server = ServerProcess(overrides, {"HYPERVER_API_KEY": api_key}, work / "server.log", config=args.config)
    except RuntimeError as exc:
        raise DemoError(f"the enrollment server did not start ({work / 'server.log'}): {exc}") from None
    try:
        with server.client() as http:
            health = http.get("/healthz").json()
            print(f"      {server.url}: f {health['f_version']}, threshold {health['threshold']:.3f} (FAR 1e-3 on LFW set 5)")
            public_key = base64.b64decode(http.get("/v1/signing-key").json()["public_key"])

            # 4. enrollment over HTTP ---------------------------------------------------------------
            progress(f"enrolling {len(manifest['enrolled'])} people over HTTP (one photo each)")
            models, enroll_ms = _enroll_over_http(http, manifest, photos_dir, work / "models")
    finally:
        server.stop()

    # 5. unlock checks on the device ---------------------------------------------------------------
    progress("unlock checks on the device: signed artifacts x probe photos (TFLite, 1 thread)")
    trusted = TrustedKeys([public_key])
    accepted = cfg.get_path("device.accepted_f_versions")
    verifiers = {u: DeviceVerifier(open_artifact(m, trusted, accepted, f"{u}.hva"), 1) for u, m in models.items()}
    aligner = Aligner.from_config(cfg.get_path("align"), models_dir=str(cfg.models_dir))
    probes = [(name.lower(), p) for name, v in manifest["enrolled"].items() for p in v["probes"]]
    probes.append((None, manifest["stranger"]))
    crops = {p: aligner.align_photo(load_image(photos_dir / p), p).crop for _, p in probes}
    gallery_crops = {name.lower(): aligner.align_photo(load_image(photos_dir / v["enroll"]), v["enroll"]).crop
                     for name, v in manifest["enrolled"].items()}
    users = list(verifiers)
    scores = np.array([[verifiers[u].logit(crops[p]) for u in users] for _, p in probes])
    threshold = float(next(iter(verifiers.values())).artifact.threshold)
    genuine = np.array([[truth == u for u in users] for truth, _ in probes])
    accepted_m = scores >= threshold
    header = "      probe \\ user model      " + " ".join(f"{u[:12]:>13}" for u in users)
    print(header)
    for (truth, p), row, acc, gen in zip(probes, scores, accepted_m, genuine):
        cells = " ".join(f"{s:>9.2f} {'U' if a else '-'}{'*' if g else ' '}" for s, a, g in zip(row, acc, gen))
        print(f"      {Path(p).name[:26]:<26} {cells}")
    print(f"      (score = f's logit; U = unlock at threshold {threshold:.3f}; * = the probe's own model)")
    tar = float(accepted_m[genuine].mean())
    far = float(accepted_m[~genuine].mean())

    # 6. identification both ways ----------------------------------------------------------------
    progress("1:N identification of every probe: descriptor + nearest neighbour vs per-user verifiers")
    import faiss

    embed = _descriptor_runner(d_tflite)
    gallery = np.stack([embed(gallery_crops[u]) for u in users])
    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(gallery)
    cos_threshold = _embedding_threshold(cfg, found["files"]["safetensors"], float(cfg.get_path("eval.far_targets")[0]),
                                         dc["threshold_images"])
    ident = []
    for (truth, p), row in zip(probes, scores):
        sim, idx = index.search(embed(crops[p])[None], 1)
        e_user, e_sim = users[int(idx[0, 0])], float(sim[0, 0])
        e_pick = e_user if cos_threshold is None or e_sim >= cos_threshold else None
        best = int(np.argmax(row))
        f_pick = users[best] if row[best] >= threshold else None
        ident.append({"probe": p, "truth": truth, "embedding": e_pick, "embedding_nearest": e_user,
                      "embedding_cosine": e_sim, "per_user": f_pick, "per_user_best": users[best],
                      "per_user_score": float(row[best])})
    show = lambda x: x or "(rejected)"   # noqa: E731
    print(f"      {'probe':<26} {'truth':<22} {'embedding: nearest / open-set':<46} per-user: best / open-set")
    for r in ident:
        print(f"      {Path(r['probe']).name[:26]:<26} {r['truth'] or '(not enrolled)':<22} "
              f"{r['embedding_nearest'][:18]:<18} {r['embedding_cosine']:5.2f} {show(r['embedding'])[:20]:<20} "
              f"{r['per_user_best'][:18]:<18} {r['per_user_score']:5.2f} {show(r['per_user'])[:20]}")
    right = lambda k: float(np.mean([r[k] == r["truth"] for r in ident]))   # noqa: E731
    enrolled = [r for r in ident if r["truth"]]
    closed = lambda k: float(np.mean([r[k] == r["truth"] for r in enrolled]))   # noqa: E731

    # 7. report ----------------------------------------------------------------------------------
    progress("report")
    figures = {
        "device": profile.name, "budget_rel": budget_rel,
        "descriptor": {"arch_id": found["arch_id"], "params": found["params"], "lut_ms": found["predicted_latency_ms"],
                       "budget_ms": found["budget_ms"], "measured_tflite_ms": d_ms, "search_s": found["search_s"],
                       "comparator_calls": found["comparator_calls"], "files": found["files"]},
        "server": {"f_version": health["f_version"], "threshold": threshold,
                   "enroll_ms_median": float(np.median(enroll_ms)), "model_bytes": [len(m) for m in models.values()]},
        "unlock": {"users": users, "probes": [p for _, p in probes], "scores": scores.round(4).tolist(),
                   "genuine_accept_rate": tar, "impostor_accept_rate": far},
        "identification": {"rows": ident, "embedding_correct": right("embedding"), "per_user_correct": right("per_user"),
                           "embedding_rank1_closed_set": closed("embedding_nearest"),
                           "per_user_rank1_closed_set": closed("per_user_best"),
                           "embedding_cosine_threshold_far_1e3_set5": cos_threshold},
        "wall_s": progress.elapsed,
    }
    out = write_result(args.out or dc["out"], figures)
    print(f"\nHyperVer demo: {len(users)} users enrolled over HTTP, {len(probes)} probes, {progress.elapsed:.0f} s")
    print(f"  descriptor for {profile.name} at {budget_rel:.0%} budget: {found['params'] / 1e6:.2f} M params, "
          f"{d_ms:.2f} ms TFLite (budget {found['budget_ms']:.2f} ms)")
    print(f"  per-user model: {np.mean([len(m) for m in models.values()]) / 1e3:.1f} kB signed TFLite, "
          f"f only on the device ({next(iter(verifiers.values())).artifact.header['f_version']})")
    print(f"  unlock: genuine accepted {int(accepted_m[genuine].sum())}/{int(genuine.sum())}, "
          f"impostors accepted {int(accepted_m[~genuine].sum())}/{int((~genuine).sum())}")
    print(f"  identification, rank-1 of the {len(enrolled)} enrolled people's probes: embedding "
          f"{closed('embedding_nearest'):.0%}, per-user {closed('per_user_best'):.0%}; open-set at the FAR 1e-3 thresholds "
          f"(incl. rejecting the stranger): embedding {right('embedding'):.0%}, per-user {right('per_user'):.0%}")
    print(f"  written: {out}; full reports: " + ", ".join(f"{k} {v}" for k, v in REPORTS.items() if Path(v).exists()))
    return 0


DEMO_COMMAND = ("the end-to-end demo: LUT, descriptor search, enrollment server, unlock and identification",
                configure, run)
