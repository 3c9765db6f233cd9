"""``hyperver demo`` end to end in a subprocess, shrunk (few calibration images, few generations,
a set-5 subset for the descriptor threshold), on the committed weights and sample photos."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

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
    from enroll_server.demo import STEPS

    for step in range(1, STEPS + 1):
        assert f"[{step}/{STEPS}]" in out, out
    assert "HyperVer demo: 4 users enrolled over HTTP, 9 probes" in out
    res = json.loads((tmp_path / "demo.json").read_text())
    assert res["command"].startswith("hyperver demo") or "demo" in res["command"]
    d = res["descriptor"]
    assert 0 < d["lut_ms"] <= d["budget_ms"] and d["measured_tflite_ms"] > 0 and d["params"] > 1e5
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


def test_demo_report_defaults_to_an_ignored_file_in_the_cache(tmp_path, monkeypatch):
    """A newcomer's `make demo` must leave `git status` clean: by default the report goes to the
    git-ignored work folder under the cache root; results/demo.json only with --out."""
    from hyperver.config import load_config

    from enroll_server.demo import demo_paths

    monkeypatch.chdir(REPO)
    work, out = demo_paths(load_config(env={}))
    assert work == REPO / "cache" / "demo" and out == work / "demo.json"
    moved = load_config(env={"HYPERVER_CACHE": str(tmp_path)})
    assert demo_paths(moved) == (tmp_path.resolve() / "demo", tmp_path.resolve() / "demo" / "demo.json")
    assert demo_paths(moved, "results/demo.json")[1] == Path("results/demo.json")     # on purpose
    assert demo_paths(load_config(overrides=[f"demo.out={tmp_path / 'r.json'}"], env={}))[1] == tmp_path / "r.json"

    git = shutil.which("git")
    inside = git and subprocess.run([git, "rev-parse", "--is-inside-work-tree"], cwd=REPO,
                                    capture_output=True).returncode == 0
    if not inside:
        pytest.skip("not a git checkout: cannot check what git tracks and ignores")
    rel = str(out.relative_to(REPO))
    tracked = subprocess.run([git, "ls-files", "--error-unmatch", rel], cwd=REPO, capture_output=True)
    assert tracked.returncode != 0, f"{rel} is tracked"
    assert subprocess.run([git, "check-ignore", "-q", "--no-index", rel], cwd=REPO).returncode == 0, \
        f"{rel} is not git-ignored"
