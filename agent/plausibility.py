"""Is the lift the config describes one that can exist? Cross-field plausibility.

The schema checks each key alone (a number, > 0, one of these); this module judges
the lift as a whole, where a technician's mistake is well typed but wrong: a rated
speed copied from a nameplate in m/min (105 passes as m/s, and the overspeed
threshold becomes 120 m/s: overspeed can never be reported), landing heights in
millimetres (a 50 km shaft), a door zone in millimetres (150 m: the car is "level"
everywhere). Each finding says what was found, why it cannot be right, and the
likely fix. An error refuses the config; a warning is printed by ``config check``,
``check`` and at every start (firmware_config/README.md lists both, "Plausibility").

The config validator calls :func:`judge` after its own checks, so ``config check``
and the agent at start use this same code. The bounds are deliberately wide: a
warning for what is rare but built (a 15 m express zone), an error only for what no
lift has (a 300 m floor, 25 m/s).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from liftwatch.drivers import adxl345, lis3dh

G = 9.80665
#: landing spacing (m): below MIN an error (mm/cm? a landing typed twice?), below LOW a
#: warning (split-level landings exist), above HIGH a warning (express zones), above
#: MAX an error (no floor is that high: heights in cm or mm)
SPACING_MIN_M, SPACING_LOW_M, SPACING_HIGH_M, SPACING_MAX_M = 0.5, 2.0, 15.0, 200.0
#: the longest lift travel built is under 600 m
TRAVEL_MAX_M = 1000.0
#: the fastest lifts built run at about 21 m/s; below SPEED_LOW only platform lifts
SPEED_MAX = 21.0
SPEED_LOW = 0.1
#: highest acceleration a passenger lift is designed for (m/s²): the speed it can reach
#: over its whole travel (accelerate, then brake) is sqrt(A_DESIGN_MAX × travel)
A_DESIGN_MAX = 1.5
#: lowest usual rated acceleration (m/s²): the accelerometer should resolve it finely
A_RATED_LOW = 0.5
#: counts of the accelerometer in A_RATED_LOW, at least (speed and ride figures)
MIN_COUNTS_PER_RATED_A = 10
#: EN 81-20 5.3.8.1: the unlocking zone extends at most 0.20 m above and below the
#: landing (0.35 m with mechanically coupled car and landing doors)
DOOR_ZONE_MAX_M = 0.35
DOOR_ZONE_MIN_M = 0.02

#: every check, by the name firmware_config/README.md gives it (a test keeps them equal)
CHECKS = ("landing_spacing", "travel", "rated_speed", "moving_speed", "door_zone",
          "accel_resolution")


@dataclass(frozen=True)
class Finding:
    """One implausible value: ``expected`` says why, ``fix`` the likely cure."""

    check: str
    error: bool
    key: str
    expected: str
    found: str
    fix: str

    def __str__(self) -> str:
        return f"{self.key}: expected {self.expected}, found {self.found} ({self.fix})"


def _num(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"


class _Judge:
    def __init__(self, values: dict[str, dict[str, Any]], ok: Callable[..., bool]) -> None:
        self.v = values
        self.ok = ok
        self.found: list[Finding] = []

    def add(self, check: str, error: bool, key: str, expected: str, found: str,
            fix: str) -> None:
        self.found.append(Finding(check, error, key, expected, found, fix))

    def run(self) -> list[Finding]:
        heights = self._heights()
        if heights is not None:
            self._speed(heights)
            self._door_zone(heights)
        self._moving_speed()
        self._accel()
        return self.found

    # ---- the shaft

    def _heights(self) -> list[float] | None:
        """The landing heights if they are usable (increasing, in metres), else None."""
        h = self.v["lift"]["landing_heights_m"]
        if not self.ok("lift.landing_heights_m") or len(h) < 2 or any(
                b <= a for a, b in zip(h, h[1:], strict=False)):
            return None      # the validator has said what is wrong with them
        key = "lift.landing_heights_m"
        gaps = [b - a for a, b in zip(h, h[1:], strict=False)]
        travel = h[-1] - h[0]
        usable = True
        if travel > TRAVEL_MAX_M:
            unit = "mm" if travel / 1000 <= TRAVEL_MAX_M and min(gaps) >= 1000 * SPACING_MIN_M \
                else "cm"
            div = 1000 if unit == "mm" else 100
            self.add("travel", True, key,
                     f"a travel under {TRAVEL_MAX_M:g} m (no lift travels further; heights "
                     "are metres)", f"{_num(travel)} m from the lowest to the highest landing",
                     f"heights in {unit}? write them in metres: {_num(h[1])} {unit} is "
                     f"{_num(h[1] / div)} m")
            return None
        for i, gap in enumerate(gaps, start=1):
            where = f"{key}[{i}]"
            between = f"{_num(gap)} m between landings {i - 1} and {i}"
            if gap > SPACING_MAX_M:
                self.add("landing_spacing", True, where,
                         f"landing spacing under {SPACING_MAX_M:g} m (heights are metres)",
                         between, f"in cm? {_num(gap)} cm is {_num(gap / 100)} m; each "
                         "height is the sill's height in metres above the lowest landing")
                usable = False
            elif gap < SPACING_MIN_M:
                self.add("landing_spacing", True, where,
                         f"landing spacing of at least {SPACING_MIN_M:g} m (a car is over "
                         "2 m high)", between,
                         "a landing typed twice, or a height missing? measure each sill "
                         "from the lowest one, in metres")
                usable = False
            elif gap > SPACING_HIGH_M:
                self.add("landing_spacing", False, where,
                         f"landing spacing up to {SPACING_HIGH_M:g} m (more is an express "
                         "zone)", between, "if the lift serves no landing in between, "
                         "this is right; else a landing is missing from lift.landings")
            elif gap < SPACING_LOW_M:
                self.add("landing_spacing", False, where,
                         f"landing spacing of at least {SPACING_LOW_M:g} m (less is a split "
                         "level)", between, "if these are split-level landings, this is "
                         "right; else check the two heights")
        return h if usable else None

    def _speed(self, h: list[float]) -> None:
        key = "lift.rated_speed"
        if not self.ok(key):
            return
        v = self.v["lift"]["rated_speed"]
        travel = h[-1] - h[0]
        reach = math.sqrt(A_DESIGN_MAX * travel)
        limit = min(SPEED_MAX, 2 * reach)
        why = (f"a rated speed in m/s a lift of {_num(travel)} m travel can have (it "
               f"reaches at most {_num(reach)} m/s accelerating and braking at "
               f"{A_DESIGN_MAX:g} m/s² over the whole travel; the fastest lifts run at "
               f"{SPEED_MAX:g} m/s)")
        if v > limit:
            fix = ("rated_speed is in m/s: a nameplate in m/min divided by 60; the overspeed "
                   f"threshold would be {_num(v * self.v['detection']['overspeed_ratio'])} m/s "
                   "and overspeed never reported")
            for div, unit in ((60, "m/min"), (1000, "mm/s")):
                if SPEED_LOW <= v / div <= reach:
                    fix = (f"{unit}? {_num(v)} {unit} is {_num(v / div)} m/s: write "
                           f"rated_speed = {_num(v / div)}")
                    break
            self.add("rated_speed", True, key, why, _num(v), fix)
        elif v > reach:
            self.add("rated_speed", False, key, why, _num(v),
                     "the car never reaches this speed: check the nameplate (m/s) and the "
                     "landing heights")
        elif v < SPEED_LOW:
            self.add("rated_speed", False, key,
                     f"a rated speed of at least {SPEED_LOW:g} m/s (slower are platform "
                     "lifts)", _num(v), "rated_speed is in m/s, not m/min or km/h")

    def _door_zone(self, h: list[float]) -> None:
        key = "lift.door_zone_m"
        if not self.ok(key):
            return
        z = self.v["lift"]["door_zone_m"]
        gap = min(b - a for a, b in zip(h, h[1:], strict=False))
        if z >= gap / 2:
            unit, div = ("mm", 1000) if z >= 10 else ("cm", 100) if z >= 1 else ("", 1)
            fix = (f"in {unit}? {_num(z)} {unit} is {_num(z / div)} m: write door_zone_m = "
                   f"{_num(z / div)}" if unit else "door_zone_m is the half-width of the "
                   "leveling zone, typically 0.05 to 0.2 m")
            self.add("door_zone", True, key,
                     f"a half-width under half the smallest landing spacing ({_num(gap / 2)}"
                     " m): wider, the car would be level at two landings at once or "
                     "everywhere", f"{_num(z)} m", fix)
        elif z > DOOR_ZONE_MAX_M:
            self.add("door_zone", False, key,
                     f"at most {DOOR_ZONE_MAX_M:g} m (EN 81-20: the unlocking zone extends "
                     "0.2 m, at most 0.35 m, above and below the landing)", f"{_num(z)} m",
                     "measure the leveling vane: door_zone_m is its half-width")
        elif z < DOOR_ZONE_MIN_M:
            self.add("door_zone", False, key,
                     f"at least {DOOR_ZONE_MIN_M:g} m (no leveling sensor is that exact)",
                     f"{_num(z)} m", "door_zone_m is in metres: 0.15, not 0.0015")

    def _moving_speed(self) -> None:
        key = "detection.moving_speed"
        if not self.ok(key, "lift.rated_speed"):
            return
        ms, v = self.v["detection"]["moving_speed"], self.v["lift"]["rated_speed"]
        if ms >= v:
            self.add("moving_speed", True, key,
                     f"a speed below lift.rated_speed ({_num(v)} m/s): the car would never "
                     "count as moving", f"{_num(ms)} m/s",
                     "leave it at its default 0.05 m/s unless the controller's speed "
                     "reads high at rest")

    # ---- the accelerometer

    def _accel(self) -> None:
        a = self.v["accel"]
        if a["chip"] == "none" or not self.ok("accel.chip", "accel.range_g", "accel.rate_hz"):
            return
        if a["chip"] == "adxl345":
            lsb_per_g = float(adxl345.LSB_PER_G)     # full resolution: every range
        else:
            low_power = lis3dh.RATES.get(a["rate_hz"], (0, 0.0, False))[2]
            mg = lis3dh.MG_PER_DIGIT_HR.get(a["range_g"], 1.0) * (16 if low_power else 1)
            lsb_per_g = 1000.0 / mg
        step = G / lsb_per_g                          # m/s² per count
        counts = A_RATED_LOW / step
        if counts < MIN_COUNTS_PER_RATED_A:
            self.add("accel_resolution", False, "accel.range_g",
                     f"at least {MIN_COUNTS_PER_RATED_A} counts in a rated acceleration of "
                     f"{A_RATED_LOW:g} m/s² (speed, stop position and ride figures come from "
                     "it)", f"range_g = {a['range_g']} at rate_hz = {a['rate_hz']} on the "
                     f"{a['chip']}: {step * 1000 / G:.0f} mg a count, {counts:.1f} counts",
                     "use range_g = 2 or 4 (a car never sees more than about 1.5 g)"
                     + (" and rate_hz = 400 (1600 Hz is the chip's 8-bit mode)"
                        if a["chip"] == "lis3dh" and a["rate_hz"] == 1600 else ""))


def judge(values: dict[str, dict[str, Any]], ok: Callable[..., bool]) -> list[Finding]:
    """Every implausible value of a config's ``values`` (section -> key -> value, defaults
    filled in); ``ok(*keys)`` is False for keys the validator already refused, which
    are then left alone."""
    return _Judge(values, ok).run()
