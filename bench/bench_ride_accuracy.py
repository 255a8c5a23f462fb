"""Ride-figure accuracy of MotionTracker over random tilted trips: worst relative errors.

Random jerk-limited trips (rated 1.0–2.5 m/s, a 0.5–1.0 m/s², jerk 0.7–1.5 m/s³, a third
of them too short to reach rated speed), the terminal tilted 10–30° about a random axis
(auto-estimated), 0.2 m/s² vibration, sensor noise and resolution as given. Prints each
trip's errors and the worst of each figure (distance relative to max(d, 2.5 m)).

    .venv/bin/python bench/bench_ride_accuracy.py --noise 1.5 --lsb 256 --trips 24
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from liftwatch.signal.motion import MotionTracker  # noqa: E402
from liftwatch.signal.settings import LiftParams  # noqa: E402
from synth_motion import acc_blocks, profile_peaks, rotation_matrix, trip_samples  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--noise", type=float, default=1.5, help="sensor noise, counts rms")
    ap.add_argument("--lsb", type=float, default=256, help="counts per g")
    ap.add_argument("--trips", type=int, default=24)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    lift = LiftParams(landings=[str(i) for i in range(20)],
                      landing_heights_m=[3.0 * i for i in range(20)], rated_speed=2.5)
    rng = np.random.default_rng(args.seed)
    worst: dict[str, float] = {}
    for k in range(args.trips):
        v = rng.uniform(1.0, 2.5)
        a = rng.uniform(0.5, 1.0)
        j = rng.uniform(0.7, 1.5)
        d = rng.choice([-1, 1]) * (rng.uniform(0.3, 4) if k % 3 == 0 else rng.uniform(4, 50))
        rot = rotation_matrix(rng.normal(size=3), rng.uniform(10, 30))
        _t, _p, _v, _a, counts = trip_samples(d, v, a, j, fs=400, pre_s=4, post_s=2,
                                              rotation=rot, vib_amp=0.2, seed=k,
                                              noise_counts=args.noise, lsb_per_g=args.lsb)
        m = MotionTracker(lift, 400, args.lsb)
        true = profile_peaks(d, v, a, j)
        m.begin_trip(3.5)
        for tb, blk in acc_blocks(0.0, counts, 400, 32):
            m.on_acc(tb, blk)
        f = m.end_trip(4 + true["duration_s"] + 1.0)
        assert f is not None
        err = {"distance_m": (f["distance_m"] - true["distance_m"]) / max(true["distance_m"],
                                                                          2.5),
               "v_max": f["v_max"] / true["v_max"] - 1, "a_max": f["a_max"] / true["a_max"] - 1,
               "d_max": f["d_max"] / true["d_max"] - 1,
               "jerk_max": f["jerk_max"] / true["jerk_max"] - 1,
               "a95": f["a95"] / true["a_max"] - 1, "d95": f["d95"] / true["d_max"] - 1}
        for key, x in err.items():
            worst[key] = max(worst.get(key, 0.0), abs(x))
        print(f"{k:2d} d={d:+6.2f} v={v:.2f} a={a:.2f} j={j:.2f} "
              + " ".join(f"{key}={x:+.3f}" for key, x in err.items()))
    print(f"worst of {args.trips} (noise {args.noise} counts, {args.lsb:g} counts/g): "
          + " ".join(f"{key}={x:.3f}" for key, x in worst.items()))


if __name__ == "__main__":
    main()
