"""One Modbus transport (an RS-485 port or a TCP peer) shared by every unit on it.

RS-485 is half duplex and master driven: two requests on the wire at once garble both,
so the bus owns the pymodbus *async* client and lets ONE request be in flight, keeping
``frame_gap_ms`` of silence between frames (EdgeX device-modbus does the same per
serial port). Several :class:`~liftwatch.drivers.controller.ModbusController` units on
one port get the same bus object through :func:`acquire_bus`.

Which layer retries (pymodbus would otherwise fight us):

- pymodbus is built with ``retries=0``, ``reconnect_delay=0`` (no automatic reconnect)
  and an unbounded "no responses until disconnect" count: it only frames and sends.
- this bus retries a request ``settings.retries`` times, classifying each failed
  attempt exactly once (timeout, CRC error, framing error), keeps the gap between
  frames also between retries, and reconnects a closed transport with exponential
  back-off (``backoff_max_s`` at most). A TCP peer that stops answering entirely is
  dropped after two failed requests in a row so a restarted peer is reached again.
- the controller above backs off per unit when its device is gone, so a dead unit does
  not eat the bus time of a live one.

CRC errors are counted with a thin subclass of pymodbus's RTU framer (pymodbus drops
such frames silently); bytes that arrived without making a frame (garbage, truncated
frame) are seen through pymodbus's documented ``trace_packet`` hook.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from liftwatch.drivers.registermap import ReadRequest
from liftwatch.drivers.settings import ControllerSettings
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerRTU, FramerType
from pymodbus.pdu import DecodePDU

log = logging.getLogger(__name__)

#: pymodbus logs every timeout at ERROR with a dump of recent frames; this bus counts
#: them for health instead. Quietened only when nobody configured the logger.
_PYMODBUS_LOGGER = "pymodbus"

#: Upper bound on pymodbus's own "aborted requests before disconnect" (we decide that).
_NEVER = 1 << 30
#: A TCP peer that missed this many requests in a row is reconnected.
_TCP_DEAD_AFTER = 2


@dataclass
class BusCounters:
    """What happened on the wire, for health (bus-wide: a garbled frame names no unit)."""

    requests: int = 0        # attempts sent; each ends in exactly one of the next five
    answers: int = 0         # a valid frame (data or Modbus exception)
    timeouts: int = 0        # nothing came back
    crc_errors: int = 0      # only frames with a bad CRC came back
    framing_errors: int = 0  # bytes came back that made no frame (garbage, truncated)
    exceptions: int = 0
    aborted: int = 0         # the transport closed while the request was out
    connects: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    disconnects: int = 0


@dataclass
class ReadResult:
    """Outcome of one read: ``values`` on success, else ``error`` says why."""

    values: list[int] | None
    error: str = ""  # "", "timeout", "crc", "framing", "exception", "aborted", "disconnected"
    exception_code: int = 0
    attempts: int = 0
    #: Outcome of each attempt of this read ("answer", "timeout", "crc", "framing", ...).
    tally: dict[str, int] = field(default_factory=dict)

    @property
    def answered(self) -> bool:
        """The device answered (data or a Modbus exception): it is on the line."""
        return self.values is not None or self.error == "exception"


class _CountingFramerRTU(FramerRTU):
    """pymodbus's RTU framer, counting the frames it throws away for a bad CRC."""

    def __init__(self, decoder: DecodePDU, on_crc_error: Callable[[], None]) -> None:
        super().__init__(decoder)
        self._on_crc_error = on_crc_error

    def decode(self, data: bytes) -> tuple[int, int, int, bytes]:
        used, dev_id, tid, frame = super().decode(data)
        if used and not frame:
            self._on_crc_error()
        return used, dev_id, tid, frame


def bus_key(settings: ControllerSettings) -> tuple[Any, ...]:
    """Units whose settings give the same key share one bus."""
    if settings.transport == "tcp":
        return ("tcp", settings.host, settings.tcp_port)
    return ("rtu", settings.port)


