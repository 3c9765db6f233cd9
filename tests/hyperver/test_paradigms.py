"""hyperver compare on a few real LFW test pairs: both paradigms scored by the shared metrics,
device costs measured with the device runtime, and the per-user scorer equal to enrollment."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import shipped_generator

GENERATOR = shipped_generator()


@pytest.fixture(scope="module")
def tiny_descriptor(tmp_path_factory) -> str:
    """A small random subnet exported as the device would get it (safetensors + TFLite)."""
    from supernet.elastic import OFAMobileNetV3
    from supernet.export import export_tflite, save_subnet
    from supernet.space import DEFAULT_SPACE

    torch.manual_seed(0)
    net = OFAMobileNetV3(width_mult=0.5, input_size=64)
    sub = net.get_subnet(DEFAULT_SPACE.smallest()).eval()
    out = tmp_path_factory.mktemp("descriptor")
    save_subnet(sub, out / "tiny.safetensors")
    export_tflite(sub, out / "tiny.tflite")
    return f"tiny={out / 'tiny.safetensors'}"


def test_crossover_of_two_affine_costs():
    from hyperver.paradigms import crossover

    users = [1, 10, 100]
    assert crossover(users, [0.05 * n for n in users], [2.0 + 0.001 * n for n in users]) == pytest.approx(2 / 0.049)
    assert crossover(users, [1.0] * 3, [2.0] * 3) is None      # per-user never catches up


def test_fold_data_limits_to_balanced_pairs_and_their_images(cfg):
    from hyperver.data import LFWSplit, open_dataset
    from hyperver.paradigms import fold_data

    split = LFWSplit(open_dataset(cfg, "lfw"))
    pairs, records, ident = fold_data(split, [6, 7], 4)
    assert len(pairs) == 8 and sum(p.same for p in pairs) == 4
    assert {p.fold for p in pairs} == {6, 7}
    assert {r.path for p in pairs for r in (p.a, p.b)} == {r.path for r in records}
    counts = {i: sum(r.identity == i for r in records) for i in {r.identity for r in ident}}
    assert min(counts.values()) >= 2


def test_verifier_scorer_matches_pairwise_enrollment(cfg):
    from hyperver.data import LFWSplit, open_dataset
    from hyperver.hypernet.data import load_records_data
    from hyperver.hypernet.evaluate import load_trained
    from hyperver.hypernet.train import pair_logits
    from hyperver.paradigms import fold_data, verifier_scorer

    gen, meta = load_trained(str(GENERATOR))
    gen = gen.float()
    _, records, _ = fold_data(LFWSplit(open_dataset(cfg, "lfw")), [6], 6)
    data = load_records_data(cfg, "lfw", records, meta["backbone"], gen.spec.input_size)
    gallery, probes = np.array([0, 3, 5]), np.arange(len(records))
    scores = verifier_scorer(gen, data.backbone, data.images, users_chunk=2, probes_chunk=4, progress=False)(gallery, probes)
    assert scores.shape == (len(probes), len(gallery))
    g = np.repeat(gallery, len(probes))
    p = np.tile(probes, len(gallery))
    expected = pair_logits(gen, data, g, p).reshape(len(gallery), len(probes)).T
    np.testing.assert_allclose(scores, expected, atol=1e-4)


def test_compare_end_to_end_on_a_few_test_pairs(cfg, tiny_descriptor, tmp_path, tmp_path_factory):
    from hyperver.cli import main
    from hyperver.config import load_config

    out = tmp_path / "res" / "paradigms.json"     # f templates shared with tests/hyperver/device
    overrides = [f"data.root={cfg.get_path('data.root')}", f"cache.root={cfg.get_path('cache.root')}",
                 f"artifacts.template_dir={tmp_path_factory.getbasetemp() / 'f_templates'}", "embed.workers=1",
                 "compare.limit_pairs_per_fold=4", "compare.users=[1,2,4]", "compare.enroll_photos=2",
                 "compare.latency={warmup: 1, repeats: 3}", "compare.threads=1"]
    load_config(overrides=overrides, env={})      # the overrides are valid keys
    args = ["compare", "--descriptor", tiny_descriptor, "--generator", str(GENERATOR), "--out", str(out)]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 0
    res = json.loads(out.read_text())
    for side in ("embedding", "per_user"):
        for key in ("accuracy", "tar_at_far_1e3", "rank1", "params", "mflops", "latency_ms", "device_bytes_per_user"):
            assert key in res[side], (side, key)
        assert 0.0 <= res[side]["accuracy"] <= 1.0 and res[side]["latency_ms"] > 0
    from hyperver.hypernet.model_io import load_generator

    assert res["per_user"]["params"] == load_generator(GENERATOR)[0].spec.n_params   # counted by the tool
    assert res["per_user"]["device_bytes_per_user"] > 20_000          # a signed TFLite artifact
    assert res["embedding"]["device_bytes_per_user"] == 512
    assert res["verification"]["per_user"]["n_pairs"] == 20
    assert [r["users"] for r in res["cost_vs_users"]] == [1, 2, 4]
    assert res["cost_vs_users"][2]["per_user_mflops"] == pytest.approx(4 * res["per_user"]["mflops"])
    assert "crossover_users" in res and res["crossover_users_mflops"] >= 1
    for png in (res["roc_png"], res["cost_png"]):
        assert Path(png).stat().st_size > 10_000
    report = Path(res["report_md"]).read_text()
    assert "| TAR @ FAR=1e-3 |" in report and "| 4 |" in report

