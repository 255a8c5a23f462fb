"""bench/bench_wear.py judges a run as its docstring says: every warning on a lift
without wear is false; on a worn lift, a trend of a family with no drift, or raised
before its drift began, is false; a drift crossed before the run's end (and before the
visit) without its trend is missed; anomaly warnings while worn are listed apart."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_wear.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_wear", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_wear"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(autouse=True)
def a95_of_noise_and_vibration(bench, monkeypatch) -> None:
    """The trip A95 holds the chip's noise and the vibration: +12 % for +15 % of
    vibration, +24 % for +30 % (the renders that measure it are the simulator's, tested
    in test_sim_wear.py; here the verdicts are)."""
    monkeypatch.setattr(bench, "a95_ratio", lambda kind, rise: 1.0 + 0.8 * rise)


def ev(day: float, code: str, state: str = "raised", sev: str = "warning") -> dict:
    return {"t": day * 86400.0, "day": day, "code": code, "state": state, "sev": sev,
            "figure": None, "floor": None}


def test_every_warning_on_a_lift_without_wear_is_false(bench) -> None:
    events = [ev(12.0, "vibration_trend"), ev(3.0, "mode_change", sev="info"),
              ev(5.0, "door_slow")]
    v = bench.judge("mid", "none", 30, events, 27.4)
    assert [e["code"] for e in v["false"]] == ["vibration_trend", "door_slow"]


def test_a_worn_lift_is_judged_drift_by_drift(bench) -> None:
    vib = next(d for d, _c, _r in bench.WORN if d.figure == "vibration")
    assert bench.crossing_day(vib, 0.15, "mid") == pytest.approx(
        vib.start_day + vib.ramp_days * 0.1875 / vib.rise)
    cross = {d.figure: bench.crossing_day(d, r, "mid") for d, _c, r in bench.WORN}
    events = [ev(cross["vibration"] + 2.0, "vibration_trend"),
              ev(27.4, "vibration_trend", "cleared"),
              ev(cross["door_close"] + 1.5, "door_close_trend"),
              ev(3.0, "door_open_trend"),                # before its drift began: false
              ev(20.0, "acceleration_trend"),            # a family with no drift: false
              ev(22.0, "door_slow")]                     # the worn door: listed apart
    levels = {15: {"vib_z": {"state": "normal", "day": 0.11, "limit": 0.115}},
              16: {"vib_z": {"state": "normal", "day": 0.12, "limit": 0.115}},
              17: {"vib_z": {"state": "trend", "day": 0.13, "limit": 0.115}}}
    v = bench.judge("mid", "worn", 30, events, 27.4, levels=levels)
    drifts = {d["drift"]: d for d in v["drifts"]}
    # the day the pipeline's own daily level first reached the rule's limit
    assert drifts["vibration"]["measured"] == 16.5
    assert drifts["door_close"]["measured"] is None
    assert drifts["vibration"]["raised"] - drifts["vibration"]["cross"] == pytest.approx(2.0)
    assert drifts["vibration"]["cleared"] == 27.4
    assert drifts["leveling"]["raised"] is None and drifts["leveling"]["due"]
    assert sorted(e["code"] for e in v["false"]) == ["acceleration_trend", "door_open_trend"]
    assert [e["code"] for e in v["anomalies"]] == ["door_slow"]
    # a drift is due DELAY_BOUND_DAYS after it crossed: not yet at the end of a short run
    short = bench.judge("mid", "worn", 10, [], 27.4)
    assert not any(d["due"] for d in short["drifts"])
    # raised, but later than the documented bound: missed too
    late = bench.judge("mid", "worn", 30, [ev(cross["door_close"] + 4.5,
                                              "door_close_trend")], 27.4)
    assert next(d for d in late["drifts"] if d["drift"] == "door_close")["late"]


def test_a_contact_only_terminal_is_not_asked_to_time_its_door(bench) -> None:
    v = bench.judge("low", "worn", 30, [], 27.4)
    na = {d["drift"] for d in v["drifts"] if "na" in d}
    assert na == {"door_close", "door_open"}


def test_the_report_fails_on_a_false_warning_or_a_missed_drift(bench, capsys) -> None:
    clean = {("low", "none"): {"events": [], "days_done": 30, "trips": 1, "doors": 1}}
    assert bench.report(clean, 27.4) == 0
    false = {("low", "none"): {"events": [ev(9.0, "reopen_trend")], "days_done": 30,
                               "trips": 1, "doors": 1}}
    assert bench.report(false, 27.4) == 1
    missed = {("low", "worn"): {"events": [], "days_done": 30, "trips": 1, "doors": 1}}
    assert bench.report(missed, 27.4) == 1
    assert "NOT RAISED" in capsys.readouterr().out
