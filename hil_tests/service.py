"""Ordinary service, fast: lift-days and weeks of realistic traffic as trace records,
streamed, with slow wear and the maintenance visits that restore it.

The streamed front-end of the one lift model (:mod:`liftmodel`: the S-curve, vane
geometry, mounted accelerometer and controller view that :mod:`liftsim` and the tests'
``SynthLift`` use too). A day is 34.6 million accelerometer samples, so instead of
stepping sample by sample this module works in two passes:

1. **Plan** (:class:`DayPlan`): the day's traffic as a few thousand piecewise-constant
   jerk segments of the car, and timelines of the door, lock, run contactor, presence
   and the controller's door state; the ground truth (every trip, its landing, the
   car's stop error) is kept with it.
2. **Render** (:func:`records`): 8 s windows of samples evaluated with numpy from the
   plan: kinematics, ride vibration (band-limited noise whose level follows speed),
   door-operator vibration, the car bouncing on its ropes as passengers step in and
   out, sensor mounting tilt, gain error, bias drifting with the temperature, white
   noise and quantisation at the chip's counts per g; leveling-sensor edges from the
   sampled position; controller polls every ``poll_s``. Only one window of samples is
   ever in memory.

:func:`stream` chains days into one trace of weeks: each day starts where the last
parked the car, and :class:`Weather` (a daily swing around a mean that wanders from day
to day, doors slower in the cold) and :class:`Wear` run on across midnight. Wear is a
set of :class:`Drift` ramps over weeks — door opening and closing times, ride vibration,
the car stopping off the sill — and maintenance visits that put them back as new; it
never draws a random number, so a worn lift and a new one with the same seed see the
same traffic until the wear begins.

Digital inputs bounce: each mechanical contact edge is a burst of toggles shorter than
the driver's debounce (``debounce_ms``), passed through the driver's own
:class:`~liftwatch.drivers.inputs.Debouncer` at the input sample rate, and the door
contact sometimes rebounds off its stop for 30–80 ms after closing (longer than the
driver's debounce, shorter than the agent's ``contact_debounce_s``).

What "ordinary" means (decided here, where the issue is silent): calls arrive as a
Poisson process whose rate follows the hour (morning up-peak from the main landing,
evening down-peak, lunch, quiet nights; weekends lighter; day 0 is a Monday), a call
that waits over a minute for the busy car is dropped (it took the stairs); passengers
board and leave while the door is open, the presence sensor follows them with a short
hold; the door
reopens once or twice on some closings (never near ``reopen_count``); a few doors are
held open 20–50 s (below ``door_held_open_s``); the car stops within ±8 mm of the sill;
nobody ever stays in a closed stopped car, nothing is pressed, no mode changes.
"""

from __future__ import annotations

import bisect
import datetime
import heapq
import math
import random
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from liftmodel import (
    DOOR_CLOSED,
    DOOR_CLOSING,
    DOOR_LOCKED,
    DOOR_OPEN,
    DOOR_OPENING,
    Band,
    G,
    Kinematics,
    LiftType,
    Sensor,
    append_move,
    append_stall,
    ctl_view,
    s_curve,
)
from liftwatch.drivers.inputs import Debouncer, debounce_samples
from liftwatch.drivers.trace import TraceHeader

DAY_S = 86400.0


def _seed(*parts: object) -> int:
    """A seed that is the same in every process (``hash`` of a str is not)."""
    return zlib.crc32(repr(parts).encode())


def _heights(storeys: list[float]) -> list[float]:
    out = [0.0]
    for h in storeys:
        out.append(round(out[-1] + h, 3))
    return out


def _mid_landings() -> list[str]:
    # 18 landings, no 4, 13 or 14 (skipped for luck), one basement
    names = ["B1"] + [str(n) for n in range(1, 22) if n not in (4, 13, 14)]
    return names[:18]


LIFT_TYPES: dict[str, LiftType] = {
    # an old low-rise residential lift, retrofit terminal with no controller link
    "low": LiftType("low", ["B1", "1", "2", "3", "4", "5"],
                    _heights([3.1, 2.9, 2.9, 2.9, 2.9]), rated_speed=1.0, accel=0.6,
                    jerk=0.8, door_open_s=3.0, door_close_s=3.3, vib_z=0.045, vib_xy=0.03,
                    rope_hz=4.5, peak_calls_h=55, controller=False),
    # a mid-rise office/residential lift, controller on Modbus
    "mid": LiftType("mid", _mid_landings(), _heights([4.2, 4.5] + [3.3] * 15),
                    rated_speed=1.75, accel=0.8, jerk=1.0, door_open_s=2.6,
                    door_close_s=2.9, vib_z=0.035, vib_xy=0.025, rope_hz=3.2,
                    peak_calls_h=110),
    # a high-rise tower lift, fast doors, long ropes
    "high": LiftType("high", ["B2", "B1"] + [str(n) for n in range(1, 29)],
                     _heights([3.6, 4.5, 5.0] + [3.2] * 26), rated_speed=2.5, accel=0.9,
                     jerk=1.2, door_open_s=2.2, door_close_s=2.5, vib_z=0.05, vib_xy=0.035,
                     rope_hz=2.2, peak_calls_h=130, main=2),
}


