"""Door cycles and trips from the controller, the terminal's inputs, or both."""

from __future__ import annotations

import pytest
from synthlift import SynthLift

pytestmark = pytest.mark.timeout(60)


def doors(out):
    return [o for o in out if o["type"] == "door"]


def trips(out):
    return [o for o in out if o["type"] == "trip"]


@pytest.mark.parametrize("sources", ["both", "controller"])
def test_door_timing_from_controller_state(sources: str) -> None:
    lift = SynthLift(sources=sources)
    lift.idle(2).door_cycle(open_s=3.0, dwell_s=4.0, close_s=3.2).idle(2)
    (d,) = doors(lift.run())
    assert d["floor"] == "1"
    assert d["open_s"] == pytest.approx(3.0, abs=0.21)    # one poll of resolution
    assert d["close_s"] == pytest.approx(3.2, abs=0.21)
    assert d["reopens"] == 0
    assert d["t_start"] == pytest.approx(2.0, abs=0.21)
    assert d["t_closed"] == pytest.approx(12.2, abs=0.21)


def test_door_contact_only_reports_dwell_not_motion_times() -> None:
    lift = SynthLift(sources="sensors")
    lift.idle(2).door_cycle(open_s=3.0, dwell_s=4.0, close_s=3.0).idle(2)
    (d,) = doors(lift.run())
    # a contact sees closed / not closed only: no opening or closing time
    assert d["open_s"] is None and d["close_s"] is None
    assert d["src"] == "contact"
    assert d["dwell_s"] == pytest.approx(3.0 + 4.0 + 3.0 - 0.1, abs=0.01)
    # the cycle is over when the lock circuit makes after the contact
    assert d["t"] == pytest.approx(d["t_closed"] + 0.3, abs=0.01)


def test_reopens_counted_from_controller_and_from_touching_contact() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1).door_cycle(reopens=3).idle(1)
    (d,) = doors(lift.run())
    assert d["reopens"] == 3
    lift = SynthLift(sources="sensors")
    lift.idle(1).door_cycle(reopens=2, touch=True).idle(1)
    (d,) = doors(lift.run())
    assert d["reopens"] == 2


def test_contact_only_without_lock_input_ends_cycle_after_gap() -> None:
    ins = ("door_closed", "zone_up", "zone_down", "presence", "run")
    lift = SynthLift(sources="sensors", inputs=ins)
    lift.idle(1).door_cycle(dwell_s=2).idle(3)
    (d,) = doors(lift.run())
    assert d["t"] == pytest.approx(d["t_closed"] + 1.0, abs=0.11)


@pytest.mark.parametrize("sources", ["both", "controller", "sensors"])
def test_trips_have_floors_and_times(sources: str) -> None:
    lift = SynthLift(sources=sources)
    lift.idle(2).trip("4").idle(3).door_cycle().idle(1).trip("B1").idle(2)
    out = lift.run()
    ts = trips(out)
    assert len(ts) == 2
    assert ts[0]["t_end"] > ts[0]["t_start"] >= 2.0
    assert ts[0]["dir"] in ("up", None)
    if sources != "sensors":          # floors need the controller or an accelerometer
        assert (ts[0]["from"], ts[0]["to"]) == ("1", "4")
        assert (ts[1]["from"], ts[1]["to"]) == ("4", "B1")
        assert ts[0]["distance_m"] == pytest.approx(9.6)
        assert ts[1]["dir"] == "down"
    assert len(doors(out)) == 1
    assert not [o for o in out if o["type"] == "event"]


def test_door_cycle_without_trip_and_several_cycles_at_one_stop() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1).door_cycle().idle(5).door_cycle().idle(1)
    ds = doors(lift.run())
    assert len(ds) == 2 and all(d["reopens"] == 0 for d in ds)


def test_finish_closes_an_open_trip() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1).set(run=1).ctl_set(run=1, dir=1).idle(3)
    out = lift.run()
    (t,) = trips(out)
    assert t["complete"] is False and t["t_start"] == pytest.approx(1.0, abs=0.01)


def test_finish_reports_a_door_cycle_still_open() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1).open_door(3.0).idle(4)
    (d,) = doors(lift.run())
    assert d["complete"] is False and d["close_s"] is None and d["t_closed"] is None
    assert d["open_s"] == pytest.approx(3.0, abs=0.21)
    assert d["dwell_s"] == pytest.approx(7.0, abs=0.01)


@pytest.mark.parametrize("sources", ["both", "controller"])
def test_a_stall_between_floors_and_the_rescue_say_where_the_car_was(sources: str) -> None:
    # up from 2 toward 4, stopped three quarters of the way: past 3, short of 4
    lift = SynthLift(sources=sources, start="2")
    lift.idle(2).stall_between_floors("4", fraction=0.75).idle(5).relevel("4").idle(3)
    # and down: from 4 toward 1, stopped past 3, short of 2
    lift.stall_between_floors("1", fraction=0.4).idle(5).relevel("2").idle(3)
    stall, rescue, stall_down, rescue_down = trips(lift.run())
    assert (stall["from"], stall["to"], stall["to_between"]) == ("2", "3", ["3", "4"])
    assert stall["level"] is False and stall["emergency_stop"] is True
    assert "from_between" not in stall
    # the relevel starts where the stall left the car and ends level at a landing
    assert (rescue["from_between"], rescue["to"]) == (["3", "4"], "4")
    assert "to_between" not in rescue and "emergency_stop" not in rescue
    assert "level" not in rescue
    assert (stall_down["to_between"], stall_down["dir"]) == (["2", "3"], "down")
    assert (rescue_down["from_between"], rescue_down["to"]) == (["2", "3"], "2")


def test_a_trip_cut_by_the_end_of_input_is_no_emergency_stop() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1).set(run=1).ctl_set(run=1, dir=1, zone=0).set(zone_up=0, zone_down=0).idle(3)
    (t,) = trips(lift.run())
    assert t["complete"] is False and t["level"] is False
    assert t["to_between"] == ["1", "2"] and "emergency_stop" not in t


def test_ordinary_trips_carry_no_stop_marks() -> None:
    lift = SynthLift(sources="both")
    lift.idle(2).trip("4").idle(3)
    (t,) = trips(lift.run())
    assert not {"level", "to_between", "from_between", "emergency_stop"} & set(t)
