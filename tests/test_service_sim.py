"""Ordinary service (hil_tests/service.py): the agent raises nothing, and the generator's
ground truth is what it claims (issue 14). The week-long count is bench/bench_false_events.py.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import service
from liftwatch.agent.replay import build_pipeline, replay_records
from service import LIFT_TYPES, Inputs, Kinematics, Sensor, plan_day, records

pytestmark = pytest.mark.timeout(120)

#: a stretch of the weekday morning peak: the busiest traffic of the day
PEAK_START_S = 7.9 * 3600
def _replay(kind: str, lsb: int, start_s: float, duration_s: float
            ) -> tuple[service.DayPlan, list[dict]]:
    lift = LIFT_TYPES[kind]
    sensor = Sensor.for_scale(lsb)
    plan = plan_day(lift, 1, seed=7, start_s=start_s, duration_s=duration_s)
    header = service.trace_header(lift, sensor, plan.t0)
    return plan, list(replay_records(records(plan, sensor), build_pipeline(header, None)))


@pytest.mark.parametrize(("kind", "lsb"), [("low", 256), ("mid", 1024), ("high", 256)])
def test_morning_peak_raises_no_warning_fault_or_alarm(kind: str, lsb: int) -> None:
    plan, out = _replay(kind, lsb, PEAK_START_S, 900.0)
    bad = [e for e in out if e["type"] == "event" and e["state"] == "raised"
           and e["sev"] in ("warning", "fault", "alarm")]
    assert bad == []
    # the agent books every trip and door cycle the generator made, no more
    assert len(plan.trips) >= 12
    assert len([o for o in out if o["type"] == "trip"]) == len(plan.trips)
    assert len([o for o in out if o["type"] == "door"]) == plan.door_cycles


def test_a_day_of_traffic_has_peaks_quiet_nights_and_level_stops() -> None:
    plan = plan_day("mid", 2, seed=3)                  # a Wednesday
    hours = np.bincount([int(tr.t_run % service.DAY_S // 3600) for tr in plan.trips],
                        minlength=24)
    assert 250 <= len(plan.trips) <= 2000
    assert hours[8] > 5 * max(hours[1:5].max(), 1)    # morning peak against the night
    assert hours[18] > 5 * max(hours[1:5].max(), 1)   # evening peak
    assert all(abs(tr.stop_err_mm) <= 8.0 for tr in plan.trips)
    assert plan.reopens > 0 and plan.door_cycles >= len(plan.trips) // 2
    weekend = plan_day("mid", 6, seed=3)
    assert len(weekend.trips) < len(plan.trips)


def test_rendered_signals_match_the_ground_truth() -> None:
    """An ideal accelerometer's signal, integrated twice, ends each trip where the plan
    says (within 1 mm), every stop is within ±8 mm of its sill, the leveling sensors
    and the controller say level at the destination, and one run edge per trip."""
    lift = LIFT_TYPES["mid"]
    plan = plan_day(lift, 0, seed=5, start_s=8 * 3600, duration_s=600)
    ideal = Sensor(lsb_per_g=16384, noise_mg=(0, 0, 0), tilt_deg=(0, 0),
                   bias_mg=(0, 0, 0), bias_tc=(0, 0, 0), gain=(1, 1, 1))
    t_acc: list[np.ndarray] = []
    z: list[list[int]] = []
    di: dict[str, int] = {}
    at_stop: list[tuple[dict[str, int], dict]] = []
    stops = [tr.t_run_off - plan.t0 + 0.3 for tr in plan.trips]
    runs = 0
    ctl: dict = {}
    for rec in records(plan, ideal):
        while len(at_stop) < len(stops) and rec.t >= stops[len(at_stop)]:
            at_stop.append((dict(di), dict(ctl)))
        if rec.kind == "acc":
            t_acc.append(rec.t + np.arange(len(rec.data)) / ideal.fs)
            z.append([row[2] for row in rec.data])
        elif rec.kind == "di":
            runs += rec.data.get("run", 0) == 1 and di.get("run") == 0
            di.update(rec.data)
        elif rec.kind == "ctl":
            ctl = rec.data
    assert runs == len(plan.trips) >= 10
    t = np.concatenate(t_acc) + plan.t0
    acc = (np.concatenate([np.asarray(b, dtype=float) for b in z]) / 16384 - 1.0) * service.G
    dt = 1.0 / ideal.fs
    kin = Kinematics(plan)
    prev = lift.heights[lift.main]
    for k, tr in enumerate(plan.trips):
        sel = (t >= tr.t_run) & (t < tr.t_run_off)
        v = np.cumsum(acc[sel]) * dt
        moved = float(np.sum(v) * dt)
        assert abs(prev + moved - (lift.heights[tr.to] + tr.stop_err_mm / 1000)) < 0.002, k
        assert abs(tr.stop_err_mm) <= 8.0
        p_end = float(kin.at(np.array([tr.t_stop + 0.1]))[2][0])
        assert abs(p_end - lift.heights[tr.to]) <= 0.008
        prev = p_end
        inputs, poll = at_stop[k]
        assert inputs["zone_up"] == inputs["zone_down"] == 1
        assert poll["floor"] == lift.landings[tr.to] and poll["zone"] == 1


def test_contact_bounce_stays_within_the_debounce_times() -> None:
    """Bursts shorter than the driver's debounce are gone after the driver's Debouncer;
    door rebounds that pass it are shorter than the agent's contact_debounce_s."""
    edges = [(10.0 * k, "door_closed", (k + 1) % 2) for k in range(1, 401)]
    initial = dict(service.INITIAL_DI)
    out = service.bounce_and_debounce(edges, initial, Inputs(), random.Random(4))
    levels = [lvl for _, _, lvl in out]
    assert all(a != b for a, b in zip(levels, levels[1:], strict=False))
    times = np.array([t for t, _, _ in out])
    for t_e, _, level in edges:                  # every edge seen, at its time
        i = int(np.searchsorted(times, t_e))
        assert times[i] < t_e + 0.05 and out[i][2] == level
    rebounds = [(t1 - t0) for (t0, _, l0), (t1, _, _) in zip(out, out[1:], strict=False)
                if l0 == 0 and t1 - t0 < 1.0]
    assert rebounds and max(rebounds) < 0.1      # below contact_debounce_s
    assert len(out) == len(edges) + 2 * len(rebounds)
