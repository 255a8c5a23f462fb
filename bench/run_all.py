"""Run every benchmark in bench/ one after the other, with its defaults, and print their
figures (three hours or more: bench_wear streams six 30-day lifts at 400 Hz, about 2 h 45 min on
2 cores, and bench_footprint runs the agent for 10 minutes).

    .venv/bin/python bench/run_all.py [--list]

Every ``bench_*.py`` is run; what is not, and why, is in :data:`NOT_RUN` and
:data:`NEEDS_ROOT` and printed (``tests/test_bench_run_all.py`` keeps this list whole).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: scripts in bench/ that are not run here, and why
NOT_RUN = {
    "run_all.py": "this script",
    "fleet_sim.py": "run by bench_fleet.py, beside the real uplinks it simulates",
}
#: benchmarks that need root, and what for; skipped (and said so) without it
NEEDS_ROOT = {
    "bench_disk_full.py": "it mounts a 2 MB tmpfs to fill",
}


def benchmarks() -> list[Path]:
    """Every benchmark run_all runs, in name order."""
    return sorted(p for p in HERE.glob("bench_*.py") if p.name not in NOT_RUN)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true",
                    help="list what would run (and what would not, and why) and run nothing")
    args = ap.parse_args()
    if args.list:
        for script in benchmarks():
            root = f" (needs root: {NEEDS_ROOT[script.name]})" if script.name in NEEDS_ROOT else ""
            print(f"{script.name}{root}")
        for name, why in NOT_RUN.items():
            print(f"not run: {name} ({why})")
        return 0
    failed, skipped = [], []
    for name, why in NOT_RUN.items():
        print(f"not run: {name} ({why})")
    for script in benchmarks():
        print(f"===== {script.name}", flush=True)
        if script.name in NEEDS_ROOT and os.geteuid() != 0:
            print(f"skipped: needs root ({NEEDS_ROOT[script.name]}): "
                  f"sudo {sys.executable} bench/{script.name}", flush=True)
            skipped.append(script.name)
            continue
        rc = subprocess.call([sys.executable, str(script)], cwd=HERE.parent)
        if rc:
            failed.append(script.name)
    if skipped:
        print("skipped (needs root): " + ", ".join(skipped))
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
