"""Technician tools on real files and simulated backends: calibrate, outbox, events, monitor."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from liftwatch.agent.cli import main
from liftwatch.agent.config import load_config
from liftwatch.agent.tools import calibrate, monitor
from liftwatch.agent.tools.events import parse_since
from liftwatch.buffer.journal import EventJournal
from liftwatch.buffer.outbox import Outbox
from liftwatch.drivers.simchips import SimI2C, make_sim_chip
from liftwatch.drivers.simfeed import SimFeed, socket_path

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parent.parent

CONFIG = """# Terminal of test lift 9 (comments must survive calibrate)
[terminal]
lift_id = "310104-0009999"

[lift]
landings = ["1", "2", "3"]
landing_heights_m = [0.0, 3.0, 6.0]

[inputs]
backend = "simulated"
sim_feed = "{feed}"

[inputs.door_closed]
pin = "D17"

[accel]
chip = "adxl345"   # on the car roof
backend = "simulated"
sim_feed = "{feed}"
orientation = "auto"
rotation = [
    [1.0, 0.0, 0.0],
    [0.0, 1.0, 0.0],  # identity until calibrated
    [0.0, 0.0, 1.0],
]

[controller]
enabled = false

[uplink]
broker = "127.0.0.1"
tls = false

[storage]
data_dir = "{data}"
journal_max_events = 100
"""


def write_config(tmp: Path) -> Path:
    p = tmp / "terminal.toml"
    p.write_text(CONFIG.format(feed=tmp / "feed", data=tmp / "data"))
    p.chmod(0o640)
    return p


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    got = capsys.readouterr()
    return code, got.out, got.err


# ---------------------------------------------------------------- calibrate

def tilted_bus(deg_about_y: float, deg_about_x: float = 0.0) -> SimI2C:
    """A simulated ADXL345 at rest, mounted tilted: gravity seen in its own axes."""
    ay, ax = math.radians(deg_about_y), math.radians(deg_about_x)
    g = (math.sin(ay), -math.sin(ax) * math.cos(ay), math.cos(ax) * math.cos(ay))
    chip = make_sim_chip("adxl345", lambda _i, _t: g, address=0x53, noise_lsb=1.0)
    return SimI2C(chip)


def calibrate_args(cfg: Path, *extra: str) -> argparse.Namespace:
    return argparse.Namespace(config=str(cfg), backend=None, sim_dir=None, seconds=1.0,
                              dry_run="--dry-run" in extra)


def test_calibrate_writes_the_rotation_of_a_chip_tilted_by_a_known_angle(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path)
    before = path.read_text()
    code = calibrate.run(calibrate_args(path), i2c=tilted_bus(30.0, 10.0))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "sensor z axis is 31.5 deg from vertical" in out  # acos(cos 30° cos 10°)
    cfg = load_config(path)
    assert cfg.accel.orientation == "fixed"
    r = np.asarray(cfg.accel.rotation)
    g = np.array([math.sin(math.radians(30)), -math.sin(math.radians(10)) * math.cos(
        math.radians(30)), math.cos(math.radians(10)) * math.cos(math.radians(30))])
    np.testing.assert_allclose(r @ g, [0.0, 0.0, 1.0], atol=0.01)  # gravity maps to car +z
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-3)
    text = path.read_text()
    assert "# Terminal of test lift 9" in text and 'chip = "adxl345"   # on the car roof' in text
    assert "identity until calibrated" not in text  # the old multi-line rotation is gone
    assert text.count("rotation =") == 1 and text.count("orientation =") == 1
    assert (tmp_path / "terminal.toml.bak").read_text() == before
    assert os.stat(path).st_mode & 0o777 == 0o640
    old, new = tomllib.loads(before), tomllib.loads(text)
    for d in (old, new):
        d["accel"].pop("rotation"), d["accel"].pop("orientation")
    assert old == new  # nothing else changed
    assert not list(tmp_path.glob(".terminal.toml.*.tmp"))


def test_calibrate_dry_run_writes_nothing(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path)
    before = path.read_text()
    code = calibrate.run(calibrate_args(path, "--dry-run"), i2c=tilted_bus(0.0))
    out = capsys.readouterr().out
    assert code == 0
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("rotation = "))
    shown = tomllib.loads(line.strip())["rotation"]  # the line is TOML, ready to paste
    np.testing.assert_allclose(shown, np.eye(3), atol=0.01)  # level mount: identity
    assert "dry run: nothing written" in out
    assert path.read_text() == before and not (tmp_path / "terminal.toml.bak").exists()


def test_calibrate_refuses_a_moving_car_and_implausible_gravity(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path)
    before = path.read_text()
    shaking = SimI2C(make_sim_chip("adxl345", lambda i, _t: (0.0, 0.0, 1.0 + 0.1 * (-1) ** i),
                                   address=0x53))
    assert calibrate.run(calibrate_args(path), i2c=shaking) == 1
    assert "the car was not still" in capsys.readouterr().err
    heavy = SimI2C(make_sim_chip("adxl345", lambda _i, _t: (0.0, 0.0, 1.3), address=0x53,
                                 noise_lsb=1.0))
    assert calibrate.run(calibrate_args(path), i2c=heavy) == 1
    assert "gravity measures 1.30" in capsys.readouterr().err
    assert calibrate.run(calibrate_args(path), i2c=SimI2C()) == 1  # no chip at 0x53
    got = capsys.readouterr()
    assert "no accelerometer: adxl345 on I2C bus 1 address 0x53 cannot be opened: no answer" \
        in got.err
    assert "measuring" not in got.out  # refused before the measurement, not after it
    assert path.read_text() == before


def test_calibrate_without_an_i2c_bus_says_so_at_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 18 noise: it waited 5 s, said "retrying every 5 s" and exited."""
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('chip = "adxl345"',
                                             'chip = "adxl345"\ni2c_bus = 97'))
    t0 = time.monotonic()
    code, out, err = cli(capsys, "calibrate", "--config", str(path), "--backend", "real")
    assert code == 1
    assert time.monotonic() - t0 < 3.0  # not the 5 s measurement window
    assert "no accelerometer: adxl345 on I2C bus 97 address 0x53 cannot be opened: no I2C " \
        "bus 97 on this machine: /dev/i2c-97 does not exist" in err
    assert "retrying" not in out + err and "measuring" not in out


