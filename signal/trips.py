"""Trips: one record per run, from the start of motion to the stop.

A trip starts when the fused state starts moving (run signal, or speed when there
is no run signal) and ends when it stops. ``from``/``to`` are floor labels from the
fused floor (controller floor, or the accelerometer's own floor count on a
sensors-only terminal). With an accelerometer the ISO 18738-1 figures come from
``MotionTracker.end_trip``; without one, ``distance_m`` is the difference of the
landing heights when both ends are known, so the statistics still add up.

A trip that ends outside a door zone (``level`` false) did not arrive anywhere: it
carries ``to_between``, the two landings the car stopped between (from the last landing
passed and the direction; from the accelerometer's position when those do not say),
and ``emergency_stop`` true: its deceleration and jerk are those of a fault stop, not
ride quality. The next trip, starting outside a door zone from there (the rescue's
relevel), carries ``from_between`` the same way; ``from``/``to`` stay the last landing
passed, as the controller reports it.
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
    between: list[str] | None = None  # started outside a door zone, between these


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
        #: where the last trip stopped outside a door zone: (its floor, the two landings)
        self._stopped_between: tuple[str | None, list[str]] | None = None

    def between(self, floor: str | None, direction: int) -> list[str] | None:
        """The two landings (lower first) a car stopped outside a door zone is between:
        the last landing passed (``floor``) and the next one in the direction of travel;
        failing that, the accelerometer's position when it is known."""
        labels = list(self.lift.landings)
        if floor in labels and direction in (1, 2):
            i = labels.index(floor)
            j = i + 1 if direction == 1 else i - 1
            if 0 <= j < len(labels):
                return [labels[min(i, j)], labels[max(i, j)]]
        m = self.motion
        if m is None or not getattr(m, "position_known", False):
            return None
        pos, hs = float(m.position_m), list(self.lift.landing_heights_m)
        for k in range(len(hs) - 1):
            if hs[k] < pos < hs[k + 1]:
                return [labels[k], labels[k + 1]]
        return None

    def standing_between(self, floor: str | None) -> list[str] | None:
        """The two landings a car that stopped outside a door zone still stands between
        (``floor`` the last landing passed), or None once it has moved on."""
        last = self._stopped_between
        if self.current is None and last is not None and last[0] == floor:
            return last[1]
        return None

    def start(self, t: float, floor: str | None, in_zone: bool | None = None) -> None:
        between = None
        if in_zone is False:
            between = self.standing_between(floor) or self.between(floor, 0)
        self.current = OpenTrip(t, floor, between)
        if self.motion is not None:
            try:
                self.motion.begin_trip(t)
            except Exception as exc:  # noqa: BLE001 - the trip is still recorded
                self.failed = exc

    def stop(self, t: float, floor: str | None, direction: int, level: bool | None,
             complete: bool = True) -> dict[str, Any] | None:
        """Close the open trip; return its record (None when no trip was open).
        ``complete`` false: cut short by the end of input, the car maybe still moving
        (where it was is said, but not that it stopped there)."""
        cur = self.current
        if cur is None:
            return None
        self.current = None
        self.count += 1
        rec: dict[str, Any] = {"t": round(t, 3), "type": "trip", "from": cur.floor, "to": floor,
                               "t_start": round(cur.t_start, 3), "t_end": round(t, 3),
                               "duration_s": round(t - cur.t_start, 3),
                               "dir": {1: "up", 2: "down"}.get(direction)}
        if cur.between:
            rec["from_between"] = cur.between
        if level is not None:
            self._stopped_between = None
        if level is False:
            rec["level"] = False
            between = self.between(floor, direction)
            if between:
                rec["to_between"] = between
            if complete:
                rec["emergency_stop"] = True
                if between:
                    self._stopped_between = (floor, between)
        if not complete:
            rec["complete"] = False
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
