"""How much CPU MotionTracker costs: a trace's accelerometer and zone records through it.

Prints CPU seconds per hour of signal, the multiple of real time, and the share spent in
the fixed-point chain (the rest is motion's own bookkeeping). Records are parsed before
the clock starts, so only the tracker is measured.

    .venv/bin/python bench/bench_motion.py [TRACE] [--chain-batch-s 2.0]

TRACE defaults to the normal_day example (hil_tests/traces/, 7.5 minutes of service).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from liftwatch.drivers.trace import TraceReader
from liftwatch.signal.motion import MotionTracker
from liftwatch.signal.settings import LiftParams

DEFAULT = Path(__file__).resolve().parents[1] / "hil_tests" / "traces" / "normal_day.jsonl.gz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace", nargs="?", default=str(DEFAULT))
    ap.add_argument("--chain-batch-s", type=float, default=2.0)
    args = ap.parse_args()
    r = TraceReader(args.trace)
    h = r.header.lift
    lift = LiftParams(landings=h["landings"], landing_heights_m=h["landing_heights_m"],
                      rated_speed=h["rated_speed"], door_zone_m=h["door_zone_m"])
    recs = [rec for rec in r if rec.kind in ("acc", "di")]
    span = recs[-1].t - recs[0].t
    m = MotionTracker(lift, r.header.accel["fs"], r.header.accel["lsb_per_g"],
                      chain_batch_s=args.chain_batch_s)
    chain_s = 0.0
    cls = type(m._chain)
    orig = cls.process

    def timed(self: object, block: object) -> object:
        nonlocal chain_s
        t0 = time.process_time()
        out = orig(self, block)
        chain_s += time.process_time() - t0
        return out

    cls.process = timed  # type: ignore[method-assign]  # the chain is rebuilt at start-up
    zone: dict[str, int] = {}
    t0 = time.process_time()
    for rec in recs:
        if rec.kind == "acc":
            m.on_acc(rec.t, rec.data)
        else:
            zone.update(rec.data)
            if "zone_up" in rec.data or "zone_down" in rec.data:
                m.on_zone(rec.t, zone.get("zone_up"), zone.get("zone_down"))
            if "run" in rec.data:
                m.on_run(rec.t, bool(rec.data["run"]))
    m.flush()
    cpu = time.process_time() - t0
    print(f"trace {Path(args.trace).name}: {span:.0f} s of signal at {r.header.accel['fs']} Hz")
    print(f"CPU {cpu:.2f} s -> {cpu / span * 3600:.1f} CPU s per hour of signal "
          f"({cpu / span * 100:.2f} % of one core), {span / cpu:.0f}x real time")
    print(f"chain {chain_s:.2f} s ({chain_s / cpu * 100:.0f} %), motion's own "
          f"{cpu - chain_s:.2f} s ({(cpu - chain_s) / cpu * 100:.0f} %)")


if __name__ == "__main__":
    main()
