"""One Modbus transport (an RS-485 port or a TCP peer) shared by every unit on it.

RS-485 is half duplex and master driven: two requests on the wire at once garble both,
so the bus lets ONE request be in flight and keeps the line quiet between frames.
Several :class:`~liftwatch.drivers.controller.ModbusController` units on one port get
the same bus object through :func:`acquire_bus`.

**Why the transaction is written here and not left to pymodbus's client.** pymodbus
3.16's transaction manager matches an answer to the request by the unit id alone: no
function code, no byte count, no flush of the line after a timeout. On a real bus a
late answer (a slave answering 560 ms to a 0.5 s timeout, then answering the retry as
well) or a duplicated frame is then taken as the answer to the *next* request, and two
holding blocks of the same size swap their values: wrong safety and lock states. Its
framer is fed by the transport's callbacks and owns the receive buffer, so the checks
cannot be wrapped around it. This module therefore runs the transaction itself, on the
pyserial port (its non-blocking descriptor watched by the event loop) or on an asyncio
TCP stream, and keeps pymodbus for what it does well: encoding request PDUs, decoding
answer PDUs and the CRC.

An answer is accepted only when it is *the* answer (:func:`answer_problem`): CRC good,
same unit, same function code (or that code | 0x80: a Modbus exception), byte count
2 x quantity (registers) or ceil(quantity / 8) (bits), over TCP also the transaction id.
Other valid frames in the response window are discarded and counted (``mismatched``).

Line hygiene, RTU:

- before every request the line must have been quiet for ``quiet_s`` (3.5 character
  times, at least ``frame_gap_ms``); bytes found then are drained (``drained_bytes``,
  one ``resyncs`` per drain, valid frames among them ``late_answers``);
- an attempt that timed out may still be answered: that answer is *owed*. Only a
  request whose answer has the same shape (unit, function, byte count) could take it
  for its own, so only such a request waits, until a timeout after the last attempt or
  answer of the owing read: an answer up to twice the timeout late is drained, never
  taken for the next answer. Retries within the owing read do not wait (a late answer
  to it is an answer to the same question, moments old). For ``SUSPECT_TIMEOUTS`` more,
  same-shaped answers are watched for a second answer close behind (then neither is
  trusted and the request is sent again), and a frame equal to an answer the owing read
  took is counted as the late one. What is left: an answer later than twice the timeout
  arriving while the true answer is itself late (two faults at once);
- after an answer the line must stay quiet for ``quiet_s`` plus the answer's own length
  on the wire (a duplicate follows its original so): a repeat of the same frame is a
  duplicate (dropped), another answer makes it ambiguous (dropped, retried);
- leading idle bytes 0x00/0xFF (transceiver turnaround) are skipped (``idle_bytes``),
  an adapter's echo of the request is skipped (``echoes``);
- exception 06 (slave busy) is retried after 50, 100, 200 ms, apart from ``retries``;
- the timeout of a request is the configured one or, when longer, the time the request
  and its longest answer take on the wire at this baud rate plus ``turnaround_ms``.

TCP: one connection per peer; a peer that closed (a gateway that closes after every
answer) is reconnected at once and the request sent again, never waited on; a peer
that misses two requests in a row is dropped and reconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import struct
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import serial
from liftwatch.drivers.registermap import BIT_FUNCTIONS, ReadRequest
from liftwatch.drivers.settings import ControllerSettings
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.bit_message import ReadCoilsRequest, ReadDiscreteInputsRequest
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
)

log = logging.getLogger(__name__)

#: Bytes an RS-485 transceiver leaves on the line when it turns around (not a unit id).
IDLE_BYTES = frozenset({0x00, 0xFF})
#: Modbus exception 06: slave device busy; retried after these waits (seconds).
BUSY = 6
BUSY_BACKOFF_S = (0.05, 0.1, 0.2)
#: The OS cannot time silences shorter than this reliably (scheduler, USB adapters).
QUIET_FLOOR_S = 0.002
#: A garbled frame counts as over after this much silence at least.
FRAME_END_FLOOR_S = 0.01
#: After its late window an owed answer may still come, later than any slave should:
#: same-shaped answers are watched for a second frame for this many timeouts more.
SUSPECT_TIMEOUTS = 10
#: ... for twice the usual answer time, and at least this long (a loaded host).
SUSPECT_WATCH_S = 0.02
#: A TCP peer that missed this many requests in a row is reconnected.
_TCP_DEAD_AFTER = 2
#: Modbus exception codes by number, for messages.
EXCEPTION_NAMES = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
                   4: "slave device failure", 5: "acknowledge", 6: "slave device busy",
                   8: "memory parity error", 10: "gateway path unavailable",
                   11: "gateway target failed to respond"}

_REQUESTS = {1: ReadCoilsRequest, 2: ReadDiscreteInputsRequest,
             3: ReadHoldingRegistersRequest, 4: ReadInputRegistersRequest}
_ECHO_FUNCTIONS = (5, 6, 15, 16)  # their answers repeat address and quantity
_DECODER = DecodePDU(False)


@dataclass
class BusCounters:
    """What happened on the wire, for health (bus-wide: a garbled frame names no unit)."""

    requests: int = 0        # attempts sent; each ends in exactly one of the next five
    answers: int = 0         # the valid answer (data or Modbus exception)
    timeouts: int = 0        # nothing came back
    crc_errors: int = 0      # what came back looked like the answer but its CRC was bad
    framing_errors: int = 0  # truncated or ambiguous answer
    exceptions: int = 0
    aborted: int = 0         # the transport closed while the request was out
    busy_retries: int = 0    # exception 06 answered and the request sent again
    mismatched: int = 0      # valid frames in a response window that were not the answer
    late_answers: int = 0    # valid frames drained between transactions (too late)
    duplicates: int = 0      # a repeat of the answer just taken
    echoes: int = 0          # the adapter echoed our request
    idle_bytes: int = 0      # 0x00/0xFF skipped before a frame
    drained_bytes: int = 0   # other bytes thrown away (noise, late or partial frames)
    resyncs: int = 0         # drains that found bytes on the line
    connects: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    peer_closed: int = 0     # TCP peer had closed: reconnected and sent again at once


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


# ------------------------------------------------------------------ frame rules

def char_time_s(settings: ControllerSettings) -> float:
    """One character on the serial line: start, 8 data, parity if any, stop bits."""
    bits = 1 + 8 + (0 if settings.parity == "N" else 1) + settings.stopbits
    return bits / settings.baudrate


def data_bytes(req: ReadRequest) -> int:
    """Byte count of the answer: 2 per register, 8 bits per byte."""
    return math.ceil(req.count / 8) if req.function in BIT_FUNCTIONS else 2 * req.count


def request_pdu(req: ReadRequest) -> bytes:
    """Function code and body of a read request (pymodbus encodes and range-checks)."""
    pdu = _REQUESTS[req.function](address=req.address, count=req.count, dev_id=req.unit)
    return bytes([req.function]) + pdu.encode()


def crc16(data: bytes) -> bytes:
    """Modbus RTU CRC, low byte first as on the wire."""
    return FramerRTU.compute_CRC(data).to_bytes(2, "big")


def rtu_adu(unit: int, pdu: bytes) -> bytes:
    frame = bytes([unit]) + pdu
    return frame + crc16(frame)


def answer_problem(req: ReadRequest, unit: int, pdu: bytes,
                   request: bytes | None = None) -> str:
    """Why ``pdu`` from ``unit`` is not the answer to ``req`` ("" when it is).

    ``request`` (the request PDU) is needed for the echo-type functions 5, 6, 15, 16,
    whose answers repeat the request's address and quantity.
    """
    if unit != req.unit:
        return f"unit {unit}, expected {req.unit}"
    if not pdu:
        return "empty PDU"
    fc = pdu[0]
    if fc == req.function | 0x80:
        return "" if len(pdu) == 2 else f"exception answer of {len(pdu)} bytes"
    if fc != req.function:
        return f"function {fc}, expected {req.function}"
    if fc in _ECHO_FUNCTIONS:
        if request is None or pdu[1:5] != request[1:5]:
            return "echoed address/quantity differ from the request"
        return ""
    n = data_bytes(req)
    if len(pdu) < 2 or pdu[1] != n or len(pdu) != 2 + n:
        got = pdu[1] if len(pdu) > 1 else None
        return f"byte count {got}, expected {n}"
    return ""


def decode_answer(req: ReadRequest, pdu: bytes) -> ReadResult:
    """A checked answer PDU to values (or the exception it carries)."""
    if pdu[0] & 0x80:
        return ReadResult(None, "exception", exception_code=pdu[1])
    msg = _DECODER.decode(pdu)
    if msg is None:  # pragma: no cover - answer_problem already checked the shape
        return ReadResult(None, "framing")
    if req.function in BIT_FUNCTIONS:
        return ReadResult([1 if b else 0 for b in list(msg.bits)[:req.count]])
    return ReadResult([int(r) for r in msg.registers])


def _rtu_frame_len(buf: bytes | bytearray, i: int) -> int | None:
    """Length of the RTU frame that would start at ``i`` (None: need more bytes;
    0: no frame can start there)."""
    if len(buf) - i < 2:
        return None
    unit, fc = buf[i], buf[i + 1]
    if not 1 <= unit <= 247:
        return 0
    if fc & 0x80:
        return 5 if 1 <= fc & 0x7F <= 24 else 0
    if fc in (1, 2, 3, 4):
        if len(buf) - i < 3:
            return None
        return 5 + buf[i + 2] if buf[i + 2] else 0
    if fc in _ECHO_FUNCTIONS:
        return 8
    return 0


def find_rtu_frame(buf: bytes | bytearray) -> tuple[int, int] | None:
    """(start, end) of the first complete frame with a good CRC in ``buf``, or None.

    Frames are found by their length and CRC wherever they start (noise or idle bytes
    before them), the way libmodbus reads by expected length rather than by timing: a
    pseudo-terminal or a USB adapter does not keep the 3.5-character gaps anyway.
    """
    for i in range(len(buf) - 4):
        n = _rtu_frame_len(buf, i)
        if not n or i + n > len(buf):
            continue
        if crc16(bytes(buf[i:i + n - 2])) == bytes(buf[i + n - 2:i + n]):
            return i, i + n
    return None


def _shape(req: ReadRequest) -> tuple[int, int, int]:
    """What a data answer to ``req`` looks like: unit, function, byte count."""
    return req.unit, req.function, data_bytes(req)


@dataclass
class _Owed:
    """Answers still owed to timed-out attempts of ``req`` (one read: ``seq``)."""

    req: ReadRequest
    seq: int
    same: int = 0          # owed to attempts of read ``seq``
    old: int = 0           # owed to earlier reads of this shape (stale data if taken)
    until: float = 0.0     # same-shaped requests wait until then (the late window)
    suspect: float = 0.0   # and watch their answers closely until then
    #: answers the owing reads took: the owed one most likely repeats one of them
    taken: set[bytes] = field(default_factory=set)

    @property
    def count(self) -> int:
        return self.same + self.old


# ------------------------------------------------------------------ the lines

class _SerialLine:
    """A serial port read by the event loop: bytes, and the time the last one came."""

    def __init__(self, settings: ControllerSettings, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.clock = clock
        self.port: serial.Serial | None = None
        self.buf = bytearray()
        self.last_rx = -math.inf
        self.broken = False
        self._event = asyncio.Event()

    @property
    def open(self) -> bool:
        return self.port is not None and not self.broken

    def connect(self) -> None:
        s = self.settings
        self.port = serial.Serial(s.port, baudrate=s.baudrate, bytesize=8, parity=s.parity,
                                  stopbits=s.stopbits, timeout=0)
        self.broken = False
        with contextlib.suppress(OSError, serial.SerialException):
            self.port.reset_input_buffer()
        asyncio.get_running_loop().add_reader(self.port.fileno(), self._readable)

    def _readable(self) -> None:
        assert self.port is not None
        try:
            data = os.read(self.port.fileno(), 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the device went away (USB adapter unplugged, pty closed)
            self.broken = True
            asyncio.get_running_loop().remove_reader(self.port.fileno())
        else:
            self.buf += data
            self.last_rx = self.clock()
        self._event.set()

    def write(self, data: bytes) -> None:
        assert self.port is not None
        view = memoryview(data)
        while view:
            n = os.write(self.port.fileno(), view)
            view = view[n:]

    async def wait(self, timeout: float) -> None:
        """Until bytes arrive (or the port breaks) or ``timeout`` passes."""
        self._event.clear()
        if timeout <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)

    def close(self) -> None:
        if self.port is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.port.fileno())
            with contextlib.suppress(Exception):
                self.port.close()
        self.port = None
        self.buf.clear()


class _TcpLine:
    """One TCP connection to a Modbus peer."""

    def __init__(self, settings: ControllerSettings) -> None:
        self.settings = settings
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    @property
    def open(self) -> bool:
        return self.writer is not None and not self.writer.is_closing()

    async def connect(self) -> None:
        s = self.settings
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(s.host, s.tcp_port), s.timeout_s)

    def close(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
        self.reader = self.writer = None


# ------------------------------------------------------------------ the bus

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
        self._ever_connected = False
        self._next_connect = 0.0
        self._connect_delay = 0.0
        self._dead_requests = 0
        self._users = 0
        self._closed = False
        self._tid = 0
        self._last_frame_end = -math.inf
        #: Answers the slaves may still send to attempts that timed out, by the shape
        #: of the answer (unit, function, byte count): [request, how many, until when].
        #: Only a later request of the same shape could take one for its own answer.
        self._owed: dict[tuple[int, int, int], _Owed] = {}
        self._seq = 0                    # reads so far (an owed answer's read)
        self._latency: float | None = None  # typical request-to-answer time (RTU)
        s = settings
        self._line: _SerialLine | _TcpLine
        if s.transport == "tcp":
            self._line = _TcpLine(s)
            self.char_s = 0.0
            self.quiet_s = 0.0  # TCP frames cannot collide; a gateway paces its RS-485 side
        else:
            self._line = _SerialLine(s, clock)
            self.char_s = char_time_s(s)
            self.quiet_s = max(3.5 * self.char_s, s.frame_gap_ms / 1000.0, QUIET_FLOOR_S)
        self.frame_end_s = max(self.quiet_s, FRAME_END_FLOOR_S)

    def timeout_for(self, req: ReadRequest) -> float:
        """The request's timeout: the configured one, or longer when the request and its
        longest answer take more on the wire (slow baud rate, long block)."""
        s = self.settings
        if s.transport == "tcp":
            return s.timeout_s
        wire = (8 + 5 + data_bytes(req)) * self.char_s  # request + exception-free answer
        return max(s.timeout_s, wire + s.turnaround_ms / 1000.0)

    # ------------------------------------------------------------ connection
    @property
    def connected(self) -> bool:
        """True while the transport is open."""
        return self._line.open

    async def _ensure_connected(self) -> bool:
        if self._line.open:
            return True
        self._line.close()
        now = self._clock()
        if now < self._next_connect:
            return False
        try:
            if isinstance(self._line, _TcpLine):
                await self._line.connect()
            else:
                self._line.connect()
            ok = True
        except (OSError, TimeoutError, serial.SerialException, ValueError) as exc:
            ok = False
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
            self._owed.clear()
            return True
        self._line.close()
        self.counters.connect_failures += 1
        base = min(0.25, self.settings.backoff_max_s)
        self._connect_delay = min(max(base, self._connect_delay * 2), self.settings.backoff_max_s)
        self._next_connect = self._clock() + self._connect_delay
        return False

    def _drop_connection(self) -> None:
        self.counters.disconnects += 1
        self._line.close()
        self._next_connect = 0.0  # try again at the next request

    # ----------------------------------------------------------------- reads
    async def read(self, req: ReadRequest, *, retries: int | None = None) -> ReadResult:
        """One read with retries (``retries`` overrides the setting, e.g. 0 to probe a
        unit that has been silent); never raises for anything the line or device does."""
        async with self._lock:
            if self._closed:
                return ReadResult(None, "disconnected")
            result = ReadResult(None, "disconnected")
            tally: dict[str, int] = {}
            busy = 0
            attempt = 0
            n_retries = self.settings.retries if retries is None else retries
            self._seq += 1
            while attempt <= n_retries:
                if not await self._ensure_connected():
                    result = ReadResult(None, "disconnected", attempts=attempt, tally=tally)
                    break
                result = await self._attempt(req)
                outcome = "answer" if result.values is not None else result.error
                tally[outcome] = tally.get(outcome, 0) + 1
                result.tally = tally
                if (result.error == "exception" and result.exception_code == BUSY
                        and busy < len(BUSY_BACKOFF_S)):
                    self.counters.busy_retries += 1
                    await asyncio.sleep(BUSY_BACKOFF_S[busy])
                    busy += 1
                    continue  # a busy slave is on the line: not one of the retries
                attempt += 1
                result.attempts = attempt
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
        try:
            if isinstance(self._line, _TcpLine):
                return await self._tcp_attempt(req)
            return await self._rtu_attempt(req)
        except (OSError, serial.SerialException) as exc:
            log.debug("Modbus %s: %s", self.key, exc)
            self.counters.aborted += 1
            self._drop_connection()
            return ReadResult(None, "aborted")

    # ------------------------------------------------------------------- RTU
    async def _settle(self, req: ReadRequest) -> None:
        """Wait until the line may carry ``req``: quiet for ``quiet_s`` (and for the last
        timeout when an answer to another request may still come); drain what arrives."""
        line = self._line
        assert isinstance(line, _SerialLine)
        now = self._clock()
        shape = _shape(req)
        owed = self._owed.get(shape)
        until = -math.inf
        if owed is not None and now >= owed.suspect:
            del self._owed[shape]
        elif owed is not None and owed.seq != self._seq:  # (a late answer to an attempt of
            until = owed.until                            # this very read is its answer)
        give_up = max(now, until) + max(4 * self.quiet_s, 0.2)  # a line that never stops
        while True:
            now = self._clock()
            quiet_since = max(line.last_rx, self._last_frame_end)
            left = max(quiet_since + self.quiet_s, until) - now
            if left <= 0 or now >= give_up or line.broken:
                break
            await line.wait(min(left, give_up - now))
        if line.buf:
            self._drain(line.buf, late=True)
            line.buf.clear()

    def _drain(self, data: bytes | bytearray, *, late: bool) -> None:
        """Count bytes thrown away: valid frames among them are late answers (between
        transactions) or mismatched ones (in a response window), the rest idle or noise."""
        c = self.counters
        c.resyncs += 1
        for frame in self._frames_in(bytes(data)):
            c.drained_bytes += len(frame)
            if not self._paid(frame):
                if late:
                    c.late_answers += 1
                else:
                    c.mismatched += 1

    def _frames_in(self, data: bytes) -> Iterator[bytes]:
        """The valid RTU frames among bytes thrown away, in order; what lies between them
        is counted as idle (0x00/0xFF from a transceiver's turnaround) or drained."""
        c = self.counters
        rest = data
        while rest:
            hit = find_rtu_frame(rest)
            head = rest if hit is None else rest[:hit[0]]
            idle = sum(1 for b in head if b in IDLE_BYTES)
            c.idle_bytes += idle
            c.drained_bytes += len(head) - idle
            if hit is None:
                return
            yield rest[hit[0]:hit[1]]
            rest = rest[hit[1]:]

    async def _rtu_attempt(self, req: ReadRequest) -> ReadResult:
        line = self._line
        assert isinstance(line, _SerialLine)
        await self._settle(req)
        if line.broken:
            raise OSError("serial device gone")
        pdu = request_pdu(req)
        adu = rtu_adu(req.unit, pdu)
        timeout = self.timeout_for(req)
        self.counters.requests += 1
        line.write(adu)
        t_sent = self._clock()
        deadline = t_sent + timeout
        answer = await self._receive(req, adu, pdu, deadline)
        if isinstance(answer, ReadResult):
            self._last_frame_end = self._clock()
            if answer.error == "timeout":
                owed = self._owed.get(_shape(req))
                if owed is None or owed.seq != self._seq:
                    prev = owed
                    owed = self._owed[_shape(req)] = _Owed(req, self._seq)
                    if prev is not None:
                        owed.old, owed.taken = prev.count, prev.taken
                owed.same += 1
                owed.until = self._clock() + timeout
                owed.suspect = owed.until + SUSPECT_TIMEOUTS * timeout
            return answer
        lat = self._clock() - t_sent
        self._latency = lat if self._latency is None else 0.8 * self._latency + 0.2 * lat
        # the answer must stand alone: watch the line for one quiet interval
        verdict = await self._after_answer(req, answer, timeout)
        self._last_frame_end = self._clock()
        if verdict:
            self.counters.framing_errors += 1
            return ReadResult(None, "framing")
        owed = self._owed.get(_shape(req))
        if owed is not None and owed.seq == self._seq:
            # the late answer or the retry's: the other one is still owed, and may come
            # up to a timeout from now
            if len(owed.taken) < 8:  # (a slave late for good: a few are enough)
                owed.taken.add(answer)
            owed.until = max(owed.until, self._clock() + timeout)
            owed.suspect = max(owed.suspect, owed.until + SUSPECT_TIMEOUTS * timeout)
        self.counters.answers += 1
        result = decode_answer(req, answer[1:-2])
        if result.error == "exception":
            self.counters.exceptions += 1
        return result

    async def _receive(self, req: ReadRequest, adu: bytes, pdu: bytes, deadline: float
                       ) -> bytes | ReadResult:
        """Bytes of the answer frame, or the failed attempt's result."""
        line = self._line
        assert isinstance(line, _SerialLine)
        c = self.counters
        while True:
            buf = line.buf
            # idle bytes first (no frame starts with unit 0 or 255), then an adapter that
            # echoes our request
            idle = 0
            while idle < len(buf) and buf[idle] in IDLE_BYTES:
                idle += 1
            if idle:
                del buf[:idle]
                c.idle_bytes += idle
            if buf[:len(adu)] == adu:
                del buf[:len(adu)]
                c.echoes += 1
                continue
            hit = find_rtu_frame(buf)
            if hit is not None:
                start, end = hit
                head = bytes(buf[:start])
                frame = bytes(buf[start:end])
                del buf[:end]
                idle = sum(1 for b in head if b in IDLE_BYTES)
                c.idle_bytes += idle
                c.drained_bytes += len(head) - idle
                if frame == adu:
                    c.echoes += 1
                    continue
                problem = answer_problem(req, frame[0], frame[1:-2], pdu)
                owed = self._owed.get(_shape(req))
                if (not problem and owed is not None and owed.seq != self._seq
                        and frame in owed.taken and self._paid(frame)):
                    # a repeat of an answer an earlier read took: the owed late one, not
                    # this read's (were it this read's, the registers are unchanged and
                    # the owed one, still to come, holds the same)
                    continue
                if problem:
                    c.drained_bytes += len(frame)
                    if not self._paid(frame):
                        c.mismatched += 1
                    log.debug("Modbus %s: discarded a frame (%s) waiting for %s", self.key,
                              problem, req)
                    continue
                return frame
            now = self._clock()
            if line.broken:
                raise OSError("serial device gone")
            if buf and now - line.last_rx >= self.frame_end_s:
                bad = self._bad_frame(req, buf)
                if bad is not None:
                    return bad
            if now >= deadline:
                return self._nothing(req, buf)
            wait = deadline - now
            if buf:
                wait = min(wait, max(0.0, line.last_rx + self.frame_end_s - now) + 1e-4)
            await line.wait(wait)

    def _bad_frame(self, req: ReadRequest, buf: bytearray) -> ReadResult | None:
        """The line went quiet on bytes that make no valid frame: if they start like
        our answer, it came garbled (a CRC error costs one retry, not a timeout);
        otherwise it was noise: drop it and go on waiting."""
        c = self.counters
        for i in range(len(buf) - 1):
            if buf[i] == req.unit and buf[i + 1] in (req.function, req.function | 0x80):
                idle = sum(1 for b in buf[:i] if b in IDLE_BYTES)
                c.idle_bytes += idle
                c.drained_bytes += len(buf) - idle
                n = _rtu_frame_len(buf, i)
                whole = n is not None and n > 0 and len(buf) - i >= n
                buf.clear()
                if whole:
                    c.crc_errors += 1
                    return ReadResult(None, "crc")
                c.framing_errors += 1
                return ReadResult(None, "framing")
        self._drain(buf, late=False)
        buf.clear()
        return None

    def _nothing(self, req: ReadRequest, buf: bytearray) -> ReadResult:
        """The deadline passed without the answer."""
        c = self.counters
        if buf:
            bad = self._bad_frame(req, buf)
            if bad is not None:
                return bad
        c.timeouts += 1
        return ReadResult(None, "timeout")

    async def _after_answer(self, req: ReadRequest, frame: bytes, timeout: float) -> bool:
        """Watch the line after the answer; True when what came next makes the answer
        ambiguous (another valid answer of the same shape).

        A duplicate follows its original by a gap and its own length on the wire. While
        an answer of this shape is still owed past its late window, the one just taken
        may be that stale answer and the true one still coming: the line is then
        watched for twice the usual answer time as well."""
        line = self._line
        assert isinstance(line, _SerialLine)
        c = self.counters
        end = line.last_rx
        window = self.quiet_s + len(frame) * self.char_s
        owed = self._owed.get(_shape(req))
        if owed is not None and (owed.seq != self._seq or owed.old) and \
                self._latency is not None:
            window = min(window + max(2 * self._latency, SUSPECT_WATCH_S), max(window, timeout))
        give_up = self._clock() + max(4 * window, 0.2)
        while True:
            now = self._clock()
            left = (line.last_rx + self.quiet_s if line.buf else end + window) - now
            if left <= 0 or now >= give_up or line.broken:
                break
            await line.wait(left)
        extra = bytes(line.buf)
        line.buf.clear()
        if not extra:
            return False
        ambiguous = False
        for got in self._frames_in(extra):
            if got == frame:
                c.duplicates += 1
            elif self._paid(got, self._seq):
                pass  # the answer to a timed-out attempt of this read (and no older owed)
            elif not answer_problem(req, got[0], got[1:-2]):
                # two answers of this shape to one request: one is stale, trust neither
                if not self._paid(got):
                    c.mismatched += 1
                ambiguous = True
            else:
                c.mismatched += 1
        c.resyncs += 1
        return ambiguous

    def _paid(self, frame: bytes, seq: int | None = None) -> bool:
        """A valid frame of a shape still owed (``seq``: owed to that read only) is a
        late answer: count it and owe one less."""
        pdu = frame[1:-2]
        shape = (frame[0], pdu[0], pdu[1] if len(pdu) > 2 else 0)
        owed = self._owed.get(shape)
        if owed is None or (seq is not None and (owed.seq != seq or owed.old)):
            return False
        self.counters.late_answers += 1
        if owed.old:  # the oldest first: they were due first
            owed.old -= 1
        else:
            owed.same -= 1
        if owed.count <= 0:
            del self._owed[shape]
        return True

    # ------------------------------------------------------------------- TCP
    async def _tcp_attempt(self, req: ReadRequest) -> ReadResult:
        line = self._line
        assert isinstance(line, _TcpLine)
        c = self.counters
        pdu = request_pdu(req)
        timeout = self.timeout_for(req)
        c.requests += 1
        for resend in (False, True):
            assert line.reader is not None and line.writer is not None
            if line.reader.at_eof():  # closed after its last answer: open again at once
                c.peer_closed += 1
                if not await self._tcp_reopen():
                    c.aborted += 1
                    return ReadResult(None, "aborted")
                assert line.reader is not None and line.writer is not None
            self._tid = (self._tid + 1) & 0xFFFF
            tid = self._tid
            line.writer.write(struct.pack(">HHHB", tid, 0, len(pdu) + 1, req.unit) + pdu)
            deadline = self._clock() + timeout
            try:
                await line.writer.drain()
                while True:
                    left = deadline - self._clock()
                    hdr = await asyncio.wait_for(line.reader.readexactly(7), max(left, 0.0))
                    r_tid, proto, length, unit = struct.unpack(">HHHB", hdr)
                    if proto != 0 or not 2 <= length <= 254:
                        c.framing_errors += 1  # the stream is out of step: start afresh
                        self._drop_connection()
                        return ReadResult(None, "framing")
                    body = await asyncio.wait_for(line.reader.readexactly(length - 1),
                                                  max(deadline - self._clock(), 0.0))
                    if r_tid != tid or answer_problem(req, unit, body, pdu):
                        c.mismatched += 1   # an earlier request's late answer, or not ours
                        continue
                    c.answers += 1
                    result = decode_answer(req, body)
                    if result.error == "exception":
                        c.exceptions += 1
                    return result
            except TimeoutError:
                c.timeouts += 1
                return ReadResult(None, "timeout")
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                partial = getattr(exc, "partial", b"")
                if not resend and not partial:
                    # the peer had closed (after its last answer): reconnect, send again
                    c.peer_closed += 1
                    if await self._tcp_reopen():
                        continue
                c.aborted += 1
                self._drop_connection()
                return ReadResult(None, "aborted")
        c.aborted += 1  # pragma: no cover - the loop returns
        return ReadResult(None, "aborted")

    async def _tcp_reopen(self) -> bool:
        self._line.close()
        self.counters.disconnects += 1
        self._next_connect = 0.0
        return await self._ensure_connected()

    # ------------------------------------------------------------- lifecycle
    def stats(self) -> dict[str, Any]:
        """Bus counters and connection state (JSON-able)."""
        out: dict[str, Any] = asdict(self.counters)
        out["connected"] = self.connected
        out["reconnect_in_s"] = max(0.0, round(self._next_connect - self._clock(), 3))
        out["quiet_ms"] = round(self.quiet_s * 1000, 2)
        return out

    async def close(self) -> None:
        """Close the transport (the last user of a shared bus does this)."""
        async with self._lock:
            self._closed = True
            self._line.close()


#: Buses per event loop (a line belongs to the loop it was opened in).
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
