"""``liftwatch check`` against the software HIL rig (issue 8, Done when): it passes when
everything is there, and fails with a precise line when the broker is down, an input is
unplugged or the accelerometer is missing; and (issue 18) when an input is wired the
wrong way round: the rig's lift is at rest, so a reversed ``active_low`` reads as mains
lost, a safety circuit open, a door or zone the controller disagrees with.

The simulated backends listen on the feed socket inside the process that opens the
drivers, so here ``liftwatch check`` (a real subprocess) is that process: the rig's
pieces (a pymodbus controller over TCP, a real Mosquitto, the simulation feed with
its initial state) are started around it and a short scripted lift plays into its
feed while it watches.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from liftsim import LiftSim, SimLift
from liftwatch.drivers.modbus_server import ModbusSimServer
from liftwatch.drivers.registermap import load_register_map
from liftwatch.drivers.simfeed import SimFeed, input_pins, socket_path, write_initial
from mosquitto import Broker
from rig import EXAMPLE_MAP, WIRING, hil_config
from scenarios import Scenario

WATCH_S = 2.0


def door_opens() -> Scenario:
    """A lift at rest at landing 1 whose door opens during the watch window."""
    lift = SimLift()
    sim = LiftSim(lift, seed=3, start_floor=1)
    sim.wait(0.4)
    sim.open_door()
    return Scenario("check", lift, sim.drain(), sim.t, [])


@dataclass
class CheckRun:
    rc: int
    out: str
    err: str

    def line(self, name: str) -> str:
        """The table row of check ``name``."""
        rows = [ln for ln in self.out.splitlines() if ln.startswith(name + " ")]
        assert len(rows) == 1, f"no single row {name!r} in:\n{self.out}\n{self.err}"
        return rows[0]

    def failed(self) -> list[str]:
        return [ln for ln in self.out.splitlines() if "  FAIL  " in ln]


async def _play(feed_dir: Path, scn: Scenario, server: ModbusSimServer | None,
                live: list[dict[str, Any]]) -> None:
    """Once the check opened its feed: send ``live`` messages, then play the lift."""
    deadline = time.monotonic() + 15
    while not socket_path(feed_dir).exists():
        if time.monotonic() > deadline:
            return  # the check never opened its feed: its table says why
        await asyncio.sleep(0.02)
    feed = SimFeed(feed_dir)
    try:
        for msg in live:
            feed.send(msg)
        lsb = scn.lift.lsb_per_g
        t0 = time.monotonic()
        for t, kind, data in scn.records:
            delay = t0 + t - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if kind == "di":
                feed.set_inputs({k: v for k, v in data.items() if k in WIRING}, WIRING)
            elif kind == "acc":
                feed.push_accel([[x / lsb, y / lsb, z / lsb] for x, y, z in data])
            elif kind == "ctl" and server is not None and data is not None:
                server.set_values(data)
    except OSError:
        pass  # the check finished and closed its feed before the lift did
    finally:
        feed.close()


def reversed_input(text: str, name: str) -> str:
    """The config ``text`` with input ``name``'s active_low the wrong way round."""
    block = re.compile(rf"(\[inputs\.{name}\][^\[]*?active_low = )(true|false)")
    out, n = block.subn(lambda m: m.group(1) + ("false" if m.group(2) == "true" else "true"),
                        text)
    assert n == 1, name
    return out


def run_check(workdir: Path, broker: Broker, *, initial: dict[str, Any] | None = None,
              live: list[dict[str, Any]] | None = None, reverse: str = "") -> CheckRun:
    """``liftwatch check --config hil.toml`` with the rig around it; ``reverse``: the
    input whose active_low the technician got wrong."""
    scn = door_opens()
    workdir.mkdir(parents=True, exist_ok=True)
    feed_dir = workdir / "feed"
    first_di = next(d for _, k, d in scn.records if k == "di")
    first_acc = next(d for _, k, d in scn.records if k == "acc")
    first_ctl = next(d for _, k, d in scn.records if k == "ctl")
    msg: dict[str, Any] = {
        "pins": input_pins({k: v for k, v in first_di.items() if k in WIRING}, WIRING),
        "acc_hold": [c / scn.lift.lsb_per_g for c in first_acc[0]]}
    msg.update(initial or {})
    write_initial(feed_dir, msg)

    async def main() -> CheckRun:
        server = ModbusSimServer(load_register_map(EXAMPLE_MAP), landings=scn.lift.landings,
                                 transport="tcp", tcp_port=0)
        server.set_values(first_ctl)
        await server.start()
        try:
            cfg = workdir / "hil.toml"
            text = hil_config(workdir, scn, broker, transport="tcp",
                              tcp_port=server.tcp_port)
            cfg.write_text(reversed_input(text, reverse) if reverse else text)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "liftwatch.agent.cli", "check", "--config", str(cfg),
                "--watch", f"{WATCH_S:g}", "--broker-timeout", "2",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            player = asyncio.create_task(_play(feed_dir, scn, server, live or []))
            out, err = await asyncio.wait_for(proc.communicate(), 40)
            player.cancel()
            await asyncio.gather(player, return_exceptions=True)
            assert proc.returncode is not None
            return CheckRun(proc.returncode, out.decode(), err.decode())
        finally:
            await server.stop()

    return asyncio.run(main())


