"""Things a working lift does that must not raise events (false alarms lose trust)."""

from __future__ import annotations

import pytest
from synthlift import SynthLift, events, raised

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("sources", ["both", "sensors"])
def test_contact_chatter_during_normal_trips(sources: str) -> None:
    lift = SynthLift(sources=sources)
    lift.idle(1).set(presence=1)
    for k, to in enumerate(["4", "1", "5", "2"]):
        for name, at in (("door_closed", 2.0), ("door_lock", 3.0), ("zone_up", 0.8),
                         ("zone_down", 4.5)):
            lift.chatter(name, at=at + 0.1 * k, count=4, width=0.05, gap=0.05)
        lift.trip(to).idle(0.5)
        lift.chatter("zone_up", at=0.2, count=3)           # vane chatter at the stop
        lift.chatter("door_closed", at=0.3, count=2)       # door contact bounces shut
        lift.idle(1).door_cycle(dwell_s=3).idle(1)
    out = lift.run()
    assert events(out) == []
    assert len([o for o in out if o["type"] == "door"]) == 4      # chatter is no cycle
    assert len([o for o in out if o["type"] == "trip"]) == 4


def test_door_contact_blips_do_not_restart_the_entrapment_timer() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1).set(presence=1).trip("3")
    stop = lift.t
    for _ in range(8):
        lift.idle(5).pulse("door_closed", 0.05)
    lift.idle(20)
    (r,) = raised(lift.run(), "entrapment_level")
    assert stop + 45 <= r["t"] <= stop + 46


def test_brief_alarm_presses_at_an_open_door() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1).set(presence=1).open_door().idle(1)
    for width in (0.3, 1.0, 2.0, 4.5):           # children, curious passengers
        lift.set(alarm_button=1).idle(width).set(alarm_button=0).idle(2)
    lift.close_door().idle(1).trip("3").idle(1).door_cycle().set(presence=0).idle(2)
    assert events(lift.run()) == []


@pytest.mark.parametrize("sources", ["both", "sensors", "controller"])
def test_person_standing_in_stopped_car_with_door_open(sources: str) -> None:
    lift = SynthLift(sources=sources)
    lift.idle(1).open_door().set(presence=1).idle(70)     # below the 80 s held-open limit
    lift.close_door().idle(1).trip("3").idle(1).open_door().set(presence=0).idle(3)
    lift.close_door().idle(2)
    assert events(lift.run()) == []


def test_inspection_mode_faults_are_suppressed() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1).set(inspection=1).idle(1)
    # the technician runs the car slowly with the safety chain and doors worked on
    lift.set(safety_ok=0).idle(3).set(safety_ok=1)
    lift.pulse_at("door_closed", at=3.0, width=2.0).pulse_at("door_lock", at=3.0, width=2.0)
    lift.move(4.8, v=0.1)              # 48+ s run at inspection speed, out of zone
    lift.idle(60)                      # parked between floors, empty
    lift.move(-1.6, v=0.1)             # back level at a landing
    lift.idle(2).set(inspection=0).idle(10)
    out = lift.run()
    assert [e["code"] for e in events(out)] == ["mode_change", "mode_change"]


def test_busy_hour_of_normal_service() -> None:
    lift = SynthLift(sources="both")
    lift.idle(2)
    plan = ["4", "1", "5", "B1", "3", "2", "5", "1", "4", "B1", "2", "3"]
    for k, to in enumerate(plan):
        lift.set(presence=1).idle(1).trip(to).idle(0.3)
        lift.door_cycle(dwell_s=4 + k % 3, reopens=k % 4 == 0).set(presence=0).idle(8)
    lift.idle(120)                     # parked, door closed, nobody inside
    out = lift.run()
    assert events(out) == []
    assert len([o for o in out if o["type"] == "trip"]) == len(plan)


def test_presence_blip_in_a_parked_closed_car() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1).trip("3").idle(60).pulse("presence", 0.5).idle(60)
    assert events(lift.run()) == []
    # presence that appears in a closed car and stays counts from its first sight
    lift = SynthLift(sources="both")
    lift.idle(1).trip("3").idle(60).set(presence=1)
    seen = lift.t
    lift.idle(50)
    (r,) = raised(lift.run(), "entrapment_level")
    assert seen + 45 <= r["t"] <= seen + 46


def test_two_hours_of_normal_operation_raise_nothing() -> None:
    """A long run of ordinary service (the 24 h figure is in bench/bench_detect.py)."""
    lift = SynthLift(sources="both")
    lift.idle(1)
    plan = ["4", "B1", "3", "5", "2", "1"]
    k = 0
    while lift.t < 7200:
        lift.open_door().set(presence=1).idle(2 + k % 3).close_door()
        lift.idle(1).trip(plan[k % len(plan)]).idle(0.3)
        lift.door_cycle(dwell_s=3 + k % 4, reopens=int(k % 9 == 0)).set(presence=0)
        lift.idle(20 + 15 * (k % 5))
        k += 1
    out = lift.run()
    assert events(out) == []
    assert len([o for o in out if o["type"] == "trip"]) == k
