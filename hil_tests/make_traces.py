"""The example traces of ``hil_tests/traces/``, made by the project's lift simulator.

The tests, the benchmarks and the README's ``liftwatch replay`` example read these
traces, so a clone needs nothing beside it. Each is a seeded :mod:`liftsim` script,
written as :class:`~liftwatch.drivers.trace.TraceWriter` writes (compact JSON lines,
gzip), with a ``NAME.truth.json`` beside it: what the simulator did (every trip's
landings and run times, the door cycles, the stall, the alarm press, the door opening),
from which the tests take their expected values.

    .venv/bin/python hil_tests/make_traces.py           # rewrite hil_tests/traces/
    .venv/bin/python hil_tests/make_traces.py --check   # exit 1 if a committed file differs

The gzip stream is written with no name and mtime 0, so the same script gives the same
bytes with the same zlib. Re-run it after changing :mod:`liftsim` in a way that changes
what existing verbs produce (``tests/test_example_traces.py`` fails until then).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from liftsim import LiftSim, SimLift  # noqa: E402

TRACES_DIR = Path(__file__).resolve().parent / "traces"

#: Trace clock origin of every example (the header's ``start``).
START = "2026-11-23T08:00:00Z"


@dataclass
class Made:
    """One example trace: its header, its records and what the simulator knows of it."""

    name: str
    header: dict[str, Any]
    records: list[tuple[float, str, Any]]
    truth: dict[str, Any]

    def lines(self) -> list[str]:
        """The trace as ``TraceWriter`` writes it (compact JSON, ``t`` rounded to 1 µs)."""
        dump = json.dumps
        out = [dump(self.header, separators=(",", ":"))]
        out += [dump({"t": round(t, 6), kind: data}, separators=(",", ":"))
                for t, kind, data in self.records]
        return out

    def text(self) -> str:
        return "\n".join(self.lines()) + "\n"

    def gz_bytes(self) -> bytes:
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as g:
            g.write(self.text().encode())
        return buf.getvalue()


@dataclass
class Script:
    """A :class:`LiftSim` with a notebook: every trip and door cycle it was told to make."""

    sim: LiftSim
    seed: int
    trips: list[dict[str, Any]] = field(default_factory=list)
    doors: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, lift: SimLift, seed: int, start_floor: int) -> Script:
        return cls(LiftSim(lift, seed=seed, start_floor=start_floor), seed)

    def _last(self, what: str) -> float:
        return round([o.t for o in self.sim.onsets if o.what == what][-1], 4)

    def until(self, t: float) -> None:
        """Idle until trace time ``t`` (a script's fixed points: the stall, the press)."""
        if t < self.sim.t:
            raise ValueError(f"script runs late: at {self.sim.t:.2f} s, wanted {t:.2f} s")
        self.sim.wait(t - self.sim.t)

    def trip(self, to: str, **kw: Any) -> dict[str, Any]:
        lift, sim = self.sim.lift, self.sim
        start = sim.floor_label
        start_m = sim.pos
        sim.trip(to, **kw)
        trip: dict[str, Any] = {"from": start, "to": to, "t_run": self._last("departed"),
                                "t_stop": self._last("stopped"),
                                "distance_m": round(abs(sim.pos - start_m), 4)}
        if kw.get("stop_after_s") is not None:
            level = sim.level_index()
            zones = sim.inputs()
            if level is not None or zones["zone_up"] or zones["zone_down"]:
                raise ValueError(f"the stall left the car in a door zone at {sim.pos:.2f} m")
            below = max(i for i, h in enumerate(lift.heights) if h < sim.pos)
            trip.update(to=None, between=[lift.landings[below], lift.landings[below + 1]],
                        pos_m=round(sim.pos, 4))
        self.trips.append(trip)
        return trip

    def relevel(self, to: str) -> dict[str, Any]:
        start_m = self.sim.pos
        self.sim.relevel(to)
        trip = {"from": None, "to": to, "t_run": None, "t_stop": self._last("relevelled"),
                "distance_m": round(abs(self.sim.pos - start_m), 4), "relevel": True}
        self.trips.append(trip)
        return trip

    def door_cycle(self, dwell_s: float = 4.0, reopens: int = 0, board: int = 0,
                   leave: int = 0) -> None:
        floor = self.sim.floor_label
        self.sim.door_cycle(dwell_s=dwell_s, reopens=reopens, board=board, leave=leave)
        self.doors.append({"floor": floor, "t_opening": self._last("door_opening"),
                           "reopens": reopens})

    def service(self, to: str, board: int = 1, leave: int = 1, dwell_s: float = 4.0,
                reopens: int = 0) -> None:
        """An ordinary call, as :meth:`LiftSim.service` with the reopens placed at boarding."""
        self.door_cycle(dwell_s=dwell_s, board=board, reopens=reopens)
        self.sim.wait(1.0)
        self.trip(to)
        self.door_cycle(dwell_s=dwell_s, leave=leave)

    def made(self, name: str, lift_id: str, **truth: Any) -> Made:
        sim = self.sim
        lift = sim.lift
        header = sim.lift.header(lift_id)
        header["start"] = START
        records = sim.drain()  # what follows an accelerometer block still filling is left
        truth = {"seed": self.seed, **truth,
                 "duration_s": round(records[-1][0], 4),
                 "door_open_s": lift.door_open_s, "door_close_s": lift.door_close_s,
                 "accel_max": lift.accel, "jerk_max": lift.jerk,
                 "trips": self.trips, "door_cycles": self.doors,
                 "records": {k: sum(1 for r in records if r[1] == k)
                             for k in ("di", "ctl", "acc", "pwr")}}
        return Made(name, header, records, truth)


def normal_day() -> Made:
    """Ordinary service: 17 landings B2 … 18 (4, 13 and 17 skipped), 2.0 m/s. The car goes
    from stop to stop, one door cycle at each (some leave, some board, now and then an
    empty run to a call), three reopens in all. Nothing abnormal happens.

    The first trip (7 → B1) runs from about 19 s to 33 s, the next starts 10 s later: the
    tests take their short excerpts there.
    """
    landings = ["B2", "B1", "1", "2", "3", "5", "6", "7", "8", "9", "10", "11", "12", "14",
                "15", "16", "18"]
    heights = [0.0, 3.3, 7.8, 11.1, 14.4, 17.7, 21.0, 24.3, 27.6, 30.9, 34.2, 37.5, 40.8,
               44.1, 47.4, 50.7, 54.0]
    lift = SimLift(landings=landings, heights=heights, rated_speed=2.0)
    s = Script.of(lift, seed=2026, start_floor=landings.index("7"))
    s.sim.wait(8.0)
    s.door_cycle(dwell_s=3.0, board=1)
    s.sim.wait(1.0)
    # (landing, passengers leaving, boarding, reopens, idle after the door closed)
    stops = [("B1", 1, 1, 0, 1.0), ("6", 1, 0, 0, 6.0), ("12", 0, 2, 0, 1.0),
             ("1", 2, 0, 0, 10.0), ("3", 0, 1, 1, 1.0), ("16", 1, 0, 0, 4.0),
             ("14", 0, 1, 0, 1.0), ("B2", 1, 1, 2, 1.0), ("9", 1, 0, 0, 8.0),
             ("10", 0, 1, 0, 1.0), ("2", 1, 2, 0, 1.0), ("8", 1, 0, 0, 1.0),
             ("18", 1, 0, 0, 6.0), ("5", 0, 1, 0, 1.0), ("1", 1, 0, 0, 5.0)]
    for to, leave, board, reopens, idle in stops:
        s.trip(to)
        s.door_cycle(dwell_s=3.0, leave=leave, board=board, reopens=reopens)
        s.sim.wait(idle)
    return s.made("normal_day", "31100000000000000017")


#: The entrapment script's fixed points (trace time): the run contactor drops with the
#: car between landings, and the passenger presses the alarm button 100 s later.
STALL_S = 168.9
PRESS_S = 268.9


def entrapment_between_floors() -> Made:
    """20 landings B1 … 19 at 2.5 m/s. After ordinary trips the drive faults mid-trip and
    the car stops between landings with a passenger inside, doors closed; the passenger
    holds the alarm button for 3 s; minutes later the car is relevelled at creep speed and
    the passenger gets out."""
    landings = ["B1"] + [str(i) for i in range(1, 20)]
    heights = [0.0, 4.2] + [round(4.2 + 3.1 * i, 2) for i in range(1, 19)]
    lift = SimLift(landings=landings, heights=heights, rated_speed=2.5)
    s = Script.of(lift, seed=4711, start_floor=landings.index("1"))
    s.sim.wait(4.0)
    for to, idle in (("6", 6.0), ("14", 8.0), ("2", 5.0)):
        s.service(to, board=1, leave=1, dwell_s=3.0)
        s.sim.wait(idle)
    # the passenger boards at 2, bound for 17; the drive trips 6.7 s into the run, at
    # rated speed, and the car stops between 6 and 7. The door cycle, the start, the run
    # and the braking take 20 s.
    s.until(STALL_S - 20.0)
    s.door_cycle(dwell_s=3.0, board=1)
    s.sim.wait(1.0)
    stall = s.trip("17", stop_after_s=6.7)
    s.until(PRESS_S)
    s.sim.press_alarm(3.0)
    press = s._last("alarm_pressed")
    s.sim.wait(90.0)
    rescue_to = stall["between"][1]
    s.relevel(rescue_to)
    s.sim.open_door()
    door_open = s._last("door_opening")
    s.doors.append({"floor": rescue_to, "t_opening": door_open, "reopens": 0})
    s.sim.wait(2.0)
    s.sim.passengers = 0
    s.sim.wait(3.0)
    s.sim.close_door()
    s.sim.wait(5.0)
    return s.made("entrapment_between_floors", "31100000000000000020",
                  stall=stall, alarm={"t_pressed": press, "hold_s": 3.0},
                  door_open_after_relevel=door_open)


def sensor_only_entrapment_level() -> Made:
    """A retrofit terminal with no controller link (``controller.present`` false), 13
    landings 1 … 13 at 1.5 m/s. After ordinary trips a passenger rides to a landing, the
    car stops level, the door does not open and the passenger stays inside for minutes;
    then the door opens and the passenger leaves."""
    landings = [str(i) for i in range(1, 14)]
    # floor-to-floor heights differ, as in most buildings: the tracker names floors from
    # the distances it measures
    heights = [0.0, 4.5, 7.6, 10.4, 13.6, 16.5, 19.7, 22.6, 25.9, 28.8, 31.9, 35.1, 38.0]
    lift = SimLift(landings=landings, heights=heights, rated_speed=1.5, controller=False)
    s = Script.of(lift, seed=1313, start_floor=0)
    s.sim.wait(3.0)
    for to, idle in (("5", 5.0), ("9", 4.0), ("2", 6.0)):
        s.service(to, board=1, leave=1, dwell_s=3.0)
        s.sim.wait(idle)
    s.door_cycle(dwell_s=3.0, board=1)
    s.sim.wait(1.0)
    shut_in = s.trip("11")
    s.sim.wait(150.0)
    s.sim.open_door()
    door_open = s._last("door_opening")
    s.doors.append({"floor": "11", "t_opening": door_open, "reopens": 0})
    s.sim.wait(2.0)
    s.sim.passengers = 0
    s.sim.wait(3.0)
    s.sim.close_door()
    s.sim.wait(4.0)
    return s.made("sensor_only_entrapment_level", "31100000000000000013",
                  shut_in={"t_stop": shut_in["t_stop"], "floor": "11"},
                  door_open=door_open)


SCRIPTS: dict[str, Callable[[], Made]] = {
    "normal_day": normal_day,
    "entrapment_between_floors": entrapment_between_floors,
    "sensor_only_entrapment_level": sensor_only_entrapment_level,
}


def path_of(name: str) -> Path:
    return TRACES_DIR / f"{name}.jsonl.gz"


def truth_path(name: str) -> Path:
    return TRACES_DIR / f"{name}.truth.json"


def truth(name: str) -> dict[str, Any]:
    """The committed ground truth of one example trace."""
    return json.loads(truth_path(name).read_text())


def truth_text(made: Made) -> str:
    return json.dumps(made.truth, indent=1) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="compare with the committed files instead of writing them")
    ap.add_argument("names", nargs="*", metavar="NAME",
                    help=f"only these traces (default: all of {', '.join(SCRIPTS)})")
    args = ap.parse_args(argv)
    for name in args.names:
        if name not in SCRIPTS:
            ap.error(f"no example trace {name!r}: choose from {', '.join(SCRIPTS)}")
    bad = 0
    for name in args.names or SCRIPTS:
        made = SCRIPTS[name]()
        data, text = made.gz_bytes(), truth_text(made)
        if args.check:
            same = path_of(name).read_bytes() == data and truth_path(name).read_text() == text
            print(f"{name}: {'same' if same else 'DIFFERS'}")
            bad += not same
            continue
        TRACES_DIR.mkdir(exist_ok=True)
        path_of(name).write_bytes(data)
        truth_path(name).write_text(text)
        print(f"{path_of(name).name}: {made.truth['duration_s']:.0f} s, "
              f"{len(made.records)} records, {len(data) / 1024:.0f} KiB, "
              f"{len(made.truth['trips'])} trips")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
