"""The pipeline on the three example traces of an independent lift simulator."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest
from liftwatch.drivers.trace import TraceReader
from liftwatch.signal.pipeline import TRIP_SETTLE_S
from synthlift import cleared, events, raised, run_records

pytestmark = pytest.mark.timeout(120)

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "traces"


@cache
def replay(name: str) -> list[dict[str, Any]]:
    with TraceReader(SHARED / name) as r:
        recs = list(r)
        assert r.bad_lines == 0
        return run_records(recs, r.header)


def test_normal_day_raises_no_fault_or_alarm(shared_traces: Path) -> None:
    out = replay("normal_day.jsonl.gz")
    bad = [e for e in events(out) if e["sev"] in ("fault", "alarm")]
    assert bad == []
    trips = [o for o in out if o["type"] == "trip"]
    doors = [o for o in out if o["type"] == "door"]
    assert len(trips) == 35                       # the README's count
    assert (trips[0]["from"], trips[0]["to"]) == ("7", "B1")
    assert all(t["from"] and t["to"] and t["from"] != t["to"] for t in trips)
    assert len(doors) == 37 and sum(d["reopens"] for d in doors) == 3
    assert all(2.5 <= d["open_s"] <= 4.0 and 2.5 <= d["close_s"] <= 4.0 for d in doors)


def test_entrapment_between_floors(shared_traces: Path) -> None:
    out = replay("entrapment_between_floors.jsonl.gz")
    stop = 168.868                                # the run contactor drops between landings
    (e,) = raised(out, "entrapment_nonlevel")
    assert stop + 30.0 <= e["t"] <= stop + 31.0
    (a,) = raised(out, "alarm_button")
    assert 268.868 + 0.5 <= a["t"] <= 268.868 + 1.5     # the passenger holds it 3 s
    door_open_after_relevel = 462.129
    (ce,) = cleared(out, "entrapment_nonlevel")
    (ca,) = cleared(out, "alarm_button")
    assert ce["t"] == pytest.approx(door_open_after_relevel, abs=0.25)
    assert ca["t"] == ce["t"] and ca["id"] == a["id"]
    assert not raised(out, "entrapment_level")
    assert not raised(out, "stopped_outside_zone")


def test_sensor_only_entrapment_level(shared_traces: Path) -> None:
    out = replay("sensor_only_entrapment_level.jsonl.gz")
    stop = 164.462                                # run drops level at a landing, door shut
    (e,) = raised(out, "entrapment_level")
    assert stop + 45.0 <= e["t"] <= stop + 46.0
    (c,) = cleared(out, "entrapment_level")
    assert c["t"] == pytest.approx(364.582, abs=0.25)    # the door finally opens
    assert not [x for x in events(out) if x["code"] == "controller_link_lost"]
    assert not [x for x in events(out) if x["sev"] == "fault"]


def test_sensor_only_trip_floors_are_the_trackers_after_the_stop(shared_traces: Path) -> None:
    """The arrival floor is taken once the motion tracker booked the stop: never the
    floor the car left (how soon the tracker names floors is the tracker's business)."""
    out = replay("sensor_only_entrapment_level.jsonl.gz")
    trips = [o for o in out if o["type"] == "trip"]
    assert len(trips) == 6
    assert all(t["t_end"] <= t["t"] <= t["t_end"] + TRIP_SETTLE_S for t in trips)
    for a, b in zip(trips, trips[1:], strict=False):
        if a["to"] is not None and b["from"] is not None:
            assert a["to"] == b["from"]
    assert all(t["from"] != t["to"] for t in trips if t["from"] and t["to"])