def test_edit_accel_table_inserts_when_absent_and_keeps_crlf() -> None:
    rot = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    text = '[accel]\r\nchip = "lis3dh"\r\n\r\n[uplink]\r\nbroker = "x"\r\n'
    out = calibrate.edit_accel_table(text, rot)
    assert out.startswith('[accel]\r\nchip = "lis3dh"\r\norientation = "fixed"\r\nrotation = ')
    assert tomllib.loads(out)["uplink"] == {"broker": "x"}
    out = calibrate.edit_accel_table('[uplink]\nbroker = "x"', rot)
    assert tomllib.loads(out)["accel"] == {"orientation": "fixed", "rotation": rot}


def test_calibrate_cli_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path)
    code, _, err = cli(capsys, "calibrate", "--config", str(path), "--seconds", "0.1")
    assert code == 2 and "--seconds must be 1..600" in err
    path.write_text(path.read_text().replace('chip = "adxl345"', 'chip = "none"'))
    code, _, err = cli(capsys, "calibrate", "--config", str(path))
    assert code == 2 and "no accelerometer to calibrate" in err


# ---------------------------------------------------------------- outbox

def test_outbox_lists_lanes_and_exports_pending_while_the_agent_holds_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path)
    code, out, _ = cli(capsys, "outbox", "--config", str(path))
    assert code == 0 and "nothing waiting" in out
    ob = Outbox(tmp_path / "data" / "outbox", 1 << 20, cursor_flush_s=0.0)
    try:
        k_alarm = ob.append("alarm", "lift/x/event", b'{"code":"entrapment","id":"a1"}')
        ob.append("event", "lift/x/event", b'{"code":"door_fault","id":"e2"}')
        keys = ob.append_many([("record", "lift/x/trip", b'{"n":%d}' % i) for i in range(3)])
        ob.append("record", "lift/x/stats", b"\x00\xffnot json")
        ob.ack(keys[0])
        ob.ack(k_alarm)
        ob.flush()  # the agent saves its cursors
        # the agent still holds the outbox: the tool reads the files without the lock
        code, out, _ = cli(capsys, "outbox", "--config", str(path))
        assert code == 0
        lines = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln.split()}
        assert lines["alarm"][1:3] == ["0", "0"]
        assert lines["event"][1] == "1"
        assert lines["record"][1] == "3"  # 2 trips + 1 stats waiting
        export = tmp_path / "pending.jsonl"
        code, out, _ = cli(capsys, "outbox", "--config", str(path), "--export", str(export))
        assert code == 0 and "4 waiting message(s)" in out
        rows = [json.loads(ln) for ln in export.read_text().splitlines()]
        assert [r["lane"] for r in rows] == ["event", "record", "record", "record"]
        assert rows[0]["payload"] == {"code": "door_fault", "id": "e2"}
        assert [r["payload"] for r in rows[1:3]] == [{"n": 1}, {"n": 2}]
        assert rows[3]["topic"] == "lift/x/stats" and "payload_b64" in rows[3]
        assert all(time.time() - r["created"] < 60 for r in rows)
    finally:
        ob.close()


