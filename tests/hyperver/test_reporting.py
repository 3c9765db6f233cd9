"""The commit a result records: results/ (outputs) never makes it "+dirty", code does."""
import subprocess
from pathlib import Path

from hyperver.reporting import git_commit


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def test_dirty_counts_code_not_results(tmp_path):
    repo = tmp_path / "repo"
    (repo / "results").mkdir(parents=True)
    (repo / "pkg").mkdir()
    (repo / "pkg" / "code.py").write_text("x = 1\n")
    (repo / "results" / "figure.json").write_text("{}\n")
    _git(repo, "init", "-q")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    head = _git(repo, "rev-parse", "HEAD")
    assert git_commit(repo) == head
    (repo / "results" / "figure.json").write_text('{"accuracy": 0.9}\n')     # a command's output
    assert git_commit(repo) == head
    assert git_commit(repo / "pkg") == head                                 # from a subdirectory too
    (repo / "pkg" / "code.py").write_text("x = 2\n")                        # the measured code changed
    assert git_commit(repo) == head + "+dirty"
    assert git_commit(repo / "results") == head + "+dirty"
