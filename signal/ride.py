"""Ride quality of one trip after ISO 18738-1: segmentation and the figures of events.md.

Input is one trip at the analysis rate, already conditioned by the fixed-point chain:
vertical acceleration without gravity, low-passed at 10 Hz (integer words, up positive),
the speed integrated from it (m/s) and the ISO 2631-1 weighted vibration (Wd for x, y;
Wk for z, integer words); ``scale`` turns a word into m/s² (Q24 g: 9.80665 / 2**24).
This module only segments and measures; it filters nothing. Thresholds, percentiles
and peak-to-peak values are taken on the integers; jerk is the fixed-point
``lsq_slope`` kernel.

Segmentation, direction-free: ``ad = sign(travel) · a`` is positive while the car
speeds up and negative while it slows down. The trip splits at its speed peak into
an acceleration and a deceleration phase. In each phase:

- the **constant-acceleration region** runs from the first to the last sample at or
  above 90 % of the phase's peak (the same 90 % that ends a jerk ramp);
- the **constant-speed region** lies between the acceleration falling below 10 % of
  its peak after the acceleration region and the deceleration rising above 10 % of its
  peak before the deceleration region (none on a trip too short to cruise).

Figures: ``a_max``/``d_max`` the phases' peaks; ``a95``/``d95`` the value 95 % of the
constant-acceleration samples lie at or below. Both are estimates of the *motion's*
figures, not of the noise on it: the maximum of a noisy signal is biased up by a few
noise deviations (+5.5 % at 256 counts/g against the ISO 10 Hz reference of the true
motion, about one count of the sensor), and so is a 95th percentile. So the peak is the
top of a least-squares parabola through the samples within 5 % of the peak (found on
the signal averaged over ±``PEAK_SMOOTH_S``): flat on a plateau, the rounded tip on a
trip too short to reach its acceleration; and a95/d95 are taken on the signal averaged
over ±``A95_SMOOTH_S`` (``bench/bench_ride_accuracy.py --reference iso``: within 3 %
p95 of the reference at 256 counts/g); ``jerk_max`` the steepest ramp, each
ramp's jerk the least-squares slope of the acceleration between 10 % and 90 % of its
height (ramps: 0→A, A→0, 0→−D, −D→0, or A→−D in one ramp on a trip without cruise);
peak-to-peak vibration per ISO 18738-1: split the signal at its zero crossings, take
each half-cycle's peak, and the difference of consecutive peaks is one peak-to-peak
value; ``vib_pp_max`` is their maximum and ``vib_pp_a95`` their 95th percentile, z over
the constant-speed region only (None without one), x and y over the whole trip (0.0 for
a signal that never swings through zero).
"""

from __future__ import annotations

import numpy as np
from liftwatch.signal import dsp

RAMP_LO = 0.10
RAMP_HI = 0.90
PERCENTILE = 95.0
#: half-width of the moving average that finds the region a peak is fitted in (s)
PEAK_SMOOTH_S = 0.04
#: half-width of the moving average that a95/d95 are taken on (s)
A95_SMOOTH_S = 0.06
#: the samples a peak parabola is fitted to: within this percentage of the averaged peak
PEAK_REGION_PCT = 95
#: fewest samples a peak parabola is fitted to (else the plain maximum stands)
PEAK_MIN_N = 5
Q24_MS2 = 9.80665 / (1 << 24)   # m/s² per word of the chain's Q24 g format


def lsq_slope(y: np.ndarray, fs: float) -> float:
    """Least-squares slope of integer samples at ``fs``, in words per second (the kernel)."""
    if float(fs).is_integer():
        return float(dsp.lsq_slope(y, int(fs)))
    return float(dsp.lsq_slope(y, 1)) * fs


def a95(values: np.ndarray) -> float | None:
    """The value 95 % of ``values`` lie at or below (None for no values)."""
    if values.size == 0:
        return None
    return float(np.percentile(values, PERCENTILE, method="inverted_cdf"))  # a sample value


def peak_to_peak(x: np.ndarray) -> np.ndarray:
    """ISO 18738-1 peak-to-peak values: differences of consecutive half-cycle peaks."""
    if x.size < 2:
        return np.zeros(0, dtype=x.dtype)
    pos = x >= 0
    cuts = np.flatnonzero(pos[1:] != pos[:-1]) + 1
    if cuts.size == 0:
        return np.zeros(0, dtype=x.dtype)
    starts = np.concatenate(([0], cuts))
    pos_peak = np.maximum.reduceat(x, starts)
    neg_peak = np.minimum.reduceat(x, starts)
    peaks = np.where(pos[starts], pos_peak, neg_peak)
    return np.abs(np.diff(peaks))


