"""The lift's physics and conventions, once, for every simulator of the project.

Three front-ends drive this one model, each for its own use:

- ``tests/synthlift.py`` (:class:`SynthLift`): scenario verbs on a known clock, for the
  detector tests (``tests/synth_motion.py`` its trips as sampled arrays);
- ``liftsim.py`` (:class:`LiftSim`): the HIL rig's lift, stepped sample by sample in
  real time;
- ``service.py``: streamed lift-days and weeks of ordinary traffic.

What they share is here: the controller's door states, the jerk-limited S-curve of a
trip (:func:`s_curve`) and the car's motion evaluated from its jerk segments
(:class:`Motion`, :class:`Kinematics`), the leveling vanes (:class:`Vanes`), the
accelerometer as mounted (:class:`Sensor`) with the ride vibration models, the
controller's view of the car (:func:`ctl_view`) and the installation types
(:class:`LiftType`). A front-end chooses parameters (a vane reach, a sensor's noise),
never its own formula.

Conventions (trace-format.md): heights are the car sill in metres, up positive; the
car frame is z up, so a car at rest reads +1 g on z; a mounting tilt is a matrix
*sensor_from_car* (``sensor = R @ car``).
"""

from __future__ import annotations

import bisect
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from scipy.signal import butter, sosfilt, sosfilt_zi

G = 9.80665  # m/s² per g (the accelerometer's unit)

# Controller door states of trace-format.md (6: held, neither closed nor fully open).
DOOR_CLOSING, DOOR_CLOSED, DOOR_OPENING, DOOR_OPEN, DOOR_LOCKED = 1, 2, 3, 4, 5
DOOR_HELD = 6


# ---------------------------------------------------------------------- the trip

def s_curve(distance: float, v_max: float, a_max: float, j_max: float) -> list[tuple[float, float]]:
    """Jerk segments [(duration, jerk), …] of a rest-to-rest move over ``distance`` metres.

    Symmetric S-curve (up to 7 segments: jerk, constant acceleration, jerk, cruise and
    the mirror image). When the move is too short for rated speed, the peak speed is
    the highest for which speed-up and slow-down fit in the distance (bisection), so
    short trips never reach ``v_max`` and very short ones never reach ``a_max``.
    Segments shorter than 1 ns are left out.
    """

    def ramp(v: float) -> tuple[float, float, float]:
        # time at constant jerk, time at constant acceleration, distance to reach v
        if v >= a_max * a_max / j_max:
            tj, ta = a_max / j_max, v / a_max - a_max / j_max
        else:
            tj, ta = math.sqrt(v / j_max), 0.0
        return tj, ta, v * (2 * tj + ta) / 2

    v = v_max
    if 2 * ramp(v)[2] > distance:          # too short for rated speed: lower the peak
        lo, hi = 0.0, v_max
        for _ in range(100):
            mid = (lo + hi) / 2
            if 2 * ramp(mid)[2] <= distance:
                lo = mid
            else:
                hi = mid
        v = lo
    tj, ta, d_ramp = ramp(v)
    cruise = (distance - 2 * d_ramp) / v if v > 0 else 0.0
    up = [(tj, j_max), (ta, 0.0), (tj, -j_max)]
    down = [(tj, -j_max), (ta, 0.0), (tj, j_max)]
    return [s for s in up + [(max(cruise, 0.0), 0.0)] + down if s[0] > 1e-9]


class SegmentTable(Protocol):
    """Piecewise-constant jerk: segment start times, jerk, and the state at each start
    (a :class:`Motion`, or the service's DayPlan)."""

    seg_t: list[float]
    seg_j: list[float]
    seg_a: list[float]
    seg_v: list[float]
    seg_p: list[float]


