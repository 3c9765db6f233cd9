"""hyperver.quiet: third-party noise off for user-facing commands, Python's own output still shown."""
from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = r"""
import os, sys, warnings
from hyperver.quiet import native_output_to, quiet_third_party

quiet_third_party(verbose=sys.argv[2] == "verbose")
print("TF_CPP_MIN_LOG_LEVEL=" + os.environ.get("TF_CPP_MIN_LOG_LEVEL", "unset"))
import logging
logging.basicConfig(level="INFO")
logging.getLogger("faiss.loader").info("Could not load library with AVX512 support")
warnings.warn("a library's warning")
log = None if sys.argv[1] == "-" else sys.argv[1]
with native_output_to(log):
    os.write(2, b"native C++ line on fd 2\n")
    os.write(1, b"native C++ line on fd 1\n")
    print("python stdout line")
    sys.stderr.write("python stderr line (a tqdm bar)\n")
print("after the block")
"""


def _run(log: str, mode: str, **env: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"} | env
    return subprocess.run([sys.executable, "-c", SCRIPT, log, mode], capture_output=True, text=True, env=env,
                          timeout=60)


def test_noise_goes_to_the_log_and_python_output_to_the_terminal(tmp_path):
    log = tmp_path / "sub" / "third_party.log"
    proc = _run(str(log), "quiet")
    assert proc.returncode == 0, proc.stderr
    assert "TF_CPP_MIN_LOG_LEVEL=3" in proc.stdout
    assert "python stdout line" in proc.stdout and "after the block" in proc.stdout
    assert "python stderr line" in proc.stderr
    assert "native" not in proc.stdout + proc.stderr
    assert "AVX512" not in proc.stderr and "a library's warning" not in proc.stderr
    text = log.read_text()
    assert "native C++ line on fd 2" in text and "native C++ line on fd 1" in text and "python" not in text


def test_verbose_shows_everything_and_the_user_environment_wins(tmp_path):
    proc = _run("-", "verbose")
    assert proc.returncode == 0, proc.stderr
    assert "TF_CPP_MIN_LOG_LEVEL=unset" in proc.stdout and "native C++ line on fd 1" in proc.stdout
    assert "native C++ line on fd 2" in proc.stderr and "AVX512" in proc.stderr and "a library's warning" in proc.stderr
    proc = _run(str(tmp_path / "log"), "quiet", TF_CPP_MIN_LOG_LEVEL="0")
    assert "TF_CPP_MIN_LOG_LEVEL=0" in proc.stdout
