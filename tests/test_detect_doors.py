"""Door faults: not opening, not closing, held open, repeated reopens, slow doors."""

from __future__ import annotations

import pytest
from synthlift import SynthLift, cleared, events, raised

pytestmark = pytest.mark.timeout(60)


def on_time(out, code: str, t_cond: float, timer: float) -> dict:
    (r,) = raised(out, code)
    assert t_cond + timer <= r["t"] <= t_cond + timer + 1.0, (r, t_cond + timer)
    return r


# ---------------------------------------------------------------- door_open_fault
@pytest.mark.parametrize("stuck_s,raises", [(17.0, True), (14.0, False)])
def test_door_open_fault(stuck_s: float, raises: bool) -> None:
    lift = SynthLift(sources="controller")
    lift.idle(1).trip("3").idle(0.1)
    lift.ctl_set(door=3, lock=1)           # commanded to open; the door does not move
    cmd = lift.t
    lift.idle(stuck_s).ctl_set(door=4).idle(3).close_door().idle(1)
    out = lift.run()
    if raises:
        # the first poll showing "opening" is at or after cmd (0.2 s grid)
        r = raised(out, "door_open_fault")[0]
        assert cmd + 15.0 <= r["t"] <= cmd + 15.0 + 1.0
        (c,) = cleared(out, "door_open_fault")
        assert c["t"] == pytest.approx(cmd + stuck_s, abs=0.21)
    else:
        assert not events(out, "door_open_fault")


# ---------------------------------------------------------------- door_close_fault
def test_door_close_fault_20s_after_first_closing_despite_reopens() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1).open_door().idle(3)
    first = lift.t
    lift.reopen(after_s=2, open_s=1).idle(2).reopen(after_s=2, open_s=1).idle(2)
    lift.ctl_set(door=1).idle(12).ctl_set(door=6).idle(3)
    lift.close_door().idle(1)
    out = lift.run()
    r = on_time(out, "door_close_fault", first, 20.0)
    assert "closing_s" in r["detail"]
    (c,) = cleared(out, "door_close_fault")
    assert c["t"] == pytest.approx(lift.t - 1.5, abs=0.25)


def test_door_close_fault_near_miss_closed_at_19s() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1).open_door().idle(3).reopen(after_s=2, open_s=1).idle(2)
    lift.ctl_set(door=1).idle(12).close_door(close_s=1.5).idle(5)   # 19 s after the first
    assert not events(lift.run(), "door_close_fault")


@pytest.mark.parametrize("sources", ["both", "sensors"])
def test_door_held_open_80s(sources: str) -> None:
    lift = SynthLift(sources=sources)
    lift.idle(1)
    start = lift.t + (0.1 if sources == "sensors" else 0.0)   # contact opens 0.1 s later
    lift.open_door().idle(80).close_door().idle(1)
    out = lift.run()
    r = on_time(out, "door_close_fault", start, 80.0)
    assert "held_open_s" in r["detail"]
    assert cleared(out, "door_close_fault")


def test_door_held_open_near_miss_79s() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1).open_door(3).idle(73).close_door(3).idle(5)
    assert not events(lift.run(), "door_close_fault")


# ---------------------------------------------------------------- door_reopen_repeated
@pytest.mark.parametrize("sources", ["both", "sensors"])
def test_door_reopen_repeated_at_fifth_reopen_and_clears_when_car_leaves(sources: str) -> None:
    lift = SynthLift(sources=sources)
    lift.idle(1).open_door().idle(2)
    for _ in range(4):
        lift.reopen(touch=True).idle(0.5)
    lift.reopen(after_s=1.0, open_s=0.0, touch=True)   # the 5th reopen happens at lift.t
    fifth = lift.t
    lift.idle(2).close_door().idle(1).trip("3").idle(1)
    out = lift.run()
    r = raised(out, "door_reopen_repeated")[0]
    assert fifth - 0.01 <= r["t"] <= fifth + 0.25       # at that reopen (next poll)
    assert r["detail"]["reopens"] == 5
    (c,) = cleared(out, "door_reopen_repeated")
    trip = [o for o in out if o["type"] == "trip"][0]
    assert c["t"] == trip["t_start"]


def test_door_reopen_near_miss_four_reopens() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1).door_cycle(reopens=4).idle(2)
    assert not events(lift.run(), "door_reopen_repeated")


# ---------------------------------------------------------------- door_slow
def _cycles(lift: SynthLift, open_times: list[float]) -> None:
    for o in open_times:
        lift.door_cycle(open_s=o, dwell_s=2.0, close_s=3.0).idle(1)


def test_door_slow_over_limit_three_of_five_and_clear_after_five_normal() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1)
    _cycles(lift, [3.0, 5.0, 3.0, 5.0])
    before = lift.t
    _cycles(lift, [5.0])
    third = lift.t
    _cycles(lift, [3.0] * 5)
    out = lift.run()
    (r,) = raised(out, "door_slow")
    assert before < r["t"] <= third             # at the end of the third slow cycle
    assert r["detail"]["open_s"] == pytest.approx(5.0, abs=0.21)
    (c,) = cleared(out, "door_slow")
    assert c["t"] > r["t"] + 5 * 9


def test_door_slow_near_miss_two_of_five() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1)
    _cycles(lift, [3.0, 5.0, 3.0, 5.0, 3.0, 3.0, 3.0])
    assert not events(lift.run(), "door_slow")


def test_door_slow_against_learned_baseline_below_the_limit() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1)
    _cycles(lift, [2.0, 2.2] * 6)          # this door opens in about 2 s
    _cycles(lift, [3.4] * 3)               # still below 4 s, but far off its own normal
    out = lift.run()
    (r,) = raised(out, "door_slow")
    assert r["detail"]["open_s"] < 4.0
