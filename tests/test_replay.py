"""`liftwatch replay` end to end on hand-made traces in the spec's format (issue 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO

HEADER = {"trace": 1, "start": "2026-11-23T08:00:00Z",
          "lift": {"id": "31100000000000000001", "landings": ["B1", "1", "2", "3"],
                   "landing_heights_m": [0.0, 3.2, 6.2, 9.2], "rated_speed": 1.75,
                   "door_zone_m": 0.2},
          "controller": {"present": True}}


def ctl(t: float, floor: str, door: int, run: int = 0, dir_: int = 0, zone: int = 1,
        speed: float = 0.0) -> str:
    return json.dumps({"t": t, "ctl": {"mode": 1, "run": run, "dir": dir_, "floor": floor,
                                       "door": door, "zone": zone, "speed": speed,
                                       "safety": 0, "lock": 0, "overload": 0, "fault": 0}})


def hand_made_trace() -> list[str]:
    """At landing 1: a door cycle (opens in 2.5 s, closes in 3 s), a trip 1 -> 3, a door
    cycle at 3 with one reopen. Controller polled every 0.5 s; inputs as they change."""
    lines = [json.dumps(HEADER),
             '{"t": 0.0, "di": {"door_closed": 1, "door_lock": 1, "zone_up": 1, '
             '"zone_down": 1, "presence": 0, "alarm_button": 0, "safety_ok": 1, '
             '"mains_ok": 1, "run": 0}}']
    t = 0.0
    state = [(0.0, "1", 5)]
    # door cycle at 1: opening 1.0-3.5, open until 8.0, closing 8.0-11.0, locked 11.3
    state += [(1.0, "1", 3), (3.5, "1", 4), (8.0, "1", 1), (11.0, "1", 2), (11.5, "1", 5)]
    di = {1.0: {"door_lock": 0}, 1.1: {"door_closed": 0}, 4.0: {"presence": 1},
          11.0: {"door_closed": 1}, 11.3: {"door_lock": 1}}
    # trip 1 -> 3 from 13.0 to 21.0
    di.update({13.0: {"run": 1}, 14.0: {"zone_up": 0, "zone_down": 0},
               16.5: {"zone_up": 1, "zone_down": 1}, 17.0: {"zone_up": 0, "zone_down": 0},
               20.0: {"zone_up": 1, "zone_down": 1}, 21.0: {"run": 0}})
    # door cycle at 3 with a reopen: opening 22-24.5, open, closing 28-29.5 (reopen),
    # opening 29.5-30.5, open, closing 33-36, closed 36, locked 36.5
    state += [(22.0, "3", 3), (24.5, "3", 4), (28.0, "3", 1), (29.5, "3", 3), (30.5, "3", 4),
              (33.0, "3", 1), (36.0, "3", 2), (36.5, "3", 5)]
    di.update({21.8: {"door_lock": 0}, 22.1: {"door_closed": 0}, 26.0: {"presence": 0},
               36.0: {"door_closed": 1}, 36.3: {"door_lock": 1}})
    records: list[tuple[float, str]] = [(k, json.dumps({"t": k, "di": v})) for k, v in di.items()]
    while t <= 40.0:
        floor, door = next((f, d) for (ts, f, d) in reversed(state) if ts <= t)
        running = 13.0 <= t < 21.0
        zone = 0 if running and not (16.5 <= t < 17.0 or t >= 20.0) else 1
        if running and 16.5 <= t < 17.0:
            floor = "2"
        if running and t >= 20.0:
            floor = "3"
        records.append((t, ctl(t, floor, door, run=int(running), dir_=1 if running else 0,
                               zone=zone, speed=1.5 if 14.0 <= t < 20.0 else 0.0)))
        t = round(t + 0.5, 3)
    records.sort(key=lambda r: r[0])
    return lines + [r for _, r in records]


def replay(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "liftwatch.agent.cli", "replay", str(path),
                           *extra], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_replay_prints_door_cycles_and_trips(tmp_path: Path) -> None:
    trace = tmp_path / "hand.jsonl"
    trace.write_text("\n".join(hand_made_trace()) + "\n")
    out = replay(trace)
    assert out.returncode == 0, out.stderr
    recs = [json.loads(line) for line in out.stdout.splitlines()]
    trips = [r for r in recs if r["type"] == "trip"]
    doors = [r for r in recs if r["type"] == "door"]
    events = [r for r in recs if r["type"] == "event"]
    assert events == []
    assert len(trips) == 1
    assert (trips[0]["from"], trips[0]["to"]) == ("1", "3")
    assert abs(trips[0]["t_start"] - 13.0) <= 0.5 and abs(trips[0]["t_end"] - 21.0) <= 0.5
    assert [d["floor"] for d in doors] == ["1", "3"]
    assert abs(doors[0]["open_s"] - 2.5) <= 0.5 and abs(doors[0]["close_s"] - 3.0) <= 0.5
    assert doors[0]["reopens"] == 0 and doors[1]["reopens"] == 1
    assert abs(doors[1]["close_s"] - 3.0) <= 0.5
    assert [r["t"] for r in recs] == sorted(r["t"] for r in recs)


def test_replay_reports_bad_lines_by_number_and_finishes(tmp_path: Path) -> None:
    lines = hand_made_trace()
    lines.insert(5, "{this is not json")
    lines.insert(9, '{"t": 3.0, "di": {"door_closed": 7}}')
    lines.insert(14, '{"t": 0.1, "acc": [[1, 2]]}')
    trace = tmp_path / "bad.jsonl"
    trace.write_text("\n".join(lines) + "\n")
    out = replay(trace, "--out", str(tmp_path / "out.jsonl"))
    assert out.returncode == 0, out.stderr
    for n in (6, 10, 15):
        assert f"line {n}:" in out.stderr
    assert "3 malformed" in out.stderr
    recs = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(r["from"], r["to"]) for r in recs if r["type"] == "trip"] == [("1", "3")]


def test_replay_of_the_entrapment_example_in_text(example_traces: Path) -> None:
    """The README's example command."""
    out = replay(example_traces / "entrapment_between_floors.jsonl.gz", "--format", "text")
    assert out.returncode == 0, out.stderr
    assert "EVENT entrapment_nonlevel RAISED" in out.stdout
    assert "EVENT entrapment_nonlevel CLEARED" in out.stdout


def test_replay_refuses_a_missing_file_clearly(tmp_path: Path) -> None:
    out = replay(tmp_path / "nope.jsonl")
    assert out.returncode == 2
    assert "nope.jsonl" in out.stderr and "Traceback" not in out.stderr
