"""Live recording: LiveSource on the simulated backends and ``liftwatch record`` end to end.

The CLI test runs ``liftwatch record`` as its own process on simulated backends and
plays a short lift scenario into it through the simulation feed socket (door cycle at
landing 1, a trip to landing 2, door cycle there), as the HIL rig does; the trace it
writes is read back with TraceReader and replayed through the pipeline.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from liftwatch.agent.config import load_config
from liftwatch.agent.live_source import LiveSource
from liftwatch.agent.tools.record import record
from liftwatch.drivers.simfeed import SimFeed, socket_path
from liftwatch.drivers.trace import Record, TraceReader

CONFIG = """
[terminal]
lift_id = "310104-0001234"

[lift]
landings = ["B1", "1", "2", "3"]
landing_heights_m = [0.0, 3.6, 6.6, 9.6]
rated_speed = 1.0
door_zone_m = 0.2

[inputs]
sample_hz = 200

[inputs.door_closed]
pin = "D17"
pull = "up"
active_low = true

[inputs.door_lock]
pin = "D27"
pull = "up"
active_low = true

[inputs.zone_up]
pin = "D22"

[inputs.zone_down]
pin = "D23"

[inputs.presence]
pin = "D24"
debounce_ms = 200

[inputs.alarm_button]
pin = "D25"
pull = "up"
active_low = true

[accel]
chip = "{chip}"
address = {address}
rate_hz = 400
range_g = 4

[controller]
enabled = {controller}
poll_interval_s = 0.2

[uplink]
broker = "127.0.0.1"

