"""``hyperver demo``: the whole system on this machine, end to end, in a few minutes.

1. the device profile: the shipped TFLite LUT of this CPU, or (``--measure-lut``) a quick one
   measured here;
2. the device's descriptor: NAC + QuickSelect search under a latency budget;
3. the found subnet exported (BN recalibrated on LFW training images) to ONNX and TFLite;
4. the enrollment server started on 127.0.0.1 (a temporary registry and an ephemeral signing key);
5. one-shot enrollment of each sample person over HTTP (photo in, signed per-user TFLite model out);
6. unlock checks on the "device": every downloaded artifact, verified against the server's public
   key, scores every probe photo with the device runtime (numpy + TFLite, no torch);
7. 1:N identification of every probe both ways: the searched descriptor + nearest neighbour
   (faiss), and every enrolled user's verifier f (highest score, rejected below its threshold);
8. a short report (printed, and ``<cache.root>/demo/demo.json``) pointing at the full reports.

The report goes to the (git-ignored) work folder so that a first run leaves a clone clean; the
committed ``results/demo.json`` is refreshed on purpose: ``hyperver demo --out results/demo.json``.
Third-party log noise (TensorFlow, TFLite, absl, faiss) goes to ``<work_dir>/third_party.log``
unless ``--verbose``.

The sample photos (``assets/demo_photos``, picked by a fixed rule in
``scripts/pick_demo_photos.py``) are LFW *training* people: the demo shows the system working,
its accuracy figures are the LFW test-fold reports it points at.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from hyperver.errors import HyperVerError

if TYPE_CHECKING:
    from hyperver.config import Config

STEPS = 8
REPORTS = {"paradigm comparison": "results/paradigms.md", "per-user verifiers": "results/hypernet_lfw.json",
           "device search": "results/search.json", "SuperNet subnets": "results/supernet_subnets_lfw.json",
           "LUT fidelity": "results/lut_fidelity_mfn.json", "server load": "results/server_load.json"}


class DemoError(HyperVerError):
    """A demo step failed for a reason outside the user's input (e.g. the server did not start)."""


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--photos", default=None, help="sample photos: a folder with manifest.json (default: demo.photos_dir)")
    p.add_argument("--device", default=None, help="device profile name or JSON (default: demo.device)")
    p.add_argument("--budget-rel", type=float, default=None,
                   help="latency budget as a fraction of the largest subnet's (default: demo.budget_rel)")
    p.add_argument("--measure-lut", action="store_true",
                   help="measure a quick TFLite LUT on this machine instead of using the shipped profile")
    p.add_argument("--out", default=None,
                   help="report JSON (default: demo.out; null: demo.json in the work folder demo.work_dir, under "
                        "the cache). Refresh the committed report on purpose: --out results/demo.json")
    p.add_argument("--verbose", action="store_true",
                   help="show third-party log output (TensorFlow, TFLite, absl, faiss, warnings) here instead of "
                        "in third_party.log in the work folder")


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


def demo_paths(cfg: Config, out: str | None = None) -> tuple[Path, Path]:
    """(work folder, report path) of a demo run: ``demo.work_dir`` under ``cache.root`` when
    relative, the report ``--out`` or ``demo.out`` or, by default, ``<work folder>/demo.json``
    (git-ignored: a newcomer's first command must not dirty the tracked ``results/demo.json``)."""
    work = cfg.cache_dir("demo.work_dir", "demo")
    report = out or cfg.get_path("demo.out", None)
    return work, Path(report) if report else work / "demo.json"


def _shown(path: str | Path) -> str:
    """``path`` relative to the working folder when it is inside it (shorter to read)."""
    rel = os.path.relpath(Path(path).resolve())
    return str(path) if rel.startswith("..") else rel


def _quiet_stdout(verbose: bool):
    """The TFLite converter prints every model's whole signature to stdout."""
    return contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())


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
    from hyperver.quiet import native_output_to, quiet_third_party

    quiet_third_party(args.verbose)     # first: TensorFlow reads TF_CPP_MIN_LOG_LEVEL when it is imported

    from hyperver.config import load_config
    from hyperver.errors import ConfigError

    cfg = load_config(args.config, args.overrides)
    dc = cfg.get_path("demo")
    photos_dir = Path(args.photos or dc["photos_dir"])
    manifest = _load_manifest(photos_dir)
    budget_rel = float(dc["budget_rel"] if args.budget_rel is None else args.budget_rel)
    if budget_rel <= 0:
        raise ConfigError(f"--budget-rel must be a positive fraction of the largest subnet's latency, got {budget_rel}")
    work, out = demo_paths(cfg, args.out)
    work.mkdir(parents=True, exist_ok=True)
    log = None if args.verbose else work / "third_party.log"
    if log is not None:
        log.write_text("")      # this run's output only
        print(f"(third-party log output goes to {_shown(log)}; --verbose shows it here)", flush=True)
    with native_output_to(log):
        return _demo(args, cfg, manifest, photos_dir, budget_rel, work, out)


