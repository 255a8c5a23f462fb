"""Scenario verbs in the streamed simulator (hil_tests/service.py, issue 20 item 4): an
entrapment and a maintenance visit played inside ordinary traffic, and what the agent's
pipeline makes of them — the incidents a 30-day run can now contain."""

from __future__ import annotations

import pytest
import service
from liftwatch.agent.replay import build_pipeline, replay_records
from service import DAY_S, Incident, Sensor, stream

pytestmark = pytest.mark.timeout(120)

START = 10 * 3600.0            # a weekday morning after the peak


def _play(kind: str, incidents: list[Incident], duration_s: float = 2000.0
          ) -> tuple[service.DayPlan, list[dict]]:
    lift = service.LIFT_TYPES[kind]
    sensor = Sensor()
    header = service.trace_header(lift, sensor, START)
    plans: list[service.DayPlan] = []
    recs = stream(kind, 1, seed=3, sensor=sensor, start_s=START, duration_s=duration_s,
                  incidents=incidents, on_day=plans.append)
    out = list(replay_records(recs, build_pipeline(header, None)))
    return plans[0], out


def _onset(plan: service.DayPlan, what: str) -> float:
    return next(t for t, w in plan.onsets if w == what) - START


def _events(out: list[dict], state: str = "raised") -> list[tuple[float, str]]:
    return [(float(o["t"]), o["code"]) for o in out
            if o["type"] == "event" and o["state"] == state]


@pytest.mark.parametrize("kind", ["mid", "low"])      # with a controller, and sensors only
def test_an_entrapment_in_ordinary_traffic_is_raised_on_time_and_cleared_by_the_rescue(
        kind: str) -> None:
    plan, out = _play(kind, [Incident((START + 180) / DAY_S, "entrapment", 420.0)],
                      duration_s=1000.0)
    stalled, pressed = _onset(plan, "stalled"), _onset(plan, "alarm_pressed")
    rescued = _onset(plan, "rescued")
    raised = _events(out)
    first = {code: t for t, code in reversed(raised)}
    assert 0 <= first["safety_circuit_open"] - stalled < 1.0
    assert 0 <= first["alarm_button"] - pressed < 1.0
    assert stalled < first["entrapment_nonlevel"] < stalled + 60.0
    cleared = dict((code, t) for t, code in _events(out, "cleared"))
    assert rescued < cleared["entrapment_nonlevel"] < rescued + 60.0
    assert rescued <= cleared["safety_circuit_open"] < rescued + 5.0
    # nothing else: the traffic around it is ordinary
    assert {c for _t, c in raised} == {"safety_circuit_open", "alarm_button",
                                       "entrapment_nonlevel"}
    stalled_trips = [tr for tr in plan.trips if tr.stalled]
    assert len(stalled_trips) == 1 and stalled_trips[0].passengers == 2
    assert len([o for o in out if o["type"] == "trip"]) == len(plan.trips)


def test_a_maintenance_visit_is_inspection_mode_and_raises_no_warning() -> None:
    plan, out = _play("mid", [Incident((START + 300) / DAY_S, "visit", 600.0)],
                      duration_s=1200.0)
    start, end = _onset(plan, "visit_start"), _onset(plan, "visit_end")
    assert end - start == pytest.approx(600.0, abs=1.0)
    raised = _events(out)
    assert [c for _t, c in raised] == ["mode_change", "mode_change"]
    assert raised[0][0] == pytest.approx(start, abs=0.5)
    assert raised[1][0] == pytest.approx(end, abs=0.5)
    inspection = [tr for tr in plan.trips if tr.mode == 2]
    assert inspection and all(start < tr.t_run - START < end for tr in inspection)
    # calls during the visit waited or took the stairs: no normal trip inside it
    assert not [tr for tr in plan.trips if tr.mode == 1
                and start < tr.t_run - START < end]


def test_incidents_leave_the_traffic_before_them_untouched() -> None:
    """A scripted incident is an insertion: the day before it is the same day."""
    before, _ = _play("mid", [], duration_s=400.0)
    with_inc, _ = _play("mid", [Incident((START + 300) / DAY_S, "visit", 60.0)],
                        duration_s=400.0)
    early = [tr.t_run for tr in before.trips if tr.t_run < START + 290]
    assert early and early == [tr.t_run for tr in with_inc.trips][:len(early)]
