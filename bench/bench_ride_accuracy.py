"""Ride-figure accuracy of MotionTracker over random tilted trips.

Random jerk-limited trips (rated 1.0–2.5 m/s, a 0.5–1.0 m/s², jerk 0.7–1.5 m/s³, a third
of them too short to reach rated speed), the terminal tilted 10–30° about a random axis
(auto-estimated), 0.2 m/s² vibration, sensor noise and resolution as given.

``--reference iso`` (the default) judges a_max, d_max, a95 and d95 against ISO 18738-1's
own definition applied to the noise-free motion: the true vertical acceleration (the
profile plus the car's vertical vibration) through a 10 Hz 4th-order Butterworth
low-pass (scipy, float), its peaks, and the 95th percentile of its samples within 90 % of
each peak. ``--reference profile`` judges every figure against the profile's nominal
values (v, a, jerk; distance relative to max(d, 2.5 m)). Prints each trip's errors and,
per figure, the mean, the median and 95th percentile of |error|, and the worst.

    .venv/bin/python bench/bench_ride_accuracy.py --lsb 256 --trips 80
    .venv/bin/python bench/bench_ride_accuracy.py --reference profile --trips 24
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import signal as scipy_signal

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from liftwatch.signal.motion import MotionTracker  # noqa: E402
from liftwatch.signal.settings import LiftParams  # noqa: E402
from synth_motion import (  # noqa: E402
    acc_blocks,
    profile_peaks,
    rotation_matrix,
    trip_samples,
    vibration,
)

FS = 400.0


def iso_reference(acc: np.ndarray, vel: np.ndarray, vib_amp: float, seed: int) -> dict:
    """ISO 18738-1 a_max, d_max, a95, d95 of the noise-free vertical motion (float)."""
    true_z = acc + vibration(acc.size, FS, vib_amp, seed)[:, 2] * (vel != 0)
    lp = scipy_signal.sosfilt(scipy_signal.butter(4, 10.0, fs=FS, output="sos"), true_z)
    i_v = int(np.argmax(np.abs(vel)))
    ad = np.sign(vel[i_v]) * lp
    up, down = ad[:i_v], -ad[i_v:]
    a_pk, d_pk = float(up.max()), float(down.max())
    return {"a_max": a_pk, "d_max": d_pk,
            "a95": float(np.percentile(up[up >= 0.9 * a_pk], 95)),
            "d95": float(np.percentile(down[down >= 0.9 * d_pk], 95))}


def profile_errors(f: dict, true: dict) -> dict[str, float]:
    return {"distance_m": (f["distance_m"] - true["distance_m"]) / max(true["distance_m"], 2.5),
            "v_max": f["v_max"] / true["v_max"] - 1, "a_max": f["a_max"] / true["a_max"] - 1,
            "d_max": f["d_max"] / true["d_max"] - 1,
            "jerk_max": f["jerk_max"] / true["jerk_max"] - 1,
            "a95": f["a95"] / true["a_max"] - 1, "d95": f["d95"] / true["d_max"] - 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--noise", type=float, default=1.5, help="sensor noise, counts rms")
    ap.add_argument("--lsb", type=float, default=256, help="counts per g")
    ap.add_argument("--trips", type=int, default=80)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--vib", type=float, default=0.2, help="car vibration, m/s² per axis")
    ap.add_argument("--reference", choices=["iso", "profile"], default="iso")
    args = ap.parse_args()
    lift = LiftParams(landings=[str(i) for i in range(20)],
                      landing_heights_m=[3.0 * i for i in range(20)], rated_speed=2.5)
    rng = np.random.default_rng(args.seed)
    errors: dict[str, list[float]] = {}
    for k in range(args.trips):
        v = rng.uniform(1.0, 2.5)
        a = rng.uniform(0.5, 1.0)
        j = rng.uniform(0.7, 1.5)
        d = rng.choice([-1, 1]) * (rng.uniform(0.3, 4) if k % 3 == 0 else rng.uniform(4, 50))
        rot = rotation_matrix(rng.normal(size=3), rng.uniform(10, 30))
        _t, _p, vel, acc, counts = trip_samples(d, v, a, j, fs=FS, pre_s=4, post_s=2,
                                                rotation=rot, vib_amp=args.vib, seed=k,
                                                noise_counts=args.noise, lsb_per_g=args.lsb)
        m = MotionTracker(lift, int(FS), args.lsb)
        true = profile_peaks(d, v, a, j)
        m.begin_trip(3.5)
        for tb, blk in acc_blocks(0.0, counts, FS, 32):
            m.on_acc(tb, blk)
        f = m.end_trip(4 + true["duration_s"] + 1.0)
        assert f is not None
        if args.reference == "iso":
            ref = iso_reference(acc, vel, args.vib, k)
            err = {key: f[key] / ref[key] - 1 for key in ref if f[key] is not None}
        else:
            err = profile_errors(f, true)
        for key, x in err.items():
            errors.setdefault(key, []).append(x)
        print(f"{k:2d} d={d:+6.2f} v={v:.2f} a={a:.2f} j={j:.2f} "
              + " ".join(f"{key}={x:+.3f}" for key, x in err.items()))
    against = ("the ISO 10 Hz reference of the noise-free motion" if args.reference == "iso"
               else "the nominal profile")
    print(f"{args.trips} trips, noise {args.noise} counts rms, {args.lsb:g} counts/g, "
          f"against {against}:")
    for key, xs in errors.items():
        e = np.abs(np.asarray(xs))
        print(f"  {key:10s} mean {np.mean(xs) * 100:+6.2f} %   |error| median "
              f"{np.median(e) * 100:5.2f} %   p95 {np.percentile(e, 95) * 100:5.2f} %   "
              f"worst {e.max() * 100:5.2f} %")


if __name__ == "__main__":
    main()
