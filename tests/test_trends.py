"""Wear trends (signal/trends.py): slow drift is raised within a documented delay after
it crosses +15 %, stationary noisy lifts raise nothing, abnormal values stay out of the
reference, the state survives a restart and a maintenance visit starts a new reference."""

from __future__ import annotations

import random
from typing import Any

import pytest
from liftwatch.signal import trends as tr_mod
from liftwatch.signal.pipeline import Pipeline
from liftwatch.signal.settings import DetectionParams, LiftParams
from liftwatch.signal.trends import DAY_S, Trends

#: documented latency (docs/events.md, "Wear trends"): 2–3 days after the crossing
MAX_DELAY_DAYS = 3.5


def _door(close_s: float, floor: str = "1", reopens: int = 0, open_s: float = 2.5
          ) -> dict[str, Any]:
    return {"type": "door", "floor": floor, "open_s": open_s, "close_s": close_s,
            "reopens": reopens}


def _trip(vib_z: float, a_max: float = 0.8, level: float | None = 2.0) -> dict[str, Any]:
    return {"type": "trip", "from": "1", "to": "5", "duration_s": 12.0 + random.gauss(0, 0.2),
            "dir": "up", "complete": True, "a_max": a_max, "d_max": -a_max,
            "vib_pp_a95": {"z": vib_z, "x": vib_z / 2, "y": vib_z / 3}}


def _run_days(days: int, day_fn: Any, seed: int
              ) -> list[tuple[float, str, str, dict[str, Any]]]:
    """Feed ``day_fn(rng, day, trends)`` for each day, close the days;
    (day, action, code, detail)."""
    rng = random.Random(seed)
    trends, out = Trends(), []
    trends.tick(0.0)
    for d in range(days):
        day_fn(rng, d, trends)
        for action, code, detail in trends.tick((d + 1) * DAY_S):
            out.append((d + 1.0, action, code, detail))
    return out


def _ordinary_day(rng: random.Random, d: int, trends: Trends, close_of: Any = None) -> None:
    weekend = d % 7 in (5, 6)
    offset = rng.gauss(0, 0.03)          # day-to-day: temperature, traffic
    for _ in range(60 if weekend else 180):
        mean = close_of(d) if close_of else 3.0
        trends.on_door(_door(mean * (1 + offset) + rng.gauss(0, 0.2),
                             floor=rng.choice("12345"), reopens=int(rng.random() < 0.05),
                             open_s=2.5 + rng.gauss(0, 0.15)))
    for _ in range(80 if weekend else 250):
        trends.on_trip(_trip(max(0.05, 0.25 + rng.gauss(0, 0.05)),
                             a_max=0.8 + rng.gauss(0, 0.03)), rng.gauss(0, 4))


def test_door_close_drift_over_three_weeks_is_raised_within_the_documented_delay() -> None:
    # 3.0 -> 3.6 s over 21 days after 14 ordinary days; +15 % crossed at day 14 + 15.75
    def close_of(d: int) -> float:
        return 3.0 * (1 + 0.2 * min(max(0.0, d + 0.5 - 14) / 21, 1.0))
    crossing = 14 + 0.75 * 21
    for seed in range(3):
        ev = _run_days(40, lambda r, d, t: _ordinary_day(r, d, t, close_of), seed)
        raised = [(d, c) for d, a, c, _det in ev if a == "raise"]
        assert raised and raised[0][1] == "door_close_trend", ev
        assert all(c == "door_close_trend" for _d, c in raised), raised
        delay = raised[0][0] - crossing
        # early by a day or two is the reference's own noise (a week of days scattered
        # by 3 %): the door has drifted by 12-14 % then, which is no false warning
        assert -3.0 <= delay <= MAX_DELAY_DAYS, f"seed {seed}: raised {delay:+.1f} days"


def test_stationary_noisy_lifts_raise_nothing_over_many_days() -> None:
    for seed in range(2):        # 2 x 75 lift-days (the bench runs more)
        ev = _run_days(75, _ordinary_day, 100 + seed)
        assert ev == [], f"seed {seed}: {ev}"


def _leveling_day(bias_up: Any, bias_down: Any) -> Any:
    """A day of stops whose estimated error scatters about 9 mm (the pipeline's, at 256
    counts/g) about a bias of the day by arrival direction."""
    def fill(r: random.Random, d: int, t: Trends) -> None:
        for i in range(400 if d % 7 < 5 else 150):
            up = i % 2 == 0
            bias = (bias_up if up else bias_down)(d + 0.5)
            rec = dict(_trip(0.25), dir="up" if up else "down")
            t.on_trip(rec, bias + r.gauss(0, 9.0))
    return fill


