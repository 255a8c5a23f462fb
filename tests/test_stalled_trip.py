"""A trip that stops between floors, and the rescue's relevel, as people read them (issue
13): ``liftwatch replay --format text`` and ``liftwatch plot`` say "stopped between 3 and
4" and "between 3 and 4 -> 4" (not a landing, not "4 -> 4"), and flag the emergency
stop's figures as not ride quality. The trace is made by tests/synthlift.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from liftwatch.agent.cli import main
from liftwatch.agent.replay import build_pipeline, describe, replay_records
from liftwatch.agent.tools import plot
from liftwatch.drivers.trace import TraceReader
from synthlift import SynthLift

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def stall_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """From 2 up toward 4, stopped three quarters of the way (past 3), then relevelled
    to 4; an accelerometer on the car."""
    lift = SynthLift(sources="both", start="2", accel=True)
    lift.idle(3).stall_between_floors("4", fraction=0.75).idle(6).relevel("4").idle(4)
    return lift.write(tmp_path_factory.mktemp("stall") / "stall.jsonl.gz")


def test_replay_text_tells_the_stop_between_floors_and_the_rescue(stall_trace: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "liftwatch.agent.cli", "replay", str(stall_trace),
                        "--format", "text", "--quiet"], cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    stall, rescue = [ln for ln in r.stdout.splitlines() if " trip " in ln
                     and not ln.startswith("#")]  # the heading line
    assert "trip 1: 2 -> stopped between 3 and 4: " in stall  # numbered as plot --trip
    assert "EMERGENCY STOP: d_max" in stall and "(a fault stop, not ride quality)" in stall
    assert "a_max" not in stall  # no ride-quality reading of a fault stop
    assert "trip 2: between 3 and 4 -> 4: " in rescue and "EMERGENCY" not in rescue


def test_the_plot_of_the_stalled_trip_says_so(stall_trace: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with TraceReader(stall_trace) as r:
        trip, rescue = [x for x in replay_records(r, build_pipeline(r.header, None))
                        if x["type"] == "trip"]
    title = plot.title_of(trip, 1)
    assert title.startswith("trip 1: 2 → stopped between 3 and 4 (up), ")
    assert title.endswith("EMERGENCY STOP: the figures are the fault stop's, not ride quality")
    assert plot.title_of(rescue, 2).startswith("trip 2: between 3 and 4 → 4 (up), ")
    assert plot.title_of(rescue, 2).endswith("ISO 18738-1 figures")
    out = tmp_path / "stall.png"
    assert main(["plot", str(stall_trace), "--trip", "1", "--out", str(out),
                 "--size", "400x300"]) == 0
    assert "(2 -> stopped between 3 and 4, " in capsys.readouterr().out and out.exists()


def test_an_incomplete_trip_is_not_said_to_have_stopped() -> None:
    rec = {"t": 9.0, "type": "trip", "from": "1", "to": "1", "t_start": 5.0, "t_end": 9.0,
           "level": False, "to_between": ["1", "2"], "complete": False}
    assert describe(rec).endswith("trip 1 -> between 1 and 2 (cut short: the input ended)")
