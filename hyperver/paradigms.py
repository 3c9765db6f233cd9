"""The two face-unlock paradigms side by side (``hyperver compare``).

- **embedding**: the device runs the device's descriptor (the subnet the device search picked) on
  every enrollment and probe photo and compares unit embeddings (cosine; 1:N by nearest neighbour
  with faiss).
- **per-user**: the server runs its descriptor once per enrollment and the generator turns it
  into a tiny verifier f; the device runs only f (1:N: every enrolled user's f on the probe, the
  highest score wins, below the threshold the probe is rejected).

Both are scored on the LFW test folds with the project's metrics module; thresholds for
FAR = 1e-3 are chosen on LFW set 5. Device-side costs are measured with the device runtimes
(TFLite, 1 thread) on this machine; alignment is the same for both and is reported apart.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .config import Config
from .data import LFWSplit, PROJECT_SPLIT, open_dataset
from .errors import ConfigError
from .eval.metrics import identification_from_scores, kfold_verification, threshold_at_far

EMBEDDING_BYTES_PER_USER = 128 * 4   # one fp32 128-D template per enrolled user


# -- descriptor -------------------------------------------------------------------------------------
def searched_descriptor(cfg: Config, device: str, budget_rel: float, out_dir: str = "results/search") -> str:
    """Run the device search (NAC + QuickSelect) and export its subnet: ``name=path.safetensors``."""
    from .device_search import run_search

    found = run_search(cfg, device, budget_rel=budget_rel, methods=("nac_quickselect",), out_dir=out_dir)[0]
    return f"searched={found['files']['safetensors']}"


def _descriptor_files(entry: str) -> tuple[str, Path, Path]:
    if "=" not in entry:
        raise ConfigError(f"the device descriptor must be name=subnet.safetensors (an exported subnet), got {entry!r}")
    name, path = entry.split("=", 1)
    weights = Path(path)
    tflite = weights.with_suffix(".tflite")
    for f in (weights, tflite):
        if not f.is_file():
            raise ConfigError(f"descriptor file missing: {f} (export it with `hyperver supernet-export` or "
                              "`hyperver search run`, which write .safetensors and .tflite side by side)")
    return name, weights, tflite


# -- scorers ----------------------------------------------------------------------------------------
def verifier_scorer(gen, backbone: "np.ndarray | Any", images, users_chunk: int = 25, probes_chunk: int = 256,
                    progress: bool = True) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``score(gallery, probes)`` -> (probes, gallery) logits: each gallery image enrolls a user
    (theta = h_gen(embedding)), each user's f scores every probe (stacked grouped convolutions)."""
    import torch
    from tqdm import tqdm

    from .hypernet.batched import score_matrix
    from .hypernet.data import to_unit_range

    @torch.no_grad()
    def score(gallery: np.ndarray, probes: np.ndarray) -> np.ndarray:
        gen.eval()
        thetas = gen(backbone[torch.as_tensor(gallery)])
        x = to_unit_range(images[torch.as_tensor(probes)])
        out = np.empty((len(probes), len(gallery)), np.float32)
        for i in tqdm(range(0, len(gallery), users_chunk), desc="per-user verifiers x probes", disable=not progress,
                      unit="users", unit_scale=users_chunk):
            for j in range(0, len(probes), probes_chunk):
                s = score_matrix(gen.spec, thetas[i:i + users_chunk], x[j:j + probes_chunk])
                out[j:j + probes_chunk, i:i + users_chunk] = s.T.numpy()
        return out

    return score


