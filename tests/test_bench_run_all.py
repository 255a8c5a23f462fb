"""bench/run_all.py runs every benchmark in bench/, or names it with the reason it does not."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_run_all_runs_every_benchmark_or_says_why_not() -> None:
    spec = importlib.util.spec_from_file_location("run_all", BENCH / "run_all.py")
    assert spec is not None and spec.loader is not None
    run_all = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_all)
    run = {p.name for p in run_all.benchmarks()}
    scripts = {p.name for p in BENCH.glob("*.py")}
    assert scripts == run | set(run_all.NOT_RUN), \
        f"neither run nor named in NOT_RUN: {sorted(scripts - run - set(run_all.NOT_RUN))}"
    assert not run & set(run_all.NOT_RUN)
    assert set(run_all.NEEDS_ROOT) <= run


def test_benchmarks_take_their_inputs_from_the_repository() -> None:
    """A benchmark found its trace in a folder beside the clone (``REPO.parent``), so on a
    newcomer's clone it failed with FileNotFoundError."""
    for script in sorted(BENCH.glob("*.py")):
        text = script.read_text(encoding="utf-8")
        assert "REPO.parent /" not in text, f"{script.name} reaches outside the repository"
        for name in re.findall(r'"traces" / "([^"]+)"', text):
            assert (BENCH.parent / "hil_tests" / "traces" / name).is_file(), (script.name, name)


def test_run_all_help_and_list_run_nothing() -> None:
    """``run_all.py --help`` once started every benchmark (an hour, 750 MB of memory)."""
    for flag in ("--help", "--list"):
        out = subprocess.run([sys.executable, str(BENCH / "run_all.py"), flag],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert "=====" not in out.stdout, out.stdout
    assert "bench_fleet.py" in out.stdout and "not run: fleet_sim.py" in out.stdout
