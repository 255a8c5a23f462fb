"""The one lift model (hil_tests/liftmodel.py) and its three front-ends.

SynthLift (detector tests), LiftSim (the HIL rig) and the service's lift-days are
front-ends of one model: for the same lift and the same trip they must show the same
leveling-sensor edges in the same order, the same time apart.
"""

from __future__ import annotations

import liftsim
import numpy as np
import pytest
import service
from liftmodel import G, Kinematics, LiftType, Motion, Sensor, Vanes, s_curve
from synthlift import SENSOR_GAP_M, SynthLift


def _sampled(distance: float, v: float, a: float, j: float, fs: float = 2000.0
             ) -> tuple[list[tuple[float, float]], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    segs = s_curve(abs(distance), v, a, j)
    motion = Motion()
    motion.move(0.0, segs, 1.0 if distance >= 0 else -1.0)
    t = np.arange(int((motion.seg_t[-1] + 0.5) * fs)) / fs
    acc, vel, pos = Kinematics(motion).at(t)
    return segs, t, acc, vel, pos


@pytest.mark.parametrize("distance", [20.0, 3.3, -3.1, 1.0, 0.3, -0.05])
@pytest.mark.parametrize(("v", "a", "j"), [(1.6, 0.8, 1.0), (2.5, 0.9, 1.2), (0.3, 0.3, 0.5)])
def test_one_s_curve_moves_rest_to_rest_over_the_distance_within_its_limits(
        distance: float, v: float, a: float, j: float) -> None:
    segs, _t, acc, vel, pos = _sampled(distance, v, a, j)
    assert all(d > 0 and abs(jj) <= j for d, jj in segs)
    assert pos[-1] == pytest.approx(distance, abs=1e-9)
    assert vel[-1] == 0.0 and acc[-1] == 0.0 and pos[0] == 0.0
    assert np.all(np.sign(vel[np.abs(vel) > 1e-12]) == np.sign(distance))   # never backs up
    assert np.max(np.abs(vel)) <= v * (1 + 1e-9)
    assert np.max(np.abs(acc)) <= a * (1 + 1e-9)
    # the jerk between samples (a 0.5 ms grid) stays within j_max
    assert np.max(np.abs(np.diff(acc))) * 2000.0 <= j * (1 + 1e-6)
    ramp = v * (v / a + a / j)          # distance to reach rated speed and stop again
    if abs(distance) >= ramp:
        assert np.max(np.abs(vel)) == pytest.approx(v, rel=1e-9)
    else:                               # a short trip never reaches rated speed
        assert np.max(np.abs(vel)) < v


def test_a_very_short_trip_never_reaches_full_acceleration() -> None:
    _segs, _t, acc, _vel, pos = _sampled(0.05, 1.6, 0.8, 1.0)
    assert pos[-1] == pytest.approx(0.05, abs=1e-9)
    assert np.max(np.abs(acc)) < 0.8 * 0.9


def _edges(vanes: Vanes, path: np.ndarray) -> list[tuple[str, int]]:
    up, down, _level, _idx = vanes.at(path)
    out = []
    for name, arr in (("zone_up", up), ("zone_down", down)):
        out += [(int(i), name, int(arr[i])) for i in np.flatnonzero(np.diff(arr.astype(int))) + 1]
    return [(name, lvl) for _i, name, lvl in sorted(out)]


def test_vanes_give_the_documented_order_up_and_down() -> None:
    """interfaces.md: moving up into a landing zone_up comes on first, moving down
    zone_down does; a car slightly low sees only zone_up (it must move up)."""
    vanes = Vanes((0.0, 3.3, 6.4), half_m=0.2, reach_m=0.06)
    up_into = np.linspace(2.5, 3.3, 8001)
    assert _edges(vanes, up_into) == [("zone_up", 1), ("zone_down", 1)]
    down_into = np.linspace(4.1, 3.3, 8001)
    assert _edges(vanes, down_into) == [("zone_down", 1), ("zone_up", 1)]
    leave_up = np.linspace(3.3, 4.1, 8001)
    assert _edges(vanes, leave_up) == [("zone_up", 0), ("zone_down", 0)]
    up, down, level, idx = vanes.at(3.3 - 0.22)
    assert (bool(up), bool(down), bool(level), int(idx)) == (True, False, False, -1)
    up, down, level, idx = vanes.at(np.array([6.4 + 0.19]))
    assert (bool(up[0]), bool(down[0]), bool(level[0]), int(idx[0])) == (True, True, True, 2)
    # the detector tests' geometry: ±door_zone_m/2 and an 0.08 m gap, same code
    assert Vanes((), 0.2, 0.08).intervals() == {"zone_up": (-0.28, 0.2),
                                                "zone_down": (-0.2, 0.28)}


def test_the_mounted_accelerometer_reads_one_g_on_z_at_rest() -> None:
    for lsb in (256, 1024):
        ideal = Sensor(lsb_per_g=lsb, tilt_deg=(0.0, 0.0), bias_mg=(0.0, 0.0, 0.0),
                       bias_tc=(0.0, 0.0, 0.0), gain=(1.0, 1.0, 1.0), noise_mg=(0.0, 0.0, 0.0))
        assert ideal.counts(np.array([[0.0, 0.0, G]])).tolist() == [[0, 0, lsb]]
        assert ideal.counts(np.array([[0.0, 0.0, G]]), np.ones((1, 3)),
                            temp_c=np.array([40.0])).tolist() == [[0, 0, lsb]]  # no noise, no tc
    tilted = Sensor.ideal(256, tilt_deg=(0.0, 10.0))      # about y: gravity shows on x
    x, _y, z = tilted.counts(np.array([[0.0, 0.0, G]]))[0]
    assert (x, z) == (round(256 * np.sin(np.radians(10))), round(256 * np.cos(np.radians(10))))


# ---------------------------------------------------------------------- one model, three front-ends

LANDINGS = ["1", "2", "3", "4"]
HEIGHTS = [0.0, 3.3, 6.4, 9.5]
HALF, REACH = 0.2, SENSOR_GAP_M            # the same vanes for all three


def _zone_edges(records: list[tuple[float, str, object]]) -> list[tuple[float, str, int]]:
    out = []
    first = True
    for t, kind, data in records:
        if kind != "di":
            continue
        if first:                   # the initial levels
            first = False
            continue
        for name in ("zone_up", "zone_down"):
            if name in data:        # type: ignore[operator]
                out.append((t, name, data[name]))   # type: ignore[index]
    return out


def _synthlift(frm: str, to: str) -> list[tuple[float, str, object]]:
    s = SynthLift(LANDINGS, HEIGHTS, start=frm, door_zone_m=2 * HALF, rated_speed=1.6)
    assert s.vanes == Vanes(tuple(HEIGHTS), HALF, REACH)
    s.idle(2.0).trip(to).idle(2.0)
    return [(r.t, r.kind, r.data) for r in s.records()]


def _liftsim(frm: str, to: str) -> list[tuple[float, str, object]]:
    lift = liftsim.SimLift(landings=LANDINGS, heights=HEIGHTS, door_zone_m=HALF,
                           sensor_offset_m=REACH, rated_speed=1.6, accel=0.8, jerk=1.0)
    sim = liftsim.LiftSim(lift, seed=3, start_floor=LANDINGS.index(frm))
    sim.wait(2.0)
    sim.trip(to)
    sim.wait(2.0)
    return list(sim.records())


def _service(frm: str, to: str) -> list[tuple[float, str, object]]:
    lt = LiftType("same", LANDINGS, HEIGHTS, rated_speed=1.6, accel=0.8, jerk=1.0,
                  door_open_s=3.0, door_close_s=3.0, vib_z=0.03, vib_xy=0.02, rope_hz=3.0,
                  peak_calls_h=0.0, main=LANDINGS.index(frm), door_zone_m=HALF,
                  sensor_offset_m=REACH, stop_sigma_mm=0.0)
    planner = service.Planner(lt, day=0, seed=1, start_s=0.0, duration_s=40.0)
    planner.t += 2.0
    planner.trip(LANDINGS.index(to))
    plan = planner.plan
    return [(r.t, r.kind, r.data) for r in service.records(plan, service.Sensor())]


@pytest.mark.parametrize(("frm", "to"), [("1", "3"), ("4", "2"), ("2", "4")])
def test_the_three_front_ends_show_the_same_zone_edges_for_the_same_trip(frm: str, to: str
                                                                        ) -> None:
    runs = {"synthlift": _synthlift(frm, to), "liftsim": _liftsim(frm, to),
            "service": _service(frm, to)}
    edges = {k: _zone_edges(v) for k, v in runs.items()}
    orders = {k: [(name, lvl) for _t, name, lvl in e] for k, e in edges.items()}
    # leaving, passing the landing between, arriving: 3 landings x 2 sensors x on/off - 2
    assert len(orders["synthlift"]) == 8
    assert orders["synthlift"] == orders["liftsim"] == orders["service"], orders
    # and the same times apart: the trip's duration from the first edge to the last,
    # and each edge after the first (grids: 100 Hz SynthLift, 400 Hz steps, 200 Hz inputs)
    rel = {k: np.array([t for t, _n, _l in e]) - e[0][0] for k, e in edges.items()}
    assert np.max(np.abs(rel["synthlift"] - rel["liftsim"])) < 0.02, rel
    assert np.max(np.abs(rel["synthlift"] - rel["service"])) < 0.02, rel
    # ... which is the model's: the S-curve's time from one threshold to the other
    kin = Motion()
    d = HEIGHTS[LANDINGS.index(to)] - HEIGHTS[LANDINGS.index(frm)]
    kin.move(0.0, s_curve(abs(d), 1.6, 0.8, 1.0), float(np.sign(d)))
    t = np.arange(int(kin.seg_t[-1] * 4000) + 1) / 4000
    pos = Kinematics(kin).at(t)[2] + HEIGHTS[LANDINGS.index(frm)]
    vanes = Vanes(tuple(HEIGHTS), HALF, REACH)
    up, down, _lv, _i = vanes.at(pos)
    changes = sorted(np.concatenate([np.flatnonzero(np.diff(up.astype(int))) + 1,
                                     np.flatnonzero(np.diff(down.astype(int))) + 1]))
    model = t[changes] - t[changes[0]]
    assert np.max(np.abs(rel["liftsim"] - model)) < 0.01
    # the controller's records have the same fields in the same order
    fields = {k: next(list(data) for _t, kind, data in v if kind == "ctl" and data)
              for k, v in runs.items()}
    assert fields["synthlift"] == fields["liftsim"] == fields["service"]
