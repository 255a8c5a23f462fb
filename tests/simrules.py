"""Run the HIL lift simulator (hil_tests/liftsim.py) through the pipeline, for rule tests.

``play(sim)`` feeds every record the simulator produced so far to a :class:`Pipeline`
built from the simulated lift's own description, letting timers run every 0.1 s between
records as the live runtime does, and returns the pipeline's output records.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hil_tests"))

from liftsim import LiftSim, SimLift  # noqa: E402
from liftwatch.signal.pipeline import Pipeline  # noqa: E402
from liftwatch.signal.settings import DetectionParams, LiftParams  # noqa: E402

TICK_S = 0.1


def pipeline_for(lift: SimLift, det: DetectionParams | None = None, *,
                 accel: bool = True, controller: bool | None = None) -> Pipeline:
    """The pipeline a terminal on this simulated lift would run (events.md defaults)."""
    params = LiftParams(landings=list(lift.landings), landing_heights_m=list(lift.heights),
                        rated_speed=lift.rated_speed, door_zone_m=lift.door_zone_m)
    present = lift.controller if controller is None else controller
    return Pipeline(params, det or DetectionParams(), accel_fs=lift.fs if accel else None,
                    lsb_per_g=lift.lsb_per_g, controller_present=present)


class SimRun:
    """A simulator and the pipeline watching it; ``play()`` feeds what happened so far."""

    def __init__(self, lift: SimLift | None = None, *, seed: int = 1, start_floor: int = 1,
                 det: DetectionParams | None = None, accel: bool = True,
                 drop: tuple[str, ...] = ()) -> None:
        self.sim = LiftSim(lift or SimLift(), seed=seed, start_floor=start_floor)
        self.pipe = pipeline_for(self.sim.lift, det, accel=accel)
        self.accel = accel
        #: digital inputs the terminal does not have (removed from every di record)
        self.drop = drop
        self.out: list[dict[str, Any]] = []
        #: every record fed, as (t, kind, data)
        self.fed: list[tuple[float, str, Any]] = []
        self._t = 0.0

    def play(self) -> list[dict[str, Any]]:
        """Feed the records produced since the last call; return the new output."""
        new: list[dict[str, Any]] = []
        for t, kind, data in self.sim.drain():
            if kind == "acc" and not self.accel:
                continue
            if kind == "di" and self.drop:
                data = {k: v for k, v in data.items() if k not in self.drop}
                if not data:
                    continue
            while self._t + TICK_S < t:
                self._t += TICK_S
                new += self.pipe.advance(self._t)
            new += self.pipe.feed(t, kind, data)
            self.fed.append((t, kind, data))
            self._t = max(self._t, t)
        self.out += new
        return new

    def first_di(self, name: str, level: int, after: float) -> float:
        """Time of the first di record after ``after`` setting input ``name`` to ``level``."""
        return next(t for t, kind, data in self.fed
                    if kind == "di" and t > after and data.get(name) == level)

    def onset(self, what: str) -> float:
        return [o.t for o in self.sim.onsets if o.what == what][-1]

    def events(self, code: str, state: str = "raised") -> list[dict[str, Any]]:
        return [r for r in self.out if r.get("type") == "event" and r["code"] == code
                and r["state"] == state]

    def codes(self) -> list[str]:
        return [r["code"] for r in self.out if r.get("type") == "event"
                and r["state"] == "raised" and r["code"] not in ("mode_change", "self_test")]


__all__ = ["SimRun", "SimLift", "pipeline_for", "replace"]