def _ramp(rise: float, start: float = 8.0, days: float = 21.0) -> Any:
    return lambda x: rise * min(max(0.0, x - start) / days, 1.0)


@pytest.mark.parametrize(("up", "down", "figures"), [
    (9.0, 9.0, {"level_mm", "level_mm@up", "level_mm@down"}),   # rope stretch: all high
    (-9.0, -9.0, {"level_mm", "level_mm@up", "level_mm@down"}),  # every stop low
    (9.0, -9.0, {"level_mm@up", "level_mm@down"}),   # brake wear: overshoot both ways
])
def test_a_leveling_drift_hidden_in_the_stops_scatter_is_raised(
        up: float, down: float, figures: set[str]) -> None:
    """A bias of the stops as large as their scatter hardly moves the median of |error|
    (bench_wear found leveling never raised); the signed medians, judged both ways and
    by arrival direction, see it within the documented delay of its reaching 3 mm."""
    crossing = 8.0 + 21.0 * 3.0 / 9.0
    for seed in range(3):
        raised = [(d, c, det) for d, a, c, det in
                  _run_days(35, _leveling_day(_ramp(up), _ramp(down)), 40 + seed)
                  if a == "raise"]
        assert [c for _d, c, _det in raised] == ["leveling_trend"], raised
        day, _code, detail = raised[0]
        assert -1.0 <= day - crossing <= MAX_DELAY_DAYS, (seed, day)
        assert detail["figure"] in figures and set(detail["in_trend"]) <= figures


def test_the_leveling_condition_gives_both_limits() -> None:
    trends = Trends()
    trends.tick(0.0)
    rng = random.Random(5)
    fill = _leveling_day(_ramp(9.0), _ramp(-9.0))
    for d in range(30):
        fill(rng, d, trends)
        trends.tick((d + 1) * DAY_S)
    figs = trends.condition()["figures"]
    c = figs["level_mm@down"]
    assert c["state"] == "trend" and c["ratio"] is None
    assert c["level"] < c["limit_low"] < c["ref"] < c["limit"]
    assert figs["level_mm"]["state"] == "normal" and "limit_low" in figs["level_mm"]
    assert "limit_low" not in figs["vib_z"]


def test_a_leveling_reference_saved_as_sizes_is_learned_again() -> None:
    """A terminal upgraded from the |error| figure must not judge signed errors against
    a reference of sizes (every upgraded lift would be in trend): that track starts over,
    the others are kept."""
    old = {"version": 1, "tracks": {
        "level_mm": {"ref_days": [8.0] * 7, "gate": [8.0] * 10, "ewma": 8.0},
        "door_close_s": {"ref_days": [3.0] * 7, "gate": [3.0] * 10, "ewma": 3.0}}}
    t = Trends(old)
    assert list(t.tracks) == ["door_close_s"] and t.tracks["door_close_s"].ready()
    assert set(Trends(t.state()).tracks) == {"door_close_s"}
    assert Trends({**old, "version": 2}).tracks["level_mm"].ready()


def test_stationary_stops_raise_no_leveling_trend() -> None:
    for seed in range(3):
        assert _run_days(60, _leveling_day(lambda _x: 0.0, lambda _x: 0.0), 70 + seed) == []


def test_a_single_bad_day_is_not_a_trend() -> None:
    def day(r: random.Random, d: int, t: Trends) -> None:
        _ordinary_day(r, d, t, (lambda _d: 3.9) if d == 20 else None)
    assert _run_days(30, day, 7) == []


def test_abnormal_values_never_enter_the_reference() -> None:
    trends = Trends()
    trends.tick(0.0)
    for d in range(7):
        for i in range(100):
            trends.on_door(_door(3.0 + 0.01 * (i % 5)))
            trends.on_door(_door(9.0))                          # outliers: gated
            trends.on_door(_door(4.5), learn=False)             # door_slow open
        trends.tick((d + 1) * DAY_S)
    ref, _sd = trends.tracks["door_close_s"].reference()
    assert 3.0 <= ref <= 3.05


