"""Hypernetwork training mechanics on a tiny real subset: run, refuse to overwrite, resume,
reload the best checkpoint, and the ablation table's config variants."""
import json
import os
import subprocess
import sys

import torch

TINY = """_base_: base.yaml
hypernet:
  sources: [lfw_train]
  limit_identities: 10
  val_limit_pairs: 24
  f: {{input_size: 32, channels: [8, 16, 16, 16], groups: [1, 2, 2, 2], strides: [2, 2, 2, 2], kernel: 3, hidden: 8}}
  generator: {{hidden: 32, n_linear: 3, delta_scale: 0.1}}
  batch_identities: 4
  batch_growth: 2
  negatives_per_user: 3
  optimizer: {{name: adamw, lr: 1.0e-3, weight_decay: 0.0}}
  steps: {steps}
  warmup_steps: 2
  kcs: {{enabled: true, clusters: 2}}
  soft_targets: {{weight: 0.4, temperature: 0.05}}
  eval_every: 3
  checkpoint_dir: {ckpt}
  threads: 1
"""


def _setup(tmp_path, steps):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY.format(ckpt=tmp_path / "ckpt", steps=steps))
    return cfg


def _run(args, tmp_path, data_root):
    env = {**os.environ, "HYPERVER_DATA": str(data_root), "HYPERVER_CACHE": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "hyperver.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_train_checkpoints_refuses_overwrite_resumes_and_reloads(tmp_path, data_root):
    cfg = _setup(tmp_path, steps=4)
    r = _run(["hypernet-train", "--config", str(cfg)], tmp_path, data_root)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["step"] == 4 and 0.0 <= summary["best_val_auc"] <= 1.0
    history = json.loads((tmp_path / "ckpt" / "history.json").read_text())
    assert any("val_auc" in h for h in history)

    again = _run(["hypernet-train", "--config", str(cfg)], tmp_path, data_root)
    assert again.returncode == 2 and "--resume" in again.stderr

    cfg = _setup(tmp_path, steps=6)  # a longer schedule: resume continues from step 4
    r = _run(["hypernet-train", "--config", str(cfg), "--resume"], tmp_path, data_root)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed at step 4" in r.stdout
    assert json.loads(r.stdout.strip().splitlines()[-1])["step"] == 6

    from hyperver.hypernet.evaluate import load_trained

    gen, meta = load_trained(checkpoint=str(tmp_path / "ckpt" / "best.pt"))
    from hyperver.config import load_config

    assert meta["backbone"] == load_config(env={}).get_path("hypernet.backbone") and gen.spec.input_size == 32
    thetas = gen(torch.nn.functional.normalize(torch.randn(3, gen.embed_dim), dim=1))
    assert thetas.shape == (3, gen.spec.n_params) and torch.isfinite(thetas).all()

    # --init-from: a new run starts from an exported generator (its weights, not a pre-trained body)
    exported = tmp_path / "gen.safetensors"
    r = _run(["hypernet-export", "--config", str(cfg), "--checkpoint", str(tmp_path / "ckpt" / "best.pt"),
              "--out", str(exported)], tmp_path, data_root)
    assert r.returncode == 0, r.stderr[-2000:]
    warm = tmp_path / "warm.yaml"
    warm.write_text(TINY.format(ckpt=tmp_path / "warm", steps=2).replace("eval_every: 3", "eval_every: 1"))
    r = _run(["hypernet-train", "--config", str(warm), "--init-from", str(exported)], tmp_path, data_root)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"initialised from {exported}" in r.stdout
    history = json.loads((tmp_path / "warm" / "history.json").read_text())
    assert history[0] == {"step": 0, "init_from": str(exported)} and not any("pretrain" in h for h in history)
    # init_theta_base: f's shared weights from a checkpoint, under another generator output (theta_base
    # does not depend on h_gen's shape or h_bb); the other weights start fresh
    seeded = tmp_path / "seeded.yaml"
    seeded.write_text(TINY.format(ckpt=tmp_path / "seeded", steps=1).replace(
        "delta_scale: 0.1}", "delta_scale: 0.1, output: lowrank, rank: 4}")
        + f"  init_theta_base: {tmp_path / 'ckpt' / 'best.pt'}\n")
    r = _run(["hypernet-train", "--config", str(seeded)], tmp_path, data_root)
    assert r.returncode == 0, r.stderr[-2000:]
    history = json.loads((tmp_path / "seeded" / "history.json").read_text())
    assert history[0] == {"step": 0, "init_theta_base": str(tmp_path / "ckpt" / "best.pt")}
    assert not any("pretrain" in h for h in history)
    # a theta_base of another f layout is refused with the reason
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.format(ckpt=tmp_path / "bad", steps=1).replace("hidden: 8}", "hidden: 12}")
                   + f"  init_theta_base: {tmp_path / 'ckpt' / 'best.pt'}\n")
    r = _run(["hypernet-train", "--config", str(bad)], tmp_path, data_root)
    assert r.returncode == 2 and "init_theta_base" in r.stderr and "this run trains" in r.stderr, r.stderr[-2000:]
    # a generator for another f layout is refused with the reason
    other = tmp_path / "other.yaml"
    other.write_text(TINY.format(ckpt=tmp_path / "other", steps=2).replace("hidden: 8}", "hidden: 12}"))
    r = _run(["hypernet-train", "--config", str(other), "--init-from", str(exported)], tmp_path, data_root)
    assert r.returncode == 2 and "generates f" in r.stderr, r.stderr[-2000:]


