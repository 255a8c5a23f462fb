"""Footprint of the running agent on the HIL rig: memory, CPU share, time to first status.

Runs the real ``liftwatch run`` on the software rig (Modbus RTU over a pty, inputs and a
400 Hz accelerometer through the simulation feed, a local Mosquitto) while a simulated
lift does ordinary service, and samples the agent process from /proc:

    .venv/bin/python bench/bench_footprint.py --minutes 60

Prints: start to first status message at the broker, RSS after the run and its peak,
CPU share of one core over the run (and over the last half, after warm-up).
Targets (issue 8): RSS <= 80 MB after an hour, CPU <= 3 %, first status <= 3 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "hil_tests"))

from liftsim import LiftSim, SimLift  # noqa: E402
from mosquitto import Broker  # noqa: E402
from observer import Observer  # noqa: E402
from rig import LIFT_ID, SoftRig  # noqa: E402
from scenarios import Scenario  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def service_stream(sim: LiftSim, seconds: float, seed: int = 5) -> Iterator[tuple[float, str, Any]]:
    """Ordinary random service, produced as it is played (constant memory)."""
    rng = random.Random(seed)
    lift = sim.lift
    while sim.t < seconds:
        to = rng.choice([x for x in lift.landings if x != sim.floor_label])
        sim.service(to, board=rng.randint(1, 2), leave=0, dwell_s=rng.uniform(2, 5))
        sim.passengers = 0
        sim.wait(rng.uniform(5, 40))
        yield from sim.drain()


def proc_sample(pid: int) -> tuple[float, float]:
    """(RSS in MB, CPU seconds) of a process."""
    with open(f"/proc/{pid}/status") as fh:
        rss = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return rss, cpu


async def main_async(minutes: float, workdir: Path) -> dict[str, Any]:
    lift = SimLift()
    sim = LiftSim(lift, seed=9, start_floor=1)
    scn = Scenario("footprint", lift, service_stream(sim, minutes * 60), minutes * 60, [],
                   first_ctl=sim.controller_view(), first_di=sim.inputs())
    (workdir / "broker").mkdir(parents=True)
    broker = Broker(workdir=workdir / "broker")
    broker.start()
    observer = Observer(broker.host, broker.port, "lift", LIFT_ID)
    observer.start()
    (workdir / "rig").mkdir()
    rig = SoftRig(workdir / "rig", scn, broker, transport="rtu")
    samples: list[tuple[float, float, float]] = []
    try:
        t_spawn = time.monotonic()
        await rig.start()
        assert rig.agent is not None
        pid = rig.agent.pid
        play = asyncio.create_task(rig.play(observer))
        while not play.done():
            rss, cpu = proc_sample(pid)
            samples.append((time.monotonic(), rss, cpu))
            await asyncio.sleep(5.0)
        await play
        rss, cpu = proc_sample(pid)
        samples.append((time.monotonic(), rss, cpu))
    finally:
        await rig.stop()
        observer.stop()
        broker.stop()
    statuses = observer.messages("status")
    first_status = statuses[0].t - t_spawn if statuses else None
    t0, _, c0 = samples[0]
    t1, rss_end, c1 = samples[-1]
    mid = samples[len(samples) // 2]
    return {
        "minutes": minutes,
        "start_to_first_status_s": None if first_status is None else round(first_status, 2),
        "rss_mb_end": round(rss_end, 1),
        "rss_mb_peak": round(max(s[1] for s in samples), 1),
        "cpu_pct_of_one_core": round(100 * (c1 - c0) / (t1 - t0), 2),
        "cpu_pct_second_half": round(100 * (c1 - mid[2]) / (t1 - mid[0]), 2),
        "messages_at_broker": len(observer.arrivals),
        "trips_at_broker": len(observer.messages("trip")),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="liftwatch-footprint-") as tmp:
        result = asyncio.run(main_async(args.minutes, Path(tmp)))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
