"""The Pipeline contract of docs/interfaces.md: feed/advance/finish, views, bad input."""

from __future__ import annotations

import json
import time

import pytest
from liftwatch.signal.pipeline import Pipeline
from liftwatch.signal.settings import DetectionParams
from synthlift import SynthLift, raised, run_records

pytestmark = pytest.mark.timeout(60)


def make(lift: SynthLift, **kw) -> Pipeline:
    return Pipeline(lift.lift_params(), DetectionParams(**kw), accel_fs=None, lsb_per_g=None,
                    controller_present=lift.controller, event_id_prefix="T-")


def test_event_ids_use_prefix_and_t_is_decision_time() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1).set(alarm_button=1).idle(2).set(alarm_button=0).idle(1)
    p = make(lift)
    out = run_records(lift.records(), lift.header(), lift.t, pipeline=p)
    (r,) = raised(out, "alarm_button")
    assert r["id"] == "T-1" and r["sev"] == "alarm"
    assert 1.5 <= r["t"] <= 1.6                  # 0.5 s after the press, on the 0.1 s grid
    c = [o for o in out if o.get("state") == "cleared"]
    assert c[0]["id"] == "T-1" and c[0]["duration_s"] == pytest.approx(c[0]["t"] - r["t"])


def test_status_and_health_views() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1).set(presence=1).idle(1)
    p = make(lift)
    run_records(lift.records(), lift.header(), lift.t, pipeline=p)
    st = p.status()
    assert st == {"mode": 1, "run": 0, "dir": 0, "floor": "1", "door": 2, "zone": 1,
                  "person": 1, "speed": 0.0, "safety": 0, "lock": 0, "overload": 0,
                  "src": "fused"}
    h = p.health()
    assert h["controller"]["ok"] is True
    assert h["inputs"]["presence"]["level"] == 1 and h["inputs"]["presence"]["ok"]
    json.dumps(h)
    json.dumps(p.baselines_state())


def test_status_source_labels() -> None:
    lift = SynthLift(sources="sensors")
    lift.idle(1)
    p = make(lift)
    run_records(lift.records(), lift.header(), lift.t, pipeline=p)
    assert p.status()["src"] == "sen"
    lift = SynthLift(sources="controller", inputs=())
    lift.idle(1)
    p = make(lift)
    run_records(lift.records(), lift.header(), lift.t, pipeline=p)
    assert p.status()["src"] == "ctl" and p.status()["door"] == 5


@pytest.mark.parametrize("kind,data", [
    ("di", {"door_closed": 2}), ("di", "open"), ("di", {"door_closed": 0.5}),
    ("ctl", [1, 2]), ("pwr", {"src": 3}), ("pwr", None), ("acc", "x"), ("bogus", {}),
])
def test_malformed_records_are_refused_not_crashing(kind: str, data: object) -> None:
    lift = SynthLift(sources="both")
    lift.idle(1)
    p = make(lift)
    run_records(lift.records(), lift.header(), None, pipeline=p)
    before = p.status()
    assert p.feed(1.05, kind, data) == []
    assert p.rejected == 1 and p.last_rejection
    assert p.status() == before


def test_garbled_controller_field_drops_only_that_field() -> None:
    lift = SynthLift(sources="controller", inputs=())
    lift.idle(1)
    p = make(lift)
    run_records(lift.records(), lift.header(), None, pipeline=p)
    p.feed(1.1, "ctl", {"mode": 1, "run": 0, "door": "??", "zone": 1, "floor": "1"})
    assert p.rejected == 1 and "door" in p.last_rejection
    assert p.status()["zone"] == 1


def test_time_going_backwards_is_refused() -> None:
    lift = SynthLift(sources="both")
    lift.idle(2)
    p = make(lift)
    run_records(lift.records(), lift.header(), None, pipeline=p)
    assert p.feed(0.5, "di", {"alarm_button": 1}) == []
    assert p.feed(float("nan"), "di", {"alarm_button": 1}) == []
    assert p.rejected == 2
    assert p.status()["run"] == 0