@dataclass(frozen=True)
class Inputs:
    """The terminal's digital inputs as its driver samples them."""

    sample_hz: float = 200.0
    debounce_ms: float = 20.0
    presence_debounce_ms: float = 200.0


class Record(NamedTuple):
    """A trace record (trace-format.md), as the replay reader yields it."""

    t: float
    kind: str
    data: Any


@dataclass(frozen=True)
class Incident:
    """Something out of the ordinary during a stream, at ``day`` (days since day 0,
    fractional): the planner does it as soon as the car is free at or after that time.

    - ``entrapment``: passengers board, the safety chain opens part-way through their
      trip and the car stops between floors; they press the alarm after 25 s and every
      90 s; after ``seconds`` the chain is made again, the car is moved at creep speed
      to the nearest landing and they leave.
    - ``visit``: a maintenance visit of ``seconds``: inspection mode, the technician
      cycles the door and runs the car at inspection speed to the top and back.
    """

    day: float
    what: str
    seconds: float = 600.0


@dataclass
class TripTruth:
    """What the generator made happen on one trip."""

    t_run: float          # run contactor on
    t_start: float        # car starts moving
    t_stop: float         # car at rest
    t_run_off: float
    frm: int
    to: int
    stop_err_mm: float
    passengers: int
    #: controller mode during the trip (1 normal, 2 inspection); ``stalled`` between floors
    mode: int = 1
    stalled: bool = False


@dataclass
class DayPlan:
    """The day's traffic: car kinematics as jerk segments, and timelines of the rest."""

    lift: LiftType
    day: int
    seed: int
    t0: float
    t1: float
    # kinematic segments: start time, jerk, and the state at the start
    seg_t: list[float] = field(default_factory=list)
    seg_j: list[float] = field(default_factory=list)
    seg_a: list[float] = field(default_factory=list)
    seg_v: list[float] = field(default_factory=list)
    seg_p: list[float] = field(default_factory=list)
    #: logical (unbounced) input changes: (t, name, level)
    edges: list[tuple[float, str, int]] = field(default_factory=list)
    #: controller door state changes: (t, state)
    ctl_door: list[tuple[float, int]] = field(default_factory=list)
    #: run/direction changes for the controller: (t, run, dir)
    ctl_run: list[tuple[float, int, int]] = field(default_factory=list)
    #: controller mode (1 normal, 2 inspection) and safety chain (0 made, 1 open) changes
    ctl_mode: list[tuple[float, int]] = field(default_factory=list)
    ctl_safety: list[tuple[float, int]] = field(default_factory=list)
    #: onsets of the incidents played: (t, what) — "stalled", "alarm_pressed",
    #: "rescued", "visit_start", "visit_end"
    onsets: list[tuple[float, str]] = field(default_factory=list)
    #: door operator running: (t_start, t_end)
    door_moves: list[tuple[float, float]] = field(default_factory=list)
    #: passengers stepping in or out: (t, amplitude m/s², frequency Hz)
    steps: list[tuple[float, float, float]] = field(default_factory=list)
    trips: list[TripTruth] = field(default_factory=list)
    door_cycles: int = 0
    reopens: int = 0
    long_holds: int = 0
    #: slow wear and the weather the day was planned with (records() renders them too)
    wear: Wear | None = None
    weather: Weather | None = None
    #: where the car is parked when the day ends (the next day starts there)
    end_floor: int = 0
    end_pos: float = 0.0


@dataclass(frozen=True)
class Drift:
    """One wear figure drifting: a linear ramp from ``start_day`` over ``ramp_days``, held
    at ``rise`` after; a maintenance visit restores it and the wear starts again."""

    #: "door_open", "door_close" (relative), "vibration" (relative, z and x/y), or
    #: "leveling" (mm of stop-error bias: rope stretch, brake or encoder wear)
    figure: str
    rise: float
    start_day: float
    ramp_days: float


@dataclass(frozen=True)
class Wear:
    """Slow wear of one lift over weeks, and the maintenance visits that restore it."""

    drifts: tuple[Drift, ...] = ()
    #: days (since day 0 midnight) of maintenance visits: every drift back to new
    visits: tuple[float, ...] = ()

    def level(self, figure: str, t: float) -> float:
        """The drift of ``figure`` at ``t`` (s since day 0): relative rise, or mm."""
        day = t / DAY_S
        out = 0.0
        for d in self.drifts:
            if d.figure != figure:
                continue
            start = max([d.start_day] + [v for v in self.visits if v <= day])
            out += d.rise * min(max(0.0, (day - start) / d.ramp_days), 1.0)
        return out

    def crossing(self, figure: str, rise: float) -> float | None:
        """The first time (s since day 0) the drift of ``figure`` reaches ``rise``."""
        for d in self.drifts:
            if d.figure == figure and d.rise >= rise:
                return (d.start_day + d.ramp_days * rise / d.rise) * DAY_S
        return None


NO_WEAR = Wear()


