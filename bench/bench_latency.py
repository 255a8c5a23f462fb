"""Latency of each rule beyond its timer, on the project's simulator (hil_tests/liftsim.py).

Each scenario provokes one fault class; the simulator records the onset (``LiftSim.onsets``),
the pipeline (events.md defaults) gives the event time. Latency = event time - (onset +
the rule's timer); negative means early. Window rules (vibration, leveling) are measured
from the end of the decisive trip (its stop) to the event. Prints one line per rule and
terminal kind (controller + sensors, sensors only).

    .venv/bin/python bench/bench_latency.py
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from liftwatch.signal.settings import DetectionParams  # noqa: E402
from simrules import SimLift, SimRun  # noqa: E402

DET = DetectionParams()
#: (code, onset name, timer) of each scenario; the scenario scripts the simulator
Case = tuple[str, str, float, Callable[[SimRun], None]]


def stall_nonlevel(r: SimRun, passengers: int) -> None:
    r.sim.passengers = passengers
    r.sim.wait(1.0)
    r.sim.trip("4", stop_after_s=3.0)
    r.sim.wait(50.0)


def entrap_level(r: SimRun) -> None:
    r.sim.wait(1.0)
    r.sim.door_cycle(board=1)
    r.sim.wait(50.0)


def alarm(r: SimRun) -> None:
    r.sim.wait(2.0)
    r.sim.press_alarm(2.0)
    r.sim.wait(1.0)


def mains(r: SimRun) -> None:
    r.sim.wait(2.0)
    r.sim.cut_mains(5.0)
    r.sim.wait(1.0)


def safety(r: SimRun) -> None:
    r.sim.wait(2.0)
    r.sim.open_safety(3.0)
    r.sim.wait(1.0)


def link(r: SimRun) -> None:
    r.sim.wait(2.0)
    r.sim.controller_silent(8.0)
    r.sim.wait(1.0)


def overspeed(r: SimRun) -> None:
    r.sim.wait(2.0)
    r.sim.trip("5", speed=2.2)
    r.sim.wait(2.0)


def door_jam(r: SimRun) -> None:
    r.sim.wait(1.0)
    r.sim.jam_door(20.0)
    r.sim.wait(2.0)


def door_held(r: SimRun) -> None:
    r.sim.wait(1.0)
    r.sim.open_door()
    r.sim.wait(DET.door_held_open_s + 2.0)


def reopens(r: SimRun) -> None:
    r.sim.wait(1.0)
    r.sim.open_door()
    r.sim.close_door(reopens=DET.reopen_count)
    r.sim.wait(1.0)


def ucm(r: SimRun) -> None:
    r.sim.wait(2.0)
    r.sim.open_door()
    r.sim.wait(1.0)
    r.sim.drift(-0.6)
    r.sim.wait(3.0)
    r.sim.close_door()
    r.sim.wait(DET.outside_zone_s - 3.0)


def stall(r: SimRun) -> None:
    r.sim.wait(2.0)
    r.sim.stall(DET.runtime_limit_s + 2.0)


def vib(r: SimRun) -> None:
    r.sim.wait(1.0)
    for k in range(19):
        if k == 16:
            r.sim.lift.vib_ms2 = 0.14
        r.sim.trip("4" if k % 2 == 0 else "1")
        if k == 18:
            r.sim.mark("third_rough_trip")
        r.sim.wait(1.0)
    r.sim.wait(3.0)


CASES: list[tuple[str, str, float, Callable[[SimRun], None], bool]] = [
    # code, onset, timer, scenario, needs a controller
    ("entrapment_nonlevel", "stopped", DET.entrap_nonlevel_s,
     lambda r: stall_nonlevel(r, 1), False),
    ("stopped_outside_zone", "stopped", DET.outside_zone_s,
     lambda r: stall_nonlevel(r, 0), False),
    ("entrapment_level", "di:door_closed=1", DET.entrap_level_s, entrap_level, False),
    ("alarm_button", "alarm_pressed", DET.alarm_press_s, alarm, False),
    ("power_loss", "mains_lost", DET.power_loss_s, mains, False),
    ("safety_circuit_open", "safety_open", DET.safety_s, safety, False),
    ("controller_link_lost", "ctl_silent", DET.link_lost_s, link, True),
    ("overspeed", "overspeed", DET.overspeed_s, overspeed, False),
    ("door_open_fault", "door_jammed", DET.door_open_fault_s, door_jam, True),
    ("door_close_fault", "di:door_closed=0", DET.door_held_open_s, door_held, False),
    ("door_reopen_repeated", "reopen", 0.0, reopens, True),
    ("moving_with_door_open", "di:zone_down=0", 0.0, ucm, False),
    ("stopped_outside_zone", "came_to_rest", DET.outside_zone_s, ucm, False),
    ("motor_runtime_exceeded", "run_on", DET.runtime_limit_s, stall, False),
    ("vibration_abnormal", "third_rough_trip", 0.0, vib, False),
]


def main() -> None:
    print(f"{'rule':24} {'onset':18} {'timer s':>8} {'terminal':10} {'latency s':>9}")
    cpu0 = time.process_time()
    for code, onset, timer, script, needs_ctl in CASES:
        for ctl in (True, False):
            if needs_ctl and not ctl:
                continue
            r = SimRun(SimLift(controller=ctl), seed=2, start_floor=1)
            script(r)
            r.play()
            evs = r.events(code)
            kind = "ctl+sens" if ctl else "sensors"
            if not evs:
                print(f"{code:24} {onset:18} {timer:8.1f} {kind:10} {'MISSED':>9}")
                continue
            if onset.startswith("di:"):      # an input edge, the last one of its kind
                name, level = onset[3:].split("=")
                t_on = max(t for t, k, d in r.fed if k == "di" and d.get(name) == int(level)
                           and t > 0.0)
            else:
                t_on = r.onset(onset)
            lat = evs[0]["t"] - (t_on + timer)
            print(f"{code:24} {onset:18} {timer:8.1f} {kind:10} {lat:+9.2f}")
    print(f"cpu {time.process_time() - cpu0:.1f} s")


if __name__ == "__main__":
    main()
