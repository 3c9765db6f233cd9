"""Which pretrained face model does what: the teachers report (``hyperver teachers``).

One command measures every candidate embedder and detector and picks the defaults:
1. input checks on LFW set 5 (crop channel order per model), never on the test folds;
2. per embedder: LFW View-2 verification on the test folds 6-10 (and on folds 1-10, labelled
   with what the model was trained on), set-5 and CelebA selection figures, ms per face;
3. per detector: share of LFW (all 13,233) and CelebA photos with no face, ms per 640x480 image;
4. defaults chosen by rules written here as data (set 5 + CelebA, both outside the test folds).
"""
from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from .config import Config
from .data import LFWSplit, open_dataset
from .errors import ConfigError
from .eval.metrics import best_accuracy_threshold, equal_error_rate, roc_auc, tar_at_far

# Settings each model's input could plausibly want; the report keeps the set-5 winner's figures.
INPUT_VARIANTS: dict[str, dict[str, list[dict[str, Any]]]] = {
    "mobilefacenet": {"channel_order": [{"channel_order": "rgb"}, {"channel_order": "bgr"}]},
    "sface": {"channel_order": [{"channel_order": "bgr"}, {"channel_order": "rgb"}]},
}

# Candidates of the report (names of the config's `embedders` section or built-ins).
CANDIDATES = ("dlib", "mobilefacenet", "sface", "fusion_mobilefacenet_sface", "fusion_sface_dlib",
              "fusion_mobilefacenet_dlib", "fusion_all")
# Detector configs for user photos (hyperver.align.detectors.build_detector specs). YuNet's score
# threshold trades missed faces for spurious ones: a strict pass first, then a looser one.
_YUNET_08 = {"kind": "yunet", "score_threshold": 0.8}
_YUNET_07 = {"kind": "yunet", "score_threshold": 0.7}
DETECTOR_CANDIDATES: dict[str, Any] = {
    "dlib_hog": "dlib_hog",
    "yunet": "yunet",
    "yunet+dlib_hog": ["yunet", "dlib_hog"],
    "yunet@0.8+dlib_hog": [_YUNET_08, "dlib_hog"],
    "yunet+yunet@0.8+dlib_hog": ["yunet", _YUNET_08, "dlib_hog"],
    "yunet+yunet@0.7+dlib_hog": ["yunet", _YUNET_07, "dlib_hog"],
    "dlib_hog+yunet+yunet@0.7": ["dlib_hog", "yunet", _YUNET_07],
}
# Detector rule: at most this share of CelebA photos without a face; among those, chains that try
# `first` first (the detector the shared datasets were aligned with, so every model trained here
# sees user photos cropped as its training faces were); then the fewest refused photos (no face or
# several faces); within `tie` of that, the fastest.
DETECTOR_SELECTION: dict[str, Any] = {"max_celeba_no_face": 0.01, "first": "dlib_hog", "tie": 0.001}


def first_detector(spec: Any) -> str:
    """Name of the detector a spec (name, mapping or chain) runs first."""
    head = spec[0] if isinstance(spec, (list, tuple)) else spec
    return head if isinstance(head, str) else str(head.get("kind"))

# Selection: best set-5 accuracy; within `tie_pairs` pairs of the best, the higher CelebA TAR@FAR.
SELECTION = {"tie_pairs": 2, "celeba_far": 1e-3}


def pair_set_figures(scores: np.ndarray, same: np.ndarray, far: float = 1e-3) -> dict[str, float]:
    """Threshold-free figures + in-sample best accuracy (for selection on a validation set only)."""
    _, acc = best_accuracy_threshold(scores, same)
    tar, _, _ = tar_at_far(scores, same, far)
    return {"accuracy": float(acc), "auc": float(roc_auc(scores, same)), "eer": float(equal_error_rate(scores, same)),
            f"tar_at_far_{far:g}": float(tar), "pairs": int(len(scores)), "impostor_pairs": int((~same).sum())}