def moving_average(x: np.ndarray, half: int) -> np.ndarray:
    """Centred moving average over ``2 * half + 1`` integer samples, rounded half up
    (the ends repeat the first and last sample)."""
    if half <= 0 or x.size == 0:
        return x
    width = 2 * half + 1
    padded = np.pad(np.asarray(x, dtype=np.int64), half, mode="edge")
    csum = np.concatenate(([0], np.cumsum(padded)))
    total = csum[width:] - csum[:-width]
    return (2 * total + width) // (2 * width)


def fitted_peak(y: np.ndarray, fs: float) -> int:
    """The peak of a phase's samples ``y`` (words, positive peak) without the noise's bias.

    The region within ``PEAK_REGION_PCT`` % of the peak of the averaged signal gets a least-squares
    parabola (exact integer sums, Cramer's rule in Python ints); its highest value over
    the region, rounded, is the peak. Fewer than ``PEAK_MIN_N`` samples there: the plain
    maximum."""
    if y.size == 0:
        return 0
    s = moving_average(y, round(PEAK_SMOOTH_S * fs))
    top = int(s.max())
    raw = int(y.max())
    if top <= 0:
        return max(raw, 0)
    idx = np.flatnonzero(100 * s >= PEAK_REGION_PCT * top)
    seg = [int(v) for v in y[int(idx[0]):int(idx[-1]) + 1]]
    n = len(seg)
    if n < PEAK_MIN_N:
        return raw
    # normal equations of y = c0 + c1 x + c2 x², x = 0..n-1, in exact integers
    sx = [sum(x ** k for x in range(n)) for k in range(5)]
    ty = [sum(x ** k * v for x, v in enumerate(seg)) for k in range(3)]
    m = [[sx[0], sx[1], sx[2]], [sx[1], sx[2], sx[3]], [sx[2], sx[3], sx[4]]]

    def det(a: list[list[int]]) -> int:
        return (a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
                - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
                + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]))

    d = det(m)
    if d == 0:
        return raw
    c = [det([[ty[r] if j == col else m[r][j] for j in range(3)] for r in range(3)])
         for col in range(3)]   # coefficients times d
    if d < 0:
        d, c = -d, [-v for v in c]
    # highest fitted value over x in [0, n-1]: an end, or the vertex when it lies inside
    xs = [0, n - 1]
    if c[2] < 0:
        xv = -c[1] / (2 * c[2])
        if 0 < xv < n - 1:
            xs += [int(xv), int(xv) + 1]
    best = max(c[0] + c[1] * x + c[2] * x * x for x in xs)
    return (2 * best + d) // (2 * d)


def _first(mask: np.ndarray, lo: int, hi: int) -> int | None:
    idx = np.flatnonzero(mask[lo:hi])
    return int(lo + idx[0]) if idx.size else None


def _last(mask: np.ndarray, lo: int, hi: int) -> int | None:
    idx = np.flatnonzero(mask[lo:hi])
    return int(lo + idx[-1]) if idx.size else None


def _ramp_jerk(ad: np.ndarray, fs: float, i0: int, i1: int, start: float, end: float
               ) -> float | None:
    """Jerk of the ramp from level ``start`` to ``end`` searched in ``ad[i0:i1]``."""
    lo_level = start + RAMP_LO * (end - start)
    hi_level = start + RAMP_HI * (end - start)
    rising = end > start
    seg = ad[i0:i1]
    past_hi = seg >= hi_level if rising else seg <= hi_level
    j90 = _first(past_hi, 0, seg.size)
    if j90 is None:
        return None
    before_lo = seg < lo_level if rising else seg > lo_level
    j10 = _last(before_lo, 0, j90)
    j10 = 0 if j10 is None else j10 + 1
    if j90 - j10 < 2:
        return None
    return abs(lsq_slope(seg[j10:j90 + 1], fs))