def _demo(args: argparse.Namespace, cfg: Config, manifest: dict[str, Any], photos_dir: Path, budget_rel: float,
          work: Path, out: Path) -> int:
    import base64

    from hyperver.align import Aligner
    from hyperver.config import load_config
    from hyperver.data.imageio import load_image
    from hyperver.descriptor import load_supernet_weights
    from hyperver.descriptor.data import load_bn_calibration
    from hyperver.descriptor.report import export_subnet
    from hyperver.device.artifact import open_artifact
    from hyperver.device.runtime import DeviceVerifier
    from hyperver.device.signing import Signer, TrustedKeys
    from hyperver.device_search import load_profile, lut_measure, run_search
    from hyperver.reporting import write_result
    from supernet.latency import tflite_latency

    from .process import ServerProcess

    progress = Progress()
    dc = cfg.get_path("demo")

    # 1. device profile ------------------------------------------------------------------------------
    if args.measure_lut:
        progress("measuring a quick TFLite LUT on this machine (1 thread)")
        quick = dict(cfg.get_path("search.lut"), **dc["quick_lut"])
        lcfg = load_config(args.config, list(args.overrides) + [f"search.lut={json.dumps(quick)}"])
        with _quiet_stdout(args.verbose):
            profile = lut_measure(lcfg, "tflite", 1, name="demo_this_cpu_tflite_t1", out_dir=str(work / "devices"))
        device = str(work / "devices" / f"{profile.name}.json")
    else:
        device = args.device or dc["device"]
        profile = load_profile(cfg, device)
        progress(f"device profile {profile.name}: {profile.runtime}, {profile.threads} thread(s), shipped LUT")

    # 2. the device's descriptor ---------------------------------------------------------------------
    # Most of this step is fitting the accuracy predictors; the evolution itself takes seconds.
    progress(f"searching the descriptor: fitting the accuracy predictors (LightGBM comparator, MLP), then NAC + "
             f"QuickSelect under {budget_rel:.0%} of the largest subnet's latency, {dc['generations']} generations")
    scfg = load_config(args.config, list(args.overrides) + [f"search.evolution.generations={int(dc['generations'])}"])
    net = load_supernet_weights(scfg.get_path("search.supernet_weights"))
    found = run_search(scfg, device, budget_rel=budget_rel, methods=("nac_quickselect",),
                       out_dir=str(work / "descriptor"), export=False, net=net)[0]
    print(f"      found {found['arch_id']}: {found['params'] / 1e6:.2f} M params, LUT {found['predicted_latency_ms']:.2f} ms "
          f"(budget {found['budget_ms']:.2f} ms), search {found['search_s']:.1f} s, "
          f"{found['comparator_calls']:,} comparator calls", flush=True)

    # 3. its export (what run_search(export=True) does, as a step of its own) --------------------------
    bn_images = int(scfg.get_path("supernet.bn_images"))
    progress(f"exporting the descriptor: BN recalibration on up to {min(bn_images, int(dc['bn_images']))} LFW training "
             f"images, ONNX, TFLite (TensorFlow's converter)")
    calib = load_bn_calibration(scfg, ["lfw_train"], int(dc["bn_images"]))
    with _quiet_stdout(args.verbose):
        exported = export_subnet(net, found["arch"], work / "descriptor", calib, bn_images=bn_images,
                                 name=f"{found['device']}_{found['budget_ms']:.2f}ms_{found['method']}")
    found["files"] = exported["files"]
    d_tflite = found["files"]["tflite"]
    d_ms = tflite_latency(d_tflite, 1, 5, 30)["median_ms"]
    print(f"      {_shown(d_tflite)}: measured {d_ms:.2f} ms (TFLite, 1 thread)", flush=True)

    # 4. the enrollment server -------------------------------------------------------------------------
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

            # 5. enrollment over HTTP ---------------------------------------------------------------
            progress(f"enrolling {len(manifest['enrolled'])} people over HTTP (one photo each)")
            models, enroll_ms = _enroll_over_http(http, manifest, photos_dir, work / "models")
    finally:
        server.stop()

    # 6. unlock checks on the device ---------------------------------------------------------------
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

    # 7. identification both ways ----------------------------------------------------------------
    progress("1:N identification of every probe: descriptor + nearest neighbour vs per-user verifiers")
    import faiss

    embed = _descriptor_runner(d_tflite)
    gallery = np.stack([embed(gallery_crops[u]) for u in users])
    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(gallery)
    print("      the descriptor's cosine threshold at FAR 1e-3 on LFW set 5 (aligned + embedded once, then cached)",
          flush=True)
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

    # 8. report ----------------------------------------------------------------------------------
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
    out = write_result(out, figures)
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
    print(f"  written: {_shown(out)}; full reports: " + ", ".join(f"{k} {v}" for k, v in REPORTS.items() if Path(v).exists()))
    return 0


DEMO_COMMAND = ("the end-to-end demo: LUT, descriptor search, enrollment server, unlock and identification",
                configure, run)
