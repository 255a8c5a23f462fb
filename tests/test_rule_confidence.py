"""Rules that judge an estimate (ride vibration, stop position) on the project's
simulator: a real change is seen within its window, ordinary noise is not a fault, and
where the estimate cannot support the rule, health says so (issue 14)."""

from __future__ import annotations

import pytest
from liftwatch.signal.settings import DetectionParams
from simrules import SimLift, SimRun

pytestmark = pytest.mark.timeout(120)
DET = DetectionParams()


# ---------------------------------------------------------------- vibration_abnormal
@pytest.mark.parametrize("ordinary", [16, 5])
def test_vibration_doubling_seen_within_three_trips(ordinary: int) -> None:
    """z A95 ≈ 0.15 m/s² on ordinary trips, then the ride vibration doubles: the lift's
    own baseline (learned from ``ordinary`` trips, 5 is enough) flags it on the 3rd
    rough trip, well below the absolute 0.6 m/s² limit."""
    r = SimRun(SimLift(vib_ms2=0.05), seed=3)
    r.sim.wait(1.0)
    for k in range(ordinary + 3):
        if k == ordinary:
            r.sim.lift.vib_ms2 = 0.14
        r.sim.trip("4" if k % 2 == 0 else "1")
        r.sim.wait(1.0)
    r.sim.wait(3.0)
    r.play()
    trips = [o for o in r.out if o["type"] == "trip"]
    z = [tr["vib_pp_a95"]["z"] for tr in trips]
    before, after = sorted(z[:ordinary])[ordinary // 2], min(z[ordinary:])
    assert 0.12 < before < 0.18 and after > 1.8 * before and max(z) < DET.vib_limit_z
    (ev,) = r.events("vibration_abnormal")
    third = trips[ordinary + 2]
    assert third["t_end"] <= ev["t"] <= third["t"] + 0.01     # decided with its record


def test_ordinary_vibration_spread_is_not_abnormal() -> None:
    """Trips of every length with the ordinary vibration: the baseline's margin (the
    learned spread, vib_min_rise of the median, the sensor's resolution) holds."""
    r = SimRun(SimLift(vib_ms2=0.05), seed=5)
    r.sim.wait(1.0)
    for to in ["2", "5", "B1", "3", "4", "1", "5", "2", "B1", "4", "3", "1", "2", "5"]:
        r.sim.trip(to)
        r.sim.wait(1.0)
    r.sim.wait(3.0)
    r.play()
    assert not r.events("vibration_abnormal")
