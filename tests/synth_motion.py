"""Synthetic lift kinematics for tests: jerk-limited moves and the accelerometer counts they give.

Shared by the motion, ride-quality and detector tests, so that every test builds
its trips the same way and checks against the same known truth (the profile's
analytic position, speed and acceleration). Not a lift simulator: no doors, no
controller; just what the car's accelerometer and leveling sensors would see.

Conventions (trace-format.md): car frame z up, so a car at rest reads +1 g on z;
``rotation`` is the mounting tilt as a matrix *sensor_from_car*
(``sensor = R @ car``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

G = 9.80665  # m/s² per g (the accelerometer's unit)


def _segments(distance: float, v_max: float, a_max: float, j_max: float
              ) -> tuple[list[float], float, float]:
    """Durations of the 7 segments and the reached acceleration and speed (|distance|)."""

    def shape(v: float) -> tuple[float, float, float]:
        # Time on each jerk ramp, on the constant-acceleration part, and the peak acc.
        if v * j_max < a_max * a_max:           # a_max never reached
            tj = math.sqrt(v / j_max)
            return tj, 0.0, j_max * tj
        return a_max / j_max, v / a_max - a_max / j_max, a_max

    tj, ta, a = shape(v_max)
    v = v_max
    if v * (2 * tj + ta) > distance:            # too short to reach v_max: lower the speed
        lo, hi = 0.0, v_max
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            tj_m, ta_m, _ = shape(mid)
            if mid * (2 * tj_m + ta_m) > distance:
                hi = mid
            else:
                lo = mid
        v = lo
        tj, ta, a = shape(v)
    tv = max(0.0, (distance - v * (2 * tj + ta)) / v) if v > 0 else 0.0
    return [tj, ta, tj, tv, tj, ta, tj], a, v


def profile_peaks(distance_m: float, v_max: float, a_max: float, j_max: float
                  ) -> dict[str, float]:
    """The move's true figures: reached speed and acceleration (magnitudes), jerk, duration."""
    durs, a, v = _segments(abs(distance_m), v_max, a_max, j_max)
    return {"v_max": v, "a_max": a, "d_max": a, "jerk_max": j_max,
            "distance_m": abs(distance_m), "duration_s": sum(durs)}


def jerk_limited_profile(distance_m: float, v_max: float, a_max: float, j_max: float,
                         fs: float, pre_s: float = 0.0, post_s: float = 0.0
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The standard 7-segment jerk-limited move of ``distance_m`` (negative: down).

    Returns ``(t, pos, vel, acc)`` sampled at ``fs`` from 0, with ``pre_s`` of rest
    before the move and ``post_s`` after it; position starts at 0. Short moves that
    never reach ``v_max`` (or ``a_max``) are handled by lowering the reached speed.
    Values are exact (piecewise polynomials), not numerically integrated.
    """
    if v_max <= 0 or a_max <= 0 or j_max <= 0 or fs <= 0:
        raise ValueError("v_max, a_max, j_max and fs must be positive")
    sign = 1.0 if distance_m >= 0 else -1.0
    dist = abs(distance_m)
    durs, a_pk, _ = _segments(dist, v_max, a_max, j_max) if dist > 0 else ([0.0] * 7, 0.0, 0.0)
    jerks = [j_max, 0.0, -j_max, 0.0, -j_max, 0.0, j_max]
    # State (pos, vel, acc) at each segment start.
    starts = [0.0]
    states = [(0.0, 0.0, 0.0)]
    for d, j in zip(durs, jerks, strict=True):
        p, v, a = states[-1]
        states.append((p + v * d + a * d * d / 2 + j * d ** 3 / 6, v + a * d + j * d * d / 2,
                       a + j * d))
        starts.append(starts[-1] + d)
    move = starts[-1]
    n = int(math.floor((pre_s + move + post_s) * fs)) + 1
    t = np.arange(n) / fs
    tm = t - pre_s
    pos = np.zeros(n)
    vel = np.zeros(n)
    acc = np.zeros(n)
    for k, (d, j) in enumerate(zip(durs, jerks, strict=True)):
        if d <= 0:
            continue
        sel = (tm >= starts[k]) & (tm < starts[k] + d)
        u = tm[sel] - starts[k]
        p, v, a = states[k]
        pos[sel] = p + v * u + a * u * u / 2 + j * u ** 3 / 6
        vel[sel] = v + a * u + j * u * u / 2
        acc[sel] = a + j * u
    pos[tm >= move] = states[-1][0]
    del a_pk
    return t, sign * pos, sign * vel, sign * acc


def rotation_matrix(axis: Sequence[float], degrees: float) -> list[list[float]]:
    """Rotation about ``axis`` by ``degrees`` (Rodrigues), as a nested list."""
    ax = np.asarray(axis, dtype=float)
    ax = ax / np.linalg.norm(ax)
    th = math.radians(degrees)
    k = np.array([[0, -ax[2], ax[1]], [ax[2], 0, -ax[0]], [-ax[1], ax[0], 0]])
    r = np.eye(3) + math.sin(th) * k + (1 - math.cos(th)) * (k @ k)
    return r.tolist()


def vibration(n: int, fs: float, amp: float, seed: int = 0) -> np.ndarray:
    """Car-frame vibration (m/s², shape (n, 3)): a few guide-rail and drive tones.

    Each axis gets two tones of ``amp / 2`` with random phases: horizontal ones at
    1–8 Hz (where Wd weighs), vertical ones at 20 and 31 Hz (roller and rail noise,
    inside Wk's band but above the 10 Hz low-pass of the ride figures).
    """
    if amp == 0 or n == 0:
        return np.zeros((n, 3))
    rng = np.random.default_rng(seed + 1000)
    t = np.arange(n) / fs
    tones = ((2.3, 5.1), (3.7, 7.9), (20.0, 31.0))   # x, y, z (Hz)
    out = np.zeros((n, 3))
    for axis, freqs in enumerate(tones):
        for f in freqs:
            out[:, axis] += 0.5 * amp * np.sin(2 * math.pi * f * t + rng.uniform(0, 2 * math.pi))
    return out


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
    if rotation is not None:
        car = car @ np.asarray(rotation, dtype=float).T
    counts = car / G * lsb_per_g * gain
    if noise_counts > 0:
        counts = counts + np.random.default_rng(seed).normal(0.0, noise_counts, counts.shape)
    return np.rint(counts).astype(np.int64).tolist()


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
    h = door_zone_m / 2
    return {"zone_up": (-h - sensor_gap_m, h), "zone_down": (-h, h + sensor_gap_m)}


def zone_edges(t: np.ndarray, pos: np.ndarray, sills: Sequence[float],
               intervals: dict[str, tuple[float, float]]
               ) -> list[tuple[float, dict[str, int]]]:
    """Leveling-sensor changes ``(t, {name: level})`` for a car whose sill follows ``pos``.

    The first entry gives both levels at ``t[0]``; later ones only what changed, at
    the first sample where it changed.
    """
    s = np.asarray(sills, dtype=float)
    levels = {}
    for name, (lo, hi) in intervals.items():
        rel = pos[:, None] - s[None, :]
        levels[name] = np.any((rel >= lo) & (rel <= hi), axis=1).astype(int)
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