[storage]
data_dir = "{data}"
"""


def write_config(tmp_path: Path, chip: str = "adxl345", controller: bool = True) -> Path:
    address = {"adxl345": "0x53", "lis3dh": "0x18", "none": "0x53"}[chip]
    p = tmp_path / "terminal.toml"
    p.write_text(CONFIG.format(chip=chip, address=address, data=tmp_path / "data",
                               controller=str(controller).lower()))
    return p


IDLE = {"door_closed": 1, "door_lock": 1, "zone_up": 1, "zone_down": 1, "presence": 0,
        "alarm_button": 0}


@pytest.mark.timeout(60)
def test_live_source_yields_time_ordered_records_from_simulated_inputs(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, "lis3dh", controller=False))

    async def main() -> tuple[list[Record], dict[str, Any], LiveSource]:
        src = LiveSource(cfg, backend="simulated", sim_noise_lsb=0.0)
        await src.start()
        src._pins.set_levels({"D17": 0, "D27": 0})  # contacts made (active low)
        src.sim_source.push([(0.0, 0.0, 1.5 + k / 1000) for k in range(600)])
        recs: list[Record] = []

        async def stop_later() -> None:
            await asyncio.sleep(0.6)
            src._pins.set_level("D17", 1)  # door opens
            await asyncio.sleep(0.6)
            src.stop()

        task = asyncio.create_task(stop_later())
        async for rec in src:
            recs.append(rec)
        await task
        health = src.health()
        await src.close()
        return recs, health, src

    recs, health, src = asyncio.run(main())
    ts = [r.t for r in recs]
    assert ts == sorted(ts) and health["late_records"] == 0
    # reads 60 ms apart at 400 Hz (24 of the FIFO's 32 samples): the longest gap is shown
    assert health["accel"]["read_gap_max_ms"] >= 55
    di = [r for r in recs if r.kind == "di"]
    assert set(di[0].data) == set(cfg.inputs)  # the first di line names every input
    assert di[0].data["door_closed"] == 1 and di[0].data["zone_up"] == 0
    assert di[-1].data == {"door_closed": 0} and 0.55 < di[-1].t < 0.8
    acc = [s for r in recs if r.kind == "acc" for s in r.data]
    assert src.accel_header() == {"fs": 400.0, "lsb_per_g": 500.0,
                                  "axes": "xyz"}
    # The queued samples come out in order and scaled (LIS3DH ±4 g HR: 500 counts/g).
    z = [s[2] for s in acc]
    first = z.index(750)
    assert set(z[:first]) <= {500}  # at rest until the samples were queued
    assert z[first:] == [round((1.5 + k / 1000) * 500) for k in range(len(z) - first)]
    assert len(z) - first > 300
    # No sample was lost while acquiring: no FIFO overrun, and the FIFO was drained at
    # the stop. (What the chip makes after that, until close() puts it in standby, it
    # overwrites in its FIFO, as a real one does: not acquisition's loss.)
    assert health["accel"]["overruns"] == 0
    chip = src.sim_chip
    assert len(acc) == chip.index - chip.lost - len(chip.fifo)  # every other sample made
    assert health["accel"]["state"] == "ok" and health["inputs"]["ok"]
    assert not any(r.kind == "ctl" for r in recs)


@pytest.mark.timeout(60)
def test_a_full_garbage_collection_during_acquisition_loses_no_sample(tmp_path: Path) -> None:
    """A long-lived process holds many objects; a full collection of them holds the GIL
    for longer than the FIFO lasts (this is how CI once saw an overrun here). What is
    alive when acquisition starts is frozen out of the collector's sight, so a full
    collection during acquisition is short and the reader keeps its pace."""
    cfg = load_config(write_config(tmp_path, "adxl345", controller=False))
    heap = [{"k": [i, str(i)]} for i in range(800_000)]
    t0 = time.perf_counter()
    gc.collect()
    unfrozen_s = time.perf_counter() - t0

    async def main() -> tuple[float, dict[str, Any]]:
        src = LiveSource(cfg, backend="simulated")
        await src.start()
        await asyncio.sleep(0.4)
        t1 = time.perf_counter()
        gc.collect()  # in the loop's thread, holding the GIL, as an automatic one does
        during_s = time.perf_counter() - t1
        await asyncio.sleep(0.4)
        src.stop()
        async for _ in src:
            pass
        health = src.health()
        await src.close()
        return during_s, health

    try:
        during_s, health = asyncio.run(main())
    finally:
        gc.unfreeze()
        del heap
    assert unfrozen_s > 0.1, "the heap is too small to show anything on this machine"
    assert during_s < 0.05
    assert health["accel"]["overruns"] == 0 and health["accel"]["reads"] >= 10


@pytest.mark.timeout(60)
def test_record_refuses_bad_arguments_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(write_config(tmp_path).read_text().replace('rate_hz = 400', 'rate_hz = 500'))
    out = tmp_path / "t.jsonl"
    env = dict(os.environ, PYTHONPATH="")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "liftwatch.agent.cli", "record", *args],
                              capture_output=True, text=True, timeout=30, env=env,
                              cwd=tmp_path)

    r = cli("--config", str(bad), "--out", str(out))
    assert r.returncode == 2 and "accel.rate_hz" in r.stderr and not out.exists()
    out.write_text("keep me")
    r = cli("--config", str(write_config(tmp_path)), "--out", str(out), "--duration", "1")
    assert r.returncode == 2 and "exists (use --force" in r.stderr
    assert out.read_text() == "keep me"
    r = cli("--config", str(write_config(tmp_path)), "--out", str(out), "--duration", "-1")
    assert r.returncode == 2 and "--duration must be > 0" in r.stderr


def trip_samples(fs: float, distance: float, a: float = 1.0, v: float = 1.0) -> list[list[float]]:
    """Vertical acceleration (g) of a trapezoidal trip up: accelerate, cruise, brake."""
    t_acc = v / a
    t_cruise = (distance - v * t_acc) / v
    n_acc, n_cruise = round(t_acc * fs), round(t_cruise * fs)
    up = a / 9.80665
    return ([[0.0, 0.0, 1.0 + up]] * n_acc + [[0.0, 0.0, 1.0]] * n_cruise
            + [[0.0, 0.0, 1.0 - up]] * n_acc + [[0.0, 0.0, 1.0]])  # at rest: held after


class Scenario:
    """What the simulation did, to check the replay against."""

    def __init__(self, feed: SimFeed, wiring: dict[str, Any]) -> None:
        self.feed, self.wiring = feed, wiring
        self.t0 = time.monotonic()

    def at(self, t: float) -> None:
        delay = self.t0 + t - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def di(self, **levels: int) -> None:
        self.feed.set_inputs(levels, self.wiring)

    def ctl(self, **fields: Any) -> None:
        self.feed.set_controller(fields)


def play(sc: Scenario) -> None:
    """Door cycle at 1, trip 1 -> 2 (3.0 m at 1 m/s), door cycle at 2."""
    base = {"mode": 1, "run": 0, "dir": 0, "floor": "1", "door": 2, "zone": 1, "speed": 0.0,
            "safety": 0, "lock": 0, "overload": 0, "fault": 0}
    sc.ctl(**base)
    sc.di(**IDLE)
    sc.at(1.5)
    sc.ctl(door=3, lock=1)
    sc.di(door_lock=0)
    sc.at(1.6)
    sc.di(door_closed=0, presence=1)
    sc.at(2.5)
    sc.ctl(door=4)
    sc.at(4.0)
    sc.ctl(door=1)
    sc.at(5.0)
    sc.ctl(door=2)
    sc.di(door_closed=1)
    sc.at(5.2)
    sc.ctl(lock=0)
    sc.di(door_lock=1)
    # The trip: 1 s accelerating, 2 s at 1 m/s, 1 s braking = 3.0 m.
    sc.at(6.0)
    sc.feed.push_accel(trip_samples(400.0, 3.0))
    sc.ctl(run=1, dir=1, speed=0.3)
    sc.at(6.45)
    sc.ctl(zone=0, speed=0.45)
    sc.di(zone_up=0, zone_down=0)
    for k in range(1, 6):
        sc.at(6.45 + 0.5 * k)
        sc.ctl(speed=1.0)
    sc.at(9.55)
    sc.ctl(zone=1, floor="2", speed=0.45)
    sc.di(zone_up=1, zone_down=1)
    sc.at(10.0)
    sc.ctl(run=0, dir=0, speed=0.0)
    sc.at(11.0)
    sc.ctl(door=3, lock=1)
    sc.di(door_lock=0)
    sc.at(11.1)
    sc.di(door_closed=0, presence=0)
    sc.at(12.0)
    sc.ctl(door=4)
    sc.at(13.5)
    sc.ctl(door=1)
    sc.at(14.5)
    sc.ctl(door=2)
    sc.di(door_closed=1)
    sc.at(14.7)
    sc.ctl(lock=0)
    sc.di(door_lock=1)


@pytest.mark.timeout(90)
def test_liftwatch_record_on_simulated_backends_replays_the_scenario(tmp_path: Path) -> None:
    cfg_path = write_config(tmp_path, "adxl345", controller=True)
    cfg = load_config(cfg_path)
    out = tmp_path / "callout.jsonl.gz"
    sim_dir = tmp_path / "sim"
    proc = subprocess.Popen(
        [sys.executable, "-m", "liftwatch.agent.cli", "record", "--config", str(cfg_path),
         "--out", str(out), "--duration", "17", "--backend", "simulated",
         "--sim-dir", str(sim_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 20
        while not socket_path(sim_dir).exists():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the recorder's feed socket never appeared"
            time.sleep(0.02)
        feed = SimFeed(sim_dir)
        play(Scenario(feed, cfg.inputs))
        feed.close()
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    # No input or device fault (a FIFO overrun from a scheduling stall on a loaded
    # machine is possible here; sample completeness is proven on the simulated clock in
    # test_accel.py).
    assert "warning: input" not in err and "stuck" not in err and "silent" not in err, err

    reader = TraceReader(out)
    recs = list(reader)
    assert reader.bad_lines == 0
    h = reader.header
    assert h.lift == {"id": "310104-0001234", "landings": ["B1", "1", "2", "3"],
                      "landing_heights_m": [0.0, 3.6, 6.6, 9.6], "rated_speed": 1.0,
                      "door_zone_m": 0.2}
    assert h.accel == {"fs": 400.0, "lsb_per_g": 256.0, "axes": "xyz"}
    assert h.controller_present is True
    di = [r for r in recs if r.kind == "di"]
    assert set(di[0].data) == set(cfg.inputs)
    acc = [s for r in recs if r.kind == "acc" for s in r.data]
    duration = recs[-1].t
    assert abs(len(acc) - 400 * duration) < 400 * 0.5
    # The trip's vertical profile is in the trace, scaled: 1 m/s² = 26 counts over 256.
    # With the chip's 1-count noise, 400 samples of the 1 s acceleration phase read
    # about 282 counts, 400 of the braking phase about 230, and none in between.
    up, down = round((1 + 1 / 9.80665) * 256), round((1 - 1 / 9.80665) * 256)
    assert 360 <= sum(1 for s in acc if abs(s[2] - up) <= 5) <= 410
    assert 360 <= sum(1 for s in acc if abs(s[2] - down) <= 5) <= 410
    ctl = [r for r in recs if r.kind == "ctl"]
    assert len(ctl) > 50 and all(c.data is not None for c in ctl[2:])
    assert any(c.data["floor"] == "2" for c in ctl if c.data)

    from liftwatch.agent.replay import build_pipeline, replay_records
    reader = TraceReader(out)
    results = list(replay_records(reader, build_pipeline(reader.header, cfg)))
    trips = [r for r in results if r["type"] == "trip"]
    doors = [r for r in results if r["type"] == "door"]
    assert [(t["from"], t["to"]) for t in trips] == [("1", "2")]
    assert math.isclose(trips[0]["t_start"], 6.0, abs_tol=0.5)
    assert [d["floor"] for d in doors] == ["1", "2"]
    assert all(d["reopens"] == 0 for d in doors)


@pytest.mark.timeout(60)
def test_record_in_process_without_controller_or_accel(tmp_path: Path) -> None:
    """A minimal terminal: inputs only; the header says there is no controller."""
    cfg = load_config(write_config(tmp_path, "none", controller=False))
    out = tmp_path / "t.jsonl"
    result = asyncio.run(record(cfg, out, duration=0.5, backend="simulated"))
    reader = TraceReader(out)
    recs = list(reader)
    assert reader.header.controller_present is False and reader.header.accel is None
    assert result.counts["di"] == len(recs) == 1
    assert recs[0].data == {"door_closed": 0, "door_lock": 0, "zone_up": 0, "zone_down": 0,
                            "presence": 0, "alarm_button": 0}


@pytest.mark.timeout(60)
def test_real_backend_without_hardware_reports_it_absent(tmp_path: Path) -> None:
    """On this machine Blinka has no GPIO pin D17 and no I2C bus: reported, not guessed."""
    cfg = load_config(write_config(tmp_path, "adxl345", controller=False))

    async def main() -> tuple[list[Record], dict[str, Any]]:
        src = LiveSource(cfg, backend="real", accel_retry_s=0.1)
        await src.start()
        asyncio.get_running_loop().call_later(0.5, src.stop)
        recs = [r async for r in src]
        health = src.health()
        await src.close()
        return recs, health

    recs, health = asyncio.run(main())
    assert recs == []
    inputs = health["inputs"]
    assert inputs["backend"] == "blinka" and sorted(inputs["faulty"]) == sorted(cfg.inputs)
    assert "D17" in inputs["inputs"]["door_closed"]["error"]
    assert health["accel"]["state"] == "absent" and health["accel"]["error"]


@pytest.mark.timeout(60)
def test_record_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    cfg_path = write_config(tmp_path, "lis3dh", controller=True)
    out = tmp_path / "t.jsonl"
    sim_dir = tmp_path / "sim"
    proc = subprocess.Popen(
        [sys.executable, "-m", "liftwatch.agent.cli", "record", "--config", str(cfg_path),
         "--out", str(out), "--backend", "simulated", "--sim-dir", str(sim_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 20
        while not socket_path(sim_dir).exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        feed = SimFeed(sim_dir)
        feed.set_controller({"mode": 1, "run": 0, "floor": "1", "door": 2})
        feed.send({"pins": "garbage"})  # a bad feed message is refused, not fatal
        time.sleep(1.0)
        feed.set_controller(None)  # the controller stops answering
        time.sleep(0.5)
        feed.close()
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    recs = list(TraceReader(out))
    ctl = [r.data for r in recs if r.kind == "ctl"]
    assert {"mode": 1, "run": 0, "floor": "1", "door": 2} in ctl
    assert ctl[-1] is None  # failed polls are recorded as ctl: null
    acc = [s for r in recs if r.kind == "acc" for s in r.data]
    assert len(acc) > 400 * 1.2  # 400 Hz for the 1.5 s or more the recorder ran


@pytest.mark.timeout(60)
def test_real_backend_builds_the_modbus_controller_and_records_failed_polls(
        tmp_path: Path) -> None:
    """Controller over Modbus TCP with nobody listening: ctl null lines, link lost."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connections are refused
    text = write_config(tmp_path, "none", controller=True).read_text().replace(
        "enabled = true", f'enabled = true\ntransport = "tcp"\nhost = "127.0.0.1"\n'
        f"tcp_port = {port}\ntimeout_s = 0.2\nretries = 0")
    text = text.replace("[inputs.door_closed]", "[detection]\nlink_lost_s = 0.5\n\n"
                        "[inputs.door_closed]")
    cfg_path = tmp_path / "tcp.toml"
    cfg_path.write_text(text)
    cfg = load_config(cfg_path)

    async def main() -> tuple[list[Record], dict[str, Any]]:
        src = LiveSource(cfg, backend="real")
        await src.start()
        asyncio.get_running_loop().call_later(1.2, src.stop)
        recs = [r async for r in src]
        health = src.health()
        await src.close()
        return recs, health

    recs, health = asyncio.run(main())
    ctl = [r for r in recs if r.kind == "ctl"]
    assert len(ctl) >= 3 and all(r.data is None for r in ctl)
    assert health["controller"]["state"] == "lost"
    assert health["poll_errors"] == 0  # the link reports failures as None, never raises


