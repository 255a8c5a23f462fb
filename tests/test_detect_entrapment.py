"""Entrapment (level and between floors) and the EN 81-28 alarm button."""

from __future__ import annotations

import pytest
from synthlift import SynthLift, cleared, events, raised

pytestmark = pytest.mark.timeout(60)


def on_time(out, code: str, t_cond: float, timer: float) -> dict:
    """Raised exactly once, not before its timer and within 1 s after it."""
    (r,) = raised(out, code)
    assert t_cond + timer <= r["t"] <= t_cond + timer + 1.0, (r, t_cond + timer)
    return r


def stuck_level(sources: str = "both", wait: float = 60.0, **kw) -> tuple[SynthLift, float]:
    """A person rides to 3; the car stops level and the door never opens."""
    lift = SynthLift(sources=sources, **kw)
    lift.idle(1).door_cycle().idle(1)
    lift.set(presence=1).idle(1)     # person boards (presence after the door closed)
    lift.trip("3")
    stop = lift.t
    lift.idle(wait)
    return lift, stop


@pytest.mark.parametrize("sources", ["both", "sensors", "controller"])
def test_entrapment_level_on_time_and_clears_on_door_open(sources: str) -> None:
    lift, stop = stuck_level(sources)
    lift.open_door().idle(2)
    out = lift.run()
    r = on_time(out, "entrapment_level", stop, 45.0)
    assert r["sev"] == "alarm"
    (c,) = cleared(out, "entrapment_level")
    assert c["id"] == r["id"]
    assert c["t"] <= lift.t - 2.0 + 0.2          # at the door opening
    assert not raised(out, "entrapment_nonlevel")


def test_entrapment_level_counts_from_door_closing_when_later() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1).door_cycle().set(presence=1).trip("3").idle(1).open_door().idle(3)
    lift.close_door()
    closed = lift.t - 0.5                 # the contact made 0.5 s before close_door ended
    lift.idle(50)
    on_time(lift.run(), "entrapment_level", closed, 45.0)


def test_entrapment_level_near_miss_door_opens_at_44s() -> None:
    lift, stop = stuck_level(wait=44.0)
    lift.open_door().idle(20)
    assert not events(lift.run(), "entrapment_level")


def test_entrapment_clears_when_presence_gone_30s() -> None:
    lift, stop = stuck_level(wait=50.0)
    lift.set(presence=0)
    gone = lift.t
    lift.idle(35)
    out = lift.run()
    (c,) = cleared(out, "entrapment_level")
    assert gone + 30.0 <= c["t"] <= gone + 31.0


def test_no_entrapment_without_presence() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1).trip("3").idle(100)
    assert not [e for e in events(lift.run()) if e["code"].startswith("entrapment")]


def stall(sources: str = "both", wait: float = 40.0, **kw) -> tuple[SynthLift, float]:
    lift = SynthLift(sources=sources, **kw)
    lift.idle(1).set(presence=1).idle(1).stall_between_floors("4")
    stop = lift.t
    lift.idle(wait)
    return lift, stop


@pytest.mark.parametrize("sources", ["both", "sensors", "controller"])
def test_entrapment_nonlevel_on_time_and_clears_after_relevel_and_door(sources: str) -> None:
    lift, stop = stall(sources)
    lift.relevel("3").idle(1).open_door().idle(2)
    out = lift.run()
    r = on_time(out, "entrapment_nonlevel", stop, 30.0)
    assert r["detail"]["level"] is False
    (c,) = cleared(out, "entrapment_nonlevel")
    assert c["t"] >= lift.t - 5.5
    assert not raised(out, "entrapment_level")          # the relevel stop is the same callout
    assert not raised(out, "stopped_outside_zone")      # with a person it is entrapment


def test_entrapment_nonlevel_near_miss_relevel_and_open_at_29s() -> None:
    lift, stop = stall(wait=29.0)
    lift.relevel("3").open_door().idle(20)
    out = lift.run()
    assert not raised(out, "entrapment_nonlevel")


def test_entrapment_detected_when_controller_link_drops_during_it() -> None:
    # controller-only terminal: the door/zone view comes from the controller alone
    lift = SynthLift(sources="controller")
    lift.idle(1).set(presence=1).idle(1).stall_between_floors("4")
    stop = lift.t
    lift.idle(10).link("absent").idle(30)
    out = lift.run()
    on_time(out, "entrapment_nonlevel", stop, 30.0)
    assert raised(out, "controller_link_lost")


def test_entrapment_with_link_drop_on_both_source_terminal() -> None:
    lift, stop = stall("both", wait=5.0)
    lift.link("null").idle(40)
    out = lift.run()
    on_time(out, "entrapment_nonlevel", stop, 30.0)


def test_entrapment_without_presence_input_inferred_from_alarm_press() -> None:
    lift = SynthLift(sources="controller", inputs=("alarm_button",))
    lift.idle(1).stall_between_floors("4")
    stop = lift.t
    lift.idle(3).set(alarm_button=1).idle(1).set(alarm_button=0).idle(40)
    out = lift.run()
    on_time(out, "entrapment_nonlevel", stop, 30.0)


def test_alarm_button_on_time_and_clear() -> None:
    lift = SynthLift(sources="both")
    lift.idle(2).set(alarm_button=1)
    press = lift.t
    lift.idle(2).set(alarm_button=0)
    release = lift.t
    lift.idle(2)
    out = lift.run()
    on_time(out, "alarm_button", press, 0.5)
    (c,) = cleared(out, "alarm_button")
    assert release <= c["t"] <= release + 0.2


def test_alarm_button_near_miss_short_press() -> None:
    lift = SynthLift(sources="both")
    lift.idle(2).set(alarm_button=1).idle(0.4).set(alarm_button=0).idle(3)
    assert not events(lift.run(), "alarm_button")


def test_alarm_button_filtered_at_open_door_unless_held_5s() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1).open_door().idle(1).set(alarm_button=1).idle(3).set(alarm_button=0).idle(2)
    assert not events(lift.run(), "alarm_button")
    lift = SynthLift(sources="both")
    lift.idle(1).open_door().idle(1).set(alarm_button=1)
    press = lift.t
    lift.idle(6).set(alarm_button=0).idle(1)
    r = on_time(lift.run(), "alarm_button", press, 5.0)
    assert r["detail"]["bypass"] is True


def test_alarm_button_stays_raised_while_entrapped() -> None:
    lift, stop = stall(wait=35.0)
    lift.set(alarm_button=1).idle(3).set(alarm_button=0).idle(20)
    lift.relevel("3").open_door().idle(1)
    out = lift.run()
    (a,) = raised(out, "alarm_button")
    (c,) = cleared(out, "alarm_button")
    (e,) = cleared(out, "entrapment_nonlevel")
    assert c["t"] == e["t"]            # cleared with the entrapment, not at the release
    assert a["t"] < c["t"]


def test_alarm_and_entrapment_not_suppressed_by_inspection() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1).set(presence=1).stall_between_floors("4").set(inspection=1).idle(35)
    lift.set(alarm_button=1).idle(1)
    out = lift.run()
    assert raised(out, "entrapment_nonlevel") and raised(out, "alarm_button")
    assert not raised(out, "stopped_outside_zone")
