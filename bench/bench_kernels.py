"""Speed of the fixed-point accelerometer chain on one hour of synthetic 400 Hz lift signal.

Run: ``.venv/bin/python bench/bench_kernels.py [--hours H] [--block N] [--scalar-s S]``

Prints: the numpy chain's multiple of real time and CPU seconds per hour of signal (fed in
blocks of ``--block`` samples, as a replay or a live FIFO would), peak RSS, the same chain in
float64 with scipy.signal.sosfilt as a baseline ratio, and the scalar (MicroPython-subset)
path's speed on a short span, extrapolated to an hour.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np
from liftwatch.signal.chain import AccelChain, AccelChainScalar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from dsp_reference import trip_accel  # noqa: E402  (the tests' jerk-limited trip)

G = 9.80665


def lift_hour(hours: float, fs: int = 400, lsb_per_g: float = 256.0, seed: int = 1
              ) -> np.ndarray:
    """(N, 3) raw counts: trips every ~40 s (1..6 floors) with car vibration, sensor noise,
    a tilted mounting; at rest in between."""
    rng = np.random.default_rng(seed)
    n = int(hours * 3600 * fs)
    acc = np.zeros((n, 3))
    i = int(5 * fs)
    while i < n:
        floors = int(rng.integers(1, 7)) * int(rng.choice([-1, 1]))
        prof = trip_accel(3.3 * floors, 2.0, 0.9, 1.0, fs)
        e = min(n, i + len(prof))
        acc[i:e, 2] += prof[: e - i]
        t = np.arange(e - i) / fs
        for k, (f, amp) in enumerate(((3.1, 0.04), (11.0, 0.06), (27.0, 0.03))):
            acc[i:e, k % 3] += amp * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.28))
            acc[i:e, (k + 1) % 3] += 0.5 * amp * np.sin(2 * np.pi * f * 1.3 * t)
        i = e + int(rng.uniform(20, 60) * fs)
    acc[:, 2] += G
    tilt = math.radians(3.0)
    rot = np.array([[math.cos(tilt), 0, math.sin(tilt)], [0, 1, 0],
                    [-math.sin(tilt), 0, math.cos(tilt)]])
    sensor = acc @ rot.T
    counts = np.round(sensor / G * lsb_per_g + rng.normal(0.0, 1.2, sensor.shape))
    return counts.astype(np.int64)


def run_numpy(counts: np.ndarray, fs: int, block: int, batch_s: float
              ) -> tuple[float, float, int]:
    chain = AccelChain(fs, 256.0, min_block=int(batch_s * fs))
    t0, c0 = time.perf_counter(), time.process_time()
    m = 0
    for s in range(0, len(counts), block):
        m += len(chain.process(counts[s:s + block]))
    m += len(chain.flush())
    return time.perf_counter() - t0, time.process_time() - c0, m


def run_float(counts: np.ndarray, fs: int, block: int) -> float:
    """The same chain in float64: FIR decimation + scipy sosfilt, streaming with zi."""
    import scipy.signal as ss

    d = AccelChain(fs, 256.0).design
    taps = np.asarray(d.taps_float) * (G / 256.0)
    lp, wk, wd = (np.asarray(s) for s in (d.lp_sos, d.wk_sos, d.wd_sos))
    zf = np.zeros((len(taps) - 1, 3))
    zl = np.zeros((lp.shape[0], 2))
    zk = np.zeros((wk.shape[0], 2))
    zd = np.zeros((wd.shape[0], 2, 2))
    phase = 0
    t0 = time.process_time()
    for s in range(0, len(counts), block):
        x = counts[s:s + block].astype(np.float64)
        y, zf = ss.lfilter(taps, [1.0], x, axis=0, zi=zf)
        first = (-phase) % d.factor
        phase = (phase + len(x)) % d.factor
        y = y[first::d.factor]
        _, zl = ss.sosfilt(lp, y[:, 2], zi=zl)
        _, zk = ss.sosfilt(wk, y[:, 2], zi=zk)
        _, zd = ss.sosfilt(wd, y[:, :2], axis=0, zi=zd)
    return time.process_time() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--fs", type=int, default=400)
    ap.add_argument("--block", type=int, default=32,
                    help="input samples per call (32: the 0.08 s records of the example traces)")
    ap.add_argument("--batch-s", type=float, default=1.0,
                    help="AccelChain min_block in seconds of input (the chain's default is 0)")
    ap.add_argument("--scalar-s", type=float, default=20.0, help="seconds for the scalar run")
    args = ap.parse_args(argv)
    counts = lift_hour(args.hours, args.fs)
    span = len(counts) / args.fs
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    wall, cpu, m = run_numpy(counts, args.fs, args.block, args.batch_s)
    print(f"signal: {span / 3600:.2f} h at {args.fs} Hz, 3 axes ({len(counts)} samples), "
          f"fed in blocks of {args.block}, run in {args.batch_s:g} s batches -> {m} outputs")
    print(f"numpy chain: {wall:.2f} s wall, {cpu:.2f} s CPU -> {span / wall:.0f}x real time "
          f"({span / cpu:.0f}x on CPU time), {cpu * 3600 / span:.2f} CPU s per hour")
    print(f"  live load: {100 * cpu / span:.3f} % of one core")
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"  peak RSS {rss1 / 1024:.1f} MB, of which {(rss1 - rss0) / 1024:.1f} MB above the "
          "peak reached while generating the test signal")
    batch = max(args.block, int(args.batch_s * args.fs))  # as the fixed-point chain runs
    fl = run_float(counts, args.fs, batch)
    print(f"float64 scipy chain ({batch}-sample batches): {fl:.2f} s CPU -> "
          f"{span / fl:.0f}x real time; "
          f"fixed/float CPU time ratio {cpu / fl:.2f}")
    ns = int(args.scalar_s * args.fs)
    sc = AccelChainScalar(args.fs, 256.0)
    t0 = time.process_time()
    for s in range(0, ns, args.block):
        sc.process(counts[s:s + args.block])
    sc.flush()
    st = time.process_time() - t0
    print(f"scalar chain: {args.scalar_s:.1f} s of signal in {st:.2f} s CPU -> "
          f"{args.scalar_s / st:.1f}x real time, ~{st * 3600 / args.scalar_s:.0f} CPU s per hour")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS at the end: {rss / 1024:.1f} MB (the {counts.nbytes / 2**20:.1f} MB "
          "test signal and its float generation included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
