"""Technician-tool figures: reading a full outbox read-only, drawing one trip.

Run from the repository root::

    .venv/bin/python bench/bench_tools.py [--quick]

``liftwatch outbox`` and ``liftwatch check`` index every segment file of the outbox
(:mod:`liftwatch.agent.tools.outbox_view`) while the agent runs; on a Pi the technician waits
for it, so the time to read a full outbox (``storage.outbox_max_mb``, 64 MB by default)
is printed, with the peak RSS. ``liftwatch plot`` replays the trace up to the trip:
its time and peak RSS for trip 1 of the normal_day example trace are printed too.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from liftwatch.agent.tools.outbox_view import export_jsonl, snapshot
from liftwatch.buffer.outbox import Outbox

REPO = Path(__file__).resolve().parent.parent
TRACE = REPO / "hil_tests" / "traces" / "normal_day.jsonl.gz"
PAYLOAD = b'{"id":"b1-000000","code":"door_fault","state":"raised","ts":1795575600000,' \
          b'"floor":"12","detail":{"reopens":4,"open_s":41.5},"tq":1,"sev":"major"}' + b" " * 100


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_outbox(mb: float) -> None:
    d = Path(tempfile.mkdtemp(prefix="lw-bench-tools-"))
    try:
        n = int(mb * 1e6 / (len(PAYLOAD) + 60))
        with Outbox(d / "outbox", int(mb * 2e6)) as ob:
            for i in range(0, n, 1000):
                ob.append_many([("record", "lift/x/trip", PAYLOAD)] * min(1000, n - i))
        size = sum(p.stat().st_size for p in (d / "outbox").rglob("*.seg")) / 1e6
        rss0 = rss_mb()
        t0 = time.perf_counter()
        snap = snapshot(d / "outbox")
        assert snap is not None
        st = snap.stats()
        t1 = time.perf_counter()
        with open(os.devnull, "w", encoding="utf-8") as sink:
            exported = export_jsonl(snap, sink)
        t2 = time.perf_counter()
        print(f"outbox view: {st['lanes']['record']['depth']} messages, {size:.1f} MB of "
              f"segments: stats in {t1 - t0:.2f} s, export of {exported} in {t2 - t1:.2f} s; "
              f"peak RSS {rss_mb():.0f} MB (before reading: {rss0:.0f} MB)")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def bench_plot() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("plot: matplotlib not installed, skipped")
        return
    from liftwatch.agent.tools.plot import find_trip, render, trip_series

    out = Path(tempfile.mkdtemp(prefix="lw-bench-plot-")) / "trip.png"
    t0 = time.perf_counter()
    trip, records, accel = find_trip(TRACE, 1)
    t1 = time.perf_counter()
    series = trip_series(trip, records, accel, None, 1)
    t2 = time.perf_counter()
    render(series, out)
    t3 = time.perf_counter()
    print(f"plot trip 1 of {TRACE.name} (trip ends at t = {trip['t_end']:.0f} s): replay "
          f"{t1 - t0:.2f} s, chain {t2 - t1:.2f} s, render {t3 - t2:.2f} s; "
          f"PNG {out.stat().st_size // 1024} KiB; peak RSS {rss_mb():.0f} MB")
    shutil.rmtree(out.parent, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="an 8 MB outbox instead of 64 MB")
    args = p.parse_args()
    bench_outbox(8.0 if args.quick else 64.0)
    bench_plot()
    return 0


if __name__ == "__main__":
    sys.exit(main())