def cosine_scorer(embeddings: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    emb = np.asarray(embeddings, np.float32)
    return lambda gallery, probes: emb[probes] @ emb[gallery].T


def validation_cosine_threshold(cfg: Config, cache, far: float, limit_images: int | None = None) -> float:
    """Cosine threshold at ``far`` on random impostor pairs of LFW set 5 (same draw as the verifier's);
    ``limit_images`` keeps only the first N set-5 images (smoke tests)."""
    split = LFWSplit(open_dataset(cfg, "lfw"))
    records = split.records("val")[:limit_images]
    emb = cache.embeddings(records, workers=1)
    rng = np.random.default_rng(0)
    ids = np.array([r.identity for r in records])
    a, b = rng.integers(0, len(records), 20000), rng.integers(0, len(records), 20000)
    keep = ids[a] != ids[b]
    return threshold_at_far(np.sum(emb[a[keep]] * emb[b[keep]], axis=1), far)


# -- device costs -----------------------------------------------------------------------------------
def _device_verifiers(cfg: Config, gen, embeddings: np.ndarray, threshold: float,
                      precision: str, progress: bool) -> tuple[list[int], list[Callable]]:
    """Signed per-user TFLite artifacts for these embeddings (an ephemeral key), each read back
    through the device's artifact check: their sizes and ready-to-run verifiers."""
    import torch

    from .device.artifact import open_artifact
    from .device.builder import ArtifactBuilder
    from .device.runtime import make_runner
    from .device.signing import Signer, TrustedKeys
    from .hypernet.model_io import UserModel

    signer = Signer.generate()
    builder = ArtifactBuilder(cfg, signer=signer)
    trusted = TrustedKeys.from_values([signer.public_b64])
    with torch.no_grad():
        thetas = gen(torch.as_tensor(embeddings, dtype=torch.float32)).numpy()
    sizes, runners = [], []
    for t, e in tqdm_if(list(zip(thetas, embeddings)), progress, "on-device verifiers"):
        blob = builder.build(UserModel(t, gen.spec, threshold, e, {}), "tflite", precision)
        sizes.append(len(blob))
        runners.append(make_runner("tflite", open_artifact(blob, trusted, [gen.spec.version]).model, 1))
    return sizes, runners


def cost_vs_users(f_runners: Sequence[Callable], f_input: np.ndarray, descriptor_ms: float, users: Sequence[int],
                  dim: int, warmup: int = 2, repeats: int = 10) -> list[dict[str, float]]:
    """Measured 1:N time per probe on the device: N verifiers one after another (per-user) vs one
    descriptor pass + a faiss inner-product search over N templates (embedding)."""
    import faiss

    from supernet.latency import time_calls

    rng = np.random.default_rng(0)
    templates = rng.standard_normal((max(users), dim)).astype(np.float32)
    templates /= np.linalg.norm(templates, axis=1, keepdims=True)
    query = templates[:1].copy()
    rows = []
    for n in users:
        if n > len(f_runners):
            raise ConfigError(f"{n} users asked, {len(f_runners)} verifiers built")
        runners = f_runners[:n]
        per_user = time_calls(lambda: [run(f_input) for run in runners], warmup, repeats)["median_ms"]
        index = faiss.IndexFlatIP(dim)
        index.add(templates[:n])
        search = time_calls(lambda: index.search(query, 1), warmup * 5, repeats * 5)["median_ms"]
        rows.append({"users": int(n), "per_user_ms": per_user, "embedding_ms": descriptor_ms + search,
                     "embedding_search_ms": search})
    return rows


def crossover(users: Sequence[int], per_user: Sequence[float], embedding: Sequence[float]) -> float | None:
    """N where the per-user cost reaches the embedding cost, from straight lines fitted to both
    (both are affine in N: N verifiers vs one descriptor + a search over N)."""
    n = np.asarray(users, float)
    pu = np.polyfit(n, np.asarray(per_user, float), 1)
    em = np.polyfit(n, np.asarray(embedding, float), 1)
    if pu[0] - em[0] <= 1e-12:
        return None   # the per-user cost never catches up
    return max(1.0, float((em[1] - pu[1]) / (pu[0] - em[0])))


# -- the comparison ---------------------------------------------------------------------------------
def fold_data(split: LFWSplit, test_sets: Sequence[int], limit_pairs_per_fold: int | None = None):
    """Pairs, images and identification images of the test folds. ``limit_pairs_per_fold`` (smoke
    tests only) keeps the first N/2 matched and N/2 mismatched pairs of each fold and only their images."""
    if not limit_pairs_per_fold:
        return split.pairs(test_sets), split.records_of_sets(test_sets), split.records("test", min_images=2)
    half = max(1, int(limit_pairs_per_fold) // 2)
    pairs = []
    for f in test_sets:
        fold = split.pairs([f])
        pairs += [p for p in fold if p.same][:half] + [p for p in fold if not p.same][:half]
    records = list({r.path: r for p in pairs for r in (p.a, p.b)}.values())
    counts: dict[str, int] = {}
    for r in records:
        counts[r.identity] = counts.get(r.identity, 0) + 1
    return pairs, records, [r for r in records if counts[r.identity] >= 2]


def run_comparison(cfg: Config, descriptor: str | None = None, generator: str | None = None,
                   out: str | None = None, progress: bool = True) -> dict[str, Any]:
    import torch

    from supernet.export import load_subnet
    from supernet.latency import time_calls, tflite_latency
    from supernet.profile import count_macs, count_params

    from .features import FeatureCache
    from .hypernet.data import load_records_data
    from .hypernet.evaluate import backbone_config, f_cost, load_trained, validation_threshold
    from .hypernet.train import pair_logits
    from .reporting import git_commit, write_result

    commit = git_commit()   # the code that runs, before any tracked output is written
    cc = cfg.get_path("compare")
    if cc["threads"]:
        torch.set_num_threads(int(cc["threads"]))
    far = float(cfg.get_path("eval.far_targets")[0])
    out_path = Path(out or cc["out"])
    out_path.parent.mkdir(parents=True, exist_ok=True)
    generator = generator or cc["generator"] or cfg.get_path("hypernet.generator_path")
    gen, meta = load_trained(generator)
    gen = gen.float().eval()
    server_backbone = meta["backbone"]
    descriptor = descriptor or cc["descriptor"] or searched_descriptor(cfg, cc["device"], float(cc["budget_rel"]))
    d_name, d_weights, d_tflite = _descriptor_files(descriptor)
    dcfg, _ = backbone_config(cfg, descriptor)
    d_cache = FeatureCache(dcfg, "lfw", d_name)

    # -- data: every image of the test people (sets 6-10) ----------------------------------------
    split = LFWSplit(open_dataset(cfg, "lfw"))
    test_sets = list(PROJECT_SPLIT.test_sets)
    pairs, records, ident_records = fold_data(split, test_sets, cc["limit_pairs_per_fold"])
    data = load_records_data(cfg, "lfw", records, server_backbone, gen.spec.input_size)
    d_emb = d_cache.embeddings(records, workers=1)
    index = {r.path: i for i, r in enumerate(records)}

    # -- verification on the 3,000 test pairs ------------------------------------------------------
    a = np.array([index[p.a.path] for p in pairs])
    b = np.array([index[p.b.path] for p in pairs])
    same = np.array([p.same for p in pairs])
    fold = np.array([p.fold for p in pairs])
    scores = {"per_user": pair_logits(gen, data, a, b),
              "embedding": np.sum(d_emb[a] * d_emb[b], axis=1),
              "server_descriptor": np.sum(data.backbone.numpy()[a] * data.backbone.numpy()[b], axis=1)}
    verification = {k: kfold_verification(s, same, fold, far) for k, s in scores.items()}
    thresholds = {"per_user": float(meta["threshold"]) if "threshold" in meta
                  else float(validation_threshold(cfg, gen, server_backbone, far)),
                  "embedding": validation_cosine_threshold(cfg, d_cache, far)}

    # -- identification: the same draws for both paradigms -----------------------------------------
    ident_idx = np.array([index[r.path] for r in ident_records])
    identities = [r.identity for r in ident_records]
    ic = cc["identification"]
    kw = {"repeats": int(ic["repeats"]), "seed": int(cfg.get_path("eval.seed")),
          "max_probes_per_person": ic["max_probes_per_person"]}

    def on_subset(fn):
        return lambda g, p: fn(ident_idx[g], ident_idx[p])

    identification = {
        "embedding": identification_from_scores(on_subset(cosine_scorer(d_emb)), identities,
                                                threshold=thresholds["embedding"], **kw),
        "per_user": identification_from_scores(
            on_subset(verifier_scorer(gen, data.backbone, data.images, progress=progress)), identities,
            threshold=thresholds["per_user"], **kw)}
    full_protocol = identification_from_scores(on_subset(cosine_scorer(d_emb)), identities,
                                               repeats=int(cfg.get_path("eval.identification_repeats")),
                                               seed=int(cfg.get_path("eval.seed")))

    # -- device costs (TFLite, 1 thread) ----------------------------------------------------------
    lat = cc["latency"]
    sub = load_subnet(d_weights)
    size = int(sub.net_config.get("input_size", 112))
    d_cost = {"params": count_params(sub), "mflops": count_macs(sub, (1, 3, size, size)) / 1e6,
              "latency_ms": tflite_latency(d_tflite, 1, int(lat["warmup"]), int(lat["repeats"]))["median_ms"],
              "model_bytes": d_tflite.stat().st_size}
    fc = f_cost(gen.spec)
    precision = str(cc["precision"])
    users = [int(n) for n in cc["users"]]
    emb_users = data.backbone.numpy()[np.linspace(0, len(records) - 1, max(users)).astype(int)]
    sizes, runners = _device_verifiers(cfg, gen, emb_users, thresholds["per_user"], precision, progress)
    s = gen.spec.input_size
    f_input = np.random.default_rng(0).uniform(-1, 1, (1, s, s, 3)).astype(np.float32)
    f_latency = time_calls(lambda: runners[0](f_input), int(lat["warmup"]), int(lat["repeats"]) * 10)["median_ms"]
    curve = cost_vs_users(runners, f_input, d_cost["latency_ms"], users, d_emb.shape[1])
    for row in curve:
        n = row["users"]
        row["per_user_mflops"] = n * fc["f_mflops"]
        row["embedding_mflops"] = d_cost["mflops"] + n * d_emb.shape[1] / 1e6
        row["per_user_bytes"] = n * sizes[0]
        row["embedding_bytes"] = d_cost["model_bytes"] + n * EMBEDDING_BYTES_PER_USER
    cross_ms = crossover(users, [r["per_user_ms"] for r in curve], [r["embedding_ms"] for r in curve])
    cross_mflops = d_cost["mflops"] / (fc["f_mflops"] - d_emb.shape[1] / 1e6)

    # -- enrollment time per user ------------------------------------------------------------------
    enroll = _enrollment_times(cfg, generator, records, int(cc["enroll_photos"]), precision, d_cost["latency_ms"])

    per_user_ver, emb_ver = verification["per_user"].summary(), verification["embedding"].summary()
    figures: dict[str, Any] = {
        "descriptor": {"name": d_name, "weights": str(d_weights), "tflite": str(d_tflite), **d_cost},
        "generator": str(generator), "server_descriptor": server_backbone,
        "thresholds_far_1e3_set5": thresholds,
        "embedding": {"accuracy": emb_ver["accuracy"], "tar_at_far_1e3": emb_ver["val_at_far_1e3"],
                      "auc": emb_ver["auc"], "eer": emb_ver["eer"], "rank1": identification["embedding"]["rank1"],
                      "dir_at_threshold": identification["embedding"]["dir"],
                      "params": d_cost["params"], "mflops": d_cost["mflops"], "latency_ms": d_cost["latency_ms"],
                      "device_bytes_per_user": EMBEDDING_BYTES_PER_USER,
                      "device_bytes_shared": d_cost["model_bytes"], "enroll_ms": enroll["embedding_ms"]},
        "per_user": {"accuracy": per_user_ver["accuracy"], "tar_at_far_1e3": per_user_ver["val_at_far_1e3"],
                     "auc": per_user_ver["auc"], "eer": per_user_ver["eer"],
                     "rank1": identification["per_user"]["rank1"],
                     "dir_at_threshold": identification["per_user"]["dir"],
                     "params": fc["f_params"], "mflops": fc["f_mflops"], "latency_ms": f_latency,
                     "device_bytes_per_user": sizes[0], "device_bytes_shared": 0,
                     "enroll_ms": enroll["per_user_ms"], "artifact_precision": precision},
        "crossover_users": None if cross_ms is None else int(np.ceil(cross_ms)),
        "crossover_users_mflops": int(np.ceil(cross_mflops)),
        "verification": {k: v.summary() for k, v in verification.items()},
        "identification": identification, "identification_embedding_full_protocol": full_protocol,
        "cost_vs_users": curve, "enrollment": enroll,
        "align_ms": enroll["align_ms"],
    }
    figures["roc_png"] = _plot_roc({"embedding (device descriptor, cosine)": verification["embedding"].roc[:2],
                                    "per-user verifier f": verification["per_user"].roc[:2],
                                    f"server descriptor ({server_backbone}), reference": verification["server_descriptor"].roc[:2]},
                                   out_path.with_name(out_path.stem + "_roc.png"))
    figures["cost_png"] = _plot_cost(curve, figures, out_path.with_name(out_path.stem + "_cost.png"))
    md_path = out_path.with_suffix(".md")
    figures["report_md"] = str(md_path)
    written = write_result(out_path, figures, commit=commit)
    md_path.write_text(markdown_report(json.loads(written.read_text()), written))
    return figures


def tqdm_if(items, progress: bool, desc: str):
    from tqdm import tqdm

    return tqdm(items, desc=desc, disable=not progress)


def _enrollment_times(cfg: Config, generator: str, records, n: int, precision: str,
                      descriptor_ms: float) -> dict[str, float]:
    """Median per-user enrollment cost on real photos of different test people.

    per-user (server): decode + align + server descriptor + h_gen + signed artifact;
    embedding (device): decode + align (measured here) + one descriptor pass (TFLite latency).
    """
    from .align import Aligner
    from .data.imageio import load_image
    from .device.builder import ArtifactBuilder
    from .device.signing import Signer
    from .errors import FaceNotFoundError, MultipleFacesError
    from .hypernet.enroll import Enroller

    enroller = Enroller(generator, cfg)
    builder = ArtifactBuilder(cfg, signer=Signer.generate())
    aligner = Aligner.from_config(cfg.get_path("align"), models_dir=str(cfg.models_dir))
    people = list({r.identity: r for r in records}.values())
    server, align, skipped = [], [], 0
    warmed = False
    for r in people:
        if len(server) >= n:
            break
        try:   # enrollment asks for exactly one face: a device would ask the user for another photo
            if not warmed:   # dlib models load on first use
                enroller.enroll([r.path])
                warmed = True
            t = time.perf_counter()
            user = enroller.enroll([r.path])
        except (FaceNotFoundError, MultipleFacesError):
            skipped += 1
            continue
        builder.build(user, "tflite", precision)
        server.append(time.perf_counter() - t)
        t = time.perf_counter()
        aligner.align_photo(load_image(r.path), str(r.path))
        align.append(time.perf_counter() - t)
    if not server:
        raise ConfigError(f"none of {len(people)} test people has a photo with exactly one face to time enrollment on")
    align_ms = 1e3 * float(np.median(align))
    return {"photos": len(server), "skipped_not_one_face": skipped, "per_user_ms": 1e3 * float(np.median(server)),
            "align_ms": align_ms,
            "embedding_ms": align_ms + descriptor_ms}


# -- plots and the report ------------------------------------------------------------------------------
def _plot_roc(curves, path: Path) -> str:
    from .eval.metrics import plot_roc

    return plot_roc({k: (f, t) for k, (f, t) in curves.items()}, str(path), "LFW test folds 6-10: the two paradigms")


def _plot_cost(curve: list[dict], figures: dict, path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["users"] for r in curve]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    ax1.plot(n, [r["per_user_ms"] for r in curve], "o-", label="per-user: N verifiers f (measured)")
    ax1.plot(n, [r["embedding_ms"] for r in curve], "s-", label="embedding: descriptor + faiss over N (measured)")
    if figures["crossover_users"]:
        ax1.axvline(figures["crossover_users"], color="grey", ls="--", lw=0.8,
                    label=f"crossover ~{figures['crossover_users']} users")
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("enrolled users N")
    ax1.set_ylabel("1:N identification per probe, ms (TFLite, 1 thread)")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=7)
    ax2.plot(n, [r["per_user_mflops"] for r in curve], "o-", label="per-user: N x f")
    ax2.plot(n, [r["embedding_mflops"] for r in curve], "s-", label="embedding: descriptor + N dot products")
    ax2.axvline(figures["crossover_users_mflops"], color="grey", ls="--", lw=0.8,
                label=f"crossover ~{figures['crossover_users_mflops']} users")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("enrolled users N")
    ax2.set_ylabel("multiply-adds per probe (M)")
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)


