"""The HIL scenario suite: every scenario on its own software rig, scored, reported.

    .venv/bin/python hil_tests/suite.py [--scenario NAME ...] [--json report.json]

Scenarios run concurrently (each with its own broker, Modbus server, feed and agent
process), so the suite takes as long as its longest scenario. The report is a table
on stdout and, with ``--json``, a JSON file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mosquitto import Broker  # noqa: E402
from observer import Score, score  # noqa: E402
from rig import RigRun, run_soft  # noqa: E402
from scenarios import ALL  # noqa: E402

#: Which Modbus transport each scenario's controller uses on the software rig.
TRANSPORT = {"story": "rtu", "faults": "tcp", "sensors_only_level": "tcp",
             "doors_and_drive": "rtu"}


async def run_one(name: str, workdir: Path) -> tuple[Score, RigRun]:
    scn = ALL[name]()
    broker = Broker(workdir=workdir / "broker")
    (workdir / "broker").mkdir(parents=True, exist_ok=True)
    broker.start()
    try:
        run = await run_soft(workdir / "rig", scn, broker, TRANSPORT.get(name, "tcp"))
    finally:
        broker.stop()
    outages = scn.outages
    sc = score(name, run.observer.arrivals, run.t_start, scn.expects, scn.allowed,
               outages=outages, trips_expected=scn.trips)
    return sc, run


async def run_suite(names: list[str], workdir: Path) -> list[tuple[Score, RigRun]]:
    return list(await asyncio.gather(*(run_one(n, workdir / n) for n in names)))


def main() -> int:
    ap = argparse.ArgumentParser(description="Run the HIL scenarios on the software rig.")
    ap.add_argument("--scenario", action="append", choices=sorted(ALL), help="default: all")
    ap.add_argument("--json", type=Path, help="write the report here")
    ap.add_argument("--workdir", type=Path, help="keep the rig's files here")
    args = ap.parse_args()
    names = args.scenario or list(ALL)
    with tempfile.TemporaryDirectory(prefix="liftwatch-hil-") as tmp:
        results = asyncio.run(run_suite(names, args.workdir or Path(tmp)))
    for sc, _ in results:
        print(sc.table())
    if args.json:
        args.json.write_text(json.dumps([sc.as_dict() for sc, _ in results], indent=1))
    return 0 if all(sc.passed for sc, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
