"""Synthetic lift kinematics for tests: jerk-limited moves and the accelerometer counts they give.

Shared by the motion, ride-quality and detector tests, so that every test builds
its trips the same way and checks against the same known truth (the profile's
analytic position, speed and acceleration). Not a lift simulator: no doors, no
controller; just what the car's accelerometer and leveling sensors would see.

The physics is the one lift model's (``hil_tests/liftmodel.py``): its S-curve, its
kinematics of jerk segments, its vanes and its accelerometer; this module samples
them as arrays.

Conventions (trace-format.md): car frame z up, so a car at rest reads +1 g on z;
``rotation`` is the mounting tilt as a matrix *sensor_from_car*
(``sensor = R @ car``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# the lift model lives with the HIL rig (benches import this module without conftest)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hil_tests"))

from liftmodel import G, Kinematics, Motion, Sensor, Vanes, s_curve, tones  # noqa: E402

__all__ = ["G", "acc_blocks", "accel_counts", "jerk_limited_profile", "profile_peaks",
           "rotation_matrix", "trip_motion", "trip_samples", "trip_sequence", "vibration",
           "zone_edges", "zone_intervals"]

#: the detector tests' known vibration (liftmodel.tones)
vibration = tones


def trip_motion(distance_m: float, v_max: float, a_max: float, j_max: float) -> Motion:
    """The one S-curve's move of ``distance_m`` (negative: down) from rest at 0 m, t = 0."""
    if v_max <= 0 or a_max <= 0 or j_max <= 0:
        raise ValueError("v_max, a_max and j_max must be positive")
    motion = Motion()
    motion.move(0.0, s_curve(abs(distance_m), v_max, a_max, j_max),
                1.0 if distance_m >= 0 else -1.0)
    return motion


def profile_peaks(distance_m: float, v_max: float, a_max: float, j_max: float
                  ) -> dict[str, float]:
    """The move's true figures: reached speed and acceleration (magnitudes), jerk, duration."""
    m = trip_motion(abs(distance_m), v_max, a_max, j_max)
    a = max(abs(x) for x in m.seg_a)
    return {"v_max": max(abs(x) for x in m.seg_v), "a_max": a, "d_max": a,
            "jerk_max": j_max, "distance_m": abs(distance_m), "duration_s": m.seg_t[-1]}


