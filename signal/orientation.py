"""Mounting orientation of the terminal: the rotation from the sensor frame into the car frame.

The terminal may be screwed to the car roof in any orientation, so the agent finds
"up" itself: at rest the accelerometer measures only gravity, which points along the
car's z axis (a car at rest reads +1 g on z). The car frame is built from it:

- ``z``: the measured gravity direction at rest (up positive);
- ``x``: the sensor's own x axis projected onto the horizontal plane (the sensor's
  y axis when x is within 30° of vertical); ``y = z × x``.

The horizontal axes only feed the per-axis vibration figures (Wd), so any fixed
horizontal convention will do; this one keeps x and y where a technician mounting
the box roughly level expects them. Matrices are *car_from_sensor*: ``car = R @ sensor``.

Re-estimation: a terminal knocked or re-mounted shows a different gravity direction
at rest. A rest whose direction differs from the current estimate by more than
``change_deg`` is only believed after ``confirm_s`` seconds of rest agree with it
(a passenger leaning on the car at one stop does not rotate the frame).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Matrix = list[list[float]]


class OrientationError(ValueError):
    """A rotation matrix from config that is not a proper rotation."""


def check_rotation(rotation: Sequence[Sequence[float]]) -> Matrix:
    """Validate a configured car_from_sensor matrix: 3×3, finite, orthonormal, det +1."""
    try:
        r = np.asarray(rotation, dtype=float)
    except (TypeError, ValueError) as exc:
        raise OrientationError(f"rotation must be a 3×3 matrix of numbers: {exc}") from exc
    if r.shape != (3, 3):
        raise OrientationError(f"rotation must be 3×3, found shape {r.shape}")
    if not np.all(np.isfinite(r)):
        raise OrientationError("rotation has non-finite entries")
    if not np.allclose(r @ r.T, np.eye(3), atol=1e-3) or abs(np.linalg.det(r) - 1) > 1e-3:
        raise OrientationError("rotation must be orthonormal with determinant +1 "
                               "(a proper rotation, car_from_sensor)")
    return r.tolist()


def rotation_from_gravity(gravity: Sequence[float]) -> Matrix:
    """car_from_sensor rotation whose z axis is ``gravity`` (any units, sensor frame)."""
    g = np.asarray(gravity, dtype=float)
    n = float(np.linalg.norm(g))
    if not math.isfinite(n) or n == 0:
        raise OrientationError(f"gravity vector {list(g)} has no direction")
    z = g / n
    ref = np.array([1.0, 0.0, 0.0]) if abs(z[0]) < math.cos(math.radians(30)) else \
        np.array([0.0, 1.0, 0.0])
    x = ref - (ref @ z) * z
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.vstack([x, y, z]).tolist()


def angle_deg(u: Sequence[float], v: Sequence[float]) -> float:
    """Angle between two vectors in degrees."""
    a = np.asarray(u, dtype=float)
    b = np.asarray(v, dtype=float)
    c = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


class OrientationEstimator:
    """Gravity direction from rest windows; a fixed matrix from config disables estimation.

    ``update`` takes the mean raw vector of a quiet rest window and its length; it
    returns True when :attr:`rotation` changed (the caller then re-rotates its chain).
    """

    def __init__(self, fixed: Sequence[Sequence[float]] | None = None,
                 change_deg: float = 3.0, confirm_s: float = 20.0) -> None:
        self.fixed = fixed is not None
        self.change_deg = change_deg
        self.confirm_s = confirm_s
        self.rotation: Matrix = check_rotation(fixed) if fixed is not None else np.eye(3).tolist()
        self.gravity: np.ndarray | None = None      # sensor frame, counts (weighted mean)
        self._weight = 0.0
        self._cand: np.ndarray | None = None        # a differing direction being confirmed
        self._cand_s = 0.0
        self.changes = 0

    @property
    def known(self) -> bool:
        """True once a rotation is configured or estimated."""
        return self.fixed or self.gravity is not None

    def update(self, mean_counts: Sequence[float], duration_s: float) -> bool:
        """Fold in one rest window (mean raw counts over ``duration_s`` of quiet rest)."""
        v = np.asarray(mean_counts, dtype=float)
        if self.fixed or duration_s <= 0 or not np.all(np.isfinite(v)) or not v.any():
            return False
        if self.gravity is None:
            return self._adopt(v, duration_s)
        if angle_deg(v, self.gravity) <= self.change_deg:
            # Same mounting: refine the mean (capped weight so old rests fade slowly).
            w = min(self._weight, 600.0)
            self.gravity = (self.gravity * w + v * duration_s) / (w + duration_s)
            self._weight = w + duration_s
            self._cand, self._cand_s = None, 0.0
            return False
        if self._cand is not None and angle_deg(v, self._cand) <= self.change_deg:
            self._cand = (self._cand * self._cand_s + v * duration_s) / (self._cand_s + duration_s)
            self._cand_s += duration_s
        else:
            self._cand, self._cand_s = v, duration_s
        if self._cand_s >= self.confirm_s:
            self.changes += 1
            return self._adopt(self._cand, self._cand_s)
        return False

    def _adopt(self, v: np.ndarray, weight: float) -> bool:
        self.gravity = v
        self._weight = weight
        self._cand, self._cand_s = None, 0.0
        self.rotation = rotation_from_gravity(v)
        return True