def set5_figures(cfg: Config, embedder: str) -> dict[str, float]:
    """LFW View-2 fold 5 (the validation people): 300 genuine + 300 impostor pairs."""
    from .eval.protocols import pair_scores
    from .features import FeatureCache

    pairs = LFWSplit(open_dataset(cfg, "lfw")).pairs([5])
    records = list({r.path: r for p in pairs for r in (p.a, p.b)}.values())
    emb = FeatureCache(cfg, "lfw", embedder).embeddings(records)
    same = np.array([p.same for p in pairs])
    return pair_set_figures(pair_scores(pairs, records, emb), same, far=1e-2)


def celeba_figures(cfg: Config, embedder: str, far: float = 1e-3) -> dict[str, float]:
    """All pairs of the CelebA photos in which the project's aligner found a face (training data:
    fair for model selection, never a test figure). In-the-wild photos: harder than LFW."""
    from .features import FeatureCache

    cache = FeatureCache(cfg, "celeba", embedder)
    records = open_dataset(cfg, "celeba").records()
    emb = cache.embeddings(records)
    keys = cache.keys_for(records, progress=False)
    found = ~cache.align_store.get_field(keys, "fallback").astype(bool)
    emb, ids = emb[found], np.array([r.identity for r in records])[found]
    sims = emb @ emb.T
    iu = np.triu_indices(len(ids), k=1)
    scores, same = sims[iu], (ids[:, None] == ids[None, :])[iu]
    out = pair_set_figures(scores, same, far)
    out["images"] = int(found.sum())
    return out


def ms_per_face(cfg: Config, embedder: str, n: int = 40, repeats: int = 3) -> float:
    """Median ms per face on one thread, aligned LFW set-5 faces, source images decoded beforehand."""
    import torch

    from .data.imageio import load_image
    from .embed import FaceInput
    from .features import FeatureCache, _aligned_from_fields, build_embedder

    torch.set_num_threads(1)
    cache = FeatureCache(cfg, "lfw", None)
    records = LFWSplit(open_dataset(cfg, "lfw")).records("val")[:n]
    keys = cache.keys_for(records, progress=False)
    cache.build(records, workers=1, progress=False)
    faces = [FaceInput(_aligned_from_fields(cache.align_store.get(k), cache.aligner.detector.scheme), load_image(r.path))
             for r, k in zip(records, keys)]
    model = build_embedder(cfg, embedder)   # the packaged embedders run one thread by default
    model.embed(faces[:2])  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.embed(faces)
        times.append((time.perf_counter() - t0) / len(faces))
    return float(1000 * np.median(times))


# -- detectors --------------------------------------------------------------------------------------
_DET: dict[str, Any] = {}


def _init_detector(spec: Any, attempts: list, models_dir: str, min_face_ratio: float = 0.0) -> None:
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from .align import Aligner

    _DET["aligner"] = Aligner(detector=spec, attempts=attempts, models_dir=models_dir, min_face_ratio=min_face_ratio)


def _photo_outcome(path: str) -> int:
    """The user-photo policy on one image: 1 aligned, 0 no face, 2 several faces."""
    from .data.imageio import load_image
    from .errors import FaceNotFoundError, MultipleFacesError

    try:
        _DET["aligner"].align_photo(load_image(path))
        return 1
    except FaceNotFoundError:
        return 0
    except MultipleFacesError:
        return 2


def photo_outcomes(cfg: Config, spec: Any, dataset: str, workers: int = 2, limit: int | None = None) -> dict[str, Any]:
    """Run the user-photo policy (exactly one face; a chain takes its first member that finds one)
    with the user-photo attempts over a dataset: shares with no face and with several faces."""
    paths = [str(r.path) for r in open_dataset(cfg, dataset).records()][:limit]
    attempts = list(cfg.get_path("align.attempts"))
    init = (spec, attempts, str(cfg.models_dir), float(cfg.get_path("align.min_face_ratio")))
    if workers <= 1:
        _init_detector(*init)
        outcomes = [_photo_outcome(p) for p in tqdm(paths, desc=f"detect {dataset}", unit="img")]
    else:
        with mp.get_context("spawn").Pool(workers, initializer=_init_detector, initargs=init) as pool:
            outcomes = list(tqdm(pool.imap(_photo_outcome, paths, chunksize=32), total=len(paths),
                                 desc=f"detect {dataset}", unit="img"))
    arr = np.array(outcomes)
    return {"images": len(paths), "no_face": int((arr == 0).sum()), "no_face_rate": float((arr == 0).mean()),
            "several_faces": int((arr == 2).sum()), "several_faces_rate": float((arr == 2).mean()),
            "refused_rate": float((arr != 1).mean())}