def test_ablation_variants_change_only_what_their_name_says(tmp_path):
    from hyperver.config import load_config
    from hyperver.hypernet.ablations import ABLATIONS, _variant_config
    from hyperver.hypernet.verifier import VerifierSpec

    cfg = load_config("configs/hypernet_cpu.yaml", env={})
    base = _variant_config(cfg, "baseline", 600, tmp_path)
    assert base.get_path("hypernet.steps") == 600
    assert base.get_path("hypernet.warmup_steps") == round(600 * cfg.get_path("hypernet.warmup_steps")
                                                           / cfg.get_path("hypernet.steps"))
    no_kcs = _variant_config(cfg, "no_kcs", 600, tmp_path)
    assert no_kcs.get_path("hypernet.kcs.enabled") is False and base.get_path("hypernet.kcs.enabled") is True
    no_norm = _variant_config(cfg, "no_norm_loss", 600, tmp_path)
    assert no_norm.get_path("hypernet.alpha_norm.target") == 0.0
    big = VerifierSpec.from_dict(_variant_config(cfg, "f_37k", 600, tmp_path).get_path("hypernet.f"))
    small = VerifierSpec.from_dict(base.get_path("hypernet.f"))
    assert abs(big.n_params - 37_000) / 37_000 < 0.05 and abs(small.n_params - 23_000) / 23_000 < 0.15
    quarter = _variant_config(cfg, "ids_25pct_no_kcs", 600, tmp_path)
    assert quarter.get_path("hypernet.identity_fraction") == 0.25 and quarter.get_path("hypernet.kcs.enabled") is False
    assert base.get_path("hypernet.identity_fraction") == 1.0
    assert {"baseline", "no_kcs", "no_norm_loss", "f_37k", "f_embedding"} <= set(ABLATIONS)
    for name in ABLATIONS:
        assert _variant_config(cfg, name, 10, tmp_path).get_path("hypernet.checkpoint_dir").endswith(name)
    # issue #17's levers: one change each, f v3 within the paper's budget
    from supernet.profile import count_params, mflops

    from hyperver.hypernet.verifier import VerifierModule

    v3 = VerifierSpec.from_dict(_variant_config(cfg, "f_v3_gdconv", 600, tmp_path).get_path("hypernet.f"))
    f = VerifierModule(v3)
    assert v3.head == "gdconv" and v3.input_size == 112
    assert count_params(f) == v3.n_params <= 26_500 and mflops(f, (1, 3, 112, 112)) <= 6.0
    fused = _variant_config(cfg, "teacher_fusion", 600, tmp_path)
    assert (fused.get_path("hypernet.teacher"), fused.get_path("hypernet.kcs.space")) == ("fusion_sface_dlib", "teacher")
    assert (base.get_path("hypernet.teacher"), base.get_path("hypernet.kcs.space")) == ("dlib", "backbone")
    assert _variant_config(cfg, "generator_lowrank", 600, tmp_path).get_path("hypernet.generator.output") == "lowrank"
    assert _variant_config(cfg, "embedding_noise", 600, tmp_path).get_path("hypernet.embedding_noise") > 0
    assert base.get_path("hypernet.embedding_noise") == 0.0
    assert _variant_config(cfg, "backbone_mobilefacenet", 600, tmp_path).get_path("hypernet.backbone") == "mobilefacenet"


def test_refine_row_needs_its_source_run(tmp_path, monkeypatch):
    import pytest

    from hyperver.config import load_config
    from hyperver.errors import ConfigError
    from hyperver.hypernet import ablations

    assert ablations.ABLATIONS["refine"]["_from"] == "shipped"   # the configured generator file
    monkeypatch.setitem(ablations.ABLATIONS, "refine", {"_trainer": "refine", "_from": "baseline"})
    with pytest.raises(ConfigError, match="train 'baseline' first"):
        ablations.run_ablation(load_config("configs/hypernet_cpu.yaml", env={}), "refine", 10, tmp_path)


def test_embedding_noise_scales_with_the_centred_norm_and_is_off_at_zero():
    from hyperver.hypernet.train import noisy_embeddings

    gen = torch.Generator().manual_seed(0)
    mean = torch.full((128,), 0.05)
    emb = torch.nn.functional.normalize(torch.randn(2000, 128, generator=gen), dim=1) + mean
    assert noisy_embeddings(emb, mean, 0.0, gen) is emb
    noise = noisy_embeddings(emb, mean, 0.3, gen) - emb
    ratio = noise.norm(dim=1) / (emb - mean).norm(dim=1)
    assert abs(ratio.mean().item() - 0.3) < 0.01
    again = noisy_embeddings(emb, mean, 0.3, torch.Generator().manual_seed(1))
    assert not torch.equal(again - emb, noise)


