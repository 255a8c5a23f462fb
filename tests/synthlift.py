"""A small synthetic lift that writes scenario traces in the format of trace-format.md.

Tests describe what the lift does (``idle``, ``trip``, ``door_cycle``, ``set``,
``stall_between_floors``, ...) and get the records a terminal would have recorded:
digital inputs on change, a controller poll every ``poll_s``, and optionally
accelerometer blocks. The physics is the one lift model's (``hil_tests/liftmodel.py``,
sampled through ``tests/synth_motion.py``): its S-curve and kinematics, so
leveling-zone edges happen where the car really is, its vanes (with this module's
sensor gap) and its accelerometer; the controller's fields are its ``ctl_view``.

``sources``: ``"both"`` (controller link + all terminal inputs), ``"sensors"`` (no
controller: header ``controller.present`` false), ``"controller"`` (the controller
link plus only the terminal's own presence and alarm-button inputs).

Not the HIL rig's stepping simulator (``hil_tests/liftsim.py``, the same model in real
time): scenario verbs that put each detector's timer on a known clock.
"""

from __future__ import annotations

import bisect
import sys
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

# the lift model lives with the HIL rig (benches import this module without conftest)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hil_tests"))

from liftmodel import (  # noqa: E402
    DOOR_CLOSED,
    DOOR_CLOSING,
    DOOR_LOCKED,
    DOOR_OPEN,
    DOOR_OPENING,
    G,
    Kinematics,
    Vanes,
    ctl_view,
)
from liftwatch.drivers.trace import Record, TraceHeader, TraceWriter  # noqa: E402
from liftwatch.signal.pipeline import Pipeline  # noqa: E402
from liftwatch.signal.settings import DetectionParams, LiftParams  # noqa: E402
from synth_motion import accel_counts, trip_motion, vibration  # noqa: E402

SENSOR_INPUTS = ("door_closed", "door_lock", "zone_up", "zone_down", "presence",
                 "alarm_button", "safety_ok", "mains_ok", "inspection", "run")
CONTROLLER_TERMINAL_INPUTS = ("presence", "alarm_button")
SENSOR_GAP_M = 0.08      # leveling sensors' spacing on the car (the vanes' reach)
KIN_FS = 100.0            # kinematics sampling for zone edges and controller speed


