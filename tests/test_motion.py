"""MotionTracker: speed, position and ISO 18738-1 figures from a tilted terminal's counts.

The accuracy cases are synthetic trips with known jerk-limited profiles (tests/synth_motion),
noise and vibration added, the terminal mounted 10–30° off level about random axes and
its orientation auto-estimated. The example traces (hil_tests/make_traces.py) check speed
against the controller's and the trip distances against what the simulated car travelled.
"""

from __future__ import annotations

import numpy as np
import pytest
from liftwatch.drivers.trace import TraceReader
from liftwatch.signal.motion import MotionTracker
from liftwatch.signal.settings import LiftParams
from make_traces import truth
from synth_motion import acc_blocks, profile_peaks, rotation_matrix, trip_samples

LIFT = LiftParams(landings=[str(i) for i in range(20)],
                  landing_heights_m=[3.1 * i for i in range(20)], rated_speed=2.5)
PRE_S = 4.0


def run_trip(distance: float, v: float, a: float, j: float, *, tilt_axis: list[float],
             tilt_deg: float, lsb_per_g: float, noise: float, seed: int, fs: int = 400,
             block: int = 32) -> tuple[dict, dict, MotionTracker]:
    """Feed one trip with rest around it as FIFO blocks; begin/end as a run signal would."""
    rot = rotation_matrix(tilt_axis, tilt_deg)
    _t, _p, _v, _a, counts = trip_samples(distance, v, a, j, fs=fs, pre_s=PRE_S, post_s=2.0,
                                          lsb_per_g=lsb_per_g, rotation=rot, vib_amp=0.2,
                                          noise_counts=noise, seed=seed)
    true = profile_peaks(distance, v, a, j)
    m = MotionTracker(LIFT, fs, lsb_per_g)
    begun = False
    for tb, blk in acc_blocks(0.0, counts, fs, block):
        if not begun and tb >= PRE_S - 0.5:
            m.begin_trip(PRE_S - 0.5)
            begun = True
        m.on_acc(tb, blk)
    fig = m.end_trip(PRE_S + true["duration_s"] + 1.0)
    assert fig is not None
    return fig, true, m


def _cases(n: int, seed: int) -> list[tuple]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        v = [1.0, 1.6, 2.0, 2.5][k % 4]
        a = float(rng.uniform(0.5, 1.0))
        j = float(rng.uniform(0.7, 1.5))
        short = k % 3 == 0                        # never reaches rated speed
        d = float(rng.uniform(0.5, 4.0) if short else rng.uniform(5.0, 55.0))
        d *= -1 if k % 2 else 1
        axis = rng.normal(size=3).tolist()
        out.append((d, v, a, j, axis, float(rng.uniform(10, 30)), k))
    return out


@pytest.mark.timeout(60)
@pytest.mark.parametrize("d, v, a, j, axis, tilt, seed", _cases(10, 7))
def test_trip_figures_within_done_when_bounds(d: float, v: float, a: float, j: float,
                                              axis: list[float], tilt: float, seed: int
                                              ) -> None:
    """1024 counts/g (LIS3DH-class), 2 counts noise, 0.2 m/s² vibration, tilted mounting."""
    fig, true, m = run_trip(d, v, a, j, tilt_axis=axis, tilt_deg=tilt, lsb_per_g=1024,
                            noise=2.0, seed=seed)
    assert abs(fig["distance_m"] - true["distance_m"]) <= max(0.02 * true["distance_m"], 0.05)
    assert fig["v_max"] == pytest.approx(true["v_max"], rel=0.03)
    assert fig["a_max"] == pytest.approx(true["a_max"], rel=0.05)
    assert fig["d_max"] == pytest.approx(true["d_max"], rel=0.05)
    assert fig["jerk_max"] == pytest.approx(true["jerk_max"], rel=0.15)
    assert fig["a95"] <= fig["a_max"] and fig["d95"] <= fig["d_max"]
    assert m.at_rest and not m.moving and m.speed == 0.0
    assert m.gravity_g == pytest.approx(1.0, abs=0.01)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("d, v, a, j, axis, tilt, seed", _cases(4, 11))
def test_coarse_sensor_keeps_distance_speed_and_jerk(d: float, v: float, a: float, j: float,
                                                    axis: list[float], tilt: float, seed: int
                                                    ) -> None:
    """256 counts/g (ADXL345 full resolution, 3.9 mg/LSB) with 1.5 counts of noise.

    Distance, speed and jerk keep their bounds. The peaks a_max/d_max of the 10 Hz
    signal carry the sensor's noise and 3.9 mg steps (ISO 18738-1 takes the maximum);
    they stay within 0.06 m/s² of the profile's.
    """
    fig, true, _m = run_trip(d, v, a, j, tilt_axis=axis, tilt_deg=tilt, lsb_per_g=256,
                             noise=1.5, seed=seed)
    assert abs(fig["distance_m"] - true["distance_m"]) <= max(0.02 * true["distance_m"], 0.05)
    assert fig["v_max"] == pytest.approx(true["v_max"], rel=0.03)
    assert fig["jerk_max"] == pytest.approx(true["jerk_max"], rel=0.15)
    assert fig["a_max"] == pytest.approx(true["a_max"], abs=0.06)
    assert fig["d_max"] == pytest.approx(true["d_max"], abs=0.06)