class Weather:
    """Car-roof temperature: a daily swing of ±6 °C peaking mid-afternoon around a daily
    mean that wanders ±3 °C from day to day (interpolated, so it never jumps at midnight).

    Door operators are slower in the cold (``DOOR_TC`` per °C): ordinary variation that
    a wear rule must not take for wear."""

    DOOR_TC = -0.003

    def __init__(self, lift_name: str, seed: int) -> None:
        self.key = (lift_name, seed)
        self._days: dict[int, float] = {}

    def mean_offset(self, day: int) -> float:
        if day not in self._days:
            self._days[day] = random.Random(_seed(*self.key, day, "weather")).uniform(-3.0, 3.0)
        return self._days[day]

    def temperature(self, t: np.ndarray | float) -> np.ndarray | float:
        ta = np.asarray(t, dtype=float)
        # daily means pinned at noon, linear between
        u = ta / DAY_S - 0.5
        d0 = np.floor(u).astype(np.int64)
        lo = int(d0.min()) if d0.size else 0
        hi = int(d0.max()) + 1 if d0.size else 1
        table = np.array([self.mean_offset(d) for d in range(lo, hi + 1)])
        frac = u - d0
        offset = table[d0 - lo] * (1.0 - frac) + table[d0 - lo + 1] * frac
        h = (ta % DAY_S) / 3600.0
        out = 24.0 + offset + 6.0 * np.sin(2 * np.pi * (h - 9.0) / 24.0)
        return out if out.ndim else float(out)

    def door_factor(self, t: float) -> float:
        return 1.0 + self.DOOR_TC * (float(self.temperature(t)) - 20.0)