def test_outbox_with_damaged_segment_and_cursors_still_reports(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path)
    with Outbox(tmp_path / "data" / "outbox", 1 << 20) as ob:
        for i in range(3):
            ob.append("event", "lift/x/event", b'{"i":%d}' % i)
    seg = next((tmp_path / "data" / "outbox" / "event").glob("*.seg"))
    data = bytearray(seg.read_bytes())
    data[40] ^= 0xFF  # garbage inside the first record
    seg.write_bytes(bytes(data))
    (tmp_path / "data" / "outbox" / "cursors.json").write_text("{not json")
    code, out, _ = cli(capsys, "outbox", "--config", str(path))
    assert code == 0
    event = next(ln.split() for ln in out.splitlines() if ln.startswith("event"))
    assert event[1] == "2"  # the two intact messages are still counted
    assert "damaged byte(s)" in out and "cursors.json unreadable" in out


# ---------------------------------------------------------------- events

def test_events_filters_and_exports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path)
    code, out, _ = cli(capsys, "events", "--config", str(path))
    assert code == 0 and "no event journal" in out
    now_ms = int(time.time() * 1000)
    j = EventJournal(tmp_path / "data" / "journal", 100)
    j.add({"type": "event", "code": "entrapment_nonlevel", "state": "raised", "id": "b1-1",
           "sev": "alarm", "floor": "2", "ts": now_ms - 7_200_000})
    j.add({"type": "event", "code": "door_reopen_repeated", "state": "raised", "id": "b1-2",
           "sev": "fault", "ts": now_ms - 60_000, "detail": {"reopens": 4}})
    j.add({"type": "event", "code": "entrapment_nonlevel", "state": "cleared", "id": "b1-1",
           "sev": "alarm", "duration_s": 312.5, "ts": now_ms - 30_000})
    j.add({"type": "event", "code": "entrapment_level", "state": "raised", "id": "b1-3",
           "sev": "alarm", "floor": "1", "ts": now_ms - 20_000, "replay": True})
    j.close()
    code, out, _ = cli(capsys, "events", "--config", str(path))
    assert code == 0 and out.strip().endswith("4 event(s)")
    assert "after 312.5 s" in out and '{"reopens":4}' in out
    lines = out.splitlines()
    assert [ln for ln in lines if "REPLAYED from a trace" in ln] == \
        [ln for ln in lines if "entrapment_level" in ln]
    code, out, _ = cli(capsys, "events", "--config", str(path), "--code", "entrapment",
                       "--since", "1h")
    # a prefix: both entrapment codes
    assert out.strip().splitlines()[-1].startswith(
        "2 event(s) of code entrapment_level, entrapment_nonlevel since")
    assert "cleared" in out and "entrapment_level" in out and "door_reopen" not in out
    code, out, _ = cli(capsys, "events", "--config", str(path), "--code",
                       "entrapment_nonlevel", "--limit", "1")
    assert code == 0 and "cleared" in out and "entrapment_level " not in out
    assert out.strip().splitlines()[-1] == "1 event(s) of code entrapment_nonlevel"
    # a code that is none of the catalogue's: an error naming them, not "0 event(s)"
    code, out, err = cli(capsys, "events", "--config", str(path), "--code", "entrapped")
    assert code == 2 and out == ""
    assert "no event code is or starts with 'entrapped'" in err and "alarm_button" in err
    export = tmp_path / "events.jsonl"
    code, out, _ = cli(capsys, "events", "--config", str(path), "--code", "entrapment",
                       "--export", str(export))
    rows = [json.loads(ln) for ln in export.read_text().splitlines()]
    assert code == 0 and [r["state"] for r in rows] == ["raised", "cleared", "raised"]
    assert rows[0]["ts"] == now_ms - 7_200_000
    code, _, err = cli(capsys, "events", "--config", str(path), "--since", "yesterday")
    assert code == 2 and "--since: expected an ISO time" in err


