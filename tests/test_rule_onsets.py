"""Each fault class of issue 14 on the project's simulator (hil_tests/liftsim.py): the
event follows the simulator's onset within the rule's timer + 1 s, and not before.

Onsets are what the simulator provoked (``LiftSim.onsets``); timers are events.md's
defaults (DetectionParams). Only the seconds each rule needs are simulated.
"""

from __future__ import annotations

import pytest
from liftwatch.signal.settings import DetectionParams
from simrules import SimLift, SimRun

pytestmark = pytest.mark.timeout(120)
DET = DetectionParams()


def within(ev_t: float, onset: float, timer: float, early: float = 0.0) -> bool:
    return onset + timer - early <= ev_t <= onset + timer + 1.0


# ---------------------------------------------------------------- motor_runtime_exceeded
@pytest.mark.parametrize("case", ["contactor_and_flag", "flag_only", "sensors_only"])
def test_runtime_limiter_from_the_run_signal_with_a_stalled_car(case: str) -> None:
    """The machine is driven (run contactor or controller running flag) but the car does
    not move: raised at runtime_limit_s of run, whatever the motion says; cleared when
    the run signal drops."""
    lift = SimLift(controller=case != "sensors_only")
    r = SimRun(lift, seed=2)
    if case == "flag_only":
        # the contactor input reads off (a contactor that does not pull in, a brake
        # that does not lift): the controller's running flag alone says "run"
        r.sim.inputs = lambda orig=r.sim.inputs: {**orig(), "run": 0}   # type: ignore[method-assign]
    r.sim.wait(2.0)
    r.sim.stall(DET.runtime_limit_s + 3.0)
    r.sim.wait(1.0)
    r.play()
    (ev,) = r.events("motor_runtime_exceeded")
    assert within(ev["t"], r.onset("run_on"), DET.runtime_limit_s)
    (cl,) = r.events("motor_runtime_exceeded", "cleared")
    assert r.onset("run_off") <= cl["t"] <= r.onset("run_off") + 0.5


def test_runtime_limiter_after_a_trip_that_stalls_between_floors() -> None:
    """Traction lost mid-trip: the car stops outside the zone, the run stays on."""
    r = SimRun(seed=4)
    r.sim.wait(1.0)
    r.sim.trip("4", stop_after_s=3.0)       # drive trips off: run drops
    r.sim.wait(1.0)
    r.sim.stall(DET.runtime_limit_s + 1.5)  # re-driven, the car does not move
    r.play()
    (ev,) = r.events("motor_runtime_exceeded")
    assert within(ev["t"], r.onset("run_on"), DET.runtime_limit_s)


# ---------------------------------------------------------------- stopped_outside_zone
@pytest.mark.parametrize("controller", [True, False])
def test_outside_zone_after_unintended_movement_counts_from_rest(controller: bool) -> None:
    """The car slides out of the zone with the door open (moving_with_door_open) and
    comes to rest 0.6 m below: stopped_outside_zone counts from that rest, not from the
    zone exit ~2 s earlier."""
    r = SimRun(SimLift(controller=controller), seed=2)
    r.sim.wait(2.0)
    r.sim.open_door()
    r.sim.wait(1.0)
    r.sim.drift(-0.6)
    r.sim.wait(3.0)
    r.sim.close_door()
    r.sim.wait(DET.outside_zone_s - 5.0)
    r.play()
    assert r.events("moving_with_door_open")
    rest = r.onset("came_to_rest")
    (ev,) = r.events("stopped_outside_zone")
    # the controller's speed is polled every poll_s: rest is seen within one poll
    assert within(ev["t"], rest, DET.outside_zone_s, early=r.sim.lift.poll_s)


# ---------------------------------------------------------------- door_close_fault
@pytest.mark.parametrize("controller", [True, False])
def test_no_door_close_fault_when_a_jammed_door_finally_opens_and_closes(
        controller: bool) -> None:
    """Entrapment at a floor: the door is told to open but is jammed for 60 s (a
    door_open_fault, an entrapment), then opens, stays open 20 s and closes normally.
    Neither door_close_fault timer may count from the opening command."""
    r = SimRun(SimLift(controller=controller), seed=2)
    r.sim.wait(1.0)
    r.sim.door_cycle(board=1)
    r.sim.wait(1.0)
    r.sim.trip("3")
    r.sim.wait(5.0)
    r.sim.jam_door(60.0)
    r.sim.passengers = 0
    r.sim.wait(20.0)
    r.sim.close_door()
    r.sim.wait(2.0)
    r.play()
    assert r.events("entrapment_level")
    if controller:
        (ev,) = r.events("door_open_fault")
        assert within(ev["t"], r.onset("door_jammed"), DET.door_open_fault_s)
    assert not r.events("door_close_fault")


def test_door_held_open_counts_from_the_door_opening() -> None:
    """The held-open timer still works, counted from when the door really opened."""
    r = SimRun(seed=2)
    r.sim.wait(1.0)
    r.sim.jam_door(10.0)
    opened = r.sim.t - r.sim.lift.door_open_s
    r.sim.wait(DET.door_held_open_s)
    r.play()
    (ev,) = r.events("door_close_fault")
    assert within(ev["t"], opened, DET.door_held_open_s)


def test_outside_zone_with_a_speed_register_that_never_reads_zero() -> None:
    """A controller whose speed register shows 0.02 m/s at a standstill (below
    moving_speed, above the rest threshold): the car still counts as at rest."""
    r = SimRun(seed=3)
    view = r.sim.controller_view

    def creeping() -> dict:
        v = view()
        return {**v, "speed": max(v["speed"], 0.02)}

    r.sim.controller_view = creeping      # type: ignore[method-assign]
    r.sim.wait(1.0)
    r.sim.trip("4", stop_after_s=3.0)
    r.sim.wait(DET.outside_zone_s + 1.5)
    r.play()
    (ev,) = r.events("stopped_outside_zone")
    assert within(ev["t"], r.onset("stopped"), DET.outside_zone_s)
