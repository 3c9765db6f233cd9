"""Results files: every one records the exact command and the git commit next to its figures."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping


def current_command() -> str:
    argv = list(sys.argv)
    if argv and argv[0].endswith(("hyperver", "cli.py")):
        argv[0] = "hyperver"
    return " ".join(shlex.quote(a) for a in argv)


def git_commit(cwd: str | Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        commit = out.stdout.strip() or "unknown"
        # results/ holds outputs, not code: a chain of commands each writing there stays "clean".
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/", ":(top,exclude)results"],
                               cwd=cwd, capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_result(path: str | Path, figures: Mapping[str, Any], command: str | None = None,
                 commit: str | None = None) -> Path:
    """Write ``{"command", "commit", **figures}`` as pretty JSON and return the path.

    ``commit``: the code's state taken when the command started (``git_commit()``); a command that
    writes tracked outputs (a PNG) before its JSON would otherwise record its own outputs as "+dirty".
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"command": command or current_command(), "commit": commit or git_commit(), **figures}
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path
