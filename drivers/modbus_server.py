"""A small Modbus server that plays a lift controller: the HIL simulator and the tests use it.

It serves the registers of a :class:`~liftwatch.drivers.registermap.RegisterMap` from
normalised values (``set_values({"floor": "3", "door": 4, ...})``) over RTU on a serial
port / pseudo-terminal or over TCP, with the same map code the agent decodes with.
For the failure tests it can stay silent for some units (an unplugged device on a
shared RS-485 line), corrupt the CRC of or truncate its next answers, or answer with a
Modbus exception.

pymodbus 3.16 deprecates ``ModbusDeviceContext`` / ``ModbusServerContext`` /
``ModbusSequentialDataBlock`` (they log a warning and are removed in 4.0); this
wrapper uses their replacement, ``SimData``/``SimDevice``, so nothing warns. The
register image is kept here and copied into pymodbus's block by the device ``action``
hook on every access, so values can change while the server runs.

Two pymodbus behaviours are worked around through its documented ``trace_packet``
hook (which may rewrite outgoing bytes): a request for a unit that is not served would
get a "device failure" exception answer from ``SimCore`` instead of the silence of a
real RS-485 line, so a catch-all device answers and its answer is dropped; faults are
injected the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from liftwatch.drivers.registermap import BIT_FUNCTIONS, TABLES, EncodeError, RegisterMap
from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

#: What the server reports until told otherwise (a lift at rest, doors closed).
IDLE_VALUES: dict[str, Any] = {"mode": 1, "run": 0, "dir": 0, "door": 2, "zone": 1,
                               "speed": 0.0, "safety": 0, "lock": 0, "overload": 0,
                               "fault": 0}

_BLOCK_OF_FUNCTION = {1: 1, 5: 1, 15: 1, 2: 2, 3: 3, 6: 3, 16: 3, 22: 3, 23: 3, 4: 4}
_TUPLE_ORDER = (1, 2, 3, 4)  # SimDevice's (coils, discrete inputs, holding, input)


@dataclass
class ServerCounters:
    """What the simulated controller saw and did."""

    requests: int = 0
    answers: int = 0
    silenced: int = 0
    corrupted: int = 0
    truncated: int = 0
    exceptions: int = 0
    #: Shortest silence seen between an answer and the next request (RTU frame gap).
    min_gap_s: float | None = None


class ModbusSimServer:
    """Serve a register map over RTU (``port`` = serial path) or TCP (``tcp_port``).

    Call :meth:`set_values` / :meth:`set_raw` from the event loop's thread (from another
    thread use ``loop.call_soon_threadsafe``).
    """

    def __init__(self, regmap: RegisterMap, *, landings: Sequence[str] = (),
                 units: Iterable[int] = (1,), transport: str = "rtu", port: str = "",
                 baudrate: int = 115200, parity: str = "N", stopbits: int = 1,
                 host: str = "127.0.0.1", tcp_port: int = 0, span: int = 0) -> None:
        if transport not in ("rtu", "tcp"):
            raise ValueError(f"transport: expected rtu or tcp, found {transport!r}")
        if transport == "rtu" and not port:
            raise ValueError("port: a serial device path is needed for RTU")
        self.regmap = regmap
        self.landings = list(landings)
        self.units = sorted(set(units) | {f.unit for f in regmap.fields if f.unit is not None})
        self.transport = transport
        self.port = port
        self.baudrate, self.parity, self.stopbits = baudrate, parity, stopbits
        self.host = host
        self.tcp_port = tcp_port
        self.counters = ServerCounters()
        #: Units that hear requests but never answer (unplugged from the shared line).
        self.silent_units: set[int] = set()
        #: Tables (function codes 1..4) answered with this exception until removed: a
        #: register map whose addresses the controller does not have.
        self.refused: dict[int, ExcCodes] = {}
        self.image: dict[tuple[int, int], dict[int, int]] = {}
        self._corrupt = 0
        self._truncate = 0
        self._exceptions = 0
        self._exception_code = ExcCodes.DEVICE_BUSY
        self._answered_at: float | None = None
        self._server: ModbusSerialServer | ModbusTcpServer | None = None
        self._ranges = self._table_ranges(span)
        self._set_idle()

    def _set_idle(self) -> None:
        """Start as a controller at rest reports: in service, level, circuits made.

        An all-zero image would decode to e.g. "safety open" through an inverting enum,
        so a test that sets only some fields would see alarms it never asked for.
        """
        idle: dict[str, Any] = {**IDLE_VALUES}
        if self.landings:
            idle["floor"] = self.landings[0]
        for name, value in idle.items():
            with contextlib.suppress(EncodeError):  # e.g. a label-table floor: left at 0
                self.set_values({name: value})

    # ---------------------------------------------------------------- values
    def set_values(self, values: Mapping[str, Any], unit: int | None = None) -> None:
        """Serve these normalised fields (others keep their value) on ``unit`` (default all)."""
        image = self.image
        for u in [unit] if unit is not None else self.units:
            image = self.regmap.encode(values, unit=u, landings=self.landings, base=image)
        self.image = image  # all units or none: an EncodeError changes nothing

    def set_raw(self, unit: int, table: str | int, address: int, value: int) -> None:
        """Put a raw register (0..65535) or bit (0/1) in the image, e.g. an illegal code."""
        fn = TABLES[table] if isinstance(table, str) else table
        limit = 1 if fn in BIT_FUNCTIONS else 0xFFFF
        if not 0 <= value <= limit:
            raise ValueError(f"raw value {value} outside 0..{limit}")
        self.image.setdefault((unit, fn), {})[address] = value

    # ---------------------------------------------------------------- faults
    def corrupt_next(self, n: int = 1) -> None:
        """Flip a CRC (RTU) / unit byte (TCP) of the next ``n`` answers."""
        self._corrupt += n

    def truncate_next(self, n: int = 1) -> None:
        """Send only the first half of the next ``n`` answers."""
        self._truncate += n

    def exception_next(self, n: int = 1, code: ExcCodes = ExcCodes.DEVICE_BUSY) -> None:
        """Answer the next ``n`` reads with a Modbus exception ``code``."""
        self._exceptions += n
        self._exception_code = code

    # ------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Open the port (or listen) and serve in the background."""
        devices = [self._device(u) for u in self.units]
        if 0 not in self.units:
            devices.append(self._device(0))  # catch-all: its answers are dropped
        if self.transport == "rtu":
            self._server = ModbusSerialServer(
                devices, framer=FramerType.RTU, port=self.port, baudrate=self.baudrate,
                parity=self.parity, stopbits=self.stopbits, reconnect_delay=0.2,
                trace_packet=self._trace_packet, trace_pdu=self._trace_pdu)
        else:
            self._server = ModbusTcpServer(
                devices, framer=FramerType.SOCKET, address=(self.host, self.tcp_port),
                trace_packet=self._trace_packet, trace_pdu=self._trace_pdu)
        await self._server.serve_forever(background=True)
        if self.transport == "tcp" and self.tcp_port == 0:
            sockets = getattr(self._server.transport, "sockets", None) or []
            if sockets:
                self.tcp_port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            await self._server.shutdown()
            self._server = None
            await asyncio.sleep(0)

    async def __aenter__(self) -> ModbusSimServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -------------------------------------------------------------- internals
    def _table_ranges(self, span: int) -> dict[int, tuple[int, int]]:
        """Per function: the address range served (all the map reads, plus ``span``)."""
        out: dict[int, tuple[int, int]] = {}
        for req in self.regmap.read_plan(1):
            lo, hi = out.get(req.function, (req.address, req.address + req.count))
            out[req.function] = (min(lo, req.address),
                                 max(hi, req.address + req.count + span))
        return out

    def _device(self, unit: int) -> SimDevice:
        blocks: list[list[SimData]] = []
        for fn in _TUPLE_ORDER:
            lo, hi = self._ranges.get(fn, (0, 1))
            if fn in BIT_FUNCTIONS:
                blocks.append([SimData(lo, count=hi - lo, values=False,
                                       datatype=DataType.BITS)])
            else:
                blocks.append([SimData(lo, count=hi - lo, values=0,
                                       datatype=DataType.REGISTERS)])
        return SimDevice(unit, simdata=(blocks[0], blocks[1], blocks[2], blocks[3]),
                         action=partial(self._action, unit))

    async def _action(self, unit: int, function_code: int, start_address: int, address: int,
                      count: int, registers: list[int],
                      set_values: list[int] | list[bool] | None) -> ExcCodes | None:
        """Copy the image into pymodbus's block before it answers (values change live)."""
        del address, count
        if set_values is not None:
            return ExcCodes.ILLEGAL_FUNCTION  # a controller's status map is read-only here
        fn = _BLOCK_OF_FUNCTION.get(function_code)
        if fn in self.refused:
            self.counters.exceptions += 1
            return self.refused[fn]
        if self._exceptions > 0:
            self._exceptions -= 1
            self.counters.exceptions += 1
            return self._exception_code
        table = self.image.get((unit, fn or 0), {})
        n = len(registers) - 1  # pymodbus keeps a sentinel after the block
        for addr, value in table.items():
            if fn in BIT_FUNCTIONS:
                i = addr // 16 - start_address
                if 0 <= i < n:
                    bit = 1 << (addr % 16)
                    registers[i] = (registers[i] | bit) if value else (registers[i] & ~bit)
            else:
                i = addr - start_address
                if 0 <= i < n:
                    registers[i] = value
        return None

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.counters.requests += 1
        return pdu

    def _trace_packet(self, sending: bool, packet: bytes) -> bytes:
        now = time.monotonic()
        if not sending:
            if self._answered_at is not None and packet:
                gap = now - self._answered_at
                c = self.counters
                c.min_gap_s = gap if c.min_gap_s is None else min(c.min_gap_s, gap)
                self._answered_at = None
            return packet
        if not packet:
            return packet
        self._answered_at = now
        unit = packet[0] if self.transport == "rtu" else (packet[6] if len(packet) > 6 else 0)
        if unit in self.silent_units or unit not in self.units:
            self.counters.silenced += 1
            self._answered_at = None
            return b""
        if self._corrupt > 0:
            self._corrupt -= 1
            self.counters.corrupted += 1
            if self.transport == "rtu":
                return packet[:-1] + bytes([packet[-1] ^ 0xFF])
            return packet[:6] + bytes([packet[6] ^ 0xFF]) + packet[7:]
        if self._truncate > 0:
            self._truncate -= 1
            self.counters.truncated += 1
            return packet[: max(1, len(packet) // 2)]
        self.counters.answers += 1
        return packet
