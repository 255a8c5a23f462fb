"""Scripted HIL scenarios with ground truth: what the agent must report, and by when.

Each scenario scripts the simulated lift (``liftsim.LiftSim``) and returns the
records to play, the events that must reach the platform (with the onset the
scenario provoked and the rule's timer under the HIL config, i.e. events.md's
defaults), the event codes that may legitimately appear besides them, and the
windows in which the rig takes the broker down.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from liftsim import LiftSim, SimLift
from observer import Expect

# events.md defaults (the HIL config does not change them)
ENTRAP_NONLEVEL_S = 30.0
ENTRAP_LEVEL_S = 45.0
ALARM_PRESS_S = 0.5
POWER_LOSS_S = 2.0
SAFETY_S = 0.5
LINK_LOST_S = 5.0
REOPEN_COUNT = 5
OVERSPEED_S = 0.3
ACCEL_SILENT_S = 2.0


@dataclass
class Scenario:
    name: str
    lift: SimLift
    records: Iterable[tuple[float, str, Any]]
    duration: float
    expects: list[Expect]
    allowed: frozenset[str] = frozenset()
    outages: list[tuple[float, float]] = field(default_factory=list)
    ack_alarms_after_s: float | None = None
    onsets: dict[str, float] = field(default_factory=dict)
    trips: int = 0
    #: the controller's state at t = 0, for a scenario whose records are a stream
    first_ctl: dict[str, Any] | None = None
    #: every input's level at t = 0, for a scenario whose records are a stream
    first_di: dict[str, int] | None = None


def _trips(sim: LiftSim) -> int:
    """Trips the simulated lift made: each run from start of motion to stop."""
    return sum(1 for o in sim.onsets if o.what in ("stopped", "relevelled"))


def _onset(sim: LiftSim, what: str) -> float:
    return [o.t for o in sim.onsets if o.what == what][-1]


def story(outage: tuple[float, float] | None = (8.0, 38.0), quick: bool = False) -> Scenario:
    """Ordinary service, a passenger trapped between floors, acknowledgement, rescue.

    The broker is down for 30 s during the ordinary trips: their trip messages must all
    arrive afterwards. ``quick`` shortens the ordinary part (demo's non-interactive mode).
    """
    lift = SimLift()
    sim = LiftSim(lift, seed=7, start_floor=1)
    sim.wait(2.0)
    calls = [("4", 1), ("B1", 2), ("2", 1)] if not quick else [("3", 1)]
    for to, n in calls:
        sim.service(to, board=n, leave=n, dwell_s=3.0)
        sim.wait(2.0)
    sim.door_cycle(dwell_s=3.0, board=1)
    sim.wait(1.0)
    target = "5" if sim.floor_label != "5" else "B1"
    sim.trip(target, stop_after_s=4.0)
    stall = _onset(sim, "stopped")
    sim.wait(ENTRAP_NONLEVEL_S + 8.0)
    sim.press_alarm(6.0)
    press = _onset(sim, "alarm_pressed")
    sim.wait(12.0)
    floors = [h for h in lift.heights if h > sim.pos] if target != "B1" else \
        [h for h in lift.heights if h < sim.pos]
    rescue_to = lift.landings[lift.heights.index(min(floors, key=lambda h: abs(h - sim.pos)))]
    sim.relevel(rescue_to)
    sim.open_door()
    door_open = _onset(sim, "door_opening")
    sim.passengers = 0
    sim.wait(3.0)
    sim.close_door()
    sim.wait(5.0)
    expects = [
        Expect("entrapment_nonlevel", stall, ENTRAP_NONLEVEL_S),
        Expect("alarm_button", press, ALARM_PRESS_S),
        Expect("entrapment_nonlevel", door_open, 0.0, state="cleared"),
    ]
    outages = [outage] if outage else []
    return Scenario("story", lift, sim.drain(), sim.t, expects,
                    allowed=frozenset({"mode_change"}), outages=outages,
                    ack_alarms_after_s=3.0, onsets={"stall": stall, "press": press,
                                                    "door_open": door_open},
                    trips=_trips(sim))


def faults() -> Scenario:
    """Power loss (controller silent), safety circuit open, controller link lost."""
    lift = SimLift()
    sim = LiftSim(lift, seed=11, start_floor=2)
    sim.wait(3.0)
    sim.service("4", board=1, leave=1, dwell_s=3.0)
    sim.wait(3.0)
    sim.cut_mains(8.0)
    mains = _onset(sim, "mains_lost")
    back = _onset(sim, "mains_back")
    sim.wait(6.0)
    sim.open_safety(3.0)
    safety = _onset(sim, "safety_open")
    sim.wait(5.0)
    sim.controller_silent(10.0)
    silent = _onset(sim, "ctl_silent")
    sim.wait(5.0)
    sim.service("1", board=1, leave=1, dwell_s=3.0)
    sim.wait(3.0)
    expects = [
        Expect("power_loss", mains, POWER_LOSS_S),
        Expect("power_loss", back, 2.0, state="cleared"),
        Expect("safety_circuit_open", safety, SAFETY_S),
        Expect("controller_link_lost", silent, LINK_LOST_S),
    ]
    # the controller stops answering during the mains outage: link loss may be reported
    # then too (events.md conventions)
    return Scenario("faults", lift, sim.drain(), sim.t, expects,
                    allowed=frozenset({"controller_link_lost", "mode_change"}),
                    trips=_trips(sim))


def sensors_only_level() -> Scenario:
    """A retrofit terminal without controller link: a passenger shut in at a landing."""
    lift = SimLift(controller=False)
    sim = LiftSim(lift, seed=5, start_floor=0)
    sim.wait(2.0)
    sim.service("3", board=1, leave=1, dwell_s=3.0)
    sim.wait(2.0)
    sim.door_cycle(dwell_s=3.0, board=1)
    sim.wait(0.5)
    sim.trip("5")
    stop = _onset(sim, "stopped")
    sim.wait(ENTRAP_LEVEL_S + 6.0)
    sim.open_door()
    door_open = _onset(sim, "door_opening")
    sim.passengers = 0
    sim.wait(3.0)
    sim.close_door()
    sim.wait(3.0)
    expects = [Expect("entrapment_level", stop, ENTRAP_LEVEL_S),
               Expect("entrapment_level", door_open, 0.0, state="cleared")]
    return Scenario("sensors_only_level", lift, sim.drain(), sim.t, expects,
                    allowed=frozenset(), ack_alarms_after_s=3.0, trips=_trips(sim))


def doors_and_drive() -> Scenario:
    """An obstructed door that reopens again and again, a drive that overspeeds, then the
    accelerometer stops answering on its bus."""
    lift = SimLift()
    sim = LiftSim(lift, seed=13, start_floor=1)
    sim.wait(2.0)
    sim.open_door()
    sim.passengers = 1
    sim.wait(2.0)
    sim.close_door(reopens=REOPEN_COUNT)
    fifth = [o.t for o in sim.onsets if o.what == "reopen"][REOPEN_COUNT - 1]
    sim.wait(1.0)
    sim.trip("5", speed=1.3 * lift.rated_speed)
    over = _onset(sim, "overspeed")
    sim.door_cycle(dwell_s=3.0, leave=1)
    sim.wait(3.0)
    records = sim.drain()
    # the car-roof accelerometer stops answering on its I2C bus (a rig action)
    chip_dead = sim.t
    records.append((round(chip_dead, 4), "rig", {"chip_io_error": "remote I/O error"}))
    sim.wait(8.0)
    records += sim.drain()
    departed = [o.t for o in sim.onsets if o.what == "departed" and o.t > fifth][0]
    expects = [Expect("door_reopen_repeated", fifth, 0.0),
               Expect("door_reopen_repeated", departed, 0.0, state="cleared"),
               Expect("overspeed", over, OVERSPEED_S),
               Expect("overspeed", _onset(sim, "below_rated"), 2.0, state="cleared"),
               Expect("sensor_fault", chip_dead, ACCEL_SILENT_S)]
    return Scenario("doors_and_drive", lift, records, sim.t, expects, trips=_trips(sim))


ALL: dict[str, Callable[[], Scenario]] = {
    "story": story, "faults": faults, "sensors_only_level": sensors_only_level,
    "doors_and_drive": doors_and_drive,
}
