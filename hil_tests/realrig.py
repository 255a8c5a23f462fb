"""Real-rig mode: the same scenarios over real wires to a real terminal.

On a real rig the terminal runs its own agent (``systemctl start liftwatch``); the rig
computer plays the lift: a Modbus RTU server on its RS-485 adapter wired to the
terminal's controller port, output pins (through a relay or opto board) wired to the
terminal's digital inputs, and it observes the broker the terminal publishes to. The
terminal's accelerometer is its own real chip on the rig bench, so the software rig's
accelerometer feed has no counterpart here: scenarios are scored on the controller
and input events. A lock file keeps two runs off one rig (gpiozero's real-pin tests
are the model: the suite runs on real pins when told which, and says so when not).

The rig is described by a TOML file named in ``LIFTWATCH_RIG_CONFIG``; see
``hil_tests/README.md`` for the wiring table and an example.
"""

from __future__ import annotations

import asyncio
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liftwatch.drivers.modbus_server import ModbusSimServer
from liftwatch.drivers.registermap import load_register_map
from scenarios import Scenario

REPO = Path(__file__).resolve().parent.parent


@dataclass
class RigConfig:
    lift_id: str
    lock_file: str
    broker_host: str
    broker_port: int
    topic_prefix: str
    serial_port: str
    baudrate: int
    parity: str
    register_map: Path
    pins: dict[str, tuple[str, bool]]  # input -> (rig output pin, active_low)


def load_rig_config(path: str | Path) -> RigConfig:
    """Read the rig file; a missing key is a clear error naming it."""
    doc = tomllib.loads(Path(path).read_text())
    try:
        rig, broker, ctl = doc["rig"], doc["broker"], doc["controller"]
        pins = {name: (str(v["pin"]), bool(v.get("active_low", False)))
                for name, v in doc["pins"].items()}
        regmap = Path(ctl.get("register_map", REPO / "firmware_config" / "controllers"
                              / "example.toml"))
        return RigConfig(lift_id=str(rig["lift_id"]),
                         lock_file=str(rig.get("lock_file", "/tmp/liftwatch-rig.lock")),
                         broker_host=str(broker["host"]), broker_port=int(broker["port"]),
                         topic_prefix=str(broker.get("topic_prefix", "lift")),
                         serial_port=str(ctl["port"]), baudrate=int(ctl.get("baudrate", 19200)),
                         parity=str(ctl.get("parity", "E")), register_map=regmap, pins=pins)
    except KeyError as exc:
        raise ValueError(f"{path}: missing key {exc}") from exc


class RigPins:
    """The rig's output pins through Blinka (``board``, ``digitalio``)."""

    def __init__(self, pins: dict[str, tuple[str, bool]]) -> None:
        import board
        import digitalio

        self._outs: dict[str, tuple[Any, bool]] = {}
        for name, (pin, active_low) in pins.items():
            io = digitalio.DigitalInOut(getattr(board, pin))
            io.direction = digitalio.Direction.OUTPUT
            self._outs[name] = (io, active_low)

    def set_inputs(self, levels: dict[str, int]) -> None:
        for name, level in levels.items():
            if name in self._outs:
                io, active_low = self._outs[name]
                io.value = bool(level) ^ active_low

    def close(self) -> None:
        for io, _ in self._outs.values():
            io.deinit()


class RealRig:
    """Play a scenario over the rig's serial port and output pins."""

    def __init__(self, cfg: RigConfig, scenario: Scenario) -> None:
        self.cfg = cfg
        self.scn = scenario
        self.server: ModbusSimServer | None = None
        self.pins: RigPins | None = None

    async def start(self) -> None:
        self.pins = RigPins(self.cfg.pins)
        regmap = load_register_map(self.cfg.register_map)
        self.server = ModbusSimServer(regmap, landings=self.scn.lift.landings, transport="rtu",
                                      port=self.cfg.serial_port, baudrate=self.cfg.baudrate,
                                      parity=self.cfg.parity)
        await self.server.start()

    async def play(self) -> float:
        assert self.pins is not None and self.server is not None
        t_start = time.monotonic() + 0.2
        for t, kind, data in self.scn.records:
            delay = t_start + t - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if kind == "di":
                self.pins.set_inputs(data)
            elif kind == "ctl":
                if data is None:
                    self.server.silent_units = set(self.server.units)
                else:
                    self.server.silent_units = set()
                    self.server.set_values(data)
        return t_start

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
        if self.pins is not None:
            self.pins.close()
