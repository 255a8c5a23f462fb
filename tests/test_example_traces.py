"""The pipeline on the example traces, against what the simulator that made them did.

``hil_tests/make_traces.py`` scripts the project's lift simulator and writes, beside each
trace, its ground truth (``NAME.truth.json``): the landings and run times of every trip,
the door cycles and their reopens, the stall, the alarm press, the door opening. The
expected values here come from there. The last test proves the committed files are what
the script makes.
"""

from __future__ import annotations

import gzip
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLE_TRACES
from liftwatch.drivers.trace import TraceReader
from liftwatch.signal.pipeline import TRIP_SETTLE_S
from make_traces import SCRIPTS, path_of, truth, truth_text
from synthlift import cleared, events, raised, run_records

pytestmark = pytest.mark.timeout(120)

#: A door cycle's times come from controller polls (every 0.2 s) or contact edges, decided
#: on the 0.1 s grid of replay.
DOOR_TOL_S = 0.25


@cache
def replay(name: str) -> list[dict[str, Any]]:
    with TraceReader(EXAMPLE_TRACES / f"{name}.jsonl.gz") as r:
        recs = list(r)
        assert r.bad_lines == 0
        return run_records(recs, r.header)


def of_type(out: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in out if o["type"] == kind]


def test_normal_day_reports_every_trip_and_door_cycle_and_no_event() -> None:
    want = truth("normal_day")
    out = replay("normal_day")
    assert events(out) == []                      # nothing abnormal happened
    trips, doors = of_type(out, "trip"), of_type(out, "door")
    assert [(t["from"], t["to"]) for t in trips] == [(w["from"], w["to"]) for w in want["trips"]]
    for got, w in zip(trips, want["trips"], strict=True):
        assert got["t_start"] == pytest.approx(w["t_run"], abs=0.1)
        assert got["t_end"] == pytest.approx(w["t_stop"], abs=0.1)
    assert [d["reopens"] for d in doors] == [w["reopens"] for w in want["door_cycles"]]
    assert sum(d["reopens"] for d in doors) >= 3  # the script's obstructed doors
    assert [d["floor"] for d in doors] == [w["floor"] for w in want["door_cycles"]]
    for d in doors:
        assert d["open_s"] == pytest.approx(want["door_open_s"], abs=DOOR_TOL_S)
        assert d["close_s"] == pytest.approx(want["door_close_s"], abs=DOOR_TOL_S)


def test_entrapment_between_floors() -> None:
    want = truth("entrapment_between_floors")
    out = replay("entrapment_between_floors")
    stop = want["stall"]["t_stop"]                # the run contactor drops between landings
    (e,) = raised(out, "entrapment_nonlevel")
    assert stop + 30.0 <= e["t"] <= stop + 31.0
    press = want["alarm"]["t_pressed"]            # held for want["alarm"]["hold_s"]
    (a,) = raised(out, "alarm_button")
    assert press + 0.5 <= a["t"] <= press + 1.5
    (ce,) = cleared(out, "entrapment_nonlevel")
    (ca,) = cleared(out, "alarm_button")
    assert ce["t"] == pytest.approx(want["door_open_after_relevel"], abs=DOOR_TOL_S)
    assert ca["t"] == ce["t"] and ca["id"] == a["id"]
    # raised where the car stands: between the two landings, not "at" the last one passed
    assert e["between"] == a["between"] == want["stall"]["between"]
    assert "between" not in ce  # cleared once the car is level at a landing again
    assert {x["code"] for x in events(out)} == {"entrapment_nonlevel", "alarm_button"}
    trips = of_type(out, "trip")
    ordinary = [w for w in want["trips"] if w["to"] is not None and not w.get("relevel")]
    assert [(t["from"], t["to"]) for t in trips[:len(ordinary)]] == \
        [(w["from"], w["to"]) for w in ordinary]
    assert len(trips) == len(want["trips"])       # the stalled run and the rescue count too


