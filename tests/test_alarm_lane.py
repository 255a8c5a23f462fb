"""The alarm lane is never throttled (issue 23, item 1).

EN 81-28 expects every alarm to reach the rescue service. The daily cap that keeps a
chattering fault from flooding the platform must not apply to alarms: 25 one-second
prank presses and then a passenger holding the button for 20 s must give 26
``alarm_button`` raises, the last one the genuine hold. Pranks are reported as a
pattern (``alarm_button_abuse``), never filtered.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Broker
from synthlift import SynthLift, cleared, raised
from uplink_helpers import LIFT, Observer, write_config

PRANKS = 25


def pranks_then_genuine(lift: SynthLift, pranks: int = PRANKS, gap_s: float = 4.0,
                        press_s: float = 1.0, hold_s: float = 20.0) -> SynthLift:
    """A car standing level with its door closed: ``pranks`` presses of ``press_s``,
    then a real hold of ``hold_s``."""
    lift.idle(2)
    for _ in range(pranks):
        lift.set(alarm_button=1).idle(press_s).set(alarm_button=0).idle(gap_s)
    return lift.set(alarm_button=1).idle(hold_s).set(alarm_button=0).idle(5)


def test_pranks_then_a_genuine_hold_every_press_is_raised_past_the_daily_cap() -> None:
    lift = pranks_then_genuine(SynthLift(sources="controller"))
    out = lift.run(max_per_day=20)
    presses = raised(out, "alarm_button")
    assert len(presses) == PRANKS + 1
    clears = cleared(out, "alarm_button")
    assert len(clears) == PRANKS + 1
    # the genuine press is the last one: raised after alarm_press_s, held 20 s
    assert clears[-1]["id"] == presses[-1]["id"]
    assert clears[-1]["duration_s"] == pytest.approx(20.0 - 0.5, abs=0.3)
    # the prank pattern was told, and the genuine hold cleared the report at once
    (abuse,) = raised(out, "alarm_button_abuse")
    assert abuse["sev"] == "warning" and abuse["detail"]["presses"] == 5
    (abuse_clear,) = cleared(out, "alarm_button_abuse")
    genuine_t = presses[-1]["t"] - 0.5
    assert genuine_t + 3.0 <= abuse_clear["t"] <= genuine_t + 3.3


def test_entrapment_alarms_are_never_capped() -> None:
    lift = SynthLift(sources="controller")
    for _ in range(4):
        lift.set(presence=1).idle(50).ctl_set(door=3).idle(2).ctl_set(door=5).set(presence=0)
        lift.idle(35)
    out = lift.run(max_per_day=1)
    assert len(raised(out, "entrapment_level")) == 4


def test_a_fault_is_still_capped_and_counted() -> None:
    lift = SynthLift(sources="controller")
    for _ in range(4):
        lift.ctl_set(safety=1).idle(1).ctl_set(safety=0).idle(3)
    out = lift.run(max_per_day=2)
    assert len(raised(out, "safety_circuit_open")) == 2


def test_abuse_is_not_raised_for_presses_spread_beyond_the_window() -> None:
    lift = SynthLift(sources="controller")
    lift.idle(1)
    for _ in range(6):
        lift.set(alarm_button=1).idle(1).set(alarm_button=0).idle(150)
    out = lift.run()
    assert len(raised(out, "alarm_button")) == 6
    assert not raised(out, "alarm_button_abuse")


def test_abuse_clears_when_the_pranks_stop() -> None:
    lift = SynthLift(sources="controller")
    lift.idle(1)
    for _ in range(5):
        lift.set(alarm_button=1).idle(0.3).set(alarm_button=0).idle(2)
    lift.idle(620)
    out = lift.run()
    assert not raised(out, "alarm_button")          # taps below alarm_press_s
    (r,) = raised(out, "alarm_button_abuse")
    (c,) = cleared(out, "alarm_button_abuse")
    assert c["t"] - r["t"] == pytest.approx(600.0, abs=1.0)


def test_a_technician_testing_the_button_in_inspection_is_no_prank() -> None:
    lift = SynthLift(sources="controller")
    lift.idle(1).ctl_set(mode=2).idle(1)
    for _ in range(8):
        lift.set(alarm_button=1).idle(1).set(alarm_button=0).idle(2)
    out = lift.run()
    # every test press is an alarm (never suppressed by mode: EN 81-28) ...
    assert len(raised(out, "alarm_button")) == 8
    # ... and no prank pattern
    assert not raised(out, "alarm_button_abuse")


def test_presses_of_a_trapped_passenger_are_no_prank() -> None:
    lift = SynthLift(sources="controller")
    lift.set(presence=1).idle(50)        # entrapment_level after 45 s
    for _ in range(8):
        lift.set(alarm_button=1).idle(1).set(alarm_button=0).idle(2)
    out = lift.run()
    assert raised(out, "entrapment_level")
    assert not raised(out, "alarm_button_abuse")


@pytest.mark.timeout(120)
def test_pranks_then_genuine_hold_reach_a_real_broker(broker: Broker, tmp_path: Path) -> None:
    """The whole agent (``run --trace``) against Mosquitto: every press arrives, the
    genuine one last, with the abuse warning beside them."""
    lift = pranks_then_genuine(SynthLift(landings=["1", "2"], heights=[0.0, 3.0],
                                         sources="controller"))
    trace = lift.write(tmp_path / "pranks.jsonl")
    cfg = write_config(tmp_path, broker.port)
    obs = Observer(broker.port)
    r = subprocess.run([sys.executable, "-m", "liftwatch.agent.cli", "run", "--allow-root",
                        "--config", str(cfg), "--trace", str(trace), "--other-lift",
                        "--speed", "20", "--drain-s", "10"],
                       capture_output=True, text=True, timeout=100)
    assert r.returncode == 0, r.stderr[-2000:]
    topic = f"lift/{LIFT}/event"
    assert obs.wait_for(lambda g: sum(1 for m in g if m.topic == topic
                                      and m.json()["state"] == "cleared"
                                      and m.json()["code"] == "alarm_button") >= PRANKS + 1,
                        10)
    events = [m.json() for m in obs.got if m.topic == topic]
    obs.close()
    raises = [e for e in events if e["code"] == "alarm_button" and e["state"] == "raised"
              and e["repeat"] == 0]
    assert len(raises) == PRANKS + 1
    last_clear = [e for e in events if e["code"] == "alarm_button" and e["state"] == "cleared"]
    assert last_clear[-1]["eid"] == raises[-1]["eid"] and last_clear[-1]["duration_s"] > 19
    assert any(e["code"] == "alarm_button_abuse" and e["state"] == "raised" for e in events)