def test_the_state_survives_a_restart_and_maintenance_starts_a_new_reference() -> None:
    rng = random.Random(3)
    trends = Trends()
    trends.tick(0.0)
    for d in range(12):
        _ordinary_day(rng, d, trends, lambda d: 3.0 if d < 8 else 3.9)
        trends.tick((d + 1) * DAY_S)
    assert "door_close_trend" in trends.open_codes()
    lift = LiftParams(landings=["1", "2", "3", "4", "5"])
    p = Pipeline(lift, DetectionParams(), accel_fs=None, lsb_per_g=None,
                 controller_present=True, baselines={"trends": trends.state()})
    again = p.baselines_state()["trends"]
    assert again["tracks"]["door_close_s"] == trends.state()["tracks"]["door_close_s"]
    assert p.trends.open_codes() == {"door_close_trend"}
    p.book.raise_(1.0, "door_close_trend")
    recs = p.maintenance_done(2.0)
    assert [(r["code"], r["state"]) for r in recs] == [("door_close_trend", "cleared")]
    assert p.trends.tracks == {} and p.trends.restarts == 1
    cond = p.trends.condition()
    assert cond == {"figures": {}, "restarts": 1}


def test_damaged_state_is_learned_again_not_a_crash() -> None:
    t = Trends({"tracks": {"door_close_s": {"ref_days": ["x", None, 3.0], "ewma": "nan"},
                           "bogus": {}, 5: 1}})
    assert list(t.tracks) == ["door_close_s"] and not t.tracks["door_close_s"].ready()
    assert Trends("garbage").tracks == {}     # type: ignore[arg-type]


def test_condition_gives_each_figure_against_its_reference() -> None:
    trends = Trends()
    trends.tick(0.0)
    rng = random.Random(1)
    for d in range(tr_mod.REF_DAYS + 1):
        _ordinary_day(rng, d, trends)
        trends.tick((d + 1) * DAY_S)
    figs = trends.condition()["figures"]
    c = figs["door_close_s"]
    assert c["state"] == "normal" and c["ref_days"] == tr_mod.REF_DAYS and c["n"] > 0
    assert 0.9 < c["ratio"] < 1.1 and c["limit"] > c["ref"]
    assert {"vib_z", "vib_xy", "a_max", "d_max", "level_mm", "reopen_rate",
            "run_s@1>5"} <= set(figs)


def test_reopens_count_in_the_reference_and_a_rising_reopen_rate_is_raised() -> None:
    """Reopens are mostly 0: the outlier gate must not keep every 1 out of the reference
    (a reference of 0 made an ordinary 15 % reopen rate a trend; found by bench_wear)."""
    def day(rate_of: Any) -> Any:
        def fill(r: random.Random, d: int, t: Trends) -> None:
            for _ in range(150):
                t.on_door(_door(3.0 + r.gauss(0, 0.1), reopens=int(r.random() < rate_of(d))))
        return fill
    assert _run_days(40, day(lambda d: 0.15), 11) == []
    ev = _run_days(40, day(lambda d: 0.15 if d < 20 else 0.4), 12)
    assert [(a, c) for _d, a, c, _det in ev] == [("raise", "reopen_trend")]
    assert 21 <= ev[0][0] <= 24


def test_the_pipeline_feeds_its_door_and_trip_records_and_closes_days() -> None:
    """The wiring: a controller lift's door cycles and trips reach the trends through the
    pipeline's own record path, and advance() closes the day."""
    from synthlift import SynthLift, run_records

    lift = SynthLift(sources="both")
    lift.idle(2)
    for _ in range(3):
        lift.door_cycle(open_s=3.0, dwell_s=2.0, close_s=3.2).idle(1)
    lift.trip("2").idle(2).door_cycle(open_s=3.0, dwell_s=2.0, close_s=3.2).idle(2)
    h = lift.header()
    p = Pipeline(LiftParams(landings=h.lift["landings"],
                            landing_heights_m=h.lift["landing_heights_m"]),
                 DetectionParams(), accel_fs=None, lsb_per_g=None,
                 controller_present=True)
    out = run_records(lift.records(), h, lift.t, pipeline=p)
    n_doors = len([o for o in out if o["type"] == "door"])
    assert n_doors == 4
    tracks = p.trends.tracks
    assert len(tracks["door_close_s"].today) == 4 and len(tracks["door_close_s@2"].today) == 1
    assert any(k.startswith("run_s@") for k in tracks)
    assert p.trends.day_start is not None
    p.advance(p.trends.day_start + DAY_S + 1.0)
    assert tracks["door_close_s"].today == []     # the day closed (too few values to count)
