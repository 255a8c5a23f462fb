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

    Each axis gets tones at fixed frequencies in the 1–20 Hz band the ISO 2631-1
    weightings keep, with random phases; ``amp`` is each axis's peak amplitude.
    """
    if amp == 0 or n == 0:
        return np.zeros((n, 3))
    rng = np.random.default_rng(seed + 1000)
    t = np.arange(n) / fs
    tones = ((2.3, 5.1), (3.7, 7.9), (6.0, 11.0))   # x, y, z (Hz)
    out = np.zeros((n, 3))
    for axis, freqs in enumerate(tones):
        for f in freqs:
            out[:, axis] += 0.5 * amp * np.sin(2 * math.pi * f * t + rng.uniform(0, 2 * math.pi))
    return out


def accel_counts(acc_vertical: np.ndarray, fs: float, lsb_per_g: float = 256,
                 rotation: Sequence[Sequence[float]] | None = None, noise_counts: float = 1.5,
                 vib_amp: float = 0.0, seed: int = 0) -> list[list[int]]:
    """Raw accelerometer counts for a car whose vertical acceleration is ``acc_vertical``.

    Car frame z up reads +1 g at rest; ``rotation`` (sensor_from_car) tilts the mounting;
    ``vib_amp`` (m/s² peak per axis) adds vibration, ``noise_counts`` Gaussian sensor
    noise (counts, standard deviation). Returns integer counts ``[[x, y, z], ...]``.
    """
    acc_vertical = np.asarray(acc_vertical, dtype=float)
    n = acc_vertical.size
    car = vibration(n, fs, vib_amp, seed)
    car[:, 2] += G + acc_vertical
    if rotation is not None:
        car = car @ np.asarray(rotation, dtype=float).T
    counts = car / G * lsb_per_g
    if noise_counts > 0:
        counts = counts + np.random.default_rng(seed).normal(0.0, noise_counts, counts.shape)
    return np.rint(counts).astype(np.int64).tolist()


def trip_samples(distance_m: float, v_max: float = 1.75, a_max: float = 0.8,
                 j_max: float = 1.0, fs: float = 400.0, pre_s: float = 2.0,
                 post_s: float = 2.0, lsb_per_g: float = 256,
                 rotation: Sequence[Sequence[float]] | None = None, noise_counts: float = 1.5,
                 vib_amp: float = 0.0, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[list[int]]]:
    """One trip with rest around it: ``(t, pos, vel, acc, counts)`` (see the two above)."""
    t, pos, vel, acc = jerk_limited_profile(distance_m, v_max, a_max, j_max, fs, pre_s, post_s)
    return t, pos, vel, acc, accel_counts(acc, fs, lsb_per_g, rotation, noise_counts,
                                          vib_amp, seed)


def acc_blocks(t0: float, counts: list[list[int]], fs: float, block: int = 40
               ) -> list[tuple[float, list[list[int]]]]:
    """Split counts into FIFO-sized ``(t, samples)`` blocks as ``acc`` records carry them."""
    return [(t0 + i / fs, counts[i:i + block]) for i in range(0, len(counts), block)]