def append_move(table: SegmentTable, t: float, segments: list[tuple[float, float]],
                sign: float, target: float | None = None) -> float:
    """Append a trip to ``table``: ``segments`` (of :func:`s_curve`) played from rest at
    ``t`` in direction ``sign`` (+1 up, -1 down) from the table's last position, the
    state integrated exactly (piecewise polynomials); then rest on ``target`` (default:
    where the segments took the car), so a stop is where the trip was meant to stop.
    Returns the time the car is at rest again."""
    a = v = 0.0
    p = table.seg_p[-1]
    for duration, jerk in segments:
        j = jerk * sign
        for lst, x in ((table.seg_t, t), (table.seg_j, j), (table.seg_a, a), (table.seg_v, v),
                       (table.seg_p, p)):
            lst.append(x)
        p += v * duration + a * duration ** 2 / 2 + j * duration ** 3 / 6
        v += a * duration + j * duration ** 2 / 2
        a += j * duration
        t += duration
    for lst, x in ((table.seg_t, t), (table.seg_j, 0.0), (table.seg_a, 0.0), (table.seg_v, 0.0),
                   (table.seg_p, p if target is None else target)):
        lst.append(x)
    return t


def append_stall(table: SegmentTable, t: float, segments: list[tuple[float, float]],
                 sign: float, stop_after_s: float, decel: float = 1.5) -> float:
    """Append a trip that is cut ``stop_after_s`` after it starts: the segments play
    until then, and the car brakes to rest at ``decel`` m/s² (the machine brake of an
    emergency stop, as :meth:`liftsim.LiftSim.trip` does). Returns when it is at rest."""
    a = v = 0.0
    p = table.seg_p[-1]
    elapsed = 0.0

    def seg(t: float, j: float, a: float, v: float, p: float) -> None:
        for lst, x in ((table.seg_t, t), (table.seg_j, j), (table.seg_a, a),
                       (table.seg_v, v), (table.seg_p, p)):
            lst.append(x)

    for duration, jerk in segments:
        d = min(duration, stop_after_s - elapsed)
        if d <= 0:
            break
        j = jerk * sign
        seg(t, j, a, v, p)
        p += v * d + a * d ** 2 / 2 + j * d ** 3 / 6
        v += a * d + j * d ** 2 / 2
        a += j * d
        t += d
        elapsed += d
    if abs(v) > 1e-9:
        b = -decel if v > 0 else decel
        d = abs(v) / decel
        seg(t, 0.0, b, v, p)
        p += v * d + b * d ** 2 / 2
        t += d
    seg(t, 0.0, 0.0, 0.0, p)
    return t


@dataclass
class Motion:
    """The car's motion as jerk segments, built trip by trip (a :class:`SegmentTable`):
    at rest on ``p0`` from ``t0``."""

    t0: float = 0.0
    p0: float = 0.0
    seg_t: list[float] = field(default_factory=list)
    seg_j: list[float] = field(default_factory=list)
    seg_a: list[float] = field(default_factory=list)
    seg_v: list[float] = field(default_factory=list)
    seg_p: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.seg_t:
            self.seg_t.append(self.t0)
            self.seg_j.append(0.0)
            self.seg_a.append(0.0)
            self.seg_v.append(0.0)
            self.seg_p.append(self.p0)

    def move(self, t: float, segments: list[tuple[float, float]], sign: float,
             target: float | None = None) -> float:
        """:func:`append_move` to this motion."""
        return append_move(self, t, segments, sign, target)


