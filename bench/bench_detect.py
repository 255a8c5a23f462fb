"""Replay speed of the detection side of the pipeline (state, doors, trips, every rule).

Usage:  .venv/bin/python bench/bench_detect.py [--hours 24] [--trace FILE.jsonl.gz]

1. A synthetic day of busy service (a trip with a door cycle every ~80 s, controller
   polled every 0.2 s, all terminal inputs; no accelerometer, so the figure is the
   detection side alone) generated an hour at a time by tests/synthlift.py and fed
   the way ``liftwatch replay`` does (advance() on a 0.1 s grid).
2. Optionally a trace with accelerometer data (e.g. the normal_day example,
   ``hil_tests/traces/normal_day.jsonl.gz``), where the accel chain / motion tracker
   (the DSP engineer's part) dominates.

Prints replay speed as a multiple of real time, CPU µs per record and peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from liftwatch.drivers.trace import TraceReader  # noqa: E402
from liftwatch.signal.pipeline import Pipeline  # noqa: E402
from liftwatch.signal.settings import DetectionParams, LiftParams  # noqa: E402
from synthlift import SynthLift  # noqa: E402


def busy_hour(seed: int) -> SynthLift:
    lift = SynthLift(sources="both", seed=seed)
    plan = ["4", "B1", "3", "5", "2", "1"]
    lift.idle(1)
    k = 0
    while lift.t < 3600 - 120:
        to = plan[(k + seed) % len(plan)]
        lift.door_cycle(dwell_s=3).set(presence=1).idle(1).trip(to).idle(0.3)
        lift.door_cycle(dwell_s=4 + k % 3, reopens=int(k % 7 == 0)).set(presence=0)
        lift.idle(30 + 10 * (k % 4))
        k += 1
    lift.trip("1").idle(3600 - lift.t)
    return lift


def feed(p: Pipeline, recs: list, offset: float) -> tuple[int, int]:
    n = 0
    outs = 0
    tick = offset + 0.1
    for r in recs:
        t = r.t + offset
        while tick <= t:
            outs += len(p.advance(tick))
            tick = round(tick + 0.1, 6)
        outs += len(p.feed(t, r.kind, r.data))
        n += 1
    return n, outs


def bench_synthetic(hours: int) -> None:
    lift0 = SynthLift()
    p = Pipeline(lift0.lift_params(), DetectionParams(), accel_fs=None, lsb_per_g=None,
                 controller_present=True)
    cpu = 0.0
    wall = 0.0
    records = 0
    outs = 0
    events = 0
    for h in range(hours):
        recs = busy_hour(h).records()
        t0, c0 = time.perf_counter(), time.process_time()
        n, o = feed(p, recs, h * 3600.0)
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        records += n
        outs += o
    events = sum(p.book.raised_count.values())
    sim = hours * 3600.0
    print(f"synthetic {hours} h (di + ctl, no accel): {records} records, {outs} outputs, "
          f"{events} events raised")
    print(f"  replay speed {sim / wall:,.0f}x real time (wall {wall:.2f} s, cpu {cpu:.2f} s)")
    print(f"  {1e6 * cpu / records:.1f} µs CPU per record; "
          f"{100 * cpu / sim:.4f} % of one core live")


def bench_trace(path: str) -> None:
    with TraceReader(path) as r:
        recs = list(r)
        h = r.header
    lift = LiftParams(**{k: h.lift[k] for k in ("landings", "landing_heights_m",
                                                "rated_speed", "door_zone_m")})
    acc = h.accel or {}
    p = Pipeline(lift, DetectionParams(), accel_fs=acc.get("fs"), lsb_per_g=acc.get("lsb_per_g"),
                 controller_present=h.controller_present)
    t0, c0 = time.perf_counter(), time.process_time()
    n, o = feed(p, recs, 0.0)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    span = recs[-1].t
    print(f"{Path(path).name}: {span:.0f} s of trace, {n} records, {o} outputs"
          f"{' (motion tracker failed: ' + p.motion_error + ')' if p.motion_error else ''}")
    print(f"  replay speed {span / wall:,.0f}x real time (wall {wall:.2f} s, cpu {cpu:.2f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=int, default=24)
    ap.add_argument("--trace", action="append", default=[])
    a = ap.parse_args()
    bench_synthetic(a.hours)
    for tr in a.trace:
        bench_trace(tr)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