def jerk_limited_profile(distance_m: float, v_max: float, a_max: float, j_max: float,
                         fs: float, pre_s: float = 0.0, post_s: float = 0.0
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The standard 7-segment jerk-limited move of ``distance_m`` (negative: down).

    Returns ``(t, pos, vel, acc)`` sampled at ``fs`` from 0, with ``pre_s`` of rest
    before the move and ``post_s`` after it; position starts at 0. Short moves that
    never reach ``v_max`` (or ``a_max``) are handled by lowering the reached speed.
    Values are exact (piecewise polynomials), not numerically integrated.
    """
    if fs <= 0:
        raise ValueError("v_max, a_max, j_max and fs must be positive")
    motion = trip_motion(distance_m, v_max, a_max, j_max)
    n = int(math.floor((pre_s + motion.seg_t[-1] + post_s) * fs)) + 1
    t = np.arange(n) / fs
    acc, vel, pos = Kinematics(motion).at(t - pre_s)
    return t, pos, vel, acc


def rotation_matrix(axis: Sequence[float], degrees: float) -> list[list[float]]:
    """Rotation about ``axis`` by ``degrees`` (Rodrigues), as a nested list."""
    ax = np.asarray(axis, dtype=float)
    ax = ax / np.linalg.norm(ax)
    th = math.radians(degrees)
    k = np.array([[0, -ax[2], ax[1]], [ax[2], 0, -ax[0]], [-ax[1], ax[0], 0]])
    r = np.eye(3) + math.sin(th) * k + (1 - math.cos(th)) * (k @ k)
    return r.tolist()


def accel_counts(acc_vertical: np.ndarray, fs: float, lsb_per_g: float = 256,
                 rotation: Sequence[Sequence[float]] | None = None, noise_counts: float = 1.5,
                 vib_amp: float = 0.0, seed: int = 0, vib_mask: np.ndarray | None = None,
                 gain: float = 1.0) -> list[list[int]]:
    """Raw accelerometer counts for a car whose vertical acceleration is ``acc_vertical``.

    Car frame z up reads +1 g at rest; ``rotation`` (sensor_from_car) tilts the mounting;
    ``vib_amp`` (m/s² peak per axis) adds vibration where ``vib_mask`` is true (default:
    everywhere), ``noise_counts`` Gaussian sensor noise (counts, standard deviation);
    ``gain`` is the sensor's sensitivity error (1.02: reads 2 % high).
    Returns integer counts ``[[x, y, z], ...]``.
    """
    acc_vertical = np.asarray(acc_vertical, dtype=float)
    n = acc_vertical.size
    car = vibration(n, fs, vib_amp, seed)
    if vib_mask is not None:
        car *= np.asarray(vib_mask, dtype=float)[:, None]
    car[:, 2] += G + acc_vertical
    sensor = Sensor.ideal(lsb_per_g, noise_counts, gain, mounting=rotation, fs=int(fs))
    normal = np.random.default_rng(seed).standard_normal(car.shape) if noise_counts > 0 else None
    return sensor.counts(car, normal).tolist()


def trip_samples(distance_m: float, v_max: float = 1.75, a_max: float = 0.8,
                 j_max: float = 1.0, fs: float = 400.0, pre_s: float = 2.0,
                 post_s: float = 2.0, lsb_per_g: float = 256,
                 rotation: Sequence[Sequence[float]] | None = None, noise_counts: float = 1.5,
                 vib_amp: float = 0.0, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[list[int]]]:
    """One trip with rest around it: ``(t, pos, vel, acc, counts)`` (see the two above).

    Vibration only while the car moves (a standing car does not vibrate)."""
    t, pos, vel, acc = jerk_limited_profile(distance_m, v_max, a_max, j_max, fs, pre_s, post_s)
    return t, pos, vel, acc, accel_counts(acc, fs, lsb_per_g, rotation, noise_counts,
                                          vib_amp, seed, vib_mask=vel != 0)


def acc_blocks(t0: float, counts: list[list[int]], fs: float, block: int = 40
               ) -> list[tuple[float, list[list[int]]]]:
    """Split counts into FIFO-sized ``(t, samples)`` blocks as ``acc`` records carry them."""
    return [(t0 + i / fs, counts[i:i + block]) for i in range(0, len(counts), block)]


def zone_intervals(door_zone_m: float, sensor_gap_m: float = 0.08
                   ) -> dict[str, tuple[float, float]]:
    """Where each leveling sensor is active, as car-sill offsets from a landing sill (m).

    Both are active within ±door_zone_m/2 (LiftParams); ``zone_up`` (mounted higher
    on the car) reaches the landing's vane ``sensor_gap_m`` earlier when the car rises,
    ``zone_down`` that much earlier when it descends. The independent simulator
    whose traces the geometry was measured on (docs/interfaces.md) matches this with
    door_zone_m 0.4 and a gap of 0.08 m.
    """
    return Vanes((), door_zone_m / 2, sensor_gap_m).intervals()


def zone_edges(t: np.ndarray, pos: np.ndarray, sills: Sequence[float],
               intervals: dict[str, tuple[float, float]]
               ) -> list[tuple[float, dict[str, int]]]:
    """Leveling-sensor changes ``(t, {name: level})`` for a car whose sill follows ``pos``.

    The first entry gives both levels at ``t[0]``; later ones only what changed, at
    the first sample where it changed.
    """
    # the offset from the nearest sill, as the model looks it up; ``intervals`` may be any
    # geometry (the default vanes', or offsets a test learned)
    _idx, rel = Vanes(tuple(sills), 0.0, 0.0).nearest(pos)
    levels = {name: ((rel >= lo) & (rel <= hi)).astype(int)
              for name, (lo, hi) in intervals.items()}
    out = [(float(t[0]), {k: int(v[0]) for k, v in levels.items()})]
    changes: dict[int, dict[str, int]] = {}
    for name, lv in levels.items():
        for i in np.flatnonzero(np.diff(lv)) + 1:
            changes.setdefault(int(i), {})[name] = int(lv[i])
    out += [(float(t[i]), changes[i]) for i in sorted(changes)]
    return out


def trip_sequence(sills: Sequence[float], stops: Sequence[int], fs: float, v_max: float = 1.6,
                  a_max: float = 0.8, j_max: float = 1.0, rest_s: tuple[float, float] = (3.5, 6.0),
                  level_err_m: float = 0.0, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
    """A car resting at ``stops[0]`` then travelling to each following landing in turn.

    Each stop lands ``level_err_m`` at most off its sill (uniform, the leveling error).
    Returns ``(t, pos, acc, trips)``: car sill height and vertical acceleration at every
    sample, and per trip ``{"from", "to", "t_start", "t_end", "offset_m"}`` (the move
    itself, without the rest before it; ``offset_m`` the leveling error at its stop).
    The sequence ends with the last rest after the final stop.
    """
    rng = np.random.default_rng(seed)
    offs = rng.uniform(-level_err_m, level_err_m, len(stops)) if level_err_m else \
        np.zeros(len(stops))
    parts_p, parts_a = [], []
    trips = []
    t0 = 0.0
    here = float(sills[stops[0]] + offs[0])
    for k in range(1, len(stops) + 1):
        rest = float(rng.uniform(*rest_s))
        if k == len(stops):
            n = int(round(rest * fs))
            parts_p.append(np.full(n, here))
            parts_a.append(np.zeros(n))
            break
        target = float(sills[stops[k]] + offs[k])
        _t, pos, _v, acc = jerk_limited_profile(target - here, v_max, a_max, j_max, fs,
                                                pre_s=rest)
        pos = pos[:-1] + here
        acc = acc[:-1]
        n_rest = int(round(rest * fs))
        trips.append({"from": int(stops[k - 1]), "to": int(stops[k]),
                      "t_start": t0 + n_rest / fs, "t_end": t0 + pos.size / fs,
                      "offset_m": float(offs[k])})
        parts_p.append(pos)
        parts_a.append(acc)
        t0 += pos.size / fs
        here = target
    pos = np.concatenate(parts_p)
    acc = np.concatenate(parts_a)
    return np.arange(pos.size) / fs, pos, acc, trips
