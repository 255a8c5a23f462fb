"""Trips: one record per run, from the start of motion to the stop.

A trip starts when the fused state starts moving (run signal, or speed when there
is no run signal) and ends when it stops. ``from``/``to`` are floor labels from the
fused floor (controller floor, or the accelerometer's own floor count on a
sensors-only terminal). With an accelerometer the ISO 18738-1 figures come from
``MotionTracker.end_trip``; without one, ``distance_m`` is the difference of the
landing heights when both ends are known, so the statistics still add up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from liftwatch.signal.settings import LiftParams

RIDE_KEYS = ("distance_m", "v_max", "a_max", "d_max", "a95", "d95", "jerk_max",
             "vib_pp_max", "vib_pp_a95")


@dataclass
class OpenTrip:
    t_start: float
    floor: str | None


class TripTracker:
    """Opens a trip on motion start and closes it, with the ride figures, on the stop."""

    def __init__(self, lift: LiftParams, motion: Any = None) -> None:
        self.lift = lift
        self.motion = motion
        self.heights = dict(zip(lift.landings, lift.landing_heights_m, strict=False))
        self.current: OpenTrip | None = None
        self.count = 0
        #: an exception the motion tracker raised (the pipeline then drops the tracker)
        self.failed: BaseException | None = None

    def start(self, t: float, floor: str | None) -> None:
        self.current = OpenTrip(t, floor)
        if self.motion is not None:
            try:
                self.motion.begin_trip(t)
            except Exception as exc:  # noqa: BLE001 - the trip is still recorded
                self.failed = exc

    def stop(self, t: float, floor: str | None, direction: int, level: bool | None
             ) -> dict[str, Any] | None:
        """Close the open trip; return its record (None when no trip was open)."""
        cur = self.current
        if cur is None:
            return None
        self.current = None
        self.count += 1
        rec: dict[str, Any] = {"t": round(t, 3), "type": "trip", "from": cur.floor, "to": floor,
                               "t_start": round(cur.t_start, 3), "t_end": round(t, 3),
                               "duration_s": round(t - cur.t_start, 3),
                               "dir": {1: "up", 2: "down"}.get(direction)}
        if level is False:
            rec["level"] = False
        ride = None
        if self.motion is not None:
            try:
                ride = self.motion.end_trip(t)
            except Exception as exc:  # noqa: BLE001 - the trip is still recorded
                self.failed = exc
        if ride:
            for k in RIDE_KEYS:
                if k in ride:
                    v = ride[k]
                    rec[k] = ({a: _r(x) for a, x in v.items()} if isinstance(v, dict)
                              else _r(v))
        elif cur.floor in self.heights and floor in self.heights:
            rec["distance_m"] = round(abs(self.heights[floor] - self.heights[cur.floor]), 3)
        return rec


def _r(x: Any) -> Any:
    return round(float(x), 4) if isinstance(x, int | float) else x
