"""Footprint of the running agent on the HIL rig: memory, CPU share, time to first status.

Runs the real ``liftwatch run`` on the software rig (Modbus RTU over a pty, inputs and a
400 Hz accelerometer through the simulation feed, a local Mosquitto) while a simulated
lift does ordinary service, and samples the agent process from /proc:

    .venv/bin/python bench/bench_footprint.py --minutes 60 [--chip lis3dh] \
        [--python /usr/bin/python3]

Prints: start to first status message at the broker, RSS after the run and its peak,
CPU share of one core over the run (and over the last half, after warm-up), and that
share per thread (the agent names its threads in the kernel). ``simfeed`` is the
simulated backends' receiver, which a terminal with real GPIO and I2C does not run.
Targets (issue 8): RSS <= 80 MB after an hour, CPU <= 3 %, first status <= 3 s.

The CPU figure depends on the interpreter as much as on the agent. ``--python`` runs the
agent (only the agent) under another one, in a virtualenv made for it once under
``bench/.cache/``: ``/usr/bin/python3`` is Debian's build, the one Raspberry Pi OS runs
on a terminal (the interpreter statically linked and profile-optimised); a pyenv or
``--enable-shared`` build calls the interpreter through ``libpython3.so`` and is slower.
The output names the interpreter and says whether ``libpython`` was a shared library.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
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


def thread_cpu(pid: int) -> dict[str, tuple[float, int]]:
    """(CPU seconds, voluntary context switches) per thread name of a process (threads
    of one name summed). A voluntary switch is a sleep: each ends in a wake-up."""
    out: dict[str, tuple[float, int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            raw = (task / "stat").read_text()
            status = (task / "status").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        name = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        sleeps = next(int(line.split()[1]) for line in status.splitlines()
                      if line.startswith("voluntary_ctxt_switches"))
        c0, s0 = out.get(name, (0.0, 0))
        out[name] = (c0 + cpu, s0 + sleeps)
    return out


def proc_sample(pid: int) -> tuple[float, float]:
    """(RSS in MB, CPU seconds) of a process."""
    with open(f"/proc/{pid}/status") as fh:
        rss = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return rss, cpu


def python_version(python: str) -> str:
    return subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"],
                          capture_output=True, text=True, check=True).stdout.strip()


def agent_python(python: str) -> str:
    """An interpreter with liftwatch installed: ``python`` itself, or a virtualenv made
    from it under bench/.cache/ (once; later runs reuse it)."""
    has = subprocess.run([python, "-c", "import liftwatch.agent.cli"], capture_output=True)
    if has.returncode == 0:
        return python
    venv = HERE / ".cache" / f"agent-venv-{Path(python).resolve().name}-{python_version(python)}"
    vpy = venv / "bin" / "python"
    if not vpy.exists():
        print(f"making {venv} for the agent", file=sys.stderr)
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(vpy), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "-e", str(REPO)], check=True)
    return str(vpy)


def interpreter(pid: int) -> dict[str, Any]:
    """What the agent process runs on: version, executable, libpython shared or not."""
    exe = os.readlink(f"/proc/{pid}/exe")
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {"version": python_version(exe), "executable": exe,
            "libpython_shared": "libpython3" in maps}


async def main_async(minutes: float, workdir: Path, chip: str = "adxl345",
                     python: str = sys.executable) -> dict[str, Any]:
    lift = SimLift(chip=chip)
    sim = LiftSim(lift, seed=9, start_floor=1)
    scn = Scenario("footprint", lift, service_stream(sim, minutes * 60), minutes * 60, [],
                   first_ctl=sim.controller_view(), first_di=sim.inputs())
    (workdir / "broker").mkdir(parents=True)
    broker = Broker(workdir=workdir / "broker")
    broker.start()
    observer = Observer(broker.host, broker.port, "lift", LIFT_ID)
    observer.start()
    (workdir / "rig").mkdir()
    rig = SoftRig(workdir / "rig", scn, broker, transport="rtu", python=python)
    samples: list[tuple[float, float, float]] = []
    try:
        t_spawn = time.monotonic()
        await rig.start()
        assert rig.agent is not None
        pid = rig.agent.pid
        interp = interpreter(pid)
        play = asyncio.create_task(rig.play(observer))
        threads0: dict[str, tuple[float, int]] = {}
        while not play.done():
            if not threads0 and time.monotonic() - t_spawn > 10:
                threads0, t_threads0 = thread_cpu(pid), time.monotonic()
            rss, cpu = proc_sample(pid)
            samples.append((time.monotonic(), rss, cpu))
            await asyncio.sleep(5.0)
        await play
        rss, cpu = proc_sample(pid)
        samples.append((time.monotonic(), rss, cpu))
        threads1, t_threads1 = thread_cpu(pid), time.monotonic()
    finally:
        await rig.stop()
        observer.stop()
        broker.stop()
    span = t_threads1 - t_threads0
    statuses = observer.messages("status")
    healths = [h.payload for h in observer.messages("health") if isinstance(h.payload, dict)]
    accel = (healths[-1].get("sensors", {}).get("drivers", {}).get("accel", {})
             if healths else {})
    first_status = statuses[0].t - t_spawn if statuses else None
    t0, _, c0 = samples[0]
    t1, rss_end, c1 = samples[-1]
    mid = samples[len(samples) // 2]
    return {
        "minutes": minutes,
        "accelerometer": chip,
        "interpreter": interp,
        "start_to_first_status_s": None if first_status is None else round(first_status, 2),
        "rss_mb_end": round(rss_end, 1),
        "rss_mb_peak": round(max(s[1] for s in samples), 1),
        "cpu_pct_of_one_core": round(100 * (c1 - c0) / (t1 - t0), 2),
        "cpu_pct_second_half": round(100 * (c1 - mid[2]) / (t1 - mid[0]), 2),
        "by_thread_after_10s": {
            name: {"cpu_pct": round(100 * (c - threads0.get(name, (0.0, 0))[0]) / span, 2),
                   "wakeups_per_s": round((w - threads0.get(name, (0.0, 0))[1]) / span, 1)}
            for name, (c, w) in sorted(threads1.items(), key=lambda kv: -kv[1][0])},
        # the last health message's word on the accelerometer: how late its reads came
        "accel_read_gap_max_ms": accel.get("read_gap_max_ms"),
        "accel_overruns": accel.get("overruns", 0),
        "messages_at_broker": len(observer.arrivals),
        "trips_at_broker": len(observer.messages("trip")),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--chip", choices=["adxl345", "lis3dh"], default="adxl345",
                    help="the terminal's accelerometer (adxl345: an I2C read per sample)")
    ap.add_argument("--python", default=sys.executable,
                    help="the agent's interpreter, e.g. /usr/bin/python3 (Debian's, as on a "
                         "Pi); default: this one")
    args = ap.parse_args()
    python = agent_python(args.python)
    with tempfile.TemporaryDirectory(prefix="liftwatch-footprint-") as tmp:
        result = asyncio.run(main_async(args.minutes, Path(tmp), args.chip, python))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
