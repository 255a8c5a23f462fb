"""Learned baselines and the anomaly warnings: vibration_abnormal, leveling_drift; storage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from liftwatch.buffer.baselines import BaselineStore
from liftwatch.signal.baselines import MIN_N, Baselines, RobustBaseline
from liftwatch.signal.pipeline import TRIP_SETTLE_S, Pipeline
from liftwatch.signal.settings import DetectionParams
from synthlift import SynthLift, cleared, events, raised, run_records

pytestmark = pytest.mark.timeout(90)


# ---------------------------------------------------------------- vibration_abnormal
def vib_lift(amps: list[float]) -> tuple[SynthLift, list[float]]:
    """Trips 1 <-> 4 with the given vibration amplitude each; returns trip end times."""
    lift = SynthLift(sources="both", accel=True, seed=3)
    lift.idle(3)
    ends = []
    for k, a in enumerate(amps):
        lift.trip("4" if k % 2 == 0 else "1", vib_amp=a)
        ends.append(lift.t)
        lift.idle(2)
    return lift, ends


def test_vibration_abnormal_three_of_five_over_limit_and_clear() -> None:
    lift, ends = vib_lift([0.0, 0.6, 0.0, 0.6, 0.6] + [0.0] * 5)
    out = lift.run()
    trips = [o for o in out if o["type"] == "trip"]
    assert trips[1]["vib_pp_a95"]["x"] > 0.4 > trips[0]["vib_pp_a95"]["x"]
    # decided when the 3rd rough trip's record is complete (the tracker books the stop)
    (r,) = raised(out, "vibration_abnormal")
    assert ends[4] <= r["t"] <= ends[4] + TRIP_SETTLE_S
    (c,) = cleared(out, "vibration_abnormal")
    assert ends[9] <= c["t"] <= ends[9] + TRIP_SETTLE_S    # after 5 normal trips


def test_vibration_near_miss_two_of_five() -> None:
    lift, _ = vib_lift([0.0, 0.6, 0.0, 0.0, 0.6, 0.0, 0.0])
    assert not events(lift.run(), "vibration_abnormal")


# ---------------------------------------------------------------- rules on trip figures
def pipeline(**kw) -> Pipeline:
    lift = SynthLift()
    return Pipeline(lift.lift_params(), DetectionParams(**kw), accel_fs=None, lsb_per_g=None,
                    controller_present=True)


def trip(z: float, x: float = 0.05, d: str = "up") -> dict:
    return {"type": "trip", "from": "1", "to": "3", "dir": d, "duration_s": 8.0,
            "vib_pp_a95": {"x": x, "y": x, "z": z}}


def test_vibration_against_learned_baseline_below_the_limit() -> None:
    p = pipeline()
    out = []
    for k in range(15):
        out += p.rules.on_trip(float(k), trip(0.10 + 0.01 * (k % 3)), None)
    assert not out
    for k in range(3):
        out += p.rules.on_trip(20.0 + k, trip(0.35), None)     # < 0.6 m/s², but 25 σ off
    (r,) = raised(out, "vibration_abnormal")
    assert r["t"] == 22.0
    # while raised nothing is learned: the fault does not become the new normal
    b = p.baselines.get("vib:up:z")
    assert b.centre_spread()[0] < 0.13


def test_leveling_drift_three_of_five_at_a_landing_and_clear() -> None:
    p = pipeline()
    out = []
    rec = {"type": "trip", "from": "1", "to": "3", "dir": "up"}
    for k, err in enumerate([2.0, 14.0, 3.0, -12.0]):
        out += p.rules.on_trip(float(k), rec, err)
        out += p.rules.on_trip(float(k) + 0.5, dict(rec, to="1"), 25.0)  # other landing
    (r,) = raised(out, "leveling_drift")       # windows are per landing: landing 1 drifts
    assert r["detail"]["landing"] == "1" and r["t"] == 2.5
    p = pipeline()
    out = []
    for k, err in enumerate([2.0, 14.0, 3.0, -12.0]):
        out += p.rules.on_trip(float(k), rec, err)
    assert not out                                   # near miss: 2 of 4
    out += p.rules.on_trip(4.0, rec, 11.0)
    (r,) = raised(out, "leveling_drift")
    assert r["t"] == 4.0 and r["detail"] == {"landing": "3", "error_mm": 11.0}
    for k in range(4):
        out += p.rules.on_trip(5.0 + k, rec, 1.0)
    assert not cleared(out, "leveling_drift")
    out += p.rules.on_trip(9.0, rec, 1.0)
    assert cleared(out, "leveling_drift")[0]["t"] == 9.0


def test_no_leveling_rule_without_position_estimate() -> None:
    p = pipeline()
    out = []
    for k in range(10):
        out += p.rules.on_trip(float(k), {"type": "trip", "to": "3"}, None)
    assert not out


# ---------------------------------------------------------------- baselines
def test_robust_baseline_median_mad_and_cap() -> None:
    b = RobustBaseline()
    for k in range(MIN_N - 1):
        b.learn(3.0 + 0.1 * (k % 3))
    assert not b.ready() and not b.is_anomalous(100.0, 4.0)
    b.learn(3.1)
    med, sd = b.centre_spread()
    assert med == pytest.approx(3.1) and 0.1 < sd < 0.2
    assert b.is_anomalous(3.1 + 4.1 * sd, 4.0) and not b.is_anomalous(3.1 + 3.9 * sd, 4.0)
    # a fault fed for a while only creeps the median up (winsorised values)
    for _ in range(10):
        b.learn(10.0)
    assert b.centre_spread()[0] < 3.8


def test_baselines_state_is_json_and_restores_into_a_pipeline() -> None:
    p = pipeline()
    for k in range(12):
        p.rules.on_trip(float(k), trip(0.1 + 0.01 * (k % 2)), None)
    state = json.loads(json.dumps(p.baselines_state()))
    q = Pipeline(SynthLift().lift_params(), DetectionParams(), accel_fs=None, lsb_per_g=None,
                 controller_present=True, baselines=state)
    assert q.baselines.get("vib:up:z").centre_spread() == p.baselines.get(
        "vib:up:z").centre_spread()
    # garbage in a stored state is ignored key by key, never a crash
    r = Baselines({"baselines": {"ok": [1.0, 2.0], "bad": "x", "worse": [1, "a"],
                                 "nan": [float("nan")]}})
    assert list(r.by_key) == ["ok"]
    for junk in (["a", "list"], {"baselines": [1, 2]}, "text", None):
        assert Baselines(junk).by_key == {}  # type: ignore[arg-type]


def test_baseline_store_round_trip_and_restart(tmp_path: Path) -> None:
    s = BaselineStore(tmp_path, "L1")
    assert s.load() is None
    st = {"version": 1, "baselines": {"door:3:open_s": [3.0, 3.1]}}
    s.save(st)
    s.save(dict(st, baselines={"door:3:open_s": [3.2]}))
    s.close()
    s2 = BaselineStore(tmp_path, "L1")
    assert s2.load() == {"version": 1, "baselines": {"door:3:open_s": [3.2]}}
    assert BaselineStore(tmp_path, "other").load() is None
    assert not list(tmp_path.glob(".*.tmp"))          # written by atomic replace
    with pytest.raises(TypeError):
        s2.save(["not", "a", "dict"])  # type: ignore[arg-type]


def test_baseline_store_corrupt_file_is_quarantined(tmp_path: Path) -> None:
    (tmp_path / "baselines.db").write_text('{"baselines": {"1": {"lift": "L1", "sta')
    s = BaselineStore(tmp_path, "L1")
    assert s.load() is None and "JSON" in s.problem
    assert list((tmp_path / "quarantine").iterdir())
    s.save({"version": 1, "baselines": {}})
    assert BaselineStore(tmp_path, "L1").load() == {"version": 1, "baselines": {}}


def test_pipeline_baselines_survive_restart_through_the_store(tmp_path: Path) -> None:
    lift = SynthLift(sources="both")
    lift.idle(1)
    for _ in range(12):
        lift.door_cycle(open_s=2.0, dwell_s=1.0, close_s=2.0).idle(1)
    p = pipeline()
    run_records(lift.records(), lift.header(), lift.t, pipeline=p)
    store = BaselineStore(tmp_path, "L1")
    store.save(p.baselines_state())
    store.close()
    # after the restart the learned door time is known at once: 3.4 s is slow for it
    lift2 = SynthLift(sources="both")
    lift2.idle(1)
    for _ in range(3):
        lift2.door_cycle(open_s=3.4, dwell_s=1.0, close_s=2.0).idle(1)
    q = Pipeline(lift2.lift_params(), DetectionParams(), accel_fs=None, lsb_per_g=None,
                 controller_present=True, baselines=BaselineStore(tmp_path, "L1").load())
    out = run_records(lift2.records(), lift2.header(), lift2.t, pipeline=q)
    assert raised(out, "door_slow")
    fresh = run_records(lift2.records(), lift2.header(), lift2.t)
    assert not raised(fresh, "door_slow")