def ms_per_image(cfg: Config, spec: Any, n: int = 20, repeats: int = 3, size: tuple[int, int] = (480, 640)) -> float:
    """Median ms of one detection pass (no retries) on one thread, real LFW photos padded to 640x480."""
    from PIL import Image

    from .align import Aligner
    from .data.imageio import load_image

    import cv2

    cv2.setNumThreads(1)
    aligner = Aligner(detector=spec, attempts=[{"upsample": 0}], models_dir=str(cfg.models_dir))
    h, w = size
    images = []
    for r in LFWSplit(open_dataset(cfg, "lfw")).records("val")[:n]:
        face = np.asarray(Image.fromarray(load_image(r.path)).resize((h, h), Image.Resampling.BILINEAR))
        canvas = np.full((h, w, 3), 127, np.uint8)
        canvas[:, (w - h) // 2:(w - h) // 2 + h] = face
        images.append(canvas)
    aligner.detect(images[0])
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for im in images:
            aligner.detect(im)
        times.append((time.perf_counter() - t0) / len(images))
    return float(1000 * np.median(times))


# -- selection ------------------------------------------------------------------------------------
def choose(rows: Mapping[str, Mapping[str, Any]], candidates: Sequence[str], rule: Mapping[str, Any] = SELECTION) -> str:
    """Best set-5 accuracy; ties (within ``tie_pairs`` of 600 pairs) go to the higher CelebA TAR@FAR."""
    pool = [c for c in candidates if c in rows]
    if not pool:
        raise ConfigError("no measured candidate to choose from")
    best = max(rows[c]["set_5"]["accuracy"] for c in pool)
    tie = rule["tie_pairs"] / rows[pool[0]]["set_5"]["pairs"]
    near = [c for c in pool if rows[c]["set_5"]["accuracy"] >= best - tie - 1e-12]
    key = f"tar_at_far_{rule['celeba_far']:g}"
    return max(near, key=lambda c: (rows[c]["celeba"][key], rows[c]["set_5"]["auc"]))


def choose_detector(rows: Mapping[str, Mapping[str, Any]], rule: Mapping[str, Any] = DETECTOR_SELECTION) -> str:
    """Among detectors leaving at most ``max_celeba_no_face`` of CelebA without a face (preferring
    those that run ``first`` first, if any): the fewest refused CelebA photos (no face or several),
    ties within ``tie`` to the fastest. If none qualifies, the one with the fewest CelebA misses."""
    ok = [n for n, r in rows.items() if r["celeba_no_face_rate"] <= rule["max_celeba_no_face"]]
    if not ok:
        return min(rows, key=lambda n: rows[n]["celeba_no_face_rate"])
    if rule.get("first"):
        ok = [n for n in ok if first_detector(rows[n].get("spec", n)) == rule["first"]] or ok
    best = min(rows[n]["celeba_refused_rate"] for n in ok)
    near = [n for n in ok if rows[n]["celeba_refused_rate"] <= best + rule["tie"] + 1e-12]
    return min(near, key=lambda n: rows[n]["ms_per_image"])


# -- the report -------------------------------------------------------------------------------------
def check_inputs(cfg: Config, variants: Mapping[str, Mapping[str, list[dict[str, Any]]]] = INPUT_VARIANTS
                 ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Each model's input settings compared on LFW set 5. Returns the check and the ``embedders``
    entries that pin the winners (so every later figure, fusions included, uses them)."""
    from .config import merge

    checks: dict[str, Any] = {}
    entries: dict[str, dict[str, Any]] = {}
    for model, axes in variants.items():
        pinned: dict[str, Any] = {}
        for axis, options in axes.items():
            rows: dict[str, dict[str, Any]] = {}
            for option in options:
                name = f"{model}__{'_'.join(str(v) for v in option.values())}"
                trial = Config(merge(cfg, {"embedders": {name: {"kind": model, **pinned, **option}}}))
                rows[name] = {**option, "set_5": set5_figures(trial, name), "celeba": celeba_figures(trial, name)}
            best = rows[choose(rows, list(rows))]   # set 5 first; a tie there goes to CelebA
            pinned[axis] = best[axis]
            checks.setdefault(model, {})[axis] = {"chosen": best[axis], "variants": list(rows.values())}
        entries[model] = {"kind": model, **pinned}
    return checks, entries


def _fold_figures(summary: Mapping[str, Any], far_k: str) -> dict[str, Any]:
    keep = ("accuracy", "accuracy_std", far_k, "auc", "eer", "n_pairs")
    return {k: summary[k] for k in keep if k in summary}


def measure_embedder(cfg: Config, name: str, workers: int | None = None) -> dict[str, Any]:
    """Verification on the test folds 6-10 (and 1-10 for models that saw no LFW image), the set-5
    and CelebA selection figures, ms per face."""
    from .data import parse_folds
    from .eval.metrics import far_key
    from .eval.protocols import evaluate_lfw_pairs
    from .features import FeatureCache

    cache = FeatureCache(cfg, "lfw", name)
    specs = ["1-10", "6-10"] if cache.embedder.lfw_free else ["6-10"]
    far = float(cfg.get_path("eval.far_targets")[0])
    split = LFWSplit(open_dataset(cfg, "lfw"))
    res = evaluate_lfw_pairs(split, lambda recs: cache.embeddings(recs, workers=workers), specs, far)
    fk = far_key(far)
    row: dict[str, Any] = {"embedder": cache.embedder.cache_id, "dim": int(cache.embedder.dim),
                           "training_data": getattr(cache.embedder, "training_data", "")}
    for spec, (label, rep) in zip(specs, res["reports"].items()):
        row[f"folds_{spec.replace('-', '_')}"] = _fold_figures(rep.summary(), fk)
    if "folds_1_10" in row and row["training_data"]:
        row["folds_1_10"]["note"] = f"trained on {row['training_data']}: folds 1-10 are not an unseen-people test"
    mask = np.isin(res["folds"], parse_folds("6-10"))
    row["_roc_6_10"] = (res["scores"][mask], res["labels"][mask])
    FeatureCache(cfg, "celeba", name).build(open_dataset(cfg, "celeba").records(), workers=workers)
    row["set_5"] = set5_figures(cfg, name)
    row["celeba"] = celeba_figures(cfg, name)
    row["ms_per_face"] = ms_per_face(cfg, name)
    return row


def measure_detector(cfg: Config, spec: Any, workers: int = 2) -> dict[str, Any]:
    lfw = photo_outcomes(cfg, spec, "lfw", workers)
    celeba = photo_outcomes(cfg, spec, "celeba", workers)
    return {"spec": spec, "attempts": list(cfg.get_path("align.attempts")),
            "min_face_ratio": float(cfg.get_path("align.min_face_ratio")),
            "lfw_no_face_rate": lfw["no_face_rate"], "celeba_no_face_rate": celeba["no_face_rate"],
            "celeba_refused_rate": celeba["refused_rate"], "ms_per_image": ms_per_image(cfg, spec),
            "lfw": lfw, "celeba": celeba}


def markdown(models: Mapping[str, Mapping[str, Any]], detectors: Mapping[str, Mapping[str, Any]], fk: str) -> str:
    lines = ["| model | dim | LFW 6-10 accuracy | VAL@1e-3 | AUC | EER | set 5 accuracy | CelebA TAR@1e-3 | ms/face |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in models.items():
        t = r["folds_6_10"]
        lines.append(f"| {name} | {r['dim']} | {100 * t['accuracy']:.2f} ± {100 * t['accuracy_std']:.2f} % | "
                     f"{100 * t[fk]:.2f} % | {t['auc']:.4f} | {100 * t['eer']:.2f} % | "
                     f"{100 * r['set_5']['accuracy']:.2f} % | {100 * r['celeba']['tar_at_far_0.001']:.2f} % | "
                     f"{r['ms_per_face']:.1f} |")
    lines += ["", "| detector (user-photo policy) | LFW no face | LFW several | CelebA no face | CelebA several | "
              "ms per 640x480 |", "|---|---|---|---|---|---|"]
    for name, d in detectors.items():
        cells = [f"{100 * d[ds][k + '_rate']:.2f} % ({d[ds][k]})" for ds in ("lfw", "celeba")
                 for k in ("no_face", "several_faces")]
        lines.append(f"| {name} | {' | '.join(cells)} | {d['ms_per_image']:.1f} |")
    return "\n".join(lines)


def run_teachers_report(cfg: Config, out: str | None = None, candidates: Sequence[str] = CANDIDATES,
                        detectors: Mapping[str, Any] = DETECTOR_CANDIDATES, workers: int | None = None
                        ) -> dict[str, Any]:
    """``hyperver teachers``: measure every candidate, choose the defaults, write JSON + ROC PNG."""
    from pathlib import Path

    from .config import merge
    from .eval.metrics import far_key, plot_roc, roc_curve
    from .reporting import write_result

    checks, entries = check_inputs(cfg)
    cfg = Config(merge(cfg, {"embedders": entries}))
    models = {}
    for name in tqdm(candidates, desc="teachers", unit="model"):
        models[name] = measure_embedder(cfg, name, workers)
    dets = {name: measure_detector(cfg, spec, workers or 2) for name, spec in detectors.items()}
    best = choose(models, candidates)
    # The server's descriptor (= the hypernetwork's h_bb) and the SuperNet's teacher follow one rule:
    # teacher embeddings are cached once per image, so a fusion costs the SuperNet nothing extra.
    defaults = {"descriptor": best, "teacher": best, "detector": choose_detector(dets)}
    path = Path(out) if out else cfg.results_dir / "teachers_lfw.json"
    roc_path = path.with_name(path.stem + "_roc.png")
    roc_path.parent.mkdir(parents=True, exist_ok=True)
    curves = {}
    for name, r in models.items():
        far, tar, _ = roc_curve(*r.pop("_roc_6_10"))
        curves[name] = (far, tar)
    plot_roc(curves, str(roc_path), title="LFW View 2, test folds 6-10")
    fk = far_key(float(cfg.get_path("eval.far_targets")[0]))
    figures = {"split": "LFW View 2: folds 6-10 test; set 5 and CelebA for every choice",
               "input_checks": checks, "models": models, "detectors": dets, "defaults": defaults,
               "selection": {"embedders": "best LFW set-5 accuracy; within "
                                          f"{SELECTION['tie_pairs']} pairs the higher CelebA TAR@{SELECTION['celeba_far']:g}",
                             "teacher": "the same rule (teacher embeddings are cached, a fusion costs training nothing)",
                             "detector": f"CelebA no face <= {100 * DETECTOR_SELECTION['max_celeba_no_face']:g} %; "
                                         f"chains starting with {DETECTOR_SELECTION['first']} (the datasets' "
                                         "detector) first; then the fewest refused CelebA photos (no face or several), ties "
                                         f"(within {100 * DETECTOR_SELECTION['tie']:g} %) to the fastest"},
               "roc_png": str(roc_path.relative_to(Path.cwd()) if roc_path.is_relative_to(Path.cwd()) else roc_path)}
    written = write_result(path, figures)
    return {"figures": figures, "markdown": markdown(models, dets, fk), "path": str(written)}

