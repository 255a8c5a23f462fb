"""Records a technician reads (issue 18, item 5 and its noise): events and trips in local
time with the zone named, "between 6 and 7" for a car stopped between floors, trip numbers
that ``plot --trip`` takes, door cycles that say what is known; and the config mistakes
that gave noise instead of one clear line."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from liftwatch.agent.cli import main
from liftwatch.agent.replay import describe, door_text
from liftwatch.agent.tools import plot
from liftwatch.agent.tools.events import parse_since
from liftwatch.buffer.journal import EventJournal

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parent.parent
TRACES = REPO / "hil_tests" / "traces"

CONFIG = """[terminal]
lift_id = "310104-0009999"

[lift]
landings = {landings}
landing_heights_m = {heights}

[inputs]
backend = "simulated"
sim_feed = "{feed}"

[{door}]
pin = "D17"

[accel]
chip = "lis3dh"
address = 0x19
backend = "simulated"
sim_feed = "{feed}"

[controller]
enabled = false

[uplink]
broker = "127.0.0.1"
port = 1
tls = false

[storage]
data_dir = "{data}"
"""


def write_config(tmp: Path, *, landings: str = '["5", "6", "7", "8"]',
                 door: str = "inputs.door_closed") -> Path:
    p = tmp / "terminal.toml"
    p.write_text(CONFIG.format(landings=landings, heights="[0.0, 3.0, 6.0, 9.0]", door=door,
                               feed=tmp / "feed", data=tmp / "data"))
    p.chmod(0o640)
    return p


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    got = capsys.readouterr()
    return code, got.out, got.err


@pytest.fixture
def shanghai(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# 2026-11-26 03:00:00 UTC = 11:00:00 in Shanghai (CST, UTC+8, no daylight saving)
T_MS = 1795662000000


def test_events_are_listed_in_local_time_with_the_zone_and_between_floors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], shanghai: None) -> None:
    path = write_config(tmp_path)
    j = EventJournal(tmp_path / "data" / "journal", 100)
    j.add({"type": "event", "code": "entrapment_nonlevel", "state": "raised", "id": "3-1",
           "sev": "alarm", "floor": "6", "between": ["6", "7"], "ts": T_MS})
    j.add({"type": "event", "code": "door_fault", "state": "raised", "id": "3-2",
           "sev": "fault", "floor": "8", "ts": T_MS + 60_000})
    j.close()
    code, out, _ = cli(capsys, "events", "--config", str(path))
    assert code == 0
    ent, door = out.splitlines()[:2]
    assert ent.startswith("2026-11-26 11:00:00 CST  entrapment_nonlevel")
    assert "between 6 and 7" in ent and "floor 6" not in ent
    assert door.startswith("2026-11-26 11:01:00 CST  door_fault") and "floor 8" in door
    code, out, _ = cli(capsys, "events", "--config", str(path), "--utc")
    assert out.splitlines()[0].startswith("2026-11-26 03:00:00 UTC  entrapment_nonlevel")
    # --since without a zone is in the listing's zone
    code, out, _ = cli(capsys, "events", "--config", str(path), "--since", "2026-11-26T11:00:30")
    assert out.splitlines()[0].startswith("2026-11-26 11:01:00 CST  door_fault")
    assert out.strip().endswith("1 event(s) since 2026-11-26 11:00:30 CST")
    assert parse_since("2026-11-26T11:00", local=True) == T_MS
    assert parse_since("2026-11-26T03:00") == T_MS  # the function's default: UTC


def test_replay_text_numbers_trips_as_plot_takes_them_in_local_time(
        shanghai: None) -> None:
    trace = TRACES / "normal_day.jsonl.gz"
    r = subprocess.run([sys.executable, "-m", "liftwatch.agent.cli", "replay", str(trace),
                        "--format", "text", "--quiet"], cwd=REPO, capture_output=True,
                       text=True, timeout=60, env={"TZ": "Asia/Shanghai", "PATH": "/usr/bin"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "started 2026-11-23 16:00:00 CST; times in local time" in lines[0]
    trips = [ln for ln in lines if "  trip " in ln]
    assert trips[0].startswith("2026-11-23 16:00:35 CST   0:35.36  trip 1: 7 -> B1: ")
    assert [ln.split("  trip ")[1].split(":")[0] for ln in trips] == \
        [str(n) for n in range(1, len(trips) + 1)]
    # trip 3 of the listing is plot's trip 3
    route = trips[2].split("  trip 3: ")[1].split(":")[0]
    trip, _, _ = plot.find_trip(trace, 3)
    assert route == f"{trip['from']} -> {trip['to']}" == "6 -> 12"


def test_a_door_cycle_says_what_is_known() -> None:
    """Sensors only: no floor yet and a door contact alone (issue 18: "door at None:
    open -, close -")."""
    rec = {"t": 12.4, "type": "door", "floor": None, "open_s": None, "close_s": None,
           "dwell_s": 8.8, "reopens": 0, "complete": True}
    line = describe(rec)
    assert "None" not in line and " -," not in line
    assert door_text(rec) == ("door cycle at a floor not known yet: open 8.8 s (a door "
                              "contact alone gives no opening or closing times), reopens 0")
    rec.update(floor="3", open_s=2.9, close_s=3.0)
    assert door_text(rec) == ("door cycle at floor 3: opening 2.9 s, closing 3.0 s, "
                              "open 8.8 s, reopens 0")


# ---------------------------------------------------------------- config noise

def test_integer_landing_labels_are_one_problem_naming_them_all(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, landings="[5, 6, 7, 8]")
    code, out, err = cli(capsys, "config", "check", str(path))
    text = out + err
    assert code == 2
    lines = [ln for ln in text.splitlines() if "lift.landings" in ln]
    assert lines == [f"{path}: lift.landings[0, 1, 2, 3]: expected a string for each item "
                     '(in quotes: "5", not 5), found [5, 6, 7, 8]'], text


def test_a_door_input_suggests_the_door_contact_not_the_lock(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, door="inputs.door")
    code, out, err = cli(capsys, "config", "check", str(path))
    assert code == 2
    assert "inputs.door: expected a key of [inputs], found an unknown key (did you mean " \
        "door_closed? door_lock is another circuit, the lock's)" in out + err


def test_config_show_writes_the_i2c_address_in_hex(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import tomllib

    path = write_config(tmp_path)
    code, out, _ = cli(capsys, "config", "show", str(path))
    assert code == 0
    assert "address = 0x19" in out.split("[accel]")[1].split("[")[0]
    assert tomllib.loads(out)["accel"]["address"] == 0x19  # still reads back the same
    code, out, _ = cli(capsys, "config", "show", "--json", str(path))
    assert '"address": 25' in out  # JSON has no hex


def test_check_says_each_device_problem_once(tmp_path: Path) -> None:
    """The drivers' warnings repeated the table's rows (issue 18 noise)."""
    path = write_config(tmp_path)
    r = subprocess.run([sys.executable, "-m", "liftwatch.agent.cli", "check", "--config",
                        str(path), "--backend", "real", "--watch", "0.5", "--broker-timeout",
                        "1"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "input door_closed  FAIL  pin D17 absent" in r.stdout
    assert "does not exist" not in r.stderr and "retrying" not in r.stderr, r.stderr
    assert r.stdout.count("pin D17 does not exist") == 1


# ---------------------------------------------------------------- the plot's position panel

@pytest.fixture(scope="module")
def leveled_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seven trips of the simulated lift at 1024 counts/g: by the sixth the terminal has
    learned its leveling sensors' edges and measures the stop's leveling error."""
    import random

    sys.path.insert(0, str(REPO / "hil_tests"))
    from liftsim import LiftSim, SimLift
    from liftwatch.drivers.trace import TraceHeader, TraceWriter

    lift = SimLift(lsb_per_g=1024)
    sim = LiftSim(lift, seed=2, start_floor=1)
    rng = random.Random(11)
    sim.wait(2.0)
    cur = "1"
    for _ in range(7):
        cur = rng.choice([f for f in lift.landings if f != cur])
        sim.trip(cur, level_error_m=0.004)
        sim.wait(3.5)
    h = lift.header("310104-0009999")
    path = tmp_path_factory.mktemp("level") / "level.jsonl"
    w = TraceWriter(path, TraceHeader(start="2026-11-26T03:00:00Z", lift=h["lift"],
                                      accel=h["accel"]))
    for t, kind, data in sim.drain():
        w.write(t, kind, data)
    w.close()
    return path


def test_the_plot_shows_where_the_car_stopped_and_its_leveling_error(
        leveled_trace: Path, tmp_path: Path, shanghai: None) -> None:
    from matplotlib.image import imread

    trip, records, accel, place = plot.locate_trip(leveled_trace, 6)
    assert place.lift_id == "310104-0009999" and place.landings[0] == "B1"
    assert place.stop_error_mm is not None and place.stop_uncertainty_mm is not None
    series = plot.trip_series(trip, records, accel, None, 6)
    p, anchor = plot.position(series, place)
    dur = float(trip["t_end"]) - float(trip["t_start"])
    end = float(np.interp(dur, series.t, p))
    assert anchor == "stop"
    assert end == pytest.approx(place.height_of(trip["to"]) + place.stop_error_mm / 1000)
    # it left the landing it came from, to within the integration's drift
    assert float(np.interp(0.0, series.t, p)) == pytest.approx(
        place.height_of(trip["from"]), abs=0.15)
    assert plot.stop_note(trip, place) == (
        f"stop at {trip['to']}\nleveling error {place.stop_error_mm:+.1f} ± "
        f"{place.stop_uncertainty_mm:.0f} mm")
    title = plot.title_of(trip, 6, place)
    assert title.startswith("lift 310104-0009999  ·  2026-11-26 11:0")
    assert " CST\ntrip 6: " in title
    out = tmp_path / "trip6.png"
    plot.render(series, out, (900, 700), place=place)
    assert imread(out).shape[:2] == (700, 900)


def test_a_stop_between_floors_has_no_leveling_error() -> None:
    trip = {"from": "2", "to": "6", "to_between": ["6", "7"], "emergency_stop": True,
            "level": False, "t_start": 0.0, "t_end": 9.0}
    assert plot.stop_note(trip, plot.TripPlace()) == (
        "stop: stopped between 6 and 7\nleveling error: none (not at a landing)")
