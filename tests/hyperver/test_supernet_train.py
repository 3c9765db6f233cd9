"""SuperNet training mechanics on a tiny real subset: run, checkpoint, Ctrl-C, resume, torchrun (gloo)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

TINY = """_base_: base.yaml
supernet:
  sources: [lfw_train]
  limit_per_source: 48
  batch_size: 8
  width_mult: 0.35
  input_size: 48
  checkpoint_dir: {ckpt}
  checkpoint_minutes: 0.02
  bn_images: 16
  warmup_steps: 1
  threads: 1
  phases:
    - {{name: full, epochs: {e1}, lr: 0.05}}
    - {{name: elastic, epochs: 1, lr: 0.01, kernels: [3, 5, 7], depths: [2, 3, 4], expands: [3, 4, 6], n_subnets: 1, sort_channels: true}}
"""


def _write_cfg(tmp_path, e1=1):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY.format(ckpt=tmp_path / "ckpt", e1=e1))
    return cfg


def _env(tmp_path, data_root):
    return {**os.environ, "HYPERVER_DATA": str(data_root), "HYPERVER_CACHE": str(tmp_path / "cache"),
            "OMP_NUM_THREADS": "1"}


def _run(args, tmp_path, data_root, timeout=600):
    return subprocess.run([sys.executable, "-m", "hyperver.cli", *args], capture_output=True, text=True,
                          env=_env(tmp_path, data_root), timeout=timeout)


def _ckpt_state(tmp_path):
    ckpt = torch.load(tmp_path / "ckpt" / "last.pt", map_location="cpu", weights_only=True)
    return json.loads(ckpt["state"])


def test_train_runs_all_phases_and_refuses_to_overwrite(tmp_path, data_root):
    cfg = _write_cfg(tmp_path)
    out = _run(["supernet-train", "--config", str(cfg)], tmp_path, data_root)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["finished"] and summary["phase"] == 2
    history = json.loads((tmp_path / "ckpt" / "history.json").read_text())
    assert [h["phase"] for h in history if "eval" in h] == ["full", "elastic"]
    again = _run(["supernet-train", "--config", str(cfg)], tmp_path, data_root)
    assert again.returncode == 2 and "--resume" in again.stderr
    # Export for users / a later session, then start a new run from the exported weights.
    weights = tmp_path / "assets" / "sn.safetensors"
    exp = _run(["supernet-train", "--config", str(cfg), "--resume", "--export-only", "--export", str(weights)],
               tmp_path, data_root)
    assert exp.returncode == 0, exp.stderr[-2000:]
    assert weights.exists() and (tmp_path / "assets" / "sn_train_state.safetensors").exists()
    from supernet.io import load_supernet

    assert load_supernet(weights).input_size == 48
    cont = _run(["supernet-train", "--config", str(cfg), "--init-from", str(weights),
                 "--set", f"supernet.checkpoint_dir={tmp_path / 'ckpt2'}"], tmp_path, data_root)
    assert cont.returncode == 0, cont.stderr[-2000:]
    assert "initialised from" in cont.stdout


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(tmp_path, data_root):
    cfg = _write_cfg(tmp_path, e1=40)
    proc = subprocess.Popen([sys.executable, "-m", "hyperver.cli", "supernet-train", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path, data_root))
    deadline = time.time() + 300
    while not (tmp_path / "ckpt" / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-2000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert not summary["finished"]
    stopped_at = _ckpt_state(tmp_path)
    assert stopped_at["phase"] == 0 and stopped_at["global_step"] > 0
    # Resume with a shorter first phase so the test ends quickly; the step counter continues.
    shutil.copy(cfg, tmp_path / "backup.yaml")
    cfg.write_text(TINY.format(ckpt=tmp_path / "ckpt", e1=0.0001))
    resumed = _run(["supernet-train", "--config", str(cfg), "--resume"], tmp_path, data_root)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout
    final = _ckpt_state(tmp_path)
    assert final["phase"] == 2 and final["global_step"] > stopped_at["global_step"]


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="torchrun missing")
def test_torchrun_two_process_gloo_smoke(tmp_path, data_root):
    cfg = _write_cfg(tmp_path)
    torchrun = str(Path(sys.executable).parent / "torchrun")
    out = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "hyperver.cli", "supernet-train",
                          "--config", str(cfg)], capture_output=True, text=True, env=_env(tmp_path, data_root),
                         timeout=600)
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-3000:])
    assert _ckpt_state(tmp_path)["phase"] == 2


MFN_TINY = """_base_: base.yaml
supernet:
  space: elastic_mfn
  pretrained: mobilefacenet
  distill_from: self
  teacher: mobilefacenet
  sources: [lfw_train]
  limit_per_source: 24
  batch_size: 8
  input_size: 112
  checkpoint_dir: {ckpt}
  bn_images: 16
  warmup_steps: 1
  threads: 1
  optimizer: adamw
  loss: {{w_cos: 1.0, w_centered: 1.0, w_arc: 0.0}}
  phases:
    - {{name: depth, epochs: 1, lr: 0.0002, depths: all, n_subnets: 1, include_smallest: true}}
    - {{name: expand, epochs: 1, lr: 0.0002, depths: all, expands: all, n_subnets: 1, sort_channels: true}}