class Kinematics:
    """A segment table's car motion evaluated at any times (vectorised).

    Before the first segment the first one's state holds (a table starts at rest)."""

    def __init__(self, table: SegmentTable) -> None:
        self.t = np.asarray(table.seg_t)
        self.j = np.asarray(table.seg_j)
        self.a = np.asarray(table.seg_a)
        self.v = np.asarray(table.seg_v)
        self.p = np.asarray(table.seg_p)

    def at(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Acceleration, speed and position (signed, m/s², m/s, m) at times ``t``."""
        i = np.searchsorted(self.t, t, side="right") - 1
        np.clip(i, 0, None, out=i)
        d = t - self.t[i]
        j, a0, v0 = self.j[i], self.a[i], self.v[i]
        a = a0 + j * d
        v = v0 + d * (a0 + j * d / 2)
        p = self.p[i] + d * (v0 + d * (a0 / 2 + j * d / 6))
        return a, v, p


# ---------------------------------------------------------------------- leveling vanes

@dataclass(frozen=True)
class Vanes:
    """The leveling sensors on the car and the vanes at each landing.

    Both sensors are on while the car sill is within ±``half_m`` of a landing sill (the
    level window, where the door may open); ``zone_up``, mounted higher on the car,
    reaches ``reach_m`` further below the window (a car slightly low sees only
    ``zone_up``: it must move up), ``zone_down`` that much further above. So moving up
    into a landing ``zone_up`` comes on first, moving down ``zone_down`` does
    (docs/interfaces.md).

    The front-ends keep their own numbers: the HIL rig and the service use the
    example traces' geometry (``half_m`` = door_zone_m, reach 0.06 m); the detector
    tests that of the independent simulator (``half_m`` = door_zone_m / 2, reach 0.08 m,
    as ``signal/motion.default_zone_intervals``).
    """

    heights: tuple[float, ...]
    half_m: float
    reach_m: float
    #: midpoints between consecutive sills: where the nearest landing changes
    mids: tuple[float, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        hs = np.asarray(self.heights, dtype=float)
        object.__setattr__(self, "mids", tuple(((hs[1:] + hs[:-1]) / 2).tolist()))

    def intervals(self) -> dict[str, tuple[float, float]]:
        """Where each sensor is on, as car-sill offsets from a landing sill (m)."""
        h, r = self.half_m, self.reach_m
        return {"zone_up": (-h - r, h), "zone_down": (-h, h + r)}

    def nearest(self, pos: Any) -> tuple[Any, Any]:
        """The landing nearest to each car position, and the car's offset from its sill.

        A float is looked up without numpy (the HIL rig asks 800 times a simulated
        second); an array in one call."""
        if isinstance(pos, float):
            i = bisect.bisect_left(self.mids, pos)
            return i, pos - self.heights[i]
        idx = np.searchsorted(self.mids, pos)
        return idx, pos - np.asarray(self.heights)[idx]

    def levels(self, offset: Any) -> tuple[Any, Any, Any]:
        """``zone_up``, ``zone_down`` and level (in the window) at offsets from the nearest
        sill: booleans for a float, boolean arrays for an array."""
        iv = self.intervals()
        (ulo, uhi), (dlo, dhi) = iv["zone_up"], iv["zone_down"]
        h = self.half_m
        return ((offset >= ulo) & (offset <= uhi), (offset >= dlo) & (offset <= dhi),
                (offset >= -h) & (offset <= h))

    def at(self, pos: Any) -> tuple[Any, Any, Any, Any]:
        """``zone_up``, ``zone_down``, level, and the landing in whose window the car is
        (-1: none), for a car sill at ``pos`` (float or array)."""
        idx, off = self.nearest(pos)
        up, down, level = self.levels(off)
        return up, down, level, np.where(level, idx, -1)


# ---------------------------------------------------------------------- accelerometer

def rotation(tilt_deg: tuple[float, float]) -> np.ndarray:
    """sensor_from_car for a mounting tilted ``tilt_deg`` about the car's x, then y axis."""
    ax, ay = (math.radians(d) for d in tilt_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    return ry @ rx


@dataclass(frozen=True)
class Sensor:
    """The terminal's accelerometer as mounted: chip scale, mounting, imperfections."""

    lsb_per_g: int = 256
    fs: int = 400
    block: int = 32
    range_g: float = 2.0
    #: white noise (mg rms) per axis: ADXL345-class at 256 counts/g, LIS3DH-class at 1024
    noise_mg: tuple[float, float, float] = (4.0, 4.0, 5.0)
    #: mounting tilt (degrees) about the car's x and y axes
    tilt_deg: tuple[float, float] = (2.5, -4.0)
    #: zero-g offset (mg) at 25 °C, and its temperature coefficient (mg/°C)
    bias_mg: tuple[float, float, float] = (18.0, -12.0, 25.0)
    bias_tc: tuple[float, float, float] = (0.5, -0.4, 1.5)
    #: sensitivity (gain) error per axis
    gain: tuple[float, float, float] = (1.01, 0.99, 1.012)
    #: any other mounting, as a sensor_from_car matrix (replaces ``tilt_deg``)
    mounting: tuple[tuple[float, ...], ...] | None = None

    @classmethod
    def for_scale(cls, lsb_per_g: int) -> Sensor:
        if lsb_per_g >= 1000:
            return cls(lsb_per_g=lsb_per_g, noise_mg=(3.0, 3.0, 3.5), bias_mg=(-20.0, 15.0, -30.0),
                       bias_tc=(-0.3, 0.4, -1.2), gain=(0.99, 1.008, 0.988))
        return cls(lsb_per_g=lsb_per_g)

    @classmethod
    def ideal(cls, lsb_per_g: float, noise_counts: float = 0.0, gain: float = 1.0,
              mounting: Any = None, tilt_deg: tuple[float, float] = (0.0, 0.0),
              fs: int = 400, block: int = 32, range_g: float = 16.0) -> Sensor:
        """A chip without bias, with the same gain and noise (in counts) on each axis."""
        nm = noise_counts / lsb_per_g * 1000.0
        return cls(lsb_per_g=lsb_per_g, fs=fs, block=block, range_g=range_g,  # type: ignore[arg-type]
                   noise_mg=(nm, nm, nm), tilt_deg=tilt_deg, bias_mg=(0.0, 0.0, 0.0),
                   bias_tc=(0.0, 0.0, 0.0), gain=(gain, gain, gain),
                   mounting=None if mounting is None
                   else tuple(tuple(float(x) for x in row) for row in mounting))

    def rotation(self) -> np.ndarray:
        return rotation(self.tilt_deg) if self.mounting is None else np.asarray(self.mounting)

    def counts(self, car_ms2: np.ndarray, normal: np.ndarray | None = None,
               temp_c: np.ndarray | None = None, rot: np.ndarray | None = None) -> np.ndarray:
        """Raw counts (int64, shape (n, 3)) for car-frame acceleration ``car_ms2`` (m/s²,
        gravity included: +G on z at rest).

        Tilt, gain, bias (drifting with ``temp_c`` °C from 25 °C when given), white noise
        (``normal``: unit normal draws of the caller's random stream, shape (n, 3),
        scaled by ``noise_mg``), rounding to counts and clipping at ``range_g``.
        ``rot`` saves recomputing :meth:`rotation` in a loop.
        """
        g = (np.asarray(car_ms2, dtype=float) / G) @ (self.rotation() if rot is None else rot).T
        g = g * np.asarray(self.gain) + np.asarray(self.bias_mg) / 1000.0
        if temp_c is not None:
            g = g + np.outer(temp_c - 25.0, np.asarray(self.bias_tc) / 1000.0)
        if normal is not None:
            g += normal * (np.asarray(self.noise_mg) / 1000.0)
        full = int(self.range_g * self.lsb_per_g) - 1
        return np.clip(np.rint(g * self.lsb_per_g), -full - 1, full).astype(np.int64)


# ---------------------------------------------------------------------- ride vibration

class Band:
    """Band-limited unit-rms noise, streamed (filter state carried across windows): the
    service's ride vibration, door operator hum."""

    def __init__(self, lo: float, hi: float, fs: int, rng: np.random.Generator) -> None:
        self.sos = butter(2, [lo, hi], btype="bandpass", fs=fs, output="sos")
        self.rng = rng
        probe = sosfilt(self.sos, rng.standard_normal(40000))[4000:]
        self.scale = 1.0 / float(probe.std())
        self.zi = sosfilt_zi(self.sos) * 0.0

    def take(self, n: int) -> np.ndarray:
        y, self.zi = sosfilt(self.sos, self.rng.standard_normal(n), zi=self.zi)
        return y * self.scale


def tones(n: int, fs: float, amp: float, seed: int = 0) -> np.ndarray:
    """Car-frame vibration (m/s², shape (n, 3)) of a few guide-rail and drive tones: the
    detector tests' known vibration.

    Each axis gets two tones of ``amp / 2`` with random phases: horizontal ones at
    1–8 Hz (where Wd weighs), vertical ones at 20 and 31 Hz (roller and rail noise,
    inside Wk's band but above the 10 Hz low-pass of the ride figures).
    """
    if amp == 0 or n == 0:
        return np.zeros((n, 3))
    rng = np.random.default_rng(seed + 1000)
    t = np.arange(n) / fs
    freqs_xyz = ((2.3, 5.1), (3.7, 7.9), (20.0, 31.0))   # x, y, z (Hz)
    out = np.zeros((n, 3))
    for axis, freqs in enumerate(freqs_xyz):
        for f in freqs:
            out[:, axis] += 0.5 * amp * np.sin(2 * math.pi * f * t + rng.uniform(0, 2 * math.pi))
    return out


def rig_vibration(t: float, amp: float, phase: Sequence[float]) -> tuple[float, float, float]:
    """The HIL rig's car vibration at time ``t`` (m/s², x, y, z): one tone per axis
    (7, 5.5, 11 Hz), cheap enough to step at 400 Hz in real time."""
    return (amp * math.sin(2 * math.pi * 7.0 * t + phase[0]),
            amp * math.sin(2 * math.pi * 5.5 * t + phase[1]),
            amp * math.sin(2 * math.pi * 11.0 * t + phase[2]))


# ---------------------------------------------------------------------- controller

def ctl_dir(sign: float, run: bool = True) -> int:
    """The controller's ``dir`` field: 1 up, 2 down, 0 when not running."""
    return (1 if sign > 0 else 2) if run else 0


def ctl_view(*, mode: int, run: int, direction: int, floor: str, door: int, zone: int,
             speed: float, safety: int = 0, lock: int = 0, overload: int = 0,
             fault: int = 0) -> dict[str, Any]:
    """A ``ctl`` record (trace-format.md) as a register map decodes it, in its field order.

    ``safety`` and ``lock`` are 0 when the circuit is made (1 open); ``speed`` is a
    magnitude, rounded to the register's mm/s; ``floor`` the last landing whose door
    zone the car was in."""
    return {"mode": mode, "run": run, "dir": direction, "floor": floor, "door": door,
            "zone": zone, "speed": round(abs(speed), 3), "safety": safety, "lock": lock,
            "overload": overload, "fault": fault}


# ---------------------------------------------------------------------- installations

@dataclass(frozen=True)
class LiftType:
    """One kind of installation: building, drive, doors, ride quality and traffic."""

    name: str
    landings: list[str]
    heights: list[float]
    rated_speed: float
    accel: float
    jerk: float
    door_open_s: float
    door_close_s: float
    #: rms of the band-limited ride vibration at rated speed (m/s²), z and x/y
    vib_z: float
    vib_xy: float
    #: lowest natural frequency of the car on its ropes (Hz): longer ropes, lower
    rope_hz: float
    #: passenger journeys per hour at the busiest hour of a weekday
    peak_calls_h: float
    main: int = 1
    door_zone_m: float = 0.2
    sensor_offset_m: float = 0.06
    controller: bool = True
    stop_sigma_mm: float = 3.0

    def header_lift(self) -> dict[str, Any]:
        return {"id": f"31100000000000{zlib.crc32(self.name.encode()) % 1000000:06d}",
                "landings": self.landings, "landing_heights_m": self.heights,
                "rated_speed": self.rated_speed, "door_zone_m": self.door_zone_m}

    def vanes(self) -> Vanes:
        return Vanes(tuple(self.heights), self.door_zone_m, self.sensor_offset_m)


__all__ = ["DOOR_CLOSED", "DOOR_CLOSING", "DOOR_HELD", "DOOR_LOCKED", "DOOR_OPEN",
           "DOOR_OPENING", "G", "Band", "Kinematics", "LiftType", "Motion", "SegmentTable",
           "Sensor", "Vanes", "append_move", "append_stall", "ctl_dir", "ctl_view", "rig_vibration",
           "rotation", "s_curve", "tones"]