def test_identity_means_in_backbone_or_teacher_space():
    import numpy as np
    import pytest

    from hyperver.errors import ConfigError
    from hyperver.hypernet.data import HypernetData

    identity = np.array([0, 0, 1, 1, 1])
    data = HypernetData(torch.zeros(5, 2, 2, 3, dtype=torch.uint8), torch.randn(5, 4), torch.randn(5, 6), identity,
                        [np.nonzero(identity == i)[0] for i in range(2)])
    assert data.identity_means().shape == (2, 4) and data.identity_means("teacher").shape == (2, 6)
    assert np.allclose(data.identity_means("teacher")[1], data.teacher[2:].mean(0).numpy(), atol=1e-6)
    with pytest.raises(ConfigError, match="backbone' or 'teacher"):
        data.identity_means("pixels")


def test_identity_subset_keeps_whole_identities_renumbered_and_seeded():
    import numpy as np
    import pytest

    from hyperver.config import load_config
    from hyperver.errors import ConfigError
    from hyperver.hypernet.data import HypernetData, load_hypernet_data

    identity = np.repeat(np.arange(6), [2, 3, 2, 4, 2, 3])
    n = len(identity)
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 2, 2, 3).contiguous()
    data = HypernetData(images, torch.randn(n, 4), torch.randn(n, 4), identity,
                        [np.nonzero(identity == i)[0] for i in range(6)])
    half = data.subset_identities(0.5, seed=3)
    assert len(half.members) == 3 and len(half) == sum(len(m) for m in half.members)
    kept_rows = half.images[:, 0, 0, 0].numpy()          # each image remembers its original row
    originals = sorted(set(identity[kept_rows]))
    assert len(originals) == 3
    for old in originals:                                  # every image of a kept identity, nothing else
        assert set(np.nonzero(identity == old)[0]) <= set(kept_rows)
    for new, rows in enumerate(half.members):              # renumbered 0..2, one original identity each
        assert (half.identity[rows] == new).all() and len(set(identity[kept_rows[rows]])) == 1
    assert torch.equal(data.subset_identities(0.5, seed=3).images, half.images)
    assert len(data.subset_identities(0.01).members) == 1
    cfg = load_config("configs/hypernet_cpu.yaml", env={})
    with pytest.raises(ConfigError, match="identity_fraction"):
        load_hypernet_data(cfg, ["lfw_train"], "dlib", 32, identity_fraction=0.0)


def test_ablation_table_survives_a_fresh_work_folder(tmp_path):
    import pytest

    from hyperver.errors import ConfigError
    from hyperver.hypernet.ablations import collect, restore

    committed = tmp_path / "ablations.json"
    rows = [{"name": "baseline", "accuracy": 0.65}, {"name": "no_kcs", "accuracy": 0.72}]
    committed.write_text(json.dumps({"runs": rows}))
    work = tmp_path / "work"
    (work / "no_kcs").mkdir(parents=True)
    (work / "no_kcs" / "result.json").write_text(json.dumps({"name": "no_kcs", "accuracy": 0.73}))  # a new run wins
    assert restore(committed, work) == ["baseline", "no_kcs"]
    out = tmp_path / "out.json"
    table = collect(work, out, lambda r: f"run {r['name']}")
    assert [(r["name"], r["accuracy"]) for r in table["runs"]] == [("baseline", 0.65), ("no_kcs", 0.73)]
    assert json.loads(out.read_text())["command"] == "run baseline && run no_kcs"
    assert out.with_suffix(".png").stat().st_size > 10_000          # the bar chart beside the table
    committed.write_text(json.dumps({"runs": [{"name": "made_up"}]}))
    with pytest.raises(ConfigError, match="made_up"):
        restore(committed, work)


def test_collected_command_gives_each_row_its_own_steps_and_overrides(tmp_path):
    from hyperver.hypernet.ablations import main

    work = tmp_path / "work"
    for name, row in {"baseline": {"steps": 800}, "no_kcs": {"steps": 400, "sets": ["hypernet.seed=1"]}}.items():
        (work / name).mkdir(parents=True)
        (work / name / "result.json").write_text(json.dumps({"name": name, **row}))
    out = tmp_path / "out.json"
    assert main(["--config", "configs/hypernet_cpu.yaml", "--work-dir", str(work), "--out", str(out), "--collect",
                 "--set", "hypernet.pretrain_body.steps=800"]) == 0
    first, second = json.loads(out.read_text())["command"].split(" && ")
    # a row without recorded overrides (written before rows recorded them) takes the invocation's --set
    assert first.endswith("--steps 800 --set hypernet.pretrain_body.steps=800 --only baseline")
    assert second.endswith("--steps 400 --set hypernet.seed=1 --only no_kcs")