def test_sensor_only_entrapment_level() -> None:
    want = truth("sensor_only_entrapment_level")
    out = replay("sensor_only_entrapment_level")
    stop = want["shut_in"]["t_stop"]              # the run drops level at a landing, door shut
    (e,) = raised(out, "entrapment_level")
    assert stop + 45.0 <= e["t"] <= stop + 46.0
    assert e["floor"] == want["shut_in"]["floor"]  # named by the tracker, no controller
    (c,) = cleared(out, "entrapment_level")
    assert c["t"] == pytest.approx(want["door_open"], abs=DOOR_TOL_S)
    assert {x["code"] for x in events(out)} == {"entrapment_level"}


def test_sensor_only_trip_floors_are_the_trackers_after_the_stop() -> None:
    """The arrival floor is taken once the motion tracker booked the stop: never the
    floor the car left. The tracker may not know the first departure floor; every floor
    it names is the one the simulated car was at."""
    want = truth("sensor_only_entrapment_level")
    out = replay("sensor_only_entrapment_level")
    trips = of_type(out, "trip")
    assert len(trips) == len(want["trips"])
    assert all(t["t_end"] <= t["t"] <= t["t_end"] + TRIP_SETTLE_S for t in trips)
    for got, w in zip(trips, want["trips"], strict=True):
        assert got["from"] in (None, w["from"]) and got["to"] in (None, w["to"])
    assert (trips[-1]["from"], trips[-1]["to"]) == (want["trips"][-1]["from"],
                                                    want["trips"][-1]["to"])


def test_sensor_only_door_cycles_are_named_for_the_stop_they_belong_to() -> None:
    """Without a controller the arrival floor is known only after the door began to
    open: the cycle is still the stop's, never the floor the car left."""
    want = truth("sensor_only_entrapment_level")
    out = replay("sensor_only_entrapment_level")
    doors = of_type(out, "door")
    assert len(doors) == len(want["door_cycles"])
    named = [(d["floor"], w["floor"]) for d, w in zip(doors, want["door_cycles"], strict=True)
             if d["floor"] is not None]
    assert len(named) >= len(doors) - 1  # only the first stop's floor may be unknown
    assert all(got == w for got, w in named), named


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_committed_trace_is_what_make_traces_makes(name: str) -> None:
    """hil_tests/make_traces.py regenerates the committed trace and its truth: the same
    text, or else line by line the same with accelerometer counts within one count (a
    libm that rounds the last bit of a sine differently may move a few). Compression is
    left out (``make_traces.py --check`` compares the bytes)."""
    made = SCRIPTS[name]()
    assert truth_text(made) == (EXAMPLE_TRACES / f"{name}.truth.json").read_text(), \
        f"{name}.truth.json is stale: run hil_tests/make_traces.py"
    committed = gzip.decompress(path_of(name).read_bytes()).decode()
    if committed == made.text():
        return
    got = [json.loads(line) for line in committed.splitlines()]
    new = [json.loads(line) for line in made.lines()]
    assert len(got) == len(new), f"{name}: {len(got)} lines, the script makes {len(new)}"
    for n, (a, b) in enumerate(zip(got, new, strict=True), start=1):
        if "acc" in a and "acc" in b and a["t"] == b["t"] and len(a["acc"]) == len(b["acc"]):
            worst = max(abs(x - y) for sa, sb in zip(a["acc"], b["acc"], strict=True)
                        for x, y in zip(sa, sb, strict=True))
            assert worst <= 1, f"{name} line {n}: accelerometer counts differ by {worst}"
        else:
            assert a == b, f"{name} line {n} differs: run hil_tests/make_traces.py"


def test_every_example_has_its_truth() -> None:
    traces = sorted(p.name.removesuffix(".jsonl.gz") for p in EXAMPLE_TRACES.glob("*.jsonl.gz"))
    assert traces == sorted(SCRIPTS)
    assert all(Path(EXAMPLE_TRACES / f"{n}.truth.json").is_file() for n in traces)
