"""Float64 references and test signals for the fixed-point kernels (tests only: uses scipy).

The reference of every kernel is the same filter with the *unquantised* coefficients of
``filter_design``, run in float64 by scipy; ``ser_db`` is the signal-to-error ratio of a
fixed-point output against it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import scipy.signal as ss
from liftwatch.drivers.trace import TraceReader
from liftwatch.signal import filter_design, mcu_design
from liftwatch.signal.chain import ChainDesign

G = 9.80665
#: The example traces (hil_tests/make_traces.py).
TRACES = Path(__file__).resolve().parent.parent / "hil_tests" / "traces"


def ser_db(ref: np.ndarray, got: np.ndarray) -> float:
    """Signal-to-error ratio in dB of ``got`` against ``ref`` (same units)."""
    ref = np.asarray(ref, dtype=np.float64)
    err = np.asarray(got, dtype=np.float64) - ref
    e = float(np.sum(err * err))
    return math.inf if e == 0.0 else 10.0 * math.log10(float(np.sum(ref * ref)) / e)


def trip_accel(distance: float, v: float, a: float, j: float, fs: float) -> np.ndarray:
    """Vertical acceleration (m/s^2) of a 7-segment jerk-limited trip."""
    d = abs(distance)
    tj = a / j
    ta = max(0.0, v / a - tj)
    tv = max(0.0, (d - v * (2 * tj + ta)) / v)
    segs = [(tj, j), (ta, 0.0), (tj, -j), (tv, 0.0), (tj, -j), (ta, 0.0), (tj, j)]
    jerk = np.concatenate([np.full(int(round(s * fs)), jj) for s, jj in segs])
    return math.copysign(1.0, distance) * np.cumsum(jerk) / fs


def lift_counts(seconds: float, fs: int = 400, lsb_per_g: float = 256.0, seed: int = 0,
                tilt_deg: float = 0.0) -> np.ndarray:
    """(N, 3) raw counts of a typical lift signal: a ~1 m/s^2 jerk-limited trip (2 m/s),
    car vibration on all axes, sensor noise, optionally a tilted mounting."""
    rng = np.random.default_rng(seed)
    n = int(seconds * fs)
    acc = np.zeros((n, 3))
    prof = trip_accel(9.9, 2.0, 1.0, 1.0, fs)
    i0 = int(1.5 * fs)
    e = min(n, i0 + len(prof))
    acc[i0:e, 2] += prof[: e - i0]
    t = np.arange(n) / fs
    for k, (f, amp) in enumerate(((1.7, 0.05), (4.3, 0.08), (11.0, 0.1), (27.0, 0.05))):
        acc[:, k % 3] += amp * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.28))
        acc[:, (k + 1) % 3] += 0.6 * amp * np.sin(2 * np.pi * f * 1.3 * t)
    acc[:, 2] += G
    c, s = math.cos(math.radians(tilt_deg)), math.sin(math.radians(tilt_deg))
    sensor = acc @ np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]).T
    counts = np.round(sensor / G * lsb_per_g + rng.normal(0.0, 1.0, sensor.shape))
    return counts.astype(np.int64)


def first_trip_end(name: str) -> float:
    """When the first trip of an example trace stops (its ground truth), plus 2 s."""
    truth = json.loads((TRACES / f"{name}.truth.json").read_text())
    return float(truth["trips"][0]["t_stop"]) + 2.0


def trace_counts(name: str, t_end: float) -> tuple[np.ndarray, int, float]:
    """Raw counts of the first ``t_end`` seconds of an example trace, its fs and lsb/g."""
    rows: list[list[int]] = []
    fs, lsb = 400, 256.0
    with TraceReader(TRACES / name) as reader:
        for rec in reader:
            if rec.t >= t_end:
                break
            if rec.kind == "acc":
                rows.extend(rec.data)
        header = getattr(reader, "header", None)
        if header is not None and header.accel:
            fs = int(header.accel.get("fs", fs))
            lsb = float(header.accel.get("lsb_per_g", lsb))
    return np.asarray(rows, dtype=np.int64), fs, lsb


def float_chain(counts: np.ndarray, fs_in: int, lsb_per_g: float,
                rotation: list[list[float]] | None = None, fs_out: int = 200
                ) -> dict[str, np.ndarray]:
    """The chain in float64 (m/s^2): rotate, decimate, sosfilt; settled on the first sample
    like the fixed-point chain. Unquantised coefficients throughout."""
    d = ChainDesign(fs_in, fs_out, lsb_per_g)
    r = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    x = counts.astype(np.float64) @ r.T * (G / lsb_per_g)
    taps = np.asarray(d.taps_float)
    zi = ss.lfilter_zi(taps, [1.0])
    dec = np.empty((len(x), 3))
    for i in range(3):
        dec[:, i], _ = ss.lfilter(taps, [1.0], x[:, i], zi=zi * x[0, i])
    dec = dec[:: d.factor]

    def sos(s: list[list[float]], v: np.ndarray) -> np.ndarray:
        a = np.asarray(s)
        return ss.sosfilt(a, v, zi=ss.sosfilt_zi(a) * v[0])[0]

    return {"a_z": sos(d.lp_sos, dec[:, 2]), "w_z": sos(d.wk_sos, dec[:, 2]),
            "w_x": sos(d.wd_sos, dec[:, 0]), "w_y": sos(d.wd_sos, dec[:, 1])}


def float_reference(rows: object, rotation: list[list[float]] | None = None,
                    fs_in: int = mcu_design.PROFILE_FS_IN,
                    lsb_per_g: float = mcu_design.PROFILE_LSB_PER_G) -> dict[str, object]:
    """The MCU profile's filters in float64 (scipy: a test dependency, never the
    agent's), outputs in g.

    The float design it is held to: the unquantised half-band taps and the SOS rows of
    ``filter_design`` (not the SVF form: an error in the SVF derivation shows here too),
    started settled on the first sample as the profile is.
    """
    raw = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    rot = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    g = raw @ rot.T / lsb_per_g
    taps = np.asarray(mcu_design.halfband_taps(fs_in))
    padded = np.concatenate([np.repeat(g[:1], len(taps) - 1, axis=0), g])
    dec = np.stack([np.convolve(padded[:, a], taps, mode="valid")[::2] for a in range(3)], 1)
    fs = float(mcu_design.FS_OUT)

    def run(sos: list[list[float]], x: np.ndarray) -> np.ndarray:
        s = np.asarray(sos)
        return ss.sosfilt(s, x, zi=ss.sosfilt_zi(s) * x[0])[0]

    return {"a_z": run(filter_design.lowpass_accel_sos(fs), dec[:, 2]),
            "w_z": run(filter_design.iso2631_sos("Wk", fs), dec[:, 2]),
            "w_x": run(filter_design.iso2631_sos("Wd", fs), dec[:, 0]),
            "w_y": run(filter_design.iso2631_sos("Wd", fs), dec[:, 1])}