@pytest.fixture
def hil_broker(tmp_path: Path) -> Any:
    b = Broker(workdir=tmp_path)
    b.start()
    yield b
    b.stop()


@pytest.mark.timeout(60)
def test_check_passes_on_the_rig(tmp_path: Path, hil_broker: Broker) -> None:
    r = run_check(tmp_path / "all", hil_broker)
    assert r.rc == 0, r.out + r.err
    assert r.failed() == []
    assert "PASS: 0 check(s) failed" in r.out
    assert "  PASS  " in r.line("controller link") and "polls answered" in r.line(
        "controller link")
    assert "floor=1" in r.line("controller values")
    for name, w in WIRING.items():
        assert f"  PASS  pin {w.pin}: " in r.line(f"input {name}")
    # the door opened while the check watched: the technician sees it move
    assert "changed" in r.line("input door_closed")
    assert "  PASS  " in r.line("accel identity") and "DEVID 0xE5" in r.line("accel identity")
    assert "  PASS  " in r.line("accel rate")
    assert "|g| = 1.0" in r.line("accel gravity")
    assert f"127.0.0.1:{hil_broker.port}: connected" in r.line("broker")


@pytest.mark.timeout(60)
def test_check_fails_when_the_broker_is_down(tmp_path: Path, hil_broker: Broker) -> None:
    hil_broker.stop()
    r = run_check(tmp_path / "nobroker", hil_broker)
    assert r.rc == 1, r.out + r.err
    assert r.failed() == [r.line("broker")]
    assert r.line("broker").endswith(f"FAIL  127.0.0.1:{hil_broker.port}: connection refused "
                                     "(broker down or wrong port)")
    assert "FAIL: 1 check(s) failed" in r.out


@pytest.mark.timeout(60)
def test_check_fails_when_an_input_is_unplugged(tmp_path: Path, hil_broker: Broker) -> None:
    pin = WIRING["door_lock"].pin
    r = run_check(tmp_path / "unplugged", hil_broker,
                  live=[{"pins_fault": {pin: "wire cut"}}])
    assert r.rc == 1, r.out + r.err
    assert r.failed() == [r.line("input door_lock")]
    line = r.line("input door_lock")
    assert f"FAIL  pin {pin} " in line and "wire cut" in line


@pytest.mark.timeout(60)
def test_check_fails_when_the_accelerometer_is_missing(tmp_path: Path,
                                                       hil_broker: Broker) -> None:
    r = run_check(tmp_path / "nochip", hil_broker,
                  initial={"chip": {"io_error": "remote I/O error"}})
    assert r.rc == 1, r.out + r.err
    line = r.line("accel identity")
    assert "  FAIL  adxl345 on I2C bus 1 address 0x53 " in line, r.out
    assert "remote I/O error" in line
    # the rest of the terminal is fine: only the accelerometer's rows fail
    assert all(ln.startswith("accel ") for ln in r.failed()), r.out


#: what the rig's lift at rest (level at landing 1, door opening) raises when the input
#: is read the wrong way round: the detectors' event, and its cause in the row
REVERSED = {
    "mains_ok": "power_loss",
    "safety_ok": "safety_circuit_open",
    "door_closed": "sensor_disagreement",
    "zone_up": "sensor_disagreement",
    "zone_down": "sensor_disagreement",
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", list(REVERSED))
def test_check_fails_a_reversed_input(tmp_path: Path, hil_broker: Broker, name: str) -> None:
    r = run_check(tmp_path / name, hil_broker, reverse=name)
    assert r.rc == 1, r.out + r.err
    line = r.line(f"input {name}")
    assert f"  FAIL  pin {WIRING[name].pin}: " in line, r.out
    assert f"the lift would raise {REVERSED[name]}" in line, line
    assert "likely cause: active_low reversed (set active_low = true)" in line, line
    assert f"or the wrong pin (not {WIRING[name].pin})" in line
    # only that input is blamed; the rest of the terminal passes
    assert [ln for ln in r.failed() if ln.startswith("input ")] == [line], r.out
    assert all(ln.startswith("input ") for ln in r.failed()), r.out
