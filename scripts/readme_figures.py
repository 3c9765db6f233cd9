"""Re-run the README's figures that come from quick commands and print each next to the README lines
that hold it, so a maintainer can update them (the script edits nothing: no tracked file changes).

    python scripts/readme_figures.py                    # the quick figures (a few minutes)
    python scripts/readme_figures.py --only test-count  # one (or several: --only demo server-limits)
    python scripts/readme_figures.py --all              # also the slow ones (the whole suite: ~15 min)
    python scripts/readme_figures.py --list

For every figure it prints the command it ran, what it measured, and each README line the figure
appears on (file:line: text). The demo's report (the README's demo block) is kept in
cache/readme_figures/demo.txt for pasting; --json FILE writes everything measured.
Run it with the project's Python (.venv/bin/python) from anywhere; HYPERVER_DATA as for the tests.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PY = sys.executable


def run(cmd: list[str], timeout: float | None = None) -> tuple[str, float, int]:
    """(stdout + stderr, seconds, exit code) of a command run in the repository root."""
    env = {**os.environ, "HYPERVER_DATA": os.environ.get("HYPERVER_DATA", str(REPO.parent / "shared" / "data"))}
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - t0
    return p.stdout + p.stderr, seconds, p.returncode


def minutes(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


def shown(cmd: list[str]) -> str:
    return " ".join(str(c).replace(str(REPO) + "/", "") for c in cmd)


@dataclass
class Figure:
    name: str
    what: str
    readme: list[str]                      # regexes of the README lines that hold the figure
    measure: Callable[["Figure", Path], dict[str, Any]]
    quick: bool = True
    out: dict[str, Any] = field(default_factory=dict)


# -- measurements ------------------------------------------------------------------------------------
def test_count(fig: Figure, tmp: Path) -> dict[str, Any]:
    cmd = [PY, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    text, seconds, code = run(cmd)
    m = re.search(r"(\d+) tests? collected", text)
    if code != 0 or not m:
        return {"command": shown(cmd), "error": text.strip().splitlines()[-5:]}
    return {"command": shown(cmd), "tests": int(m.group(1)), "collect_s": round(seconds, 1),
            "summary": f"{m.group(1)} tests"}


def suite_time(fig: Figure, tmp: Path) -> dict[str, Any]:
    cmd = [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    text, seconds, code = run(cmd)
    last = [ln for ln in text.strip().splitlines() if re.search(r"\d+ (passed|failed)", ln)]
    counts = dict((k, int(v)) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", last[-1] if last else ""))
    return {"command": shown(cmd), "exit_code": code, **counts, "wall_s": round(seconds, 1),
            "summary": f"{counts.get('passed', 0)} passed" + (f", {counts['skipped']} skipped" if counts.get("skipped") else "")
                       + (f", {counts['failed']} FAILED" if counts.get("failed") else "") + f" in {minutes(seconds)} of pytest"}


def demo(fig: Figure, tmp: Path, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    report = tmp / f"{fig.name}.json"
    beside = Path(PY).with_name("hyperver")              # the venv's console script
    hyperver = [str(beside)] if beside.is_file() else [PY, "-c", "import sys; from hyperver.cli import main; sys.exit(main())"]
    cmd = [*hyperver, "demo", *extra, "--out", str(report)]
    text, seconds, code = run(cmd)
    keep = REPO / "cache" / "readme_figures" / f"{fig.name}.txt"
    keep.parent.mkdir(parents=True, exist_ok=True)
    keep.write_text(text)
    own = json.loads(report.read_text()).get("wall_s") if report.is_file() else None
    out = {"command": shown(cmd), "exit_code": code, "wall_s": round(seconds, 1), "report_block": str(keep.relative_to(REPO))}
    if own is not None:
        out["demo_s"] = round(own, 1)
    out["summary"] = (f"{minutes(seconds)} wall clock (the demo's own count: {minutes(own)})" if own is not None
                      else f"exit {code} after {minutes(seconds)}: see {out['report_block']}")
    return out


def server_limits(fig: Figure, tmp: Path) -> dict[str, Any]:
    out_json = tmp / "server_limits.json"
    cmd = [PY, "benchmarks/server_limits.py", "--out", str(out_json)]
    text, seconds, code = run(cmd)
    if code != 0 or not out_json.is_file():
        return {"command": shown(cmd), "error": text.strip().splitlines()[-5:]}
    r = json.loads(out_json.read_text())
    keys = ("worst_photo_ms", "worst_photo_mb", "concurrent_worst_ms")
    return {"command": shown(cmd), **{k: r[k] for k in keys}, "wall_s": round(seconds, 1),
            "summary": f"worst photo {r['worst_photo_ms']:.0f} ms, {r['worst_photo_mb']:.0f} MB; ordinary identify "
                       f"behind {r['queued']['concurrent_requests']} worst-case requests {r['concurrent_worst_ms']:.0f} ms"}


FIGURES = [
    Figure("test-count", "tests in the suite (collected, not run)",
           [r"\d+ passed\b"], test_count),
    Figure("suite-time", "the whole suite: passed/skipped and its time (~15 min on 2 cores)",
           [r"\d+ passed\b", r"min \d+ s of pytest"], suite_time, quick=False),
    Figure("demo", "`hyperver demo`: its wall time and its report (the README's demo block)",
           [r"about a minute", r"\d+ s of demo", r"HyperVer demo: .*\d+ s\s*$"], demo),
    Figure("demo-lut", "`hyperver demo --measure-lut` (measures a quick LUT first; ~4 min)",
           [r"--measure-lut --out", r"then took .* wall clock"],
           lambda fig, tmp: demo(fig, tmp, ("--measure-lut",)), quick=False),
    Figure("server-limits", "benchmarks/server_limits.py: the worst photo's cost and a queued ordinary request",
           [r"Worst photo: [\d,]+ ms", r"identify sent behind", r"^\d[\d,.]* ms \(target"], server_limits),
]


def readme_lines(patterns: list[str]) -> list[tuple[int, str]]:
    """README lines matching any pattern (not the lines that describe this script)."""
    lines = README.read_text().splitlines()
    return [(i + 1, ln) for i, ln in enumerate(lines)
            if any(re.search(p, ln) for p in patterns) and "readme_figures" not in ln and "measured: " not in ln]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", metavar="NAME", help="these figures (see --list)")
    ap.add_argument("--all", action="store_true", help="every figure, the slow ones too")
    ap.add_argument("--list", action="store_true", help="list the figures and exit")
    ap.add_argument("--json", metavar="FILE", help="also write what was measured as JSON")
    args = ap.parse_args()
    by_name = {f.name: f for f in FIGURES}
    if args.list:
        for f in FIGURES:
            print(f"{f.name:14s} {'quick' if f.quick else 'slow '}  {f.what}")
        return 0
    unknown = set(args.only or ()) - set(by_name)
    if unknown:
        ap.error(f"unknown figure(s) {sorted(unknown)}; one of {sorted(by_name)}")
    chosen = [by_name[n] for n in args.only] if args.only else [f for f in FIGURES if f.quick or args.all]
    results = {}
    with tempfile.TemporaryDirectory(prefix="readme_figures_") as tmp:
        for fig in chosen:
            print(f"== {fig.name}: {fig.what}", flush=True)
            fig.out = fig.measure(fig, Path(tmp))
            results[fig.name] = fig.out
            print(f"   command : {fig.out['command']}")
            if "error" in fig.out:
                print("   FAILED  : " + "\n             ".join(fig.out["error"]))
            else:
                print(f"   measured: {fig.out['summary']}")
            print("   README  :" + ("" if readme_lines(fig.readme) else " (no line matches: has the wording changed?)"))
            for n, line in readme_lines(fig.readme):
                print(f"     README.md:{n}: {line.strip()[:200]}")
            if "report_block" in fig.out:
                print(f"   the README's demo block (```text ... ```) <- {fig.out['report_block']}")
            print(flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 1 if any("error" in r or r.get("exit_code") not in (None, 0) for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
