"""How long a technician waits for ``liftwatch config check`` (issue 2 benchmark).

Prints: in-process ``load_config`` time per example file (mean of N runs, after one
warm-up), peak RSS of this process, and the wall time of the whole command as a
fresh process — through the ``liftwatch`` dispatcher and through the config
subcommand module alone (the difference is what the dispatcher imports).

    .venv/bin/python bench/bench_config.py [--runs 200]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from liftwatch.agent.config import load_config

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "firmware_config" / "examples").glob("*.toml"))


def _wall(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--process-runs", type=int, default=5)
    args = parser.parse_args()
    for path in EXAMPLES:
        load_config(path)  # warm-up: imports, profile files in the page cache
        t0 = time.perf_counter()
        for _ in range(args.runs):
            load_config(path)
        per = (time.perf_counter() - t0) / args.runs
        print(f"load_config {path.name:<22} {per * 1e3:7.2f} ms per file")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process        {rss_mb:7.1f} MB")
    files = [str(p.relative_to(REPO)) for p in EXAMPLES]
    via_cli = _wall([sys.executable, "-m", "liftwatch.agent.cli", "config", "check", *files],
                    args.process_runs)
    direct = _wall([sys.executable, "-m", "liftwatch.agent.tools.config_cmd", "check", *files],
                   args.process_runs)
    n = f"({len(files)} files)"
    print(f"liftwatch config check {n} {via_cli * 1e3:6.0f} ms wall, fresh process")
    print(f"tools.config_cmd alone {n} {direct * 1e3:6.0f} ms wall, fresh process")
    return 0


if __name__ == "__main__":
    sys.exit(main())
