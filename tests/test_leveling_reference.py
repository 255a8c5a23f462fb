"""The stop-position estimate keeps an absolute reference: the zone-edge offsets are
learned from the first departures and then held, so when every stop drifts off the sill
(rope stretch, brake wear: the leveling wear of issue 20) the leveling error shows it.

Found by bench/bench_wear.py at the signal: the offsets were learned from every
departure, and a departure starts from the sill the stop was anchored to, not from where
the car stood, so the window absorbed the drift and the leveling trend never rose."""

from __future__ import annotations

from statistics import median

import pytest
import service
from liftwatch.agent.replay import build_pipeline, replay_records

pytestmark = pytest.mark.timeout(180)

START = 7 * 3600.0          # the morning peak: many departures to learn from


def test_every_stop_drifting_off_the_sill_shows_in_the_leveling_error() -> None:
    lift, sensor = service.LIFT_TYPES["mid"], service.Sensor()
    # 90 minutes in, every stop is 9 mm higher (within a minute)
    jump = service.Drift("leveling", 9.0, (START + 5400) / service.DAY_S, 60 / service.DAY_S)
    header = service.trace_header(lift, sensor, START)
    pipeline = build_pipeline(header, None)
    errs: list[tuple[float, float]] = []
    recs = service.stream("mid", 1, seed=5, sensor=sensor, wear=service.Wear((jump,)),
                          start_s=START, duration_s=3 * 3600)
    for out in replay_records(recs, pipeline):
        if out["type"] == "trip" and pipeline._stop_err is not None:
            errs.append((float(out["t"]), pipeline._stop_err))
    before = [e for t, e in errs if 3600 < t < 5400]
    after = [e for t, e in errs if t > 7200]
    assert len(before) >= 30 and len(after) >= 30
    # the estimate moves with the stops (it did by 2.6 mm while the offsets kept learning)
    assert median(after) - median(before) == pytest.approx(9.0, abs=4.0)