def trip_figures(fs: float, acc: np.ndarray, vel: np.ndarray, wx: np.ndarray, wy: np.ndarray,
                 wz: np.ndarray, distance_m: float | None = None, scale: float = Q24_MS2
                 ) -> dict:
    """ISO 18738-1 figures of one trip (arrays at rate ``fs`` from start to stop).

    ``acc``, ``wx``, ``wy``, ``wz`` are integer words (``scale`` m/s² each), ``vel`` m/s;
    ``distance_m`` defaults to the integral of ``vel``. Values in SI units; figures a
    trip cannot give (no constant-speed region for z, no ramp found) are None.
    """
    acc = np.asarray(acc, dtype=np.int64)
    vel = np.asarray(vel, dtype=float)
    n = acc.size
    if distance_m is None:
        distance_m = float(abs(np.sum(vel)) / fs)
    out: dict = {"distance_m": float(abs(distance_m)), "v_max": 0.0, "a_max": 0.0,
                 "d_max": 0.0, "a95": None, "d95": None, "jerk_max": None,
                 "vib_pp_max": {}, "vib_pp_a95": {}}
    if n < 4:
        for ax in "xyz":
            out["vib_pp_max"][ax] = out["vib_pp_a95"][ax] = None
        return out
    i_v = int(np.argmax(np.abs(vel)))
    sign = 1 if vel[i_v] >= 0 else -1
    ad = sign * acc
    out["v_max"] = float(abs(vel[i_v]))
    i_v = min(max(i_v, 1), n - 1)
    a_pk = fitted_peak(ad[:i_v], fs)
    d_pk = fitted_peak(-ad[i_v:], fs)
    out["a_max"], out["d_max"] = a_pk * scale, d_pk * scale
    ads = moving_average(ad, round(A95_SMOOTH_S * fs))
    # Constant-acceleration regions.
    p1 = _first(ad >= RAMP_HI * a_pk, 0, i_v) if a_pk > 0 else None
    p2 = _last(ad >= RAMP_HI * a_pk, 0, i_v) if a_pk > 0 else None
    q1 = _first(-ad >= RAMP_HI * d_pk, i_v, n) if d_pk > 0 else None
    q2 = _last(-ad >= RAMP_HI * d_pk, i_v, n) if d_pk > 0 else None
    if p1 is not None and p2 is not None:
        # (two estimates of one plateau: a95 never above the peak)
        out["a95"] = _scaled(min(a95(ads[p1:p2 + 1]), a_pk), scale)
    if q1 is not None and q2 is not None:
        out["d95"] = _scaled(min(a95(-ads[q1:q2 + 1]), d_pk), scale)
    # Constant-speed region.
    c1 = c2 = None
    if p2 is not None and q1 is not None:
        c1 = _first(ad < RAMP_LO * a_pk, p2, q1)
        c2 = _last(ad > -RAMP_LO * d_pk, p2, q1)
    cruise = c1 is not None and c2 is not None and c2 - c1 >= int(0.5 * fs)
    # Jerk ramps.
    jerks: list[float | None] = []
    if p1 is not None and p2 is not None and q1 is not None and q2 is not None:
        jerks.append(_ramp_jerk(ad, fs, 0, p2 + 1, 0.0, a_pk))
        if cruise:
            jerks.append(_ramp_jerk(ad, fs, p2, c1 + 1, a_pk, 0.0))
            jerks.append(_ramp_jerk(ad, fs, c2, q2 + 1, 0.0, -d_pk))
        else:
            jerks.append(_ramp_jerk(ad, fs, p2, q2 + 1, a_pk, -d_pk))
        jerks.append(_ramp_jerk(ad, fs, q2, n, -d_pk, 0.0))
    found = [j for j in jerks if j is not None]
    out["jerk_max"] = float(max(found)) * scale if found else None
    # Vibration.
    regions = {"x": np.asarray(wx, dtype=np.int64), "y": np.asarray(wy, dtype=np.int64),
               "z": np.asarray(wz, dtype=np.int64)[c1:c2 + 1] if cruise
               else np.zeros(0, dtype=np.int64)}
    for ax, sig in regions.items():
        if sig.size == 0:
            out["vib_pp_max"][ax] = out["vib_pp_a95"][ax] = None
            continue
        pp = peak_to_peak(sig)
        if pp.size == 0:             # not even one full swing: no vibration to speak of
            pp = np.zeros(1, dtype=np.int64)
        out["vib_pp_max"][ax] = float(pp.max()) * scale
        out["vib_pp_a95"][ax] = _scaled(a95(pp), scale)
    return out


def _scaled(v: float | None, scale: float) -> float | None:
    return None if v is None else v * scale
