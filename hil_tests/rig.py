"""The hardware-in-the-loop rig: plays a simulated lift over real interfaces to the real agent.

Software rig (CI, the demo): the lift's controller is a pymodbus server
(``liftwatch.drivers.modbus_server``) on a pseudo-terminal pair (Modbus RTU through
socat) or a TCP port; the digital inputs and the car accelerometer reach the agent
through the simulation feed (``liftwatch.drivers.simfeed``) that the agent's
simulated pin and chip backends listen on; the agent is the real ``liftwatch run``
process with a HIL terminal config; the platform is a real Mosquitto and the
:class:`observer.Observer`.

Real rig (``hil_tests/README.md``): the same scenarios drive a real serial port,
real output pins wired to the terminal's inputs, and a broker the terminal publishes
to; the agent runs on the terminal itself. A lock file keeps two runs off one rig.

The rig only speaks the terminal's wire protocols (Modbus, pins, the feed, MQTT): it
imports ``liftwatch.drivers`` and nothing of the agent's internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liftwatch.drivers.modbus_server import ModbusSimServer
from liftwatch.drivers.registermap import load_register_map
from liftwatch.drivers.settings import InputWiring
from liftwatch.drivers.simfeed import (
    SOCKET_NAME,
    SimFeed,
    input_pins,
    socket_path,
    write_initial,
)
from mosquitto import Broker
from observer import Observer
from scenarios import Scenario

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_MAP = REPO / "firmware_config" / "controllers" / "example.toml"
G = 9.80665

#: Terminal input wiring used by the software rig (Blinka pin names of a Pi header).
WIRING: dict[str, InputWiring] = {
    name: InputWiring(pin=pin, pull="up", active_low=True, debounce_ms=20.0)
    for name, pin in [("door_closed", "D5"), ("door_lock", "D6"), ("zone_up", "D13"),
                      ("zone_down", "D19"), ("presence", "D26"), ("alarm_button", "D16"),
                      ("safety_ok", "D20"), ("mains_ok", "D21"), ("inspection", "D12"),
                      ("run", "D25")]
}

LIFT_ID = "31100000000000000099"
#: accelerometer samples go to the terminal this far ahead, in one datagram: the
#: simulated chip takes them at its own sample clock, so only the first push sets the
#: timing, and fewer datagrams keep the agent's feed thread out of its CPU figures
ACC_PUSH_S = 0.5


def merged_acc(records: Iterator[tuple[float, str, Any]] | list[tuple[float, str, Any]],
               ahead_s: float = ACC_PUSH_S) -> Iterator[tuple[float, str, Any]]:
    """The records with each run of accelerometer blocks starting within ``ahead_s`` of
    the first merged into one block at the first one's time; other records keep their
    order and time. Reads at most ``ahead_s`` into a lazily produced stream."""
    it = iter(records)
    ahead: list[tuple[float, str, Any]] = []  # read past a merged run, not yet given
    while True:
        rec = ahead.pop(0) if ahead else next(it, None)
        if rec is None:
            return
        t0, kind, data = rec
        if kind != "acc":
            yield rec
            continue
        samples = list(data)
        others: list[tuple[float, str, Any]] = []
        while True:
            nxt = ahead.pop(0) if ahead else next(it, None)
            if nxt is None:
                break
            if nxt[0] >= t0 + ahead_s:
                ahead.insert(0, nxt)
                break
            if nxt[1] == "acc":
                samples.extend(nxt[2])
            else:
                others.append(nxt)
        yield t0, "acc", samples
        yield from others


def hil_config(workdir: Path, scn: Scenario, broker: Broker, *, transport: str,
               serial_port: str = "", tcp_port: int = 0, feed_dir: Path | None = None) -> str:
    """The terminal config the agent under test runs with (events.md default timers)."""
    lift = scn.lift
    feed = feed_dir or workdir / "feed"
    lines = [
        "[terminal]", f'lift_id = "{LIFT_ID}"', f'name = "HIL rig: {scn.name}"', "",
        "[lift]", f"landings = {json.dumps(lift.landings)}",
        f"landing_heights_m = {json.dumps(lift.heights)}",
        f"rated_speed = {lift.rated_speed}", f"door_zone_m = {lift.door_zone_m}", "",
        "[inputs]", 'backend = "simulated"', f'sim_feed = "{feed}"', "",
    ]
    for name, w in WIRING.items():
        lines += [f"[inputs.{name}]", f'pin = "{w.pin}"', f'pull = "{w.pull}"',
                  f"active_low = {str(w.active_low).lower()}", f"debounce_ms = {w.debounce_ms}",
                  ""]
    range_g, address = {"adxl345": (4, "0x53"), "lis3dh": (2, "0x18")}[lift.chip]
    lines += ["[accel]", f'chip = "{lift.chip}"', f"address = {address}", 'backend = "simulated"',
              f'sim_feed = "{feed}"', f"rate_hz = {lift.fs}", f"range_g = {range_g}",
              'orientation = "auto"', ""]
    if lift.controller:
        lines += ["[controller]", "enabled = true", f'transport = "{transport}"',
                  'register_map = "example"', "poll_interval_s = 0.2", "timeout_s = 0.3",
                  "retries = 0"]
        if transport == "rtu":
            lines += [f'port = "{serial_port}"', "baudrate = 115200", 'parity = "N"']
        else:
            lines += ['host = "127.0.0.1"', f"tcp_port = {tcp_port}"]
        lines.append("")
    lines += ["[uplink]", f'broker = "{broker.host}"', f"port = {broker.port}", "tls = false",
              "heartbeat_s = 10", "health_s = 30", "reconnect_min_s = 0.5",
              "reconnect_max_s = 2.0", "",
              "[storage]", f'data_dir = "{workdir / "data"}"', ""]
    return "\n".join(lines)


@dataclass
class RigRun:
    """What one scenario run produced, for scoring and reports."""

    scenario: Scenario
    observer: Observer
    t_start: float
    agent_log: str = ""
    agent_rc: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class SoftRig:
    """The software rig for one scenario: Modbus server, feed, agent process, broker."""

    def __init__(self, workdir: Path, scenario: Scenario, broker: Broker,
                 transport: str = "tcp", speed_log: bool = False,
                 python: str = sys.executable) -> None:
        self.workdir = workdir
        self.python = python  # the agent's interpreter (the footprint bench may change it)
        self.scn = scenario
        self.broker = broker
        self.transport = transport
        self.server: ModbusSimServer | None = None
        self.socat: subprocess.Popen[bytes] | None = None
        self.agent: subprocess.Popen[bytes] | None = None
        self.feed: SimFeed | None = None
        self.config_path = workdir / "hil.toml"
        self.agent_log_path = workdir / "agent.log"
        # A Unix socket path has at most 107 bytes: a deep work folder (pytest-xdist's
        # per-worker temp folders) gets a short one of its own for the feed.
        self.feed_dir = workdir / "feed"
        self._own_feed_dir = len(os.fsencode(self.feed_dir / SOCKET_NAME)) > 107
        if self._own_feed_dir:
            self.feed_dir = Path(tempfile.mkdtemp(prefix="lw-feed-"))

    async def _start_controller(self) -> tuple[str, int]:
        regmap = load_register_map(EXAMPLE_MAP)
        serial_port, tcp_port = "", 0
        if self.transport == "rtu":
            a, b = self.workdir / "tty-agent", self.workdir / "tty-lift"
            socat = shutil.which("socat")
            if socat is None:
                raise RuntimeError("socat is missing: run scripts/test, which installs it")
            self.socat = subprocess.Popen(
                [socat, f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(100):
                if a.exists() and b.exists():
                    break
                await asyncio.sleep(0.02)
            self.server = ModbusSimServer(regmap, landings=self.scn.lift.landings,
                                          transport="rtu", port=str(b), baudrate=115200,
                                          parity="N")
            serial_port = str(a)
        else:
            self.server = ModbusSimServer(regmap, landings=self.scn.lift.landings,
                                          transport="tcp", tcp_port=0)
        first_ctl = self.scn.first_ctl or next(
            (d for _, k, d in self.scn.records if k == "ctl" and d), None)
        if first_ctl:
            self.server.set_values(first_ctl)
        await self.server.start()
        tcp_port = self.server.tcp_port
        return serial_port, tcp_port

    def _start_agent(self) -> None:
        log = open(self.agent_log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.agent = subprocess.Popen(
            # --allow-root on purpose: CI runs the rig as root; the lift is simulated
            [self.python, "-m", "liftwatch.agent.cli", "-v", "run", "--allow-root",
             "--config", str(self.config_path)],
            cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, env=env)
        self._log = log

    async def start(self) -> None:
        self.feed_dir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        serial_port, tcp_port = "", 0
        if self.scn.lift.controller:
            serial_port, tcp_port = await self._start_controller()
        self.config_path.write_text(hil_config(self.workdir, self.scn, self.broker,
                                               transport=self.transport,
                                               serial_port=serial_port, tcp_port=tcp_port,
                                               feed_dir=self.feed_dir))
        self._write_initial_state()
        self._start_agent()
        sock = socket_path(self.feed_dir)
        deadline = time.monotonic() + 20
        while not sock.exists():
            if self.agent and self.agent.poll() is not None:
                raise RuntimeError("agent exited at start:\n" + self.agent_log())
            if time.monotonic() > deadline:
                raise RuntimeError("agent did not open its simulation feed:\n"
                                   + self.agent_log())
            await asyncio.sleep(0.05)
        self.feed = SimFeed(self.feed_dir)

    def _write_initial_state(self) -> None:
        """The lift's inputs and accelerometer at t = 0, applied as the terminal starts."""
        msg: dict[str, Any] = {}
        if self.scn.first_di is not None:
            msg["pins"] = input_pins({k: v for k, v in self.scn.first_di.items() if k in WIRING},
                                     WIRING)
        head = self.scn.records if isinstance(self.scn.records, list) else []
        for _, kind, data in head:
            if kind == "di" and "pins" not in msg:
                msg["pins"] = input_pins({k: v for k, v in data.items() if k in WIRING}, WIRING)
            elif kind == "acc" and "acc_hold" not in msg:
                lsb = self.scn.lift.lsb_per_g
                msg["acc_hold"] = [c / lsb for c in data[0]]
            if len(msg) == 2:
                break
        write_initial(self.feed_dir, msg)

    def agent_log(self) -> str:
        try:
            return self.agent_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    async def play(self, observer: Observer) -> float:
        """Play the scenario's records in real time; returns the monotonic time of t = 0."""
        assert self.feed is not None
        lsb = self.scn.lift.lsb_per_g
        outages = sorted(self.scn.outages)
        broker_down = False
        t_start = time.monotonic() + 0.2
        for t, kind, data in merged_acc(self.scn.records):
            delay = t_start + t - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            for a, b in outages:
                if not broker_down and a <= t < b:
                    self.broker.stop()
                    broker_down = True
                elif broker_down and t >= b:
                    self.broker.start()
                    broker_down = False
            if kind == "di":
                self.feed.set_inputs({k: v for k, v in data.items() if k in WIRING}, WIRING)
            elif kind == "acc":
                self.feed.push_accel([[x / lsb, y / lsb, z / lsb] for x, y, z in data])
            elif kind == "rig":  # a fault the rig injects into the terminal's hardware
                if "chip_io_error" in data:
                    self.feed.chip_fault(io_error=data["chip_io_error"])
            elif kind == "ctl" and self.server is not None:
                if data is None:
                    self.server.silent_units = set(self.server.units)
                else:
                    self.server.silent_units = set()
                    self.server.set_values(data)
        if broker_down:
            self.broker.start()
        return t_start

    async def stop(self) -> int | None:
        rc = None
        if self.agent is not None:
            if self.agent.poll() is None:
                self.agent.send_signal(signal.SIGTERM)
                try:
                    rc = await asyncio.to_thread(self.agent.wait, 10)
                except subprocess.TimeoutExpired:
                    self.agent.kill()
                    rc = self.agent.wait()
            else:
                rc = self.agent.returncode
            self._log.close()
        if self.feed is not None:
            self.feed.close()
        if self._own_feed_dir:
            shutil.rmtree(self.feed_dir, ignore_errors=True)
        if self.server is not None:
            await self.server.stop()
        if self.socat is not None:
            self.socat.terminate()
            self.socat.wait(5)
        return rc


async def run_soft(workdir: Path, scn: Scenario, broker: Broker, transport: str = "tcp",
                   settle_s: float = 8.0) -> RigRun:
    """Run one scenario end to end on the software rig and collect what the platform saw."""
    workdir.mkdir(parents=True, exist_ok=True)
    observer = Observer(broker.host, broker.port, "lift", LIFT_ID,
                        auto_ack_after_s=scn.ack_alarms_after_s)
    observer.start()
    rig = SoftRig(workdir, scn, broker, transport)
    try:
        await rig.start()
        t_start = await rig.play(observer)
        await asyncio.sleep(settle_s)
    finally:
        rc = await rig.stop()
        await asyncio.sleep(0.5)
        observer.stop()
    return RigRun(scn, observer, t_start, agent_log=rig.agent_log(), agent_rc=rc)


@contextlib.contextmanager
def rig_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on a real rig; a second run waits for it (gpiozero's model)."""
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()}\n")
            fh.flush()
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