class ModbusBus:
    """The transport of one port or peer; use :func:`acquire_bus` to share it."""

    def __init__(self, settings: ControllerSettings, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.key = bus_key(settings)
        self.counters = BusCounters()
        self._clock = clock
        self._lock = asyncio.Lock()
        self._rx_seen = False
        self._crc_seen = 0
        self._last_frame_end = 0.0
        self._ever_connected = False
        self._next_connect = 0.0
        self._connect_delay = 0.0
        self._dead_requests = 0
        self._users = 0
        self._closed = False
        s = settings
        if s.transport == "tcp":
            self._client: AsyncModbusSerialClient | AsyncModbusTcpClient = AsyncModbusTcpClient(
                s.host, port=s.tcp_port, timeout=s.timeout_s, retries=0, reconnect_delay=0,
                trace_packet=self._trace_packet)
            self._gap = 0.0  # TCP frames cannot collide; a gateway paces its own RS-485 side
        else:
            self._client = AsyncModbusSerialClient(
                s.port, framer=FramerType.RTU, baudrate=s.baudrate, parity=s.parity,
                stopbits=s.stopbits, timeout=s.timeout_s, retries=0, reconnect_delay=0,
                trace_packet=self._trace_packet)
            # The RTU minimum of 3.5 character times (11 bits each) or the configured gap.
            self._gap = max(s.frame_gap_ms / 1000.0, 3.5 * 11 / s.baudrate)
            self._client.ctx.framer = _CountingFramerRTU(DecodePDU(False), self._count_crc)
        self._client.set_max_no_responses(_NEVER)
        pm = logging.getLogger(_PYMODBUS_LOGGER)
        if pm.level == logging.NOTSET:
            pm.setLevel(logging.CRITICAL)

    # ------------------------------------------------------------------ hooks
    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if sending:
            self._rx_seen = False
        elif data:
            self._rx_seen = True
        return data

    def _count_crc(self) -> None:
        self._crc_seen += 1

    # ------------------------------------------------------------ connection
    @property
    def connected(self) -> bool:
        """True while the transport is open."""
        return bool(self._client.connected)

    async def _ensure_connected(self) -> bool:
        if self._client.connected:
            return True
        now = self._clock()
        if now < self._next_connect:
            return False
        ok = False
        try:
            ok = bool(await self._client.connect()) and bool(self._client.connected)
        except (ModbusException, OSError):
            ok = False
        except Exception as exc:  # e.g. a port setting the OS refuses: count, retry later
            if self.counters.connect_failures == 0:
                log.warning("cannot open Modbus %s: %s: %s", self.key, type(exc).__name__, exc)
        if ok:
            self.counters.connects += 1
            if self._ever_connected:
                self.counters.reconnects += 1
                log.info("Modbus %s connected again", self.key)
            self._ever_connected = True
            self._connect_delay = 0.0
            self._dead_requests = 0
            return True
        self.counters.connect_failures += 1
        base = min(0.25, self.settings.backoff_max_s)
        self._connect_delay = min(max(base, self._connect_delay * 2), self.settings.backoff_max_s)
        self._next_connect = self._clock() + self._connect_delay
        return False

    def _drop_connection(self) -> None:
        self.counters.disconnects += 1
        self._client.close()
        self._next_connect = 0.0  # try again at the next request

    # ----------------------------------------------------------------- reads
    async def read(self, req: ReadRequest) -> ReadResult:
        """One read with retries; never raises for anything the line or the device does."""
        async with self._lock:
            if self._closed:
                return ReadResult(None, "disconnected")
            result = ReadResult(None, "disconnected")
            tally: dict[str, int] = {}
            for attempt in range(1 + self.settings.retries):
                if not await self._ensure_connected():
                    result = ReadResult(None, "disconnected", attempts=attempt, tally=tally)
                    break
                result = await self._attempt(req)
                result.attempts = attempt + 1
                outcome = "answer" if result.values is not None else result.error
                tally[outcome] = tally.get(outcome, 0) + 1
                result.tally = tally
                if result.answered:
                    self._dead_requests = 0
                    return result
            if result.error != "disconnected":
                self._dead_requests += 1
                if self.settings.transport == "tcp" and self._dead_requests >= _TCP_DEAD_AFTER:
                    self._drop_connection()
                    self._dead_requests = 0
            return result

    async def _attempt(self, req: ReadRequest) -> ReadResult:
        wait = self._last_frame_end + self._gap - self._clock()
        if wait > 0:
            await asyncio.sleep(wait)
        self.counters.requests += 1
        crc_before = self._crc_seen
        self._rx_seen = False
        c = self._client
        call = {1: c.read_coils, 2: c.read_discrete_inputs, 3: c.read_holding_registers,
                4: c.read_input_registers}[req.function]
        try:
            rr = await call(req.address, count=req.count, device_id=req.unit)
        except ConnectionException:
            self.counters.aborted += 1
            return ReadResult(None, "aborted")
        except (TimeoutError, ModbusException, OSError):
            return self._classify_failure(crc_before)
        except Exception as exc:  # a pymodbus surprise must not stop the lift's polling
            log.warning("Modbus read %s failed unexpectedly: %s: %s", req, type(exc).__name__,
                        exc)
            self.counters.framing_errors += 1
            return ReadResult(None, "framing")
        finally:
            self._last_frame_end = self._clock()
        if rr is None:  # pragma: no cover - only with no_response_expected
            return self._classify_failure(crc_before)
        if rr.isError():
            self.counters.answers += 1
            self.counters.exceptions += 1
            return ReadResult(None, "exception", exception_code=int(rr.exception_code))
        if req.function in (1, 2):
            values = [1 if b else 0 for b in list(rr.bits)[:req.count]]
        else:
            values = [int(r) for r in rr.registers]
        if len(values) != req.count:
            self.counters.framing_errors += 1
            return ReadResult(None, "framing")
        self.counters.answers += 1
        return ReadResult(values)

    def _classify_failure(self, crc_before: int) -> ReadResult:
        if self._crc_seen > crc_before:
            self.counters.crc_errors += 1
            return ReadResult(None, "crc")
        if self._rx_seen:
            self.counters.framing_errors += 1
            return ReadResult(None, "framing")
        self.counters.timeouts += 1
        return ReadResult(None, "timeout")

    # ------------------------------------------------------------- lifecycle
    def stats(self) -> dict[str, Any]:
        """Bus counters and connection state (JSON-able)."""
        out: dict[str, Any] = asdict(self.counters)
        out["bad_crc_frames"] = self._crc_seen
        out["connected"] = self.connected
        out["reconnect_in_s"] = max(0.0, round(self._next_connect - self._clock(), 3))
        return out

    async def close(self) -> None:
        """Close the transport (the last user of a shared bus does this)."""
        async with self._lock:
            self._closed = True
            self._client.close()


#: Buses per event loop (a pymodbus client belongs to the loop it was made in).
_REGISTRIES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                       dict[tuple[Any, ...], ModbusBus]] = (
    weakref.WeakKeyDictionary())


def acquire_bus(settings: ControllerSettings) -> ModbusBus:
    """The bus for these settings' port or peer, shared by all units on it in this loop.

    Units on one RS-485 line must agree on the line's parameters; a mismatch is a
    configuration error, raised here rather than garbling frames later.
    """
    loop = asyncio.get_running_loop()
    buses = _REGISTRIES.setdefault(loop, {})
    key = bus_key(settings)
    bus = buses.get(key)
    if bus is None or bus._closed:
        bus = ModbusBus(settings)
        buses[key] = bus
    else:
        a, b = bus.settings, settings
        if (a.baudrate, a.parity, a.stopbits) != (b.baudrate, b.parity, b.stopbits) and \
                a.transport == "rtu":
            raise ValueError(f"units on {a.port} disagree on the line settings: "
                             f"{a.baudrate} {a.parity} {a.stopbits} vs "
                             f"{b.baudrate} {b.parity} {b.stopbits}")
    bus._users += 1
    return bus


async def release_bus(bus: ModbusBus) -> None:
    """Give a bus back; the last user closes it."""
    bus._users -= 1
    if bus._users > 0:
        return
    await bus.close()
    for buses in _REGISTRIES.values():
        if buses.get(bus.key) is bus:
            del buses[bus.key]
