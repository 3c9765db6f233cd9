"""``hyperver demo`` end to end in a subprocess, shrunk (few calibration images, few generations,
a set-5 subset for the descriptor threshold), on the committed weights and sample photos."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.enroll_server.conftest import REPO

SMALL = ["demo.bn_images=32", "demo.generations=5", "demo.threshold_images=60", "embed.workers=1"]


def run_demo(tmp_path, data_root, *extra: str) -> subprocess.CompletedProcess:
    sets = [f"data.root={data_root}", f"cache.root={tmp_path / 'cache'}", f"demo.work_dir={tmp_path / 'work'}",
            f"artifacts.template_dir={tmp_path / 'f_templates'}", *SMALL]
    cmd = [sys.executable, "-m", "hyperver.cli", "demo", "--out", str(tmp_path / "demo.json"), *extra]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("HYPERVER_API_KEY", None)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, data_root):
    from hyperver.device.artifact import peek_header

    proc = run_demo(tmp_path, data_root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for step in range(1, 8):
        assert f"[{step}/7]" in out, out
    assert "HyperVer demo: 4 users enrolled over HTTP, 9 probes" in out
    res = json.loads((tmp_path / "demo.json").read_text())
    assert res["command"].startswith("hyperver demo") or "demo" in res["command"]
    d = res["descriptor"]
    assert 0 < d["lut_ms"] <= d["budget_ms"] and d["measured_tflite_ms"] > 0 and d["params"] > 1e6
    assert (tmp_path / "work" / "descriptor").is_dir() and d["files"]["tflite"].endswith(".tflite")
    unlock = res["unlock"]
    scores = np.array(unlock["scores"])
    assert scores.shape == (9, 4) and len(unlock["users"]) == 4 and np.ptp(scores) > 0.1
    assert 0 <= unlock["genuine_accept_rate"] <= 1 and 0 <= unlock["impostor_accept_rate"] <= 1
    rows = res["identification"]["rows"]
    assert len(rows) == 9 and rows[-1]["truth"] is None
    for r in rows:   # the per-user pick is the highest verifier score, rejected below the threshold
        assert r["per_user_best"] in unlock["users"]
        assert (r["per_user"] is None) == (r["per_user_score"] < res["server"]["threshold"])
    assert res["identification"]["embedding_cosine_threshold_far_1e3_set5"] is not None
    # The downloaded models are signed TFLite artifacts of the accepted f version.
    models = sorted((tmp_path / "work" / "models").glob("*.hva"))
    assert len(models) == 4
    header = peek_header(models[0].read_bytes())
    assert header["runtime"] == "tflite" and header["f_version"] == res["server"]["f_version"]


def test_demo_says_what_is_missing(tmp_path, data_root):
    proc = run_demo(tmp_path, data_root, "--photos", str(tmp_path / "nowhere"))
    assert proc.returncode == 2
    assert "manifest.json" in proc.stderr and "pick_demo_photos" in proc.stderr
    proc = run_demo(tmp_path, data_root, "--device", "no_such_phone")
    assert proc.returncode == 2 and "lut measure" in proc.stderr
    proc = run_demo(tmp_path, data_root, "--budget-rel", "0")
    assert proc.returncode == 2 and "--budget-rel must be a positive fraction" in proc.stderr