def test_live_speed_and_position_follow_the_trip() -> None:
    fs = 400
    rot = rotation_matrix([0.2, 1, 0], 18)
    t, pos, vel, _a, counts = trip_samples(-12.4, 1.6, 0.8, 1.0, fs=fs, pre_s=3, post_s=2,
                                           rotation=rot, seed=5)
    m = MotionTracker(LIFT, fs, 256)
    worst = 0.0
    moving_seen = False
    for tb, blk in acc_blocks(0.0, counts, fs):
        m.on_acc(tb, blk)
        if m.t_last is not None and m.t_last > 3.5:
            i = int(round(m.t_last * fs))
            worst = max(worst, abs(m.speed - vel[i]))
            moving_seen |= m.moving
            assert m.moving == (abs(m.speed) > 0.05)
    m.flush()
    assert moving_seen and worst < 0.05
    assert m.position_m == pytest.approx(pos[-1], abs=0.1)
    assert m.at_rest and m.speed == 0.0
    assert m.t_last == pytest.approx(t[-1], abs=1.5)


def test_bad_blocks_are_refused_without_touching_state() -> None:
    m = MotionTracker(LIFT, 400, 256)
    _t, _p, _v, _a, counts = trip_samples(3.1, pre_s=3, post_s=0)
    for tb, blk in acc_blocks(0.0, counts[:1600], 400):
        m.on_acc(tb, blk)
    before = (m.t_last, m.speed, m.position_m, m.blocks, m.silent_since)
    for bad in ([], [[1, 2]], [[1, 2, "x"]], [[1.5, 0, 256]], [[0, 0, 1 << 20]],
                [[0, 0, float("nan")]], "abc", None, [[0, 0, 256], [0, 0]]):
        with pytest.raises(ValueError):
            m.on_acc(4.0, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        m.on_acc(float("nan"), [[0, 0, 256]])
    assert (m.t_last, m.speed, m.position_m, m.blocks, m.silent_since) == before


def test_repeated_fifo_read_is_ignored_and_silence_is_visible() -> None:
    m = MotionTracker(LIFT, 400, 256)
    _t, _p, _v, _a, counts = trip_samples(3.1, pre_s=3, post_s=0)
    blocks = acc_blocks(0.0, counts[:2000], 400, 40)
    for tb, blk in blocks:
        m.on_acc(tb, blk)
    n = m.blocks
    m.on_acc(*blocks[-1])                       # the same FIFO contents again
    assert m.blocks == n
    assert m.silent_since == pytest.approx(2000 / 400)


def test_saturation_is_flagged() -> None:
    m = MotionTracker(LIFT, 400, 256, full_scale_g=2.0)
    m.on_acc(0.0, [[0, 0, 256]] * 40)
    assert not m.saturated
    m.on_acc(0.1, [[0, 0, 511]] * 40)
    assert m.saturated


def test_settings_are_checked() -> None:
    for fs in (0, -400, float("nan"), 300, 410.5):
        with pytest.raises(ValueError):
            MotionTracker(LIFT, fs, 256)
    with pytest.raises(ValueError):
        MotionTracker(LIFT, 400, 0)
    bad = LiftParams(landings=["a", "b"], landing_heights_m=[3.0, 0.0])
    with pytest.raises(ValueError):
        MotionTracker(bad, 400, 256)


def test_no_figures_without_a_trip_or_data() -> None:
    m = MotionTracker(LIFT, 400, 256)
    assert m.end_trip(5.0) is None               # no data at all
    m.begin_trip(0.0)
    assert m.end_trip(5.0) is None
    assert m.stop_position_error_mm() is None


def test_controller_floor_anchors_position() -> None:
    fs = 400
    m = MotionTracker(LIFT, fs, 256)
    _t, _p, _v, _a, counts = trip_samples(6.2, 1.6, 0.8, 1.0, fs=fs, pre_s=3, post_s=3)
    ctl = {"mode": 1, "run": 0, "dir": 0, "floor": "4", "door": 2, "zone": 1, "speed": 0.0}
    for tb, blk in acc_blocks(0.0, counts, fs):
        m.on_acc(tb, blk)
        if tb < 2.5 and m.at_rest:
            m.on_controller(tb, ctl)
        if tb > 4.0:
            m.on_controller(tb, None)               # failed polls change nothing
    m.flush()
    assert m.position_known
    assert m.position_m == pytest.approx(LIFT.landing_heights_m[4] + 6.2, abs=0.05)
    m.on_controller(20.0, dict(ctl, floor="6"))
    assert m.floor_index == 6


def _lift_of(path: str) -> tuple[TraceReader, LiftParams]:
    r = TraceReader(path)
    lift = r.header.lift
    return r, LiftParams(landings=lift["landings"], landing_heights_m=lift["landing_heights_m"],
                         rated_speed=lift["rated_speed"], door_zone_m=lift["door_zone_m"])


def replay(path: str, until: float, use_ctl: bool) -> dict:
    """Feed an example trace as the pipeline does; collect speed, stops and trip figures."""
    r, lift = _lift_of(path)
    m = MotionTracker(lift, r.header.accel["fs"], r.header.accel["lsb_per_g"])
    speeds: list[tuple[float, float]] = []
    orig = m._chunk

    def chunk(t: np.ndarray, *rest: object) -> None:
        orig(t, *rest)
        speeds.append((float(t[-1]), m.speed))

    m._chunk = chunk  # type: ignore[method-assign]
    di: dict[str, int] = {}
    ctl_v: list[tuple[float, float]] = []
    stops: list[tuple[int, str | None]] = []
    trips: list[tuple[str | None, str | None, dict | None]] = []
    ctl_floor: str | None = None
    open_floor: str | None = None
    prev_floor = None
    running = False
    for rec in r:
        if rec.t > until:
            break
        if rec.kind == "acc":
            m.on_acc(rec.t, rec.data)
            if m.floor_index is not None and m.floor_index != prev_floor:
                stops.append((m.floor_index, ctl_floor))
            prev_floor = m.floor_index
        elif rec.kind == "di":
            di.update(rec.data)
            if "zone_up" in rec.data or "zone_down" in rec.data:
                m.on_zone(rec.t, di.get("zone_up"), di.get("zone_down"))
            if "run" in rec.data:
                m.on_run(rec.t, bool(rec.data["run"]))
                if rec.data["run"]:
                    m.begin_trip(rec.t)
                    open_floor = ctl_floor
                    running = True
                elif running:  # not the first di line's run = 0
                    trips.append((open_floor, ctl_floor, m.end_trip(rec.t)))
                    running = False
        elif rec.kind == "ctl" and rec.data:
            ctl_floor = rec.data.get("floor")
            sign = {1: 1, 2: -1}.get(rec.data["dir"], 0)
            ctl_v.append((rec.t, sign * rec.data["speed"]))
            if use_ctl:
                m.on_controller(rec.t, rec.data)
    return {"lift": lift, "m": m, "speeds": np.array(speeds), "ctl": np.array(ctl_v),
            "stops": stops, "trips": trips}


@pytest.mark.timeout(120)
def test_normal_day_speed_floor_and_distances(example_traces) -> None:
    want = truth("normal_day")
    out = replay(str(example_traces / "normal_day.jsonl.gz"), want["duration_s"], use_ctl=True)
    ctl, sp = out["ctl"], out["speeds"]
    moving = np.abs(ctl[:, 1]) > 0.05
    err = np.interp(ctl[moving, 0], sp[:, 0], sp[:, 1]) - ctl[moving, 1]
    assert np.sqrt(np.mean(err ** 2)) < 0.03 and np.abs(err).max() < 0.1
    lift = out["lift"]
    # the tracker names each landing the car stops at, as the controller does
    assert [lift.landings[i] for i, _f in out["stops"]] == \
        [want["trips"][0]["from"]] + [w["to"] for w in want["trips"]]
    assert all(lift.landings[i] == f for i, f in out["stops"])
    assert [(s, e) for s, e, _fig in out["trips"]] == [(w["from"], w["to"])
                                                       for w in want["trips"]]
    for (_s, _e, fig), w in zip(out["trips"], want["trips"], strict=True):
        assert fig is not None
        assert abs(fig["distance_m"] - w["distance_m"]) <= max(0.02 * w["distance_m"], 0.05)
        assert fig["a_max"] == pytest.approx(want["accel_max"], rel=0.15)
        assert fig["jerk_max"] == pytest.approx(want["jerk_max"], rel=0.3)


@pytest.mark.timeout(120)
def test_sensor_only_trace_distances_are_the_cars(example_traces) -> None:
    """No controller: distances and peak speed from the accelerometer alone."""
    want = truth("sensor_only_entrapment_level")
    out = replay(str(example_traces / "sensor_only_entrapment_level.jsonl.gz"),
                 want["duration_s"], use_ctl=False)
    figs = [f for _s, _e, f in out["trips"]]
    assert len(figs) == len(want["trips"]) and None not in figs
    for f, w in zip(figs, want["trips"], strict=True):
        assert abs(f["distance_m"] - w["distance_m"]) <= max(0.02 * w["distance_m"], 0.05)
        # every trip of the script is long enough (>= 12 m) to cruise at rated speed
        assert f["v_max"] == pytest.approx(out["lift"].rated_speed, rel=0.05)