def traffic_rate(lift: LiftType, t: float) -> float:
    """Passenger journeys per hour at time ``t`` (s since day 0 midnight)."""
    day = int(t // DAY_S)
    h = (t % DAY_S) / 3600.0
    weekend = day % 7 in (5, 6)

    def bump(centre: float, width: float) -> float:
        return math.exp(-0.5 * ((h - centre) / width) ** 2)

    if weekend:
        shape = 0.03 + 0.35 * bump(11.0, 2.5) + 0.3 * bump(17.0, 3.0)
    else:
        shape = (0.02 + 1.0 * bump(8.3, 0.7) + 0.45 * bump(12.5, 1.0) + 0.8 * bump(18.0, 1.0)
                 + 0.25 * bump(14.5, 3.5) + 0.15 * bump(21.0, 1.5))
    return lift.peak_calls_h * shape


class Planner:
    """Builds a :class:`DayPlan` call by call (the verbs mirror :class:`liftsim.LiftSim`)."""

    def __init__(self, lift: LiftType, day: int, seed: int, start_s: float = 0.0,
                 duration_s: float = DAY_S, *, wear: Wear | None = None,
                 start: tuple[int, float] | None = None) -> None:
        self.lift = lift
        self.rng = random.Random(_seed(lift.name, day, seed, "plan"))
        t0 = day * DAY_S + start_s
        self.wear = wear or NO_WEAR
        self.weather = Weather(lift.name, seed)
        self.plan = DayPlan(lift, day, seed, t0, t0 + duration_s, wear=self.wear,
                            weather=self.weather)
        self.t = t0
        # (floor, height) where the previous day left the car; else parked at the main one
        self.floor, self.pos = start if start is not None else (lift.main,
                                                                lift.heights[lift.main])
        self.passengers = 0
        self.plan.seg_t.append(t0)
        for lst, v in ((self.plan.seg_j, 0.0), (self.plan.seg_a, 0.0), (self.plan.seg_v, 0.0),
                       (self.plan.seg_p, self.pos)):
            lst.append(v)
        self.plan.ctl_door.append((t0, DOOR_LOCKED))
        self.plan.ctl_run.append((t0, 0, 0))
        self.plan.ctl_mode.append((t0, 1))
        self.plan.ctl_safety.append((t0, 0))

    # ------------------------------------------------------------------ primitives
    def _edge(self, t: float, name: str, level: int) -> None:
        self.plan.edges.append((t, name, level))

    def _door_state(self, t: float, state: int) -> None:
        self.plan.ctl_door.append((t, state))

    def _presence(self, t: float, on: bool) -> None:
        self._edge(t, "presence", int(on))

    def _door_factor(self, which: str, t: float) -> float:
        """Door run time against new: wear (``door_open``/``door_close``) and the cold."""
        return (1.0 + self.wear.level(which, t)) * self.weather.door_factor(t)

    def _step(self, t: float, scale: float = 1.0) -> None:
        rng = self.rng
        amp = scale * rng.uniform(0.02, 0.07)
        self.plan.steps.append((t, amp, self.lift.rope_hz * rng.uniform(0.9, 1.15)))

    # ------------------------------------------------------------------ verbs
    def trip(self, to: int, *, stop_after_s: float | None = None,
             creep: bool = False) -> None:
        """Run to landing ``to``: run contactor, brake lift, S-curve, stop within ±8 mm.
        ``stop_after_s``: the safety chain opens that long into the run and the car
        makes an emergency stop (between floors); ``creep``: inspection or rescue speed
        (0.3 m/s), on the sill."""
        lift, rng, pl = self.lift, self.rng, self.plan
        if creep:
            err = 0.0
        else:
            # the leveling accuracy is ±7.5 mm around where a worn drive now stops
            bias = self.wear.level("leveling", self.t)
            err = (bias + max(-7.5, min(7.5, rng.gauss(0.0, lift.stop_sigma_mm)))) / 1000.0
        target = lift.heights[to] + err
        distance = target - self.pos
        sign = 1 if distance > 0 else -1
        t_run = self.t
        self._edge(t_run, "run", 1)
        pl.ctl_run.append((t_run, 1, 1 if sign > 0 else 2))
        t = t_run + rng.uniform(0.5, 0.8)       # brake lift and start delay
        t_start = t
        profile = s_curve(abs(distance), 0.3, 0.3, 0.5) if creep else \
            s_curve(abs(distance), lift.rated_speed, lift.accel, lift.jerk)
        if stop_after_s is None:
            t = append_move(pl, t, profile, sign, target)
            self.pos = target
        else:
            self._safety(t + stop_after_s, False)
            pl.onsets.append((t + stop_after_s, "stalled"))
            t = append_stall(pl, t, profile, sign, stop_after_s)
            self.pos = pl.seg_p[-1]
        t_stop = t
        t_off = t + rng.uniform(0.4, 0.6)       # brake drop, then the contactor opens
        self._edge(t_off, "run", 0)
        pl.ctl_run.append((t_off, 0, 0))
        pl.trips.append(TripTruth(t_run, t_start, t_stop, t_off, self.floor, to,
                                  err * 1000.0, self.passengers, mode=pl.ctl_mode[-1][1],
                                  stalled=stop_after_s is not None))
        if stop_after_s is None:
            self.floor = to
        self.t = t_off

    def open_door(self) -> None:
        lift, rng = self.lift, self.rng
        t = self.t + rng.uniform(0.15, 0.3)
        self._edge(t, "door_lock", 0)
        self._door_state(t, DOOR_CLOSED)
        t += rng.uniform(0.1, 0.15)
        self._edge(t, "door_closed", 0)
        self._door_state(t, DOOR_OPENING)
        dur = lift.door_open_s * rng.uniform(0.96, 1.04) * self._door_factor("door_open", t)
        self.plan.door_moves.append((t, t + dur))
        t += dur
        self._door_state(t, DOOR_OPEN)
        self.plan.door_cycles += 1
        self.t = t

    def close_door(self, reopens: int) -> None:
        lift, rng, pl = self.lift, self.rng, self.plan
        t = self.t
        close_s = lift.door_close_s * self._door_factor("door_close", t)
        open_s = lift.door_open_s * self._door_factor("door_open", t)
        for _ in range(reopens):
            frac = rng.uniform(0.25, 0.6)        # someone steps into the closing door
            self._door_state(t, DOOR_CLOSING)
            pl.door_moves.append((t, t + frac * close_s))
            t += frac * close_s
            self._door_state(t, DOOR_OPENING)
            back = frac * open_s
            pl.door_moves.append((t, t + back))
            t += back
            self._door_state(t, DOOR_OPEN)
            if rng.random() < 0.5:
                self._step(t + 0.3)
            t += rng.uniform(1.0, 2.5)
            pl.reopens += 1
        self._door_state(t, DOOR_CLOSING)
        dur = close_s * rng.uniform(0.96, 1.04)
        pl.door_moves.append((t, t + dur))
        t += dur
        self._edge(t, "door_closed", 1)
        self._door_state(t, DOOR_CLOSED)
        t += rng.uniform(0.25, 0.35)
        self._edge(t, "door_lock", 1)
        self._door_state(t, DOOR_LOCKED)
        self.t = t

    def door_cycle(self, board: int, leave: int, reopen: bool = True) -> None:
        """Door opens, ``leave`` passengers step out, ``board`` step in, door closes."""
        rng = self.rng
        self.open_door()
        t = self.t
        for _ in range(leave):
            t += rng.uniform(0.5, 1.5)
            self._step(t)
        if leave and leave >= self.passengers:
            self._presence(t + rng.uniform(1.5, 4.0), False)   # PIR hold after the last one
        self.passengers -= leave
        if board:
            t += rng.uniform(0.3, 2.0)
            if self.passengers == 0:
                self._presence(t, True)
            for _ in range(board):
                t += rng.uniform(0.5, 1.5)
                self._step(t)
            self.passengers += board
        dwell = rng.uniform(2.5, 5.0)
        if self.passengers == 0 and leave:
            dwell = max(dwell, 4.0)               # the PIR drops before the door closes
        if rng.random() < 0.006:                  # door held: a pram, shopping, moving a sofa
            dwell = rng.uniform(20.0, 50.0)
            self.plan.long_holds += 1
            for k in range(rng.randint(1, 4)):
                self._step(t + 3 + k * dwell / 5, scale=1.5)
        t += dwell
        self.t = t
        u = rng.random()
        reopens = 2 if u < 0.02 else 1 if u < 0.14 else 0
        self.close_door(reopens if reopen else 0)

    def idle(self, until: float) -> None:
        self.t = max(self.t, until)

    # ------------------------------------------------------------------ incidents
    def _safety(self, t: float, made: bool) -> None:
        self._edge(t, "safety_ok", int(made))
        self.plan.ctl_safety.append((t, 0 if made else 1))

    def _mode(self, t: float, mode: int) -> None:
        self._edge(t, "inspection", int(mode == 2))
        self.plan.ctl_mode.append((t, mode))

    def press_alarm(self, at: float, hold_s: float) -> None:
        self._edge(at, "alarm_button", 1)
        self._edge(at + hold_s, "alarm_button", 0)
        self.plan.onsets.append((at, "alarm_pressed"))

    def entrapment(self, seconds: float) -> None:
        """See :class:`Incident`."""
        rng, lift = self.rng, self.lift
        n = len(lift.landings)
        to = self.floor + 3 if self.floor + 3 < n else self.floor - 3
        self.door_cycle(board=2, leave=0, reopen=False)
        self.t += rng.uniform(0.5, 1.5)
        self.trip(to, stop_after_s=rng.uniform(2.0, 4.0))
        t_stall = self.t
        t = t_stall + 25.0
        while t < t_stall + seconds - 5.0:
            self.press_alarm(t, rng.uniform(3.0, 5.0))
            t += 90.0
        self.t = t_stall + seconds
        self._safety(self.t, True)
        heights = lift.heights
        nearest = min(range(n), key=lambda i: abs(heights[i] - self.pos))
        self.plan.onsets.append((self.t, "rescued"))
        self.t += 10.0
        self.trip(nearest, creep=True)
        self.door_cycle(board=0, leave=self.passengers, reopen=False)

    def visit(self, seconds: float) -> None:
        """See :class:`Incident`."""
        t_end = self.t + seconds
        self.plan.onsets.append((self.t, "visit_start"))
        self._mode(self.t, 2)
        self.t += 60.0
        start = self.floor
        self.open_door()
        self.t += 30.0
        self.close_door(0)
        self.t += 20.0
        for to in (len(self.lift.landings) - 1, start):
            if to != self.floor:
                self.trip(to, creep=True)
                self.t += 15.0
        self.t = max(self.t + 30.0, t_end)
        self._mode(self.t, 1)
        self.plan.onsets.append((self.t, "visit_end"))

    def incident(self, inc: Incident) -> None:
        self.idle(inc.day * DAY_S)
        if inc.what == "entrapment":
            self.entrapment(inc.seconds)
        elif inc.what == "visit":
            self.visit(inc.seconds)
        else:
            raise ValueError(f"unknown incident {inc.what!r}: entrapment or visit")

    # ------------------------------------------------------------------ the day
    def journey(self, frm: int, to: int, board: int) -> None:
        rng = self.rng
        if self.floor != frm:
            self.t += rng.uniform(0.3, 1.0)
            self.trip(frm)
        self.door_cycle(board=board, leave=0)
        if rng.random() < 0.12 and abs(to - frm) > 1:       # someone else stops on the way
            lo, hi = sorted((frm, to))
            mid = rng.randint(lo + 1, hi - 1)
            self.t += rng.uniform(0.5, 1.5)
            self.trip(mid)
            out = rng.randint(0, board - 1) if board > 1 else 0
            self.door_cycle(board=rng.randint(0, 1) if out == 0 else 0, leave=out)
        self.t += rng.uniform(0.5, 1.5)
        self.trip(to)
        self.door_cycle(board=0, leave=self.passengers)

    def pick(self, t: float) -> tuple[int, int]:
        """Origin and destination of a journey starting at ``t``."""
        rng, lift = self.rng, self.lift
        n = len(lift.landings)
        h = (t % DAY_S) / 3600.0
        others = [i for i in range(n) if i != lift.main]
        up = 0.75 if 7.0 <= h <= 9.5 else 0.15 if 17.0 <= h <= 19.5 else 0.4
        down = 0.7 if 17.0 <= h <= 19.5 else 0.15 if 7.0 <= h <= 9.5 else 0.4
        u = rng.random()
        if u < up * 0.6:
            return lift.main, rng.choice(others)
        if u < up * 0.6 + down * 0.6:
            return rng.choice(others), lift.main
        a = rng.randrange(n)
        b = rng.choice([i for i in range(n) if i != a])
        return a, b

    def run(self, incidents: list[Incident] | tuple[Incident, ...] = ()) -> DayPlan:
        """The day's traffic, and the ``incidents`` that fall in it, each as soon as the
        car is free (the calls that came meanwhile waited, or took the stairs)."""
        rng, lift, pl = self.rng, self.lift, self.plan
        todo = sorted((i for i in incidents if pl.t0 <= i.day * DAY_S < pl.t1),
                      key=lambda i: i.day)
        end = pl.t1 - 120.0
        peak = lift.peak_calls_h * 1.05
        t = self.t + 5.0
        while True:
            # next call: thinning of a Poisson process with the hour's rate; a call that
            # waited over a minute for the busy car is gone (stairs, or rode with others)
            while True:
                t += rng.expovariate(peak / 3600.0)
                if rng.random() * peak <= traffic_rate(lift, t):
                    break
            while todo and todo[0].day * DAY_S <= min(t, end):
                self.incident(todo.pop(0))
            if t >= end:
                break
            if t < self.t - 60.0:
                continue
            if rng.random() < 0.06 and self.passengers == 0:
                # a hall call answered where the car stands: the door opens, nobody rides
                self.idle(t)
                self.door_cycle(board=0, leave=0)
            else:
                frm, to = self.pick(t)
                self.idle(t)
                self.journey(frm, to, board=1 + min(7, int(rng.expovariate(0.7))))
            if self.t >= end:
                break
        for inc in todo:                  # after the day's last call
            self.incident(inc)
        self.t = max(self.t, pl.t1)
        pl.end_floor, pl.end_pos = self.floor, self.pos
        return pl


# ---------------------------------------------------------------------- inputs

def bounce_and_debounce(edges: list[tuple[float, str, int]], initial: dict[str, int],
                        inputs: Inputs, rng: random.Random) -> list[tuple[float, str, int]]:
    """The debounced changes the driver reports for these contact edges.

    Each logical edge becomes a burst of raw toggles (contact bounce, every pulse
    shorter than ``debounce_ms``); the door contact sometimes rebounds after closing
    for 30–80 ms (it passes the driver's debounce: the agent's ``contact_debounce_s``
    must absorb it). The raw level is then sampled at ``sample_hz`` around each burst
    and fed to the driver's :class:`Debouncer`, as the terminal does.
    """
    dt = 1.0 / inputs.sample_hz
    deb: dict[str, Debouncer] = {}
    out: list[tuple[float, str, int]] = []
    for name, level in initial.items():
        ms = inputs.presence_debounce_ms if name == "presence" else inputs.debounce_ms
        deb[name] = Debouncer(debounce_samples(ms, inputs.sample_hz))
        deb[name].update(level, 0.0)
        for _ in range(deb[name].samples - 1):
            deb[name].update(level, 0.0)
    limit = inputs.debounce_ms / 1000.0
    for t, name, level in sorted(edges, key=lambda e: e[0]):
        # raw transitions: (time, level) after the edge
        raw = [(t, level)]
        if name in ("door_closed", "door_lock", "run") and rng.random() < 0.8:
            tt = t
            for _ in range(rng.randint(1, 4)):
                tt += rng.uniform(0.0005, 0.004)
                raw.append((tt, 1 - level))
                tt += rng.uniform(0.0005, min(0.006, limit * 0.4))
                raw.append((tt, level))
        if name == "door_closed" and level == 1 and rng.random() < 0.15:
            tt = raw[-1][0] + rng.uniform(0.05, 0.15)          # the door rebounds off its stop
            raw.append((tt, 0))
            raw.append((tt + rng.uniform(0.03, 0.08), 1))
        d = deb[name]
        # sample on the input grid from the first raw change until it is stable
        k = math.ceil(raw[0][0] / dt - 1e-9)
        last = raw[-1][0] + (d.samples + 2) * dt
        i = 0
        cur = 1 - level
        while k * dt <= last:
            ts = k * dt
            while i < len(raw) and raw[i][0] <= ts:
                cur = raw[i][1]
                i += 1
            got = d.update(cur, ts)
            if got is not None:
                out.append((round(got[0], 4), name, got[1]))
            k += 1
    out.sort(key=lambda e: e[0])
    return out


# ---------------------------------------------------------------------- render


#: day 0 of the simulated week: a Monday
WEEK_START = datetime.datetime(2026, 11, 23, tzinfo=datetime.UTC)


def header(lift: LiftType, sensor: Sensor, t0: float = 0.0) -> dict[str, Any]:
    """The trace header of this lift and sensor (trace-format.md); the trace starts
    ``t0`` seconds into the simulated week (record times count from there)."""
    start = WEEK_START + datetime.timedelta(seconds=t0)
    return {"trace": 1, "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lift": lift.header_lift(),
            "accel": {"fs": sensor.fs, "lsb_per_g": sensor.lsb_per_g, "axes": "xyz"},
            "controller": {"present": lift.controller}}


def trace_header(lift: LiftType, sensor: Sensor, t0: float = 0.0) -> TraceHeader:
    """:func:`header` as the trace reader gives it, for a pipeline fed in-process."""
    h = header(lift, sensor, t0)
    return TraceHeader(start=h["start"], lift=h["lift"], accel=h["accel"],
                       controller_present=lift.controller)


INITIAL_DI = {"door_closed": 1, "door_lock": 1, "presence": 0, "alarm_button": 0,
              "safety_ok": 1, "mains_ok": 1, "inspection": 0, "run": 0}


def records(plan: DayPlan, sensor: Sensor, inputs: Inputs | None = None,
            window_s: float = 8.0, *, origin: float | None = None,
            first: bool = True) -> Iterator[Record]:
    """The plan as trace records in time order, rendered one window at a time.

    Record times count from ``origin`` (default the start of the plan, ``plan.t0`` into
    the week), as trace times count from the trace's start. ``first=False`` continues a
    trace (:func:`stream`): no opening power and input records."""
    inputs = inputs or Inputs()
    wear = plan.wear or NO_WEAR
    weather = plan.weather or Weather(plan.lift.name, plan.seed)
    lift = plan.lift
    fs, blk = sensor.fs, sensor.block
    seed = _seed(lift.name, plan.day, plan.seed, sensor.lsb_per_g)
    nrng = np.random.default_rng(seed)
    prng = random.Random(seed)
    kin = Kinematics(plan)
    vanes = lift.vanes()
    rot = sensor.rotation()
    vib = [Band(1.5, 12.0, fs, nrng), Band(1.5, 12.0, fs, nrng), Band(4.0, 30.0, fs, nrng)]
    door_band = Band(20.0, 40.0, fs, nrng)
    moves_t0 = np.asarray([m[0] for m in plan.door_moves] or [math.inf])
    moves_t1 = np.asarray([m[1] for m in plan.door_moves] or [math.inf])
    steps = plan.steps
    step_t = [s[0] for s in steps]

    # digital inputs: the plan's contact edges, bounced and debounced by the driver
    di = bounce_and_debounce(plan.edges, INITIAL_DI, inputs, prng)
    di_i = 0
    ctl_door_t = [c[0] for c in plan.ctl_door]
    ctl_run_t = [c[0] for c in plan.ctl_run]
    ctl_mode_t = [c[0] for c in plan.ctl_mode]
    ctl_safety_t = [c[0] for c in plan.ctl_safety]

    pending: list[tuple[float, int, str, Any]] = []   # (t, order, kind, data) awaiting merge
    seq = 0
    n = round(plan.t0 * fs)
    n_end = round(plan.t1 * fs)
    win = int(window_s * fs) // blk * blk
    _, _, p0 = kin.at(np.array([plan.t0]))
    idx0, d0 = vanes.nearest(float(p0[0]))
    zu_prev, zd_prev = (int(x) for x in vanes.levels(d0)[:2])
    label = lift.landings[idx0]
    first_di = dict(INITIAL_DI, zone_up=zu_prev, zone_down=zd_prev)
    t0 = plan.t0 if origin is None else origin   # trace times count from the trace's start
    if first:
        yield Record(round(plan.t0 - t0, 4), "pwr", {"src": 0, "batt": 100})
        yield Record(round(plan.t0 - t0, 4), "di", first_di)
    next_poll = plan.t0 + 0.05
    poll_s = 0.2
    while n < n_end:
        m = min(win, (n_end - n) // blk * blk) or blk
        ts = (n + np.arange(m)) / fs
        w0, w1 = ts[0], (n + m) / fs
        a, v, p = kin.at(ts)
        # ride vibration: level follows speed; a faint building hum at rest
        sp = np.minimum(np.abs(v) / lift.rated_speed, 1.0) ** 0.8
        worn = 1.0 + wear.level("vibration", w0)     # guide shoes, rollers, rope wear
        env_z = lift.vib_z * worn * sp + 0.002
        env_xy = lift.vib_xy * worn * sp + 0.0015
        car = np.empty((m, 3))
        car[:, 0] = vib[0].take(m) * env_xy
        car[:, 1] = vib[1].take(m) * env_xy
        car[:, 2] = G + a + vib[2].take(m) * env_z
        # the door operator on the car roof while the door runs
        k = np.searchsorted(moves_t0, ts, side="right") - 1
        running = (k >= 0) & (ts < moves_t1[np.clip(k, 0, None)])
        if running.any():
            car[:, 0] += door_band.take(m) * 0.03 * running
        # passengers stepping in/out: the car bounces on its ropes
        lo = bisect.bisect_left(step_t, w0 - 4.0)
        hi = bisect.bisect_left(step_t, w1)
        for ts0, amp, hz in steps[lo:hi]:
            dt = ts - ts0
            on = dt >= 0
            if on.any():
                d = dt[on]
                wave = amp * np.exp(-d / 0.6) * np.sin(2 * np.pi * hz * d)
                car[on, 2] += wave
                car[on, 0] += 0.3 * wave
        # sensor frame: tilt, gain, bias drifting with temperature, noise, quantisation
        counts = sensor.counts(car, nrng.standard_normal((m, 3)), weather.temperature(ts),
                               rot=rot)
        rows = counts.tolist()             # one conversion a window: blocks are slices
        t_blk = np.round(ts[::blk], 4).tolist()
        out: list[tuple[float, int, str, Any]] = [
            (t_b, 0, "acc", rows[b:b + blk]) for t_b, b in zip(t_blk, range(0, m, blk),
                                                               strict=True)]
        # leveling sensors from the sampled position
        idx, dpos = vanes.nearest(p)
        zu, zd, level = vanes.levels(dpos)
        zu, zd = zu.astype(np.int8), zd.astype(np.int8)
        changes: dict[int, dict[str, int]] = {}   # 0.1 ms ticks -> changes
        for name, arr, prev in (("zone_up", zu, zu_prev), ("zone_down", zd, zd_prev)):
            ch = np.flatnonzero(np.diff(arr, prepend=prev))
            for c in ch.tolist():
                # the input grid: the driver reports the sample that first saw it
                # (the vane sensors are solid state: clean edges, on the input grid)
                tq = math.ceil(ts[c] * inputs.sample_hz - 1e-9) / inputs.sample_hz
                changes.setdefault(round(tq * 10000), {})[name] = int(arr[c])
        zu_prev, zd_prev = int(zu[-1]), int(zd[-1])
        for key, data in changes.items():
            seq += 1
            heapq.heappush(pending, (key / 10000, seq, "di", data))
        # controller polls
        if lift.controller:
            lab_idx = np.where(level, idx, -1)
            # floor label: last landing whose door zone the car was in (carried over)
            filled = np.maximum.accumulate(np.where(level, np.arange(m), -1))
            polls = np.arange(next_poll, w1, poll_s)
            if polls.size:
                next_poll = float(polls[-1] + poll_s)
            pi = np.minimum(np.rint((polls - w0) * fs).astype(np.int64), m - 1)
            for t_poll, s in zip(polls.tolist(), pi.tolist(), strict=True):
                f = int(filled[s])
                lab = lift.landings[int(lab_idx[f])] if f >= 0 else label
                rk = bisect.bisect_right(ctl_run_t, t_poll) - 1
                _, run, direction = plan.ctl_run[rk]
                door = plan.ctl_door[bisect.bisect_right(ctl_door_t, t_poll) - 1][1]
                # the planner seeds every timeline at the plan's start, as ctl_door
                mode = plan.ctl_mode[bisect.bisect_right(ctl_mode_t, t_poll) - 1][1]
                safety = plan.ctl_safety[bisect.bisect_right(ctl_safety_t, t_poll) - 1][1]
                seq += 1
                heapq.heappush(pending, (round(t_poll, 4), seq, "ctl", ctl_view(
                    mode=mode, run=run, direction=direction, floor=lab, door=door,
                    zone=int(level[s]), speed=float(v[s]), safety=safety,
                    lock=int(door != DOOR_LOCKED))))
            if filled[-1] >= 0:
                label = lift.landings[int(lab_idx[filled[-1]])]
        while di_i < len(di) and di[di_i][0] < w1:
            t_e, name, lvl = di[di_i]
            seq += 1
            heapq.heappush(pending, (t_e, seq, "di", {name: lvl}))
            di_i += 1
        while pending and pending[0][0] < w1:
            out.append(heapq.heappop(pending))
        out.sort(key=lambda r: (r[0], r[1] if r[2] != "acc" else -1))
        for t_r, _, kind, data in out:
            yield Record(round(t_r - t0, 4), kind, data)
        n += m
    while pending:
        t_r, _, kind, data = heapq.heappop(pending)
        yield Record(round(t_r - t0, 4), kind, data)


def plan_day(lift: LiftType | str, day: int, seed: int = 1, start_s: float = 0.0,
             duration_s: float = DAY_S, *, wear: Wear | None = None,
             start: tuple[int, float] | None = None,
             incidents: list[Incident] | tuple[Incident, ...] = ()) -> DayPlan:
    """The traffic of one lift-day (or of a part of it, ``start_s`` into the day), with
    the ``incidents`` that fall in it."""
    lt = LIFT_TYPES[lift] if isinstance(lift, str) else lift
    return Planner(lt, day, seed, start_s, duration_s, wear=wear, start=start).run(incidents)


def stream(lift: LiftType | str, days: int, seed: int = 1, sensor: Sensor | None = None,
           wear: Wear | None = None, *, first_day: int = 0, start_s: float = 0.0,
           duration_s: float | None = None, inputs: Inputs | None = None,
           incidents: list[Incident] | tuple[Incident, ...] = (),
           on_day: Callable[[DayPlan], None] | None = None) -> Iterator[Record]:
    """Consecutive lift-days as one trace: each day starts where the previous one parked
    the car, wear and weather run on across midnight, and only one window of samples is
    ever in memory. The trace starts ``start_s`` into ``first_day`` (record times count
    from there) and lasts ``duration_s`` (default: to the end of the ``days``-th day).
    ``incidents`` (:class:`Incident`) are played on their days; ``on_day`` gets each
    day's plan (its ground truth, the incidents' onsets) before its records."""
    lt = LIFT_TYPES[lift] if isinstance(lift, str) else lift
    sensor = sensor or Sensor()
    t_begin = first_day * DAY_S + start_s
    t_end = (first_day + days) * DAY_S if duration_s is None else t_begin + duration_s
    start: tuple[int, float] | None = None
    day = first_day
    while day * DAY_S < t_end:
        a = max(day * DAY_S, t_begin)
        plan = plan_day(lt, day, seed, a - day * DAY_S, min((day + 1) * DAY_S, t_end) - a,
                        wear=wear, start=start, incidents=incidents)
        start = (plan.end_floor, plan.end_pos)
        if on_day is not None:
            on_day(plan)
        yield from records(plan, sensor, inputs, origin=t_begin, first=day == first_day)
        day += 1


__all__ = ["DAY_S", "LIFT_TYPES", "NO_WEAR", "DayPlan", "Drift", "Incident", "Inputs",
           "Kinematics", "LiftType", "Record", "Sensor", "TripTruth", "Wear", "Weather",
           "bounce_and_debounce", "header", "plan_day", "records", "stream", "trace_header",
           "traffic_rate"]
