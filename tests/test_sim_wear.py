"""Slow wear in the lift simulator (hil_tests/service.py, issue 20): drifts ramp over
weeks and a maintenance visit restores them, a worn door or drive shows in the very
signals the terminal reads, and consecutive days stream as one trace. The trend rule's
delays on 30-day lifts are bench/bench_wear.py's."""

from __future__ import annotations

import dataclasses
from statistics import median

import numpy as np
import pytest
import service
from liftwatch.agent.replay import build_pipeline, replay_records
from service import DAY_S, Drift, Sensor, Wear, plan_day, records, stream

pytestmark = pytest.mark.timeout(120)

DOOR = Drift("door_close", 0.30, 8.0, 21.0)


def test_a_drift_ramps_holds_and_a_maintenance_visit_restores_it() -> None:
    wear = Wear((DOOR, Drift("leveling", 9.0, 8.0, 21.0)), visits=(27.4,))
    assert wear.level("door_close", 7.9 * DAY_S) == 0.0
    assert wear.level("door_close", 18.5 * DAY_S) == pytest.approx(0.15)
    assert wear.level("door_close", 27.3 * DAY_S) == pytest.approx(0.30 * 19.3 / 21.0)
    # the visit puts the door back as new, and it starts wearing again
    assert wear.level("door_close", 27.4 * DAY_S) == 0.0
    assert wear.level("door_close", 29.5 * DAY_S) == pytest.approx(0.30 * 2.1 / 21.0)
    assert wear.level("leveling", 18.5 * DAY_S) == pytest.approx(4.5)
    assert wear.level("vibration", 20 * DAY_S) == 0.0          # not worn
    assert wear.crossing("door_close", 0.15) == pytest.approx(18.5 * DAY_S)
    assert wear.crossing("door_open", 0.15) is None


def test_weather_wanders_by_day_never_jumps_and_slows_doors_in_the_cold() -> None:
    w = service.Weather("mid", 1)
    t = np.arange(0.0, 10 * DAY_S, 60.0)
    temp = w.temperature(t)
    assert np.abs(np.diff(temp)).max() < 0.1                    # °C per minute: no jump
    daily = temp.reshape(10, -1).mean(axis=1)
    assert 1.0 < daily.max() - daily.min() < 6.5                # days differ, within ±3 °C
    cold, warm = float(temp.min()), float(temp.max())
    t_cold, t_warm = float(t[temp.argmin()]), float(t[temp.argmax()])
    assert w.door_factor(t_cold) > 1.0 > w.door_factor(t_warm)
    assert w.door_factor(t_cold) - w.door_factor(t_warm) == pytest.approx(
        -service.Weather.DOOR_TC * (warm - cold))


def test_a_worn_lift_has_slower_doors_and_stops_off_the_sill_on_the_same_traffic() -> None:
    wear = Wear((Drift("door_close", 0.30, 0.0, 1.0), Drift("leveling", 9.0, 0.0, 1.0)))
    new = plan_day("mid", 3, seed=5, start_s=8 * 3600, duration_s=1800)
    worn = plan_day("mid", 3, seed=5, start_s=8 * 3600, duration_s=1800, wear=wear)

    def closes(plan: service.DayPlan) -> list[float]:
        out, t_closing = [], None
        for t, state in plan.ctl_door:
            if state == service.DOOR_CLOSING:
                t_closing = t
            elif state == service.DOOR_CLOSED and t_closing is not None:
                out.append(t - t_closing)
                t_closing = None
        return out

    ratios = [b / a for a, b in zip(closes(new), closes(worn), strict=False)][:40]
    assert len(ratios) >= 20 and median(ratios) == pytest.approx(1.30, abs=0.02)
    errs_new = [tr.stop_err_mm for tr in new.trips][:20]
    errs_worn = [tr.stop_err_mm for tr in worn.trips][:20]
    assert median(errs_worn) - median(errs_new) == pytest.approx(9.0, abs=1.5)


def _trip_vibration(wear: Wear | None) -> list[float]:
    lift = service.LIFT_TYPES["mid"]
    sensor = Sensor()
    plan = plan_day(lift, 2, seed=4, start_s=8 * 3600, duration_s=600, wear=wear)
    header = service.trace_header(lift, sensor, plan.t0)
    out = replay_records(records(plan, sensor), build_pipeline(header, None))
    # a trip too short for a constant-speed phase has no A95 (None): not compared
    return [o["vib_pp_a95"]["z"] for o in out
            if o["type"] == "trip" and isinstance(o.get("vib_pp_a95"), dict)]


def test_worn_guides_raise_the_trip_vibration_the_pipeline_measures() -> None:
    """+60 % of ride vibration in the simulator is what the pipeline's A95 sees, the
    sensor's noise and the rest of the signal included (the trend rule's input)."""
    new = _trip_vibration(None)
    worn = _trip_vibration(Wear((Drift("vibration", 0.60, 0.0, 1.0),)))
    pairs = [(n, w) for n, w in zip(new, worn, strict=True) if n and w]
    assert len(pairs) >= 4
    assert median(w / n for n, w in pairs) == pytest.approx(1.6, abs=0.15)


def test_days_stream_as_one_trace_that_starts_each_day_where_the_car_was_parked() -> None:
    """Midnight in the middle of a stream: the seam, at a low sample rate (cheap)."""
    sensor = dataclasses.replace(Sensor(), fs=100, block=50)
    plans: list[service.DayPlan] = []
    recs = list(stream("mid", 2, seed=2, sensor=sensor, start_s=DAY_S - 1500,
                       duration_s=3000, on_day=plans.append))
    assert [(p.day, p.t0, p.t1) for p in plans] == [(0, DAY_S - 1500, DAY_S),
                                                    (1, DAY_S, DAY_S + 1500)]
    assert plans[1].seg_p[0] == plans[0].end_pos             # no jump at midnight
    times = [r.t for r in recs]
    assert times == sorted(times) and times[0] == 0.0 and times[-1] > 2950
    assert [r.kind for r in recs].count("pwr") == 1           # one trace, one start
    acc_t = np.array([r.t for r in recs if r.kind == "acc"])
    assert np.allclose(np.diff(acc_t), sensor.block / sensor.fs, atol=1e-3)   # no gap
    # at rest at midnight, the z axis reads the same either side of it
    z = [np.mean([row[2] for row in r.data]) for r in recs if r.kind == "acc"
         and 1500 - 60 <= r.t < 1500 + 60]
    assert abs(np.mean(z[:len(z) // 2]) - np.mean(z[len(z) // 2:])) < 1.0