def test_parse_since_forms() -> None:
    now = 1_800_000_000.0
    assert parse_since("30m", now) == int((now - 1800) * 1000)
    utc3 = int(datetime(2026, 11, 26, 3, 0, tzinfo=UTC).timestamp() * 1000)
    assert parse_since("2026-11-26T03:00", now) == utc3  # no zone: UTC
    assert parse_since("2026-11-26T03:00Z", now) == utc3
    assert parse_since("2026-11-26T03:00+08:00", now) == utc3 - 8 * 3_600_000
    assert parse_since(str(utc3), now) == utc3


def test_events_survive_a_corrupt_journal_file(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path)
    j = EventJournal(tmp_path / "data" / "journal", 100, generation_size=10)
    for i in range(15):
        j.add({"type": "event", "code": "door_fault", "state": "raised", "id": f"e{i}"})
    j.close()
    (tmp_path / "data" / "journal" / "gen-00000001.json").write_text("{broken")
    code, out, err = cli(capsys, "events", "--config", str(path))
    assert code == 0 and out.strip().endswith("5 event(s)")
    assert "quarantine/gen-00000001.json" in err


# ---------------------------------------------------------------- monitor

def test_monitor_shows_state_inputs_and_an_open_event(tmp_path: Path) -> None:
    """Simulated inputs and chip (config), the alarm button held: the event shows open."""
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace(
        "[accel]", '[inputs.alarm_button]\npin = "D25"\n\n[accel]'))
    cfg = load_config(path)
    out = io.StringIO()

    async def main() -> Any:
        async def passenger() -> None:
            await _wait_socket(tmp_path / "feed")
            feed = SimFeed(tmp_path / "feed")
            feed.set_inputs({"door_closed": 1, "alarm_button": 0}, cfg.inputs)
            await asyncio.sleep(0.4)
            feed.set_inputs({"alarm_button": 1}, cfg.inputs)
            feed.close()

        task = asyncio.create_task(passenger())
        view = await monitor.monitor(cfg, out, duration=2.2, interval=0.5)
        await task
        return view

    view = asyncio.run(main())
    assert out.getvalue().count("liftwatch monitor") >= 4  # redrawn every 0.5 s
    assert "\x1b[" not in out.getvalue()  # not a tty: plain frames, no ANSI codes
    text = out.getvalue().split("liftwatch monitor")[-1]  # the last frame
    assert "310104-0009999" in text and "mode ?" in text
    assert "inputs   door_closed=1  alarm_button=1" in text
    assert "ctl      not linked" in text
    assert "accel    adxl345 ok  400 Hz" in text
    assert "open events (1):\n  alarm_button" in text
    assert "door closed" in text
    assert any(e["code"] == "alarm_button" for e in view.open_events.values())
    assert view.pipeline.rejected == 0


def test_monitor_once_with_everything_simulated_shows_the_controller(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("enabled = false", "enabled = true"))
    cfg = load_config(path)
    out = io.StringIO()

    async def main() -> None:
        async def controller() -> None:
            await _wait_socket(tmp_path / "feed")
            feed = SimFeed(tmp_path / "feed")
            feed.set_controller({"mode": 1, "run": 0, "dir": 0, "floor": "2", "door": 2,
                                 "zone": 1, "speed": 0.0, "safety": 0})
            feed.close()

        task = asyncio.create_task(controller())
        await monitor.monitor(cfg, out, once=True, settle_s=1.0, backend="simulated", ansi=True)
        await task

    asyncio.run(main())
    frame = out.getvalue()
    assert frame.startswith("\x1b[H\x1b[2J")  # on a terminal: home, clear, redraw in place
    assert frame.count("liftwatch monitor") == 1
    assert "ctl      mode=1 run=0 dir=0 floor=2 door=2" in frame
    assert "floor 2" in frame and "mode normal" in frame
    code, _, err = cli(capsys, "monitor", "--config", str(path), "--duration", "-1")
    assert code == 2 and "--duration must be > 0 s" in err


async def _wait_socket(directory: Path, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not socket_path(directory).exists():
        if time.monotonic() > deadline:
            raise AssertionError("the simulation feed never opened")
        await asyncio.sleep(0.02)
