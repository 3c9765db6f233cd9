"""Unlock cost on the device and what the artifact precisions cost in accuracy.

    python benchmarks/unlock_latency.py --generator assets/hypernet/generator_v3.safetensors
    python benchmarks/unlock_latency.py --checkpoint checkpoints/hypernet_cpu/best.pt     # before export

1. Latency, TFLite (ai-edge-litert), 1 thread, batch 1, median over --repeats invocations:
   f baked into a per-user artifact vs a descriptor network (the largest subnet of the face
   SuperNet, exported here from --supernet-weights, or any --descriptor-tflite).
2. Artifact sizes in bytes (signed .hva files, fp32/fp16/int8 TFLite).
3. Accuracy of the artifacts on LFW test folds 6-10 (k-fold, as every LFW figure here): enroll
   from image a of each pair (theta = h_gen(descriptor of a)), bake theta into each TFLite
   variant, score image b through the device path (numpy preprocessing + interpreter). The
   torch forward on the training-time preprocessing is reported beside it as the reference.

Writes ``unlock_ms``, ``artifact_bytes`` and ``artifact_accuracy`` of results/server_load.json
(keeping the ``runs`` of benchmarks/server_load.py). Accuracy needs a trained generator; with
--untrained (pipeline check only) the figures are flagged and should not be published.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hyperver.config import load_config
from hyperver.reporting import current_command, write_result
from supernet.latency import time_calls

PRECISIONS = ("fp32", "fp16", "int8")


def merge_result(path: str, figures: dict[str, Any], part: str, defaults: dict[str, Any] | None = None) -> Path:
    """Update ``figures`` in a results file two benchmarks share; "command" lists both commands."""
    p = Path(path)
    old = json.loads(p.read_text()) if p.is_file() else {}
    commands = {**old.get("commands", {}), part: f"python {current_command()}"}
    merged = {k: v for k, v in old.items() if k not in ("command", "commit", "commands")}
    merged.update(figures)
    for k, v in (defaults or {}).items():
        merged.setdefault(k, v)
    return write_result(p, {**merged, "commands": commands}, command=" && ".join(commands.values()))


def timed_ms(fn: Callable[[], Any], repeats: int, warmup: int = 30) -> dict[str, float]:
    t = time_calls(fn, warmup, repeats)
    return {"median": round(t["median_ms"], 4), "p95": round(t["p95_ms"], 4)}


def tflite_runner(model: bytes, threads: int = 1) -> tuple[Callable[[], Any], tuple[int, ...]]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model, num_threads=threads)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    x = np.random.default_rng(0).uniform(-1, 1, inp["shape"]).astype(np.float32)

    def run() -> None:
        interp.set_tensor(inp["index"], x)
        interp.invoke()

    return run, tuple(int(s) for s in inp["shape"])


def descriptor_tflite(args, tmp: Path) -> tuple[bytes, dict[str, Any]]:
    if args.descriptor_tflite:
        return Path(args.descriptor_tflite).read_bytes(), {"descriptor": args.descriptor_tflite}
    from hyperver.descriptor import load_supernet_weights
    from supernet.export import export_tflite

    net = load_supernet_weights(args.supernet_weights)   # main() fills the config's default in
    arch = getattr(net.space, args.descriptor_arch)()
    sub = net.get_subnet(arch)   # BN statistics do not change latency: no recalibration needed here
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):   # Keras prints its SavedModel signature on export
        path = export_tflite(sub, tmp / "descriptor.tflite")
    return path.read_bytes(), {"descriptor": f"{args.descriptor_arch} subnet of {args.supernet_weights}",
                               "descriptor_params": int(sum(p.numel() for p in sub.parameters()))}


def lfw_accuracy(cfg, gen, backbone: str, store, pairs_limit: int | None) -> dict[str, Any]:
    import torch

    from hyperver.data import LFWSplit, open_dataset, parse_folds
    from hyperver.device.preprocess import face_array
    from hyperver.device.runtime import make_runner
    from hyperver.eval.metrics import kfold_verification
    from hyperver.features import FeatureCache
    from hyperver.hypernet.enroll import face_input
    from hyperver.hypernet.verifier import forward

    split = LFWSplit(open_dataset(cfg, "lfw"))
    folds = parse_folds("6-10")
    pairs = split.pairs(folds)
    if pairs_limit:
        pairs = pairs[:: max(1, len(pairs) // pairs_limit)]   # spread over every fold
    records = split.records_of_sets(folds)
    index = {r.path: i for i, r in enumerate(records)}
    cache = FeatureCache(cfg, "lfw", backbone)
    used = sorted({index[p.a.path] for p in pairs} | {index[p.b.path] for p in pairs})
    pos = {i: k for k, i in enumerate(used)}
    sub = [records[i] for i in used]
    crops, emb = cache.crops(sub), cache.embeddings(sub)
    a = np.array([pos[index[p.a.path]] for p in pairs])
    b = np.array([pos[index[p.b.path]] for p in pairs])
    same = np.array([p.same for p in pairs])
    fold = np.array([p.fold for p in pairs])
    with torch.no_grad():
        thetas = np.concatenate([gen(torch.from_numpy(emb[a[i:i + 256]]).float()).numpy()
                                 for i in range(0, len(a), 256)])
        ref = np.array([float(forward(gen.spec, torch.from_numpy(t), face_input(crops[j], gen.spec))[0])
                        for t, j in zip(thetas, b)])
    probes = {j: face_array(crops[j], gen.spec.input_size, "NHWC") for j in set(b.tolist())}
    scores: dict[str, np.ndarray] = {}
    for precision in PRECISIONS:
        template = store.get(gen.spec, "tflite", precision)
        scores[precision] = np.array([make_runner("tflite", template.instantiate(t))(probes[j])
                                      for t, j in zip(thetas, b)])
    reports = {k: kfold_verification(v, same, fold).summary() for k, v in {"torch": ref, **scores}.items()}
    return {"accuracy": {p: reports[p]["accuracy"] for p in PRECISIONS},
            "detail": {"pairs": int(len(pairs)), "folds": "6-10", "reference_torch": reports["torch"],
                       "reports": {p: reports[p] for p in PRECISIONS},
                       "max_abs_logit_vs_torch": {p: float(np.abs(scores[p] - ref).max()) for p in PRECISIONS}}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default=None, help="trained generator (default: hypernet.generator_path)")
    ap.add_argument("--checkpoint", default=None, help="or a hypernet training checkpoint (best.pt) instead")
    ap.add_argument("--untrained", action="store_true", help="no trained generator yet: check the pipeline with an "
                                                             "untrained one (figures flagged, not for publishing)")
    ap.add_argument("--skip-accuracy", action="store_true", help="latency and sizes only (no generator quality needed)")
    ap.add_argument("--pairs", type=int, default=None, help="subsample the 3,000 test pairs (quick checks only)")
    ap.add_argument("--supernet-weights", default=None, help="SuperNet whose subnet is the descriptor "
                                                             "(default: search.supernet_weights)")
    ap.add_argument("--descriptor-arch", default="largest", choices=["largest", "smallest"])
    ap.add_argument("--descriptor-tflite", default=None, help="time this descriptor TFLite instead")
    ap.add_argument("--repeats", type=int, default=500)
    ap.add_argument("--out", default="results/server_load.json")
    ap.add_argument("--config", default=None)
    args = ap.parse_args()

    import torch

    from hyperver.device.artifact import build_artifact
    from hyperver.device.signing import Signer
    from hyperver.device.templates import TemplateStore
    from hyperver.hypernet.model_io import load_generator

    torch.set_num_threads(1)
    cfg = load_config(args.config)
    args.supernet_weights = args.supernet_weights or cfg.get_path("search.supernet_weights")
    tmp = Path(tempfile.mkdtemp(prefix="unlock_latency_"))
    generator = Path(args.checkpoint or args.generator or cfg.get_path("hypernet.generator_path"))
    if args.checkpoint:
        from hyperver.hypernet.evaluate import load_trained

        gen, meta = load_trained(checkpoint=args.checkpoint)
    elif generator.is_file():
        gen, meta = load_generator(generator)
    elif args.untrained or args.skip_accuracy:     # latency and sizes do not depend on training
        from hyperver.hypernet.train import build_generator

        gen = build_generator(dict(cfg.get_path("hypernet")), 128).eval()
        meta = {"backbone": cfg.get_path("hypernet.backbone")}
    else:
        raise SystemExit(f"generator not found: {generator} (pass --generator, or --untrained for a pipeline check)")
    store = TemplateStore(cfg.template_dir)   # under cache.root
    signer = Signer.generate()
    with torch.no_grad():
        emb = torch.randn(1, gen.embed_dim, generator=torch.Generator().manual_seed(0))
        emb = torch.nn.functional.normalize(emb, dim=1)   # any h_bb's width (dlib 128, MobileFaceNet 192)
        theta = gen(emb)[0].numpy()

    artifacts = {p: build_artifact(store.get(gen.spec, "tflite", p), theta, 0.0, signer) for p in PRECISIONS}
    t0 = time.perf_counter()
    for _ in range(100):
        build_artifact(store.get(gen.spec, "tflite", "fp32"), theta, 0.0, signer)
    build_ms = 10 * (time.perf_counter() - t0)
    f_run, f_shape = tflite_runner(store.get(gen.spec, "tflite", "fp32").instantiate(theta))
    d_model, d_info = descriptor_tflite(args, tmp)
    d_run, d_shape = tflite_runner(d_model)
    f_ms, d_ms = timed_ms(f_run, args.repeats), timed_ms(d_run, args.repeats)

    from hyperver.device.preprocess import resize_crop

    crop = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    figures: dict[str, Any] = {
        "unlock_ms": {"f_tflite": f_ms["median"], "descriptor_tflite": d_ms["median"]},
        "artifact_bytes": {p: len(artifacts[p]) for p in PRECISIONS},
        "unlock_detail": {"threads": 1, "batch": 1, "repeats": args.repeats, "f_input": list(f_shape),
                          "descriptor_input": list(d_shape), "f_p95_ms": f_ms["p95"], "descriptor_p95_ms": d_ms["p95"],
                          "f_params": gen.spec.n_params, "f_version": gen.spec.version, **d_info,
                          "preprocess_ms": timed_ms(lambda: resize_crop(crop, gen.spec.input_size), 200)["median"],
                          "artifact_build_ms": round(build_ms, 3),
                          "onnx_bytes": {p: len(build_artifact(store.get(gen.spec, "onnx", p), theta, 0.0, signer))
                                         for p in PRECISIONS},
                          "int8_scheme": "dynamic range: int8 per-channel weights, float activations"},
        "artifact_generator": str(generator) if generator.is_file() else "untrained",
    }
    print(json.dumps({k: figures[k] for k in ("unlock_ms", "artifact_bytes")}))
    if not args.skip_accuracy:
        acc = lfw_accuracy(cfg, gen, meta["backbone"], store, args.pairs)
        figures["artifact_accuracy"] = acc["accuracy"]
        figures["artifact_accuracy_detail"] = acc["detail"]
        print(json.dumps({"artifact_accuracy": acc["accuracy"],
                          "torch_reference": acc["detail"]["reference_torch"]["accuracy"]}))
    if not generator.is_file():
        figures["artifact_generator_untrained"] = True
    print(f"wrote {merge_result(args.out, figures, 'unlock_latency', {'artifact_accuracy': None})}")


if __name__ == "__main__":
    main()
