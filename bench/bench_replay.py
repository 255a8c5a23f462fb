"""Replay speed of the whole pipeline on a 1-hour, 400 Hz trace (issue 3/4 benchmark).

Generates (once, cached in bench/.cache/) an hour of a busy lift with the HIL lift
simulator — 3-axis accelerometer at 400 Hz, inputs and controller polls — and
replays it through ``liftwatch replay``'s code path. Prints: replay speed as a
multiple of real time, CPU seconds per hour of signal, peak RSS, and the share of
one core the live pipeline would need at real time.

    .venv/bin/python bench/bench_replay.py [--hours 1] [--sensors-only]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "hil_tests"))

from liftsim import LiftSim, SimLift  # noqa: E402
from liftwatch.agent.replay import build_pipeline, replay_records  # noqa: E402
from liftwatch.drivers.trace import TraceHeader, TraceReader, TraceWriter  # noqa: E402


def generate(path: Path, hours: float, controller: bool, seed: int = 3) -> None:
    lift = SimLift(controller=controller)
    sim = LiftSim(lift, seed=seed, start_floor=1)
    rng = random.Random(seed)
    h = lift.header()
    header = TraceHeader(start=h["start"], lift=h["lift"], accel=h["accel"],
                         controller_present=controller)
    tmp = path.with_name(path.name + ".part")
    with TraceWriter(tmp, header, compress=True) as w:
        while sim.t < hours * 3600:
            to = rng.choice([x for x in lift.landings if x != sim.floor_label])
            sim.service(to, board=rng.randint(1, 3), leave=0, dwell_s=rng.uniform(2, 6))
            sim.passengers = 0
            sim.wait(rng.uniform(2, 30))
            for t, kind, data in sim.drain():
                w.write(t, kind, data)
    tmp.rename(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--sensors-only", action="store_true")
    args = ap.parse_args()
    cache = HERE / ".cache"
    cache.mkdir(exist_ok=True)
    name = f"busy_{args.hours:g}h_{'sen' if args.sensors_only else 'both'}.jsonl.gz"
    trace = cache / name
    if not trace.exists():
        t0 = time.monotonic()
        generate(trace, args.hours, controller=not args.sensors_only)
        print(f"generated {trace.name} in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    reader = TraceReader(trace)
    pipeline = build_pipeline(reader.header, None)
    counts: dict[str, int] = {}
    c0, w0 = time.process_time(), time.perf_counter()
    last = 0.0
    for rec in replay_records(reader, pipeline):
        counts[rec["type"]] = counts.get(rec["type"], 0) + 1
        last = max(last, rec.get("t", 0.0))
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    span = args.hours * 3600
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "trace": trace.name, "signal_hours": args.hours, "records": reader.lines_read,
        "outputs": counts, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
        "x_real_time": round(span / wall, 1), "cpu_s_per_signal_hour": round(cpu / args.hours, 2),
        "live_core_share_pct": round(100 * cpu / span, 3),
        "peak_rss_mb": round(rss_mb, 1)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
