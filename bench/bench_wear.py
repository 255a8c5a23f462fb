"""Slow wear on simulated lift-days: detection delays of the trend rule, false warnings.

RECORD-LEVEL, not the 400 Hz signal simulator: each lift-day's traffic is planned by
hil_tests/service.py's :class:`Planner` (Poisson calls following the hour, weekday and
weekend, boarding, reopens, held doors, the car's stop error), and its trips and door
cycles are turned into the pipeline's trip and door records directly: door open/close
times and reopens from the plan's controller door timeline, run time from the plan's
trip; what the plan does not model as a figure is drawn here (stated, the bench's own
assumption): trip A95 peak-to-peak vibration = 4 × the type's rms × (1 ± 8 % per trip,
± 3 % per day), a_max/d_max = the type's acceleration ± 1.5 %, the leveling estimate =
the stop error + 6 mm rms estimate noise (U = 12 mm), door times ± 3 % per day
(temperature). The records go through the pipeline's record path: the anomaly rules
(``door_slow``, ``vibration_abnormal``, ``leveling_drift``) and the wear trends, with
the day closes of :mod:`liftwatch.signal.trends`.

Each lift type runs ``--days`` days without wear and with each wear scenario (a linear
ramp from ``--wear-start`` over ``--ramp`` days, held after): ``door_close`` (+20 %),
``vibration`` (z +40 %), ``acceleration`` (+25 %). Prints per run the first trend
warning of the expected code and its delay after the ramp crossed the rule's +15 %,
and every other warning raised (false: 0 wanted), per lift type.

    .venv/bin/python bench/bench_wear.py [--days 35] [--types low,mid,high] [--jobs 2]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "hil_tests"))

import service  # noqa: E402
from liftsim import DOOR_CLOSED, DOOR_CLOSING, DOOR_LOCKED, DOOR_OPEN, DOOR_OPENING  # noqa: E402
from liftwatch.signal.pipeline import Pipeline  # noqa: E402
from liftwatch.signal.settings import DetectionParams, LiftParams  # noqa: E402
from liftwatch.signal.trends import DAY_S, REL_RISE  # noqa: E402

#: scenario -> (figure scaled, full rise at the ramp's end, expected event code)
SCENARIOS: dict[str, tuple[str, float, str | None]] = {
    "none": ("", 0.0, None),
    "door_close": ("close_s", 0.20, "door_close_trend"),
    "vibration": ("vib_z", 0.40, "vibration_trend"),
    "acceleration": ("a_max", 0.25, "acceleration_trend"),
}


def wear_factor(day_t: float, start: float, ramp: float, rise: float) -> float:
    return 1.0 + rise * min(max(0.0, (day_t - start) / ramp), 1.0)


def door_records(plan: Any, floor_at: Any) -> list[dict[str, Any]]:
    """Door cycle records (open_s, close_s, reopens) from the controller door timeline."""
    out, t_opening, t_closing = [], None, None
    open_s, reopens = None, 0
    for t, state in plan.ctl_door:
        if state == DOOR_OPENING:
            if t_opening is None:
                t_opening, open_s, reopens = t, None, 0
            elif t_closing is not None:
                reopens += 1
            t_closing = None
        elif state == DOOR_OPEN and t_opening is not None and open_s is None:
            open_s = t - t_opening
        elif state == DOOR_CLOSING:
            t_closing = t
        elif state in (DOOR_CLOSED, DOOR_LOCKED) and t_opening is not None and t_closing:
            out.append({"t": t, "type": "door", "floor": floor_at(t_opening),
                        "open_s": open_s, "close_s": t - t_closing, "reopens": reopens})
            t_opening = t_closing = None
    return out


def lift_day(lift: Any, day: int, seed: int, scenario: str, start: float, ramp: float
             ) -> list[tuple[float, str, dict[str, Any], float | None]]:
    """(t, kind, record, leveling estimate) of one lift-day, in time order."""
    plan = service.Planner(lift, day, seed).run()
    rng = random.Random(service._seed(lift.name, day, seed, "wear"))
    fig, rise, _code = SCENARIOS[scenario]
    day_door = 1.0 + rng.gauss(0, 0.03)
    day_vib = 1.0 + rng.gauss(0, 0.03)
    stops = [(tr.t_stop, lift.landings[tr.to]) for tr in plan.trips]

    def floor_at(t: float) -> str:
        last = lift.landings[lift.main]
        for ts, fl in stops:
            if ts > t:
                break
            last = fl
        return last

    out: list[tuple[float, str, dict[str, Any], float | None]] = []
    for rec in door_records(plan, floor_at):
        w = wear_factor(rec["t"] / DAY_S, start, ramp, rise) if fig == "close_s" else 1.0
        rec["open_s"] = round(rec["open_s"] * day_door, 3)
        rec["close_s"] = round(rec["close_s"] * day_door * w, 3)
        out.append((rec["t"], "door", rec, None))
    for tr in plan.trips:
        d = tr.t_stop / DAY_S
        wv = wear_factor(d, start, ramp, rise) if fig == "vib_z" else 1.0
        wa = wear_factor(d, start, ramp, rise) if fig == "a_max" else 1.0
        vz = 4.0 * lift.vib_z * day_vib * wv * (1 + rng.gauss(0, 0.08))
        vxy = 4.0 * lift.vib_xy * day_vib * (1 + rng.gauss(0, 0.08))
        a = lift.accel * wa * (1 + rng.gauss(0, 0.015))
        rec = {"t": tr.t_stop, "type": "trip", "from": lift.landings[tr.frm],
               "to": lift.landings[tr.to], "t_start": tr.t_start, "t_end": tr.t_stop,
               "duration_s": round(tr.t_stop - tr.t_start, 3), "complete": True,
               "dir": "up" if tr.to > tr.frm else "down", "level": True,
               "a_max": round(a, 3), "d_max": round(-lift.accel * (1 + rng.gauss(0, 0.015)), 3),
               "vib_pp_a95": {"z": round(vz, 4), "x": round(vxy, 4),
                              "y": round(vxy * 0.8, 4)}}
        out.append((tr.t_stop, "trip", rec, tr.stop_err_mm + rng.gauss(0, 6.0)))
    out.sort(key=lambda x: x[0])
    return out


def run_lift(type_name: str, scenario: str, days: int, seed: int, start: float, ramp: float
             ) -> dict[str, Any]:
    lift = service.LIFT_TYPES[type_name]
    p = Pipeline(LiftParams(landings=lift.landings, landing_heights_m=lift.heights,
                            rated_speed=lift.rated_speed), DetectionParams(),
                 accel_fs=None, lsb_per_g=None, controller_present=lift.controller)
    events: list[tuple[float, str, str]] = []
    trips = doors = 0
    p.trends.tick(0.0)
    for day in range(days):
        for t, kind, rec, level in lift_day(lift, day, seed, scenario, start, ramp):
            outs = p._trend_events(t, p.trends.tick(t))
            if kind == "door":
                doors += 1
                outs += p.rules.on_door(t, rec)
                p._feed_trends_door(rec)
            else:
                trips += 1
                p._stop_err = level
                outs += p.rules.on_trip(t, rec, level, 12.0)
                p._feed_trends_trip(rec)
            events += [(r["t"], r["code"], r["state"]) for r in outs if r.get("type") == "event"]
        t_end = (day + 1) * DAY_S
        events += [(r["t"], r["code"], r["state"]) for r in
                   p._trend_events(t_end, p.trends.tick(t_end))]
    _fig, rise, code = SCENARIOS[scenario]
    crossing = start + ramp * REL_RISE / rise if rise else None
    first = next((t for t, c, s in events if c == code and s == "raised"), None)
    # false: any warning on a lift without wear; on a worn lift, a trend of another figure
    # (the anomaly rules' raises there are reported apart: the drift may really cross
    # their absolute limits, e.g. door_time_limit_s)
    false = [(round(t / DAY_S, 2), c) for t, c, s in events
             if s == "raised" and c != code and (code is None or c.endswith("_trend"))]
    other: dict[str, int] = {}
    for _t, c, s in events:
        if s == "raised" and c != code and code is not None and not c.endswith("_trend"):
            other[c] = other.get(c, 0) + 1
    cond = p.trends.condition()["figures"]
    return {"type": type_name, "scenario": scenario, "trips": trips, "doors": doors,
            "crossing_day": crossing, "raised_day": None if first is None else first / DAY_S,
            "false": false, "other": other,
            "close_ratio": cond.get("door_close_s", {}).get("ratio")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=int, default=35)
    ap.add_argument("--types", default="low,mid,high")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--wear-start", type=float, default=10.0)
    ap.add_argument("--ramp", type=float, default=21.0)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    if a.days < a.wear_start + a.ramp * REL_RISE / 0.2 + 4:
        print(f"--days {a.days} ends before the door ramp crosses +15 % and the rule's "
              f"delay: use at least {a.wear_start + a.ramp * 0.75 + 4:.0f}", file=sys.stderr)
        return 2
    types = [x for x in a.types.split(",") if x]
    bad = [x for x in types if x not in service.LIFT_TYPES]
    if bad:
        print(f"unknown lift type(s) {bad}: {sorted(service.LIFT_TYPES)}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    jobs = [(ty, sc, a.days, a.seed, a.wear_start, a.ramp) for ty in types for sc in SCENARIOS]
    with ProcessPoolExecutor(max(1, a.jobs)) as ex:
        results = list(ex.map(run_lift, *zip(*jobs, strict=True)))
    print(f"record-level bench: {a.days} days per run, wear ramps from day {a.wear_start:g} "
          f"over {a.ramp:g} days, trend rule +{REL_RISE:.0%}")
    print(f"{'type':<5} {'scenario':<13} {'trips':>6} {'doors':>6} {'cross d':>8} "
          f"{'raised d':>8} {'delay d':>8}  false warnings; anomaly raises on the worn lift")
    n_false = 0
    delays = []
    for r in results:
        cross, raised = r["crossing_day"], r["raised_day"]
        delay = None if cross is None or raised is None else raised - cross
        if delay is not None:
            delays.append(delay)
        n_false += len(r["false"])
        print(f"{r['type']:<5} {r['scenario']:<13} {r['trips']:>6} {r['doors']:>6} "
              f"{'-' if cross is None else f'{cross:.2f}':>8} "
              f"{'-' if raised is None else f'{raised:.2f}':>8} "
              f"{'-' if delay is None else f'{delay:+.2f}':>8}  {r['false'] or 0}"
              + (f"; {r['other']}" if r["other"] else ""))
    missed = sum(1 for r in results if r["crossing_day"] is not None and r["raised_day"] is None)
    lift_days = len(results) * a.days
    print(f"runs {len(results)}, lift-days {lift_days}; missed drifts {missed}; "
          f"delay after crossing: min {min(delays, default=0):+.2f} max "
          f"{max(delays, default=0):+.2f} days; false warnings {n_false} "
          f"({n_false / lift_days:.3f} per lift-day); {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
