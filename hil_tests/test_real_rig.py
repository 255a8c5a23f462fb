"""The HIL scenarios on a real rig: runs only where a rig is described (LIFTWATCH_RIG_CONFIG).

On CI and a developer's laptop there is no rig hardware: the test says so and is
skipped. On the rig computer it plays every scenario with a controller to the
terminal's real serial port and the terminal's inputs on real pins, and scores what
reaches the broker, exactly as the software rig's suite does.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from observer import Observer, score
from realrig import RealRig, load_rig_config
from rig import rig_lock
from scenarios import ALL

RIG = os.environ.get("LIFTWATCH_RIG_CONFIG")

pytestmark = pytest.mark.skipif(
    not RIG, reason="no real HIL rig on this machine (LIFTWATCH_RIG_CONFIG is not set): "
                    "the hardware this test needs is absent")

# The real rig has no accelerometer feed; scenarios scored on controller and inputs.
REAL_RIG_SCENARIOS = ["story", "faults"]


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("name", REAL_RIG_SCENARIOS)
def test_scenario_on_the_real_rig(name: str) -> None:
    cfg = load_rig_config(Path(str(RIG)))
    scn = ALL[name]()
    with rig_lock(cfg.lock_file):
        observer = Observer(cfg.broker_host, cfg.broker_port, cfg.topic_prefix, cfg.lift_id,
                            auto_ack_after_s=scn.ack_alarms_after_s)
        observer.start()
        rig = RealRig(cfg, scn)

        async def go() -> float:
            await rig.start()
            try:
                t0 = await rig.play()
                await asyncio.sleep(10)
                return t0
            finally:
                await rig.stop()

        try:
            t_start = asyncio.run(go())
        finally:
            observer.stop()
    sc = score(name, observer.arrivals, t_start, scn.expects, scn.allowed,
               trips_expected=scn.trips)
    print(sc.table())
    assert sc.passed, sc.table()