class SynthLift:
    """Builder of a scenario; ``records()`` gives the trace records in time order."""

    def __init__(self, landings: list[str] | None = None,
                 heights: list[float] | None = None, *, sources: str = "both",
                 start: str | None = None, rated_speed: float = 1.6, door_zone_m: float = 0.2,
                 poll_s: float = 0.2, accel: bool = False, fs: float = 400.0,
                 lsb_per_g: float = 256.0, inputs: Iterable[str] | None = None,
                 a_max: float = 0.8, j_max: float = 1.0, vib_amp: float = 0.0,
                 seed: int = 0) -> None:
        if sources not in ("both", "sensors", "controller"):
            raise ValueError("sources must be both, sensors or controller")
        self.landings = landings or ["B1", "1", "2", "3", "4", "5"]
        self.heights = heights or [3.2 * i for i in range(len(self.landings))]
        self.sources = sources
        self.rated_speed = rated_speed
        self.dz = door_zone_m
        #: the independent simulator's geometry: level within ±door_zone_m/2
        self.vanes = Vanes(tuple(self.heights), door_zone_m / 2, SENSOR_GAP_M)
        self.poll_s = poll_s
        self.accel = accel
        self.fs = fs
        self.lsb_per_g = lsb_per_g
        self.a_max, self.j_max = a_max, j_max
        self.vib_amp = vib_amp
        self.seed = seed
        self.controller = sources in ("both", "controller")
        if inputs is not None:
            self.inputs = tuple(inputs)
        else:
            self.inputs = SENSOR_INPUTS if sources in ("both", "sensors") \
                else CONTROLLER_TERMINAL_INPUTS
        i0 = self.landings.index(start) if start else 1 % len(self.landings)
        self.pos = self.heights[i0]
        self.t = 0.0
        self.di = {"door_closed": 1, "door_lock": 1, "zone_up": 1, "zone_down": 1,
                   "presence": 0, "alarm_button": 0, "safety_ok": 1, "mains_ok": 1,
                   "inspection": 0, "run": 0, "limit_top": 0, "limit_bottom": 0}
        self._di0 = dict(self.di)
        self.ctl = ctl_view(mode=1, run=0, direction=0, floor=self.landings[i0],
                            door=DOOR_LOCKED, zone=1, speed=0.0)
        self._di_events: list[tuple[float, int, dict[str, int]]] = []
        self._ctl_states: list[tuple[float, dict[str, Any]]] = [(0.0, dict(self.ctl))]
        self._link: list[tuple[float, str]] = [(0.0, "ok")]
        # t0, the car's motion (from t0, relative to where it started), its duration,
        # vibration amplitude of each move
        self._moves: list[tuple[float, Kinematics, float, float]] = []
        self._pwr: list[tuple[float, dict[str, Any]]] = []
        self._extra: list[Record] = []
        self._seq = 0
        #: inputs whose contact is stuck: their changes never reach the trace
        self.stuck: set[str] = set()

    # ------------------------------------------------------------------ building blocks
    def _di(self, t: float, **levels: int) -> None:
        ch = {k: v for k, v in levels.items() if k in self.inputs and k not in self.stuck}
        for k, v in levels.items():
            self.di[k] = v
        if ch:
            self._seq += 1
            self._di_events.append((t, self._seq, ch))

    def _ctl_at(self, t: float, **fields: Any) -> None:
        self.ctl.update(fields)
        self._ctl_states.append((t, dict(self.ctl)))

    def idle(self, seconds: float) -> SynthLift:
        self.t += seconds
        return self

    def set(self, **levels: int) -> SynthLift:
        """Set terminal inputs now; safety/lock/inspection are mirrored to the controller."""
        self._di(self.t, **levels)
        mirror: dict[str, Any] = {}
        if "safety_ok" in levels:
            mirror["safety"] = 0 if levels["safety_ok"] else 1
        if "door_lock" in levels:
            mirror["lock"] = 0 if levels["door_lock"] else 1
        if "inspection" in levels:
            mirror["mode"] = 2 if levels["inspection"] else 1
        if mirror:
            self._ctl_at(self.t, **mirror)
        return self

    def ctl_set(self, **fields: Any) -> SynthLift:
        """Set controller fields now (mode, fault, floor, door, overload, ...)."""
        self._ctl_at(self.t, **fields)
        return self

    def link(self, state: str) -> SynthLift:
        """Controller link from now: ``ok``, ``null`` (failed polls) or ``absent``."""
        self._link.append((self.t, state))
        return self

    def power(self, src: int, batt: float) -> SynthLift:
        self._pwr.append((self.t, {"src": src, "batt": batt}))
        return self

    def pulse(self, name: str, width: float, level: int | None = None) -> SynthLift:
        """A glitch: ``name`` flips for ``width`` seconds at now (time does not advance)."""
        base = self.di[name]
        lvl = 1 - base if level is None else level
        self._di(self.t, **{name: lvl})
        self._di(self.t + width, **{name: base})
        self.di[name] = base
        return self

    def pulse_at(self, name: str, at: float, width: float, level: int | None = None
                 ) -> SynthLift:
        """A flip of ``name`` for ``width`` s starting ``at`` s from now (schedule it before
        the move it should fall into); time does not advance."""
        t0 = self.t
        self.t = t0 + at
        self.pulse(name, width, level)
        self.t = t0
        return self

    def chatter(self, name: str, at: float, count: int = 5, width: float = 0.05,
                gap: float = 0.05) -> None:
        """``count`` glitches of ``width`` s on ``name`` starting ``at`` s from now."""
        t0 = self.t
        for k in range(count):
            self.t = t0 + at + k * (width + gap)
            self.pulse(name, width)
        self.t = t0

    # ------------------------------------------------------------------ doors
    def open_door(self, open_s: float = 3.0) -> SynthLift:
        self._di(self.t, door_lock=0)
        self._ctl_at(self.t, lock=1, door=DOOR_OPENING)
        self._di(self.t + 0.1, door_closed=0)
        self.t += open_s
        self._ctl_at(self.t, door=DOOR_OPEN)
        return self

    def close_door(self, close_s: float = 3.0) -> SynthLift:
        self._ctl_at(self.t, door=DOOR_CLOSING)
        self.t += close_s
        self._di(self.t, door_closed=1)
        self._ctl_at(self.t, door=DOOR_CLOSED)
        self.t += 0.3
        self._di(self.t, door_lock=1)
        self._ctl_at(self.t, lock=0, door=DOOR_LOCKED)
        self.t += 0.2
        return self

    def reopen(self, after_s: float = 1.0, open_s: float = 1.0, touch: bool = False
               ) -> SynthLift:
        """A closing attempt that turns back (obstruction); ``touch``: the contact makes."""
        self._ctl_at(self.t, door=DOOR_CLOSING)
        self.t += after_s
        if touch:
            self.pulse("door_closed", 0.2, level=1)
            self.t += 0.2
        self._ctl_at(self.t, door=DOOR_OPENING)
        self.t += open_s
        self._ctl_at(self.t, door=DOOR_OPEN)
        return self

    def door_cycle(self, open_s: float = 3.0, dwell_s: float = 4.0, close_s: float = 3.0,
                   reopens: int = 0, touch: bool = False) -> SynthLift:
        self.open_door(open_s)
        self.idle(dwell_s)
        for _ in range(reopens):
            self.reopen(touch=touch)
            self.idle(1.0)
        return self.close_door(close_s)

    # ------------------------------------------------------------------ motion
    def _zone(self, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """zone_up, zone_down levels and the landing index in zone (-1) at positions."""
        up, down, _level, idx = self.vanes.at(pos)
        return up, down, idx

    def move(self, distance_m: float, *, run: bool = True, v: float | None = None,
             start_delay: float = 0.5, stop_delay: float = 0.5,
             vib_amp: float | None = None) -> SynthLift:
        """Move the car by ``distance_m`` (negative: down); ``run``: with the run signal;
        ``vib_amp``: car vibration during this move (m/s² peak per axis)."""
        direction = 1 if distance_m > 0 else 2
        if run:
            self._di(self.t, run=1)
            self._ctl_at(self.t, run=1, dir=direction)
            self.t += start_delay
        # the move on the KIN_FS grid for the contacts; exact for speed and accelerometer
        kin = Kinematics(trip_motion(distance_m, v or self.rated_speed, self.a_max,
                                     self.j_max))
        tt = np.arange(int(np.floor(kin.t[-1] * KIN_FS)) + 1) / KIN_FS
        _acc, _vel, pos = kin.at(tt)
        pos = pos + self.pos
        up, down, idx = self._zone(pos)
        t0 = self.t
        prev_up, prev_down, prev_idx = self.di["zone_up"], self.di["zone_down"], -2
        for i in range(len(tt)):
            ti = t0 + tt[i]
            u, d = int(up[i]), int(down[i])
            ch = {}
            if u != prev_up:
                ch["zone_up"] = u
            if d != prev_down:
                ch["zone_down"] = d
            if ch:
                self._di(ti, **ch)
                prev_up, prev_down = u, d
            if idx[i] != prev_idx:
                fields: dict[str, Any] = {"zone": int(idx[i] >= 0)}
                if idx[i] >= 0:
                    fields["floor"] = self.landings[int(idx[i])]
                self._ctl_at(ti, **fields)
                prev_idx = int(idx[i])
        self._moves.append((t0, kin, float(kin.t[-1]),
                            self.vib_amp if vib_amp is None else vib_amp))
        self.t = t0 + float(tt[-1]) + 1.0 / KIN_FS
        self.pos = float(pos[-1])
        if run:
            self.t += stop_delay
            self._di(self.t, run=0)
            self._ctl_at(self.t, run=0, dir=0)
        return self

    def trip(self, to: str, **kw: Any) -> SynthLift:
        """A normal trip to landing ``to`` (doors must be closed)."""
        return self.move(self.heights[self.landings.index(to)] - self.pos, **kw)

    def stall_between_floors(self, to: str | None = None, fraction: float = 0.5,
                             **kw: Any) -> SynthLift:
        """A trip toward ``to`` (default: the next landing up, or down at the top) that
        stops ``fraction`` of the way, outside any door zone."""
        if to is None:
            i = int(np.argmin([abs(h - self.pos) for h in self.heights]))
            to = self.landings[i + 1 if i + 1 < len(self.landings) else i - 1]
        return self.move((self.heights[self.landings.index(to)] - self.pos) * fraction, **kw)

    def relevel(self, to: str) -> SynthLift:
        """A slow move onto landing ``to`` (after a stall)."""
        return self.move(self.heights[self.landings.index(to)] - self.pos, v=0.3)

    # ------------------------------------------------------------------ output
    def header(self) -> TraceHeader:
        hdr = TraceHeader(start="2026-11-23T08:00:00Z",
                          lift={"id": "31100000000000000001", "landings": self.landings,
                                "landing_heights_m": self.heights,
                                "rated_speed": self.rated_speed, "door_zone_m": self.dz},
                          controller_present=self.controller)
        if self.accel:
            hdr.accel = {"fs": self.fs, "lsb_per_g": self.lsb_per_g, "axes": "xyz"}
        return hdr

    def lift_params(self) -> LiftParams:
        return LiftParams(landings=self.landings, landing_heights_m=self.heights,
                          rated_speed=self.rated_speed, door_zone_m=self.dz)

    def _speed_at(self, t: float) -> float:
        for t0, kin, dur, _vib in self._moves:
            if t0 <= t <= t0 + dur:
                return float(abs(kin.at(np.array([t - t0]))[1][0]))
        return 0.0

    def _accel_records(self, t_end: float) -> list[Record]:
        n = int(t_end * self.fs) + 1
        vert = np.zeros(n)
        amp = np.zeros(n)
        ts = np.arange(n) / self.fs
        for t0, kin, dur, vib in self._moves:
            on = (ts >= t0) & (ts <= t0 + dur)
            if on.any():
                vert[on] = kin.at(ts[on] - t0)[0]
                amp[on] = vib
        counts = np.asarray(accel_counts(vert, self.fs, self.lsb_per_g, seed=self.seed))
        if amp.any():      # vibration only while the car moves, per move's amplitude
            shake = vibration(n, self.fs, 1.0, self.seed) * amp[:, None]
            counts = counts + np.rint(shake / G * self.lsb_per_g).astype(np.int64)
        counts = counts.tolist()
        block = int(self.fs / 10)
        return [Record(round(i / self.fs, 6), "acc", counts[i:i + block])
                for i in range(0, n, block)]

    def records(self) -> list[Record]:
        """The scenario so far as trace records, in time order."""
        end = self.t
        recs: list[tuple[float, int, Record]] = []
        first = {k: self._di0[k] for k in self.inputs}
        recs.append((0.0, 0, Record(0.0, "di", first)))
        for t, seq, ch in self._di_events:
            if t <= end:
                recs.append((round(t, 6), 1 + seq, Record(round(t, 6), "di", ch)))
        if self.controller:
            times = [s[0] for s in self._ctl_states]
            ltimes = [s[0] for s in self._link]
            k = 0
            while k * self.poll_s <= end + 1e-9:
                tp = round(k * self.poll_s, 6)
                k += 1
                link = self._link[bisect.bisect_right(ltimes, tp) - 1][1]
                if link == "absent":
                    continue
                if link == "null":
                    recs.append((tp, 10 ** 9, Record(tp, "ctl", None)))
                    continue
                state = dict(self._ctl_states[bisect.bisect_right(times, tp) - 1][1])
                state["speed"] = round(self._speed_at(tp), 3)
                recs.append((tp, 10 ** 9, Record(tp, "ctl", state)))
        for t, d in self._pwr:
            recs.append((round(t, 6), 2 * 10 ** 9, Record(round(t, 6), "pwr", d)))
        if self.accel:
            recs += [(r.t, 3 * 10 ** 9, r) for r in self._accel_records(end)]
        recs += [(r.t, 4 * 10 ** 9, r) for r in self._extra]
        recs.sort(key=lambda x: (x[0], x[1]))
        return [r for _, _, r in recs]

    def write(self, path: str | Path) -> Path:
        with TraceWriter(path, self.header()) as w:
            for r in self.records():
                w.write_record(r)
        return Path(path)

    def run(self, **detection: Any) -> list[dict[str, Any]]:
        """Feed the scenario through a Pipeline the way replay does; return its output."""
        return run_records(self.records(), self.header(), self.t, **detection)


def run_records(records: list[Record], header: TraceHeader, until: float | None = None,
                pipeline: Pipeline | None = None, **detection: Any) -> list[dict[str, Any]]:
    """Feed records with advance() on a 0.1 s grid between them, then finish()."""
    if pipeline is None:
        lift = header.lift or {}
        lp = LiftParams(landings=lift["landings"], landing_heights_m=lift["landing_heights_m"],
                        rated_speed=lift["rated_speed"], door_zone_m=lift["door_zone_m"])
        acc = header.accel or {}
        pipeline = Pipeline(lp, replace(DetectionParams(), **detection),
                            accel_fs=acc.get("fs"), lsb_per_g=acc.get("lsb_per_g"),
                            controller_present=header.controller_present)
    out: list[dict[str, Any]] = []
    last: float | None = None
    for r in records:
        if last is not None:
            tt = last + 0.1
            while tt < r.t:
                out += pipeline.advance(tt)
                tt += 0.1
        out += pipeline.feed(r.t, r.kind, r.data)
        last = r.t
    end = until if until is not None else (last or 0.0)
    if last is not None:
        tt = last + 0.1
        while tt < end:
            out += pipeline.advance(tt)
            tt += 0.1
    out += pipeline.finish(end)
    return out


def events(out: list[dict[str, Any]], code: str | None = None) -> list[dict[str, Any]]:
    return [o for o in out if o["type"] == "event" and (code is None or o["code"] == code)]


def raised(out: list[dict[str, Any]], code: str) -> list[dict[str, Any]]:
    return [o for o in events(out, code) if o["state"] == "raised"]


def cleared(out: list[dict[str, Any]], code: str) -> list[dict[str, Any]]:
    return [o for o in events(out, code) if o["state"] == "cleared"]
