"""The HIL suite on the software rig: real agent process, real Mosquitto, Modbus over a
pty and TCP, inputs and accelerometer through the simulated backends.

Done when (issue 7): every scenario's events reach the broker within the rule's timer
plus 2 s, no false event, nothing lost across a 30 s broker outage.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from scenarios import ALL
from suite import run_suite


@pytest.mark.realtime(215)
@pytest.mark.timeout(290)
def test_hil_suite_on_the_software_rig(tmp_path: Path) -> None:
    results = asyncio.run(run_suite(list(ALL), tmp_path))
    report = [sc.as_dict() for sc, _ in results]
    (tmp_path / "hil-report.json").write_text(json.dumps(report, indent=1))
    tables = "\n".join(sc.table() for sc, _ in results)
    print(tables)
    for sc, run in results:
        assert sc.passed, f"{tables}\n--- agent log of {sc.scenario} (tail):\n" \
                          f"{run.agent_log[-4000:]}"
        assert any(a.topic.endswith("/online") and a.payload == 1
                   for a in run.observer.arrivals), "the agent never announced itself online"
