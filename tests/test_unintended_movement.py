"""Unintended movements away from a terminal landing (issue 20, item 3).

A car standing level at the top or bottom landing with its door open, no run command
and nobody inside, creeps off the landing: that is ``moving_with_door_open`` (UCM),
and once it has come to rest outside the zone, ``stopped_outside_zone``, unless it went
*beyond* the terminal landing (toward the end of the shaft): only then is it
overtravel. The direction comes from all the evidence (the leveling sensors' edge
order, the controller's direction, the accelerometer), never from the last run alone:
the last run arrived at the terminal landing, the creep may go either way.
"""

from __future__ import annotations

import pytest
from synthlift import SynthLift, events, raised

pytestmark = pytest.mark.timeout(60)

CASES = [("top", "down"), ("top", "up"), ("bottom", "up"), ("bottom", "down")]


def creep(landing: str, way: str, sources: str, accel: bool) -> tuple[SynthLift, float]:
    """Arrive at the terminal landing by a full-travel run from the other one (so a
    sensors-only terminal knows its floor too), open the door, creep 0.5 m off it."""
    probe = SynthLift()
    start, end = (probe.landings[0], probe.landings[-1]) if landing == "top" \
        else (probe.landings[-1], probe.landings[0])
    lift = SynthLift(sources=sources, start=start, accel=accel)
    lift.idle(2).trip(end).idle(1).open_door().idle(2)
    t_creep = lift.t
    lift.move(0.5 if way == "up" else -0.5, run=False, v=0.15).idle(60)
    return lift, t_creep


@pytest.mark.parametrize("sources,accel", [("both", False), ("sensors", True),
                                           ("sensors", False)])
@pytest.mark.parametrize("landing,way", CASES)
def test_creeping_off_a_terminal_landing(landing: str, way: str, sources: str,
                                         accel: bool) -> None:
    lift, t_creep = creep(landing, way, sources, accel)
    out = lift.run()
    (ucm,) = raised(out, "moving_with_door_open")
    assert ucm["t"] > t_creep
    beyond = (landing, way) in (("top", "up"), ("bottom", "down"))
    if sources == "sensors" and not accel:
        beyond = False   # no floor source: nothing says the landing was a terminal one
    code = f"overtravel_{landing}"
    other = "overtravel_bottom" if landing == "top" else "overtravel_top"
    assert not events(out, other)
    if beyond:
        assert raised(out, code), [e["code"] for e in events(out)]
        assert not events(out, "stopped_outside_zone")
    else:
        assert not events(out, code), "a car below the top (above the bottom) is no overtravel"
        (soz,) = raised(out, "stopped_outside_zone")
        assert soz["t"] > t_creep + 45


def test_a_run_past_the_top_landing_is_still_overtravel_with_the_controller_only() -> None:
    lift = SynthLift(sources="controller", start="3")
    lift.idle(1).move(lift.heights[-1] - lift.pos + 0.4).idle(8)
    out = lift.run()
    assert raised(out, "overtravel_top")


def test_a_creep_with_no_direction_evidence_is_stopped_outside_zone() -> None:
    """The controller alone, no run command: its zone flag says the car left the landing,
    nothing says which way; overtravel is claimed only on evidence."""
    lift, _ = creep("top", "down", "controller", False)
    out = lift.run()
    assert not events(out, "overtravel_top")
    assert raised(out, "stopped_outside_zone")