"""


def test_mobilefacenet_supernet_seeds_trains_and_continues_its_schedule_elsewhere(tmp_path, data_root, monkeypatch):
    """The v2 SuperNet: seeded from the pretrained MobileFaceNet (largest subnet = teacher at step 0), a few
    sandwich steps with targets from the frozen seeded net, then exported and continued by another trainer."""
    from hyperver.config import load_config
    from hyperver.descriptor.train import build_trainer, export_training_state, init_from

    monkeypatch.setenv("HYPERVER_DATA", str(data_root))
    monkeypatch.setenv("HYPERVER_CACHE", str(tmp_path / "cache"))
    cfg_path = tmp_path / "mfn.yaml"
    cfg_path.write_text(MFN_TINY.format(ckpt=tmp_path / "ckpt"))
    cfg = load_config(cfg_path)
    trainer, data = build_trainer(cfg, log=lambda *_: None)
    net = trainer.net
    assert type(net).__name__ == "ElasticMobileFaceNet" and net.embed_dim == 192
    batch = next(trainer.batches(0, 0))
    with torch.no_grad():
        student = net.eval()(batch["image"])
    # The frozen-self target is the seeded network itself: the largest subnet starts at cosine ~1.
    assert float((student * batch["teacher"]).sum(1).min()) > 0.999
    logs = trainer._train_step(trainer.cfg.phases[0], batch)
    assert 0 < logs["cos"] < 0.5
    trainer.state.phase, trainer.state.step_in_phase, trainer.state.global_step = 1, 2, 5
    files = export_training_state(trainer, tmp_path / "w" / "mfn.safetensors")
    other, _ = build_trainer(cfg, log=lambda *_: None)
    init_from(other, files["weights"], continue_schedule=True)
    assert (other.state.phase, other.state.step_in_phase, other.state.global_step) == (1, 2, 5)
    x = batch["image"][:2]
    for n in (net, other.net):
        n.set_active(n.space.largest())   # a train step leaves the last sampled subnet active
    with torch.no_grad():
        assert torch.allclose(other.net.eval()(x), net.eval()(x), atol=5e-3)   # fp16 export


def test_phase_archs_may_name_arch_files(tmp_path):
    import numpy as np

    from hyperver.descriptor.train import _phase_archs_loaded
    from supernet.space import DEFAULT_SPACE as S
    from supernet.space import save_arch

    arch = S.sample(np.random.default_rng(4))
    path = save_arch(arch, tmp_path / "found.arch.json", device="phone")
    loaded = _phase_archs_loaded({"name": "ft", "epochs": 1, "lr": 1e-4, "archs": [str(path), arch]}, S)
    assert loaded["archs"] == [S.validate(arch), S.validate(arch)] and loaded["name"] == "ft"
