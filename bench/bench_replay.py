"""Replay speed on a 1-hour, 400 Hz trace: the whole ``liftwatch replay`` process and in-process.

The trace is one the replay code was not tuned on: the HIL lift simulator
(hil_tests/liftsim.py) makes it from its own seed and building (9 irregular landings,
2.0 m/s, a tilted sensor read in 25-sample FIFO blocks, inputs and controller polls), cached in
bench/.cache/. The replay work was profiled on another trace (seed 3, the simulator's
default 6-landing lift: ``--profile-trace``).

Prints, as JSON:

- ``whole_process``: ``liftwatch replay TRACE --format jsonl > /dev/null`` timed from
  outside, start-up included, ``--runs`` times: wall seconds, CPU seconds of the child
  (user + sys from ``resource.getrusage(RUSAGE_CHILDREN)``) and × real time from each;
- ``in_process``: the replay loop alone (``replay_records``), wall and CPU;
- ``load``: the load average and core count while it ran. On a shared, loaded machine
  wall time stretches with the load; CPU time much less so (it still grows a little
  when cores are shared): compare the CPU-based figures.

    .venv/bin/python bench/bench_replay.py [--runs 3] [--hours 1] [--profile-trace]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "hil_tests"))

from liftsim import LiftSim, SimLift  # noqa: E402
from liftwatch.agent.replay import build_pipeline, replay_records  # noqa: E402
from liftwatch.drivers.trace import TraceHeader, TraceReader, TraceWriter  # noqa: E402

#: the bench's own building and seed (not the one the replay work was profiled on)
BENCH_SEED = 41
BENCH_LIFT = {"landings": ["-1", "0", "1", "2", "3", "4", "5", "6", "7"],
              "heights": [0.0, 3.6, 8.1, 11.2, 14.3, 17.4, 20.5, 23.6, 27.4],
              "rated_speed": 2.0, "door_zone_m": 0.15, "tilt_deg": 2.5, "block": 25,
              "noise_counts": 1.6}
PROFILE_SEED = 3                  # the trace the replay work was profiled on (default lift)


def generate(path: Path, hours: float, lift: SimLift, seed: int) -> None:
    """An hour of a busy lift: trips between random landings, passengers, waits."""
    sim = LiftSim(lift, seed=seed, start_floor=1)
    rng = random.Random(seed)
    h = lift.header()
    header = TraceHeader(start=h["start"], lift=h["lift"], accel=h["accel"],
                         controller_present=lift.controller)
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


def trace_path(hours: float, profile: bool) -> Path:
    cache = HERE / ".cache"
    cache.mkdir(exist_ok=True)
    if profile:
        path, lift, seed = cache / f"busy_{hours:g}h_both.jsonl.gz", SimLift(), PROFILE_SEED
    else:
        path = cache / f"bench_s{BENCH_SEED}_{hours:g}h.jsonl.gz"
        lift, seed = SimLift(**BENCH_LIFT), BENCH_SEED
    if not path.exists():
        t0 = time.monotonic()
        generate(path, hours, lift, seed)
        print(f"generated {path.name} in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return path


def liftwatch_command() -> list[str]:
    """The installed console script next to this interpreter (else on PATH)."""
    exe = Path(sys.executable).with_name("liftwatch")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("liftwatch")
    if found:
        return [found]
    raise SystemExit("bench_replay: no liftwatch command found (install the package)")


def whole_process(trace: Path, runs: int) -> list[tuple[float, float]]:
    """(wall, child CPU) seconds of each ``liftwatch replay`` run, output to /dev/null."""
    cmd = [*liftwatch_command(), "replay", str(trace), "--format", "jsonl", "--quiet"]
    out = []
    for _ in range(runs):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        w0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
        wall = time.perf_counter() - w0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        out.append((wall, cpu))
    return out


def in_process(trace: Path) -> tuple[float, float, int, dict[str, int]]:
    """Wall and CPU seconds of the replay loop alone, lines read, outputs by type."""
    reader = TraceReader(trace)
    pipeline = build_pipeline(reader.header, None)
    counts: dict[str, int] = {}
    c0, w0 = time.process_time(), time.perf_counter()
    for rec in replay_records(reader, pipeline):
        counts[rec["type"]] = counts.get(rec["type"], 0) + 1
    return time.process_time() - c0, time.perf_counter() - w0, reader.lines_read, counts


def figures(span: float, wall: list[float], cpu: list[float]) -> dict[str, float]:
    return {"wall_s_best": round(min(wall), 2), "wall_s_median": round(statistics.median(wall), 2),
            "cpu_s_best": round(min(cpu), 2), "cpu_s_median": round(statistics.median(cpu), 2),
            "x_real_time_wall_best": round(span / min(wall)),
            "x_real_time_cpu_best": round(span / min(cpu)),
            "x_real_time_cpu_median": round(span / statistics.median(cpu))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=3, help="whole-process runs (best and median)")
    ap.add_argument("--profile-trace", action="store_true",
                    help="the trace the replay work was profiled on, instead of the bench's")
    args = ap.parse_args()
    trace = trace_path(args.hours, args.profile_trace)
    span = args.hours * 3600
    load_before = os.getloadavg()
    whole = whole_process(trace, args.runs)
    ins = [in_process(trace) for _ in range(max(1, args.runs // 2))]
    load_after = os.getloadavg()
    cores = os.cpu_count() or 1
    cpu_in, wall_in = [x[0] for x in ins], [x[1] for x in ins]
    print(json.dumps({
        "trace": trace.name, "signal_hours": args.hours, "records": ins[0][2],
        "outputs": ins[0][3],
        "whole_process": figures(span, [w for w, _ in whole], [c for _, c in whole]),
        "in_process": figures(span, wall_in, cpu_in),
        "live_core_share_pct": round(100 * min(cpu_in) / span, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load": {"loadavg_1min_before": round(load_before[0], 2),
                 "loadavg_1min_after": round(load_after[0], 2), "cores": cores,
                 "loaded": max(load_before[0], load_after[0]) > 0.5 * cores},
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
