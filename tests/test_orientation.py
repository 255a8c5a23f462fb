"""Mounting orientation: gravity at rest defines the car frame; re-estimated when moved."""

from __future__ import annotations

import math

import numpy as np
import pytest
from liftwatch.signal.motion import MotionTracker
from liftwatch.signal.orientation import (
    OrientationError,
    OrientationEstimator,
    angle_deg,
    check_rotation,
    rotation_from_gravity,
)
from liftwatch.signal.settings import LiftParams
from synth_motion import acc_blocks, accel_counts, rotation_matrix, trip_samples

LIFT = LiftParams(landings=["0", "1", "2", "3"], landing_heights_m=[0.0, 3.0, 6.0, 9.0],
                  rated_speed=1.6)


def car_z_in_sensor(sensor_from_car: list[list[float]]) -> np.ndarray:
    return np.asarray(sensor_from_car)[:, 2]


@pytest.mark.parametrize("g", [(0, 0, 256), (40, -80, 230), (250, 10, 5), (0, -256, 0),
                               (0, 0, -256)])
def test_rotation_from_gravity_is_proper_and_maps_gravity_to_z(g: tuple) -> None:
    r = np.asarray(rotation_from_gravity(g))
    assert np.allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    car = r @ np.asarray(g, dtype=float)
    assert car[:2] == pytest.approx([0, 0], abs=1e-9)
    assert car[2] == pytest.approx(np.linalg.norm(g))


def test_car_x_keeps_the_sensor_x_axis_projected() -> None:
    r = np.asarray(rotation_from_gravity([30, 20, 250]))
    # car x in sensor coordinates lies in the plane of sensor x and gravity, towards +x
    x = r[0]
    assert np.dot(np.cross([1, 0, 0], [30, 20, 250]), x) == pytest.approx(0, abs=1e-9)
    assert x[0] > 0.9


@pytest.mark.parametrize("bad", [
    [[1, 0], [0, 1]], [[1, 0, 0], [0, 1, 0], [0, 0, float("nan")]],
    [[1, 0, 0], [0, 1, 0], [0, 0, -1]],          # a reflection, not a rotation
    [[2, 0, 0], [0, 1, 0], [0, 0, 1]], "identity", [[1, 0, 0], [0, 1, 0], [0, 0, "a"]],
])
def test_configured_matrix_is_validated(bad: object) -> None:
    with pytest.raises(OrientationError):
        check_rotation(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        MotionTracker(LIFT, 400, 256, rotation=bad)  # type: ignore[arg-type]


def test_estimator_needs_sustained_rest_to_believe_a_new_mounting() -> None:
    est = OrientationEstimator(change_deg=3.0, confirm_s=20.0)
    assert not est.known
    assert est.update([0, 0, 256], 2.0) is True
    # Small wobble: refined, rotation unchanged.
    assert est.update([2, 1, 256], 5.0) is False
    # A different direction for one short rest (someone leaning on the car): ignored.
    tilted = [0, 256 * math.sin(0.3), 256 * math.cos(0.3)]
    assert est.update(tilted, 5.0) is False
    assert est.update([0, 0, 256], 5.0) is False
    # The same new direction over 20 s of rest: the terminal was moved.
    assert est.update(tilted, 10.0) is False
    assert est.update(tilted, 10.0) is True
    assert angle_deg(np.asarray(est.rotation)[2], tilted) < 0.01
    assert est.changes == 1


def test_estimator_ignores_nonsense_windows() -> None:
    est = OrientationEstimator()
    assert est.update([0, 0, 0], 5.0) is False
    assert est.update([float("nan"), 0, 1], 5.0) is False
    assert est.update([0, 0, 256], 0.0) is False
    assert not est.known


def test_fixed_matrix_disables_estimation() -> None:
    fixed = rotation_matrix([0, 1, 0], 90)            # any proper rotation
    m = MotionTracker(LIFT, 400, 256, rotation=fixed, auto_orient=True)
    t, _p, _v, _a, counts = trip_samples(3.0, rotation=rotation_matrix([1, 0, 0], 25))
    for tb, blk in acc_blocks(0.0, counts, 400):
        m.on_acc(tb, blk)
    assert np.allclose(m.rotation_matrix(), fixed)
    m2 = MotionTracker(LIFT, 400, 256, auto_orient=False)
    assert np.allclose(m2.rotation_matrix(), np.eye(3))


@pytest.mark.timeout(60)
def test_tracker_finds_a_tilted_mounting_and_follows_a_remount() -> None:
    fs = 400
    tilt_a = rotation_matrix([1, 0.4, 0], 20)
    tilt_b = rotation_matrix([-0.3, 1, 0], 28)
    m = MotionTracker(LIFT, fs, 256)
    rest = np.zeros(int(10 * fs))
    counts = accel_counts(rest, fs, rotation=tilt_a, seed=1)
    for tb, blk in acc_blocks(0.0, counts, fs):
        m.on_acc(tb, blk)
    assert angle_deg(np.asarray(m.rotation_matrix())[2], car_z_in_sensor(tilt_a)) < 0.5
    assert m.gravity_g == pytest.approx(1.0, abs=0.01)
    # Knocked: 40 s of rest at the new angle, then a trip is measured in the new frame.
    counts = accel_counts(np.zeros(int(40 * fs)), fs, rotation=tilt_b, seed=2)
    for tb, blk in acc_blocks(10.0, counts, fs):
        m.on_acc(tb, blk)
    assert angle_deg(np.asarray(m.rotation_matrix())[2], car_z_in_sensor(tilt_b)) < 0.5
    assert m.orient.changes == 1
    _t, _p, _v, _a, counts = trip_samples(9.0, v_max=1.6, pre_s=3, post_s=3, rotation=tilt_b,
                                          seed=3)
    m.begin_trip(52.5)
    for tb, blk in acc_blocks(50.0, counts, fs):
        m.on_acc(tb, blk)
    fig = m.end_trip(50.0 + len(counts) / fs)
    assert fig is not None
    assert fig["distance_m"] == pytest.approx(9.0, abs=0.05)