def markdown_report(f: dict, written: Path | str) -> str:
    e, u = f["embedding"], f["per_user"]
    ie = f["identification"]["embedding"]
    pct = lambda x: f"{100 * x:.2f} %"   # noqa: E731
    rows = [
        ("LFW test-fold accuracy (folds 6-10)", pct(e["accuracy"]), pct(u["accuracy"])),
        ("TAR @ FAR=1e-3", pct(e["tar_at_far_1e3"]), pct(u["tar_at_far_1e3"])),
        ("AUC / EER", f"{e['auc']:.3f} / {pct(e['eer'])}", f"{u['auc']:.3f} / {pct(u['eer'])}"),
        (f"rank-1 identification ({ie['people']} people, {ie['probes']} probes)", pct(e["rank1"]), pct(u["rank1"])),
        ("open-set: identified and above the set-5 FAR=1e-3 threshold", pct(e["dir_at_threshold"]),
         pct(u["dir_at_threshold"])),
        ("parameters on the device (per probe network)", f"{e['params']:,}", f"{u['params']:,}"),
        ("MFLOPs (multiply-adds) per 1:1 check", f"{e['mflops']:.2f}", f"{u['mflops']:.2f}"),
        ("1:1 latency, TFLite 1 thread", f"{e['latency_ms']:.3f} ms", f"{u['latency_ms']:.3f} ms"),
        ("bytes on the device per user", f"{e['device_bytes_per_user']:,}", f"{u['device_bytes_per_user']:,}"),
        ("bytes on the device shared by all users", f"{e['device_bytes_shared']:,}", "0"),
        ("enrollment per user", f"{e['enroll_ms']:.1f} ms (device: align + descriptor)",
         f"{u['enroll_ms']:.1f} ms (server: align + descriptor + h_gen + signed artifact)"),
    ]
    lines = [f"# Paradigm comparison\n\n`{f.get('command', '')}` (commit {f.get('commit', '?')}, `{written}`)\n",
             f"Device descriptor: `{f['descriptor']['name']}` ({f['descriptor']['weights']}); per-user verifiers "
             f"from `{f['generator']}` (server descriptor: {f['server_descriptor']}). Alignment on the device "
             f"costs {f['align_ms']:.1f} ms per photo in both paradigms.\n",
             "| | embedding + nearest neighbour | per-user verifier |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines.append(f"\nServer descriptor on the same pairs (reference, not on the device): "
                 f"{pct(f['verification']['server_descriptor']['accuracy'])}. Embedding rank-1 under the full "
                 f"protocol ({f['identification_embedding_full_protocol']['probes']} probes, "
                 f"{f['identification_embedding_full_protocol']['repeats']} repeats): "
                 f"{pct(f['identification_embedding_full_protocol']['rank1'])}.\n")
    lines.append("## 1:N cost per probe on the device\n")
    lines.append("| users N | per-user ms | embedding ms | per-user MFLOPs | embedding MFLOPs | per-user bytes | embedding bytes |")
    lines.append("|---|---|---|---|---|---|---|")
    for r in f["cost_vs_users"]:
        lines.append(f"| {r['users']} | {r['per_user_ms']:.3f} | {r['embedding_ms']:.3f} | {r['per_user_mflops']:.1f} | "
                     f"{r['embedding_mflops']:.1f} | {r['per_user_bytes']:,} | {r['embedding_bytes']:,} |")
    lines.append(f"\nCrossover: the per-user paradigm costs more than the embedding paradigm from about "
                 f"{f['crossover_users']} enrolled users (measured latency, straight-line fits) or "
                 f"{f['crossover_users_mflops']} users (multiply-adds).\n")
    lines.append(f"![ROC]({Path(f['roc_png']).name})\n\n![cost vs users]({Path(f['cost_png']).name})\n")
    return "\n".join(lines)