@pytest.mark.timeout(60)
def test_config_chooses_simulated_inputs_and_chip_on_one_feed(tmp_path: Path) -> None:
    """The HIL rig's set-up: [inputs]/[accel] backend = simulated on a shared sim_feed."""
    feed_dir = tmp_path / "feed"
    text = write_config(tmp_path, "adxl345", controller=False).read_text()
    text = text.replace("sample_hz = 200", f'sample_hz = 200\nbackend = "simulated"\n'
                        f'sim_feed = "{feed_dir}"')
    text = text.replace('chip = "adxl345"', f'chip = "adxl345"\nbackend = "simulated"\n'
                        f'sim_feed = "{feed_dir}"')
    cfg_path = tmp_path / "hil.toml"
    cfg_path.write_text(text)
    cfg = load_config(cfg_path)

    async def main() -> tuple[list[Record], dict[str, Any]]:
        src = LiveSource(cfg)
        await src.start()
        feed = SimFeed(feed_dir)
        feed.set_inputs({"door_closed": 1, "door_lock": 1}, cfg.inputs)
        await asyncio.sleep(0.3)
        feed.push_accel([[0.0, 0.0, 2.0]] * 40 + [[0.0, 0.0, 1.0]])
        feed.set_inputs({"door_closed": 0}, cfg.inputs)
        await asyncio.sleep(0.5)
        feed.close()
        src.stop()
        recs = [r async for r in src]
        health = src.health()
        await src.close()
        return recs, health

    recs, health = asyncio.run(main())
    assert len(health["feed"]) == 1  # one socket carries both devices
    assert next(iter(health["feed"].values()))["messages"] == 3
    di = [r.data for r in recs if r.kind == "di"]
    assert di[0]["door_closed"] == 1 and di[-1] == {"door_closed": 0}
    z = [s[2] for r in recs if r.kind == "acc" for s in r.data]
    assert sum(1 for v in z if abs(v - 512) <= 5) == 40  # 2 g at 256 counts/g