def _scenario() -> SynthLift:
    lift = SynthLift(sources="both")
    lift.idle(1).door_cycle().set(presence=1).idle(1).trip("3").idle(50)
    lift.open_door().set(presence=0).idle(2).close_door().idle(70)
    return lift


def test_wall_clock_step_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Live-style feeding with time.time stepping ±1 h gives the same output."""
    lift = _scenario()
    recs = lift.records()
    reference = run_records(recs, lift.header(), lift.t)
    assert raised(reference, "entrapment_level")
    real = time.time
    offset = {"s": 0.0}
    monkeypatch.setattr(time, "time", lambda: real() + offset["s"])
    p = make(lift)
    out = []
    tick = 0.05                         # a live loop's ticks, not aligned with the records
    for i, r in enumerate(recs):
        if i == len(recs) // 3:
            offset["s"] = 3600.0        # NTP step forward
        if i == 2 * len(recs) // 3:
            offset["s"] = -3600.0       # RTC reset backward
        while tick < r.t:
            out += p.advance(tick)
            tick += 0.1
        out += p.feed(r.t, r.kind, r.data)
    assert p.rejected == 0
    out += p.finish(lift.t)
    strip = [(o["type"], o.get("code"), o.get("state"), o["t"]) for o in out]
    ref = [(o["type"], o.get("code"), o.get("state"), o["t"]) for o in reference]
    # same events, same decision times (the grid differs: compare within 0.1 s)
    assert [s[:3] for s in strip] == [s[:3] for s in ref]
    assert all(abs(a[3] - b[3]) <= 0.1 for a, b in zip(strip, ref, strict=True))


def test_stats_period_counts_and_reset() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1).trip("3").idle(1).door_cycle(reopens=1).idle(1).trip("1").idle(1)
    lift.set(alarm_button=1).idle(1).set(alarm_button=0).idle(1)
    p = make(lift)
    run_records(lift.records(), lift.header(), lift.t, pipeline=p)
    body = p.stats.close_period("hour", 0, 3_600_000)
    assert body["period"] == "hour" and body["from"] == 0 and body["to"] == 3_600_000
    assert body["runs"] == 2 and body["door_cycles"] == 1 and body["reopens"] == 1
    assert body["starts_by_floor"] == {"1": 1, "3": 1}
    assert body["distance_m"] == pytest.approx(12.8, abs=0.1)
    assert body["events"] == {"alarm_button": 1}
    assert body["run_s"] > 10
    again = p.stats.close_period("hour", 3_600_000, 7_200_000)
    assert again["runs"] == 0 and again["events"] == {}
    assert p.stats.close_period("day", 0, 86_400_000)["runs"] == 2
    with pytest.raises(ValueError, match="period"):
        p.stats.close_period("week", 0, 1)


def test_capped_raises_are_counted_in_stats() -> None:
    lift = SynthLift(sources="both")
    for _ in range(4):
        lift.idle(1).set(safety_ok=0).idle(1).set(safety_ok=1).idle(3)
        lift.set(alarm_button=1).idle(1).set(alarm_button=0)
    lift.idle(1)
    p = make(lift, max_per_day=2)
    out = run_records(lift.records(), lift.header(), lift.t, pipeline=p)
    assert len(raised(out, "safety_circuit_open")) == 2
    # alarms are never capped (EN 81-28; tests/test_alarm_lane.py)
    assert len(raised(out, "alarm_button")) == 4
    assert p.stats.close_period("day", 0, 1)["events"] == {"safety_circuit_open": 4,
                                                           "alarm_button": 4}


def test_without_landings_configured_floors_are_not_judged() -> None:
    from liftwatch.signal.settings import LiftParams
    lift = SynthLift(sources="both")
    lift.idle(1).stall_between_floors().idle(2)
    p = Pipeline(LiftParams(), DetectionParams(), accel_fs=None, lsb_per_g=None,
                 controller_present=True)
    out = run_records(lift.records(), lift.header(), lift.t, pipeline=p)
    assert not [o for o in out if o["type"] == "event"]
    assert [o["type"] for o in out] == ["trip"]




def _record_strategy():
    from hypothesis import strategies as hs
    names = hs.sampled_from(["door_closed", "door_lock", "zone_up", "zone_down", "presence",
                             "alarm_button", "safety_ok", "mains_ok", "inspection", "run",
                             "limit_top", "limit_bottom", "bogus"])
    lvl = hs.one_of(hs.sampled_from([0, 1]), hs.integers(-2, 3), hs.text(max_size=2),
                    hs.none())
    di = hs.dictionaries(names, lvl, min_size=0, max_size=4)
    num = hs.one_of(hs.integers(-1, 8), hs.floats(allow_nan=True, allow_infinity=True),
                    hs.none(), hs.text(max_size=2))
    ctl = hs.one_of(hs.none(), hs.fixed_dictionaries({}, optional={
        k: num for k in ("mode", "run", "dir", "door", "zone", "speed", "safety", "lock",
                         "overload", "fault")} | {"floor": hs.sampled_from(
                             ["B1", "1", "3", "99", None, 3])}), hs.integers())
    pwr = hs.one_of(hs.fixed_dictionaries({"src": hs.sampled_from([0, 1, 2]),
                                           "batt": num}), hs.text(max_size=3))
    kind = hs.sampled_from(["di", "ctl", "pwr", "acc", "zzz"])
    return hs.lists(hs.tuples(hs.floats(0, 2.0), kind, di, ctl, pwr), max_size=60)


def test_random_and_garbage_input_never_crashes_and_keeps_event_invariants() -> None:
    from hypothesis import given, settings

    @settings(max_examples=150, deadline=None)
    @given(_record_strategy())
    def check(steps: list) -> None:
        p = Pipeline(SynthLift().lift_params(), DetectionParams(), accel_fs=None,
                     lsb_per_g=None, controller_present=True)
        t = 0.0
        out: list = []
        for dt, kind, di, ctl, pwr in steps:
            t += dt
            data = {"di": di, "ctl": ctl, "pwr": pwr, "acc": [[0, 0, 256]], "zzz": 1}[kind]
            out += p.advance(t)
            out += p.feed(t, kind, data)
        out += p.finish(t + 100.0)
        open_ids: dict[str, str] = {}
        for o in out:
            assert o["type"] in ("event", "trip", "door")
            if o["type"] != "event":
                continue
            if o["state"] == "raised" and o["code"] not in ("mode_change", "self_test"):
                assert o["code"] not in open_ids          # one open event per code
                open_ids[o["code"]] = o["id"]
            elif o["state"] == "cleared":
                assert open_ids.pop(o["code"]) == o["id"]  # same id as its raise
        json.dumps(out)                                    # records are plain JSON
        p.status()
        p.health()

    check()


def test_a_failed_mode_block_keeps_the_last_mode_for_suppression() -> None:
    """The controller's mode block stops answering during inspection (the driver leaves
    a failed block's fields out of the poll): fault rules stay suppressed, as over a
    lost link, instead of a technician's inspection run raising faults."""
    lift = SynthLift(sources="controller")
    p = make(lift)
    ctl = {"mode": 1, "run": 0, "dir": 0, "floor": "1", "door": 5, "zone": 1, "speed": 0.0,
           "safety": 0, "lock": 0, "overload": 0, "fault": 0}
    p.feed(0.0, "ctl", dict(ctl))
    p.feed(0.2, "ctl", {**ctl, "mode": 2})          # inspection
    out = []
    t = 0.4
    while t < 10.0:                                  # mode block failing, safety open
        out += p.feed(t, "ctl", {k: v for k, v in {**ctl, "safety": 1}.items() if k != "mode"})
        t += 0.2
    out += p.advance(t)
    assert not raised(out, "safety_circuit_open")
    assert p.status()["mode"] == 2
