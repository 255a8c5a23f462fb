"""A fault-injecting RS-485 bus on pseudo-terminals, and a fault-injecting Modbus TCP proxy.

What a machine room's field bus does to a Modbus master, reproduced between the agent
and the libmodbus test slaves (tests/modbus_c):

- :class:`RtuFaultBus` owns the master end of one pseudo-terminal for the agent and one
  per slave process. Bytes cross it at line speed (``char_bits`` / ``baud`` a byte, one
  frame after another in each direction), and each answer frame may be held past the
  agent's timeout, duplicated, corrupted, truncated, dropped or preceded by idle 0x00
  bytes; requests to a silent unit or a switched-off slave get nothing; an echoing
  adapter sends the agent its own request back.
- :class:`TcpFaultProxy` sits between a Modbus TCP client and server: it closes the
  connection after each answer (a slave that does so), holds, duplicates or drops
  answers.

Both run their own event loop in a thread, so the agent under test keeps its loop to
itself (as on the terminal) and sync tests can use them too. Every frame and every fault
is recorded in ``events`` with ``time.monotonic`` stamps.

The bus holds the master ends itself instead of relaying socat pairs: pacing and fault
injection then act on the bytes directly, and a slave process that dies and restarts on
its tty (a reboot) does not tear a relay down. Requests go only to the slave serving the
addressed unit: libmodbus 3.1.6 RTU slaves take the frame after a request for another
unit to be that unit's answer (``confirmation_to_ignore``) and would lose the next
request whenever the other unit is silent; a real multi-drop device resynchronises on
the 3.5-character silence instead, so routing is the faithful choice here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import threading
import time
import tty
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: A partial frame with no new byte for this long is passed on as it is (noise).
STALE_S = 0.05


@dataclass(frozen=True)
class Fault:
    """What happens to one answer frame.

    ``late``: delivered ``delay_s`` after the slave sent it; ``dup``: delivered, then again
    ``delay_s`` later (0: right behind it, the two in one write); ``crc``: one data bit
    flipped; ``truncate``: the last ``nbytes`` cut; ``drop``: never delivered. ``unit``:
    only answers of that unit.
    """

    kind: str
    delay_s: float = 0.0
    unit: int | None = None
    nbytes: int = 1

    def __post_init__(self) -> None:
        if self.kind not in ("late", "dup", "crc", "truncate", "drop"):
            raise ValueError(f"fault kind {self.kind!r}")


@dataclass(frozen=True)
class Event:
    """One thing the bus or proxy did: ``kind`` request, answer, a fault kind, ..."""

    t: float
    kind: str
    unit: int
    frame: bytes
    detail: str = ""


Policy = Callable[[int, bytes], Fault | None]


class _LoopThread:
    """An asyncio loop in a daemon thread; ``call`` runs a coroutine there and waits."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name=name)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def soon(self, fn: Callable[..., Any], *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.call(cancel_all(), timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


def answer_length(buf: bytes) -> int | None:
    """Length of the RTU answer frame starting ``buf``; None: need more bytes; 0: no frame."""
    if len(buf) < 2:
        return None
    fc = buf[1]
    if fc & 0x80:
        return 5
    if fc in (1, 2, 3, 4):
        return None if len(buf) < 3 else 5 + buf[2]
    return 8 if fc in (5, 6, 15, 16) else 0


def request_length(buf: bytes) -> int | None:
    """Length of the RTU request frame starting ``buf`` (same conventions)."""
    if len(buf) < 2:
        return None
    fc = buf[1]
    if fc in (1, 2, 3, 4, 5, 6):
        return 8
    if fc in (15, 16):
        return None if len(buf) < 7 else 9 + buf[6]
    return 0


class _Line:
    """One direction of the bus toward a pty master: frames in order, at line speed.

    A frame reaches the far end whole, when its last byte would have arrived at the baud
    rate, and consecutive frames keep the RTU 3.5-character silence between them. A UART
    delivers a frame's bytes back to back: writing them one by one from Python would add
    gaps from scheduling jitter that a real line never has (and that a master rightly
    takes for the end of a frame).
    """

    def __init__(self, fd: int, char_s: float) -> None:
        self.fd = fd
        self.char_s = char_s
        self.busy_until = 0.0
        self.dropped = 0  # bytes the far side's full buffer refused
        self._queue: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def send(self, data: bytes) -> None:
        if data:
            self._queue.append(data)
            self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                data = self._queue.popleft()
                start = max(time.monotonic(), self.busy_until + 3.5 * self.char_s)
                self.busy_until = start + len(data) * self.char_s
                await asyncio.sleep(self.busy_until - time.monotonic())
                self._write(data)

    def _write(self, data: bytes) -> None:
        try:
            os.write(self.fd, data)
        except (BlockingIOError, OSError):
            self.dropped += len(data)

    def cancel(self) -> None:
        self._task.cancel()


class _Port:
    """A pseudo-terminal whose master the bus holds; ``path`` is what a process opens.

    The bus keeps the slave end open too, so that the master never reads EIO while no
    process has the tty open (before the agent starts, while a slave reboots).
    """

    def __init__(self, link: Path) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo or line editing before the process sets raw itself
        os.set_blocking(self.master, False)
        link.unlink(missing_ok=True)
        link.symlink_to(os.ttyname(self._slave))
        self.path = str(link)
        self.buf = b""
        self.last_rx = 0.0

    def flush(self) -> None:
        """Discard what waits in the tty (bytes for a process that is not there)."""
        termios.tcflush(self._slave, termios.TCIOFLUSH)
        self.buf = b""

    def close(self) -> None:
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class RtuFaultBus:
    """An RS-485 line between the agent's pty and the slaves' ptys, with faults on demand.

    Standing faults are attributes a test sets at any time: ``leading_zeros`` (0x00
    bytes before every answer), ``echo`` (the adapter echoes the agent's bytes),
    ``silent_units``. One-shot faults go through :meth:`inject`; ``policy`` (unit,
    frame) -> Fault | None decides for every other answer (random schedules).
    """

    def __init__(self, workdir: Path, *, baud: int = 19200, char_bits: int = 10) -> None:
        self.workdir = Path(workdir)
        self.baud = baud
        self.char_s = char_bits / baud
        self.leading_zeros = 0
        self.echo = False
        self.silent_units: frozenset[int] = frozenset()
        self.policy: Policy | None = None
        self.events: list[Event] = []
        self._faults: deque[Fault] = deque()
        self._off: set[int] = set()
        self._slaves: dict[int, _Port] = {}  # unit -> its slave's port
        self._ports: list[_Port] = []
        self._lines: dict[int, _Line] = {}  # master fd -> line toward it
        self._lt = _LoopThread("rtu-fault-bus")
        self.agent = self._add_port(self.workdir / "bus-agent")
        self.agent_port = self.agent.path
        self._lt.call(self._start_port(self.agent, self._from_agent))

    # ----------------------------------------------------------------- set-up
    def _add_port(self, link: Path) -> _Port:
        port = _Port(link)
        self._ports.append(port)
        return port

    async def _start_port(self, port: _Port, on_bytes: Callable[[_Port], None]) -> None:
        self._lines[port.master] = _Line(port.master, self.char_s)
        asyncio.get_running_loop().add_reader(port.master, self._readable, port, on_bytes)

    def slave_port(self, *units: int) -> str:
        """A tty for one slave process serving ``units``: open it with the same settings."""
        port = self._add_port(self.workdir / f"bus-slave-{'-'.join(map(str, units))}")
        for u in units:
            self._slaves[u] = port
        self._lt.call(self._start_port(port, self._from_slave))
        return port.path

    def close(self) -> None:
        def detach() -> None:
            for p in self._ports:
                self._lt.loop.remove_reader(p.master)
            for line in self._lines.values():
                line.cancel()

        self._lt.soon(detach)
        self._lt.stop()
        for p in self._ports:
            p.close()

    def __enter__(self) -> RtuFaultBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- control
    def inject(self, *faults: Fault) -> None:
        """One-shot faults, each used by the next answer it matches."""
        self._faults.extend(faults)

    def power(self, unit: int, on: bool) -> None:
        """A slave switched off: its requests go nowhere, its bytes are lost; on again
        with an empty line (nothing the agent sent meanwhile reaches the new process).
        In place when this returns."""
        async def apply() -> None:
            if on:
                self._slaves[unit].flush()
                self._off.discard(unit)
            else:
                self._off.add(unit)
        self._lt.call(apply())

    def noise(self, data: bytes) -> None:
        """Raw bytes toward the agent, as a spike on the line would produce."""
        self._lt.soon(self._to_agent, data, -1, "noise")

    def count(self, kind: str, unit: int | None = None) -> int:
        return sum(1 for e in list(self.events)
                   if e.kind == kind and (unit is None or e.unit == unit))

    # ------------------------------------------------------------------ frames
    def _readable(self, port: _Port, on_bytes: Callable[[_Port], None]) -> None:
        try:
            data = os.read(port.master, 4096)
        except (BlockingIOError, OSError):
            return
        port.buf += data
        port.last_rx = time.monotonic()
        on_bytes(port)
        if port.buf:
            self._lt.loop.call_later(STALE_S, self._stale, port, port.last_rx)

    def _stale(self, port: _Port, seen: float) -> None:
        if port.buf and port.last_rx == seen:
            data, port.buf = port.buf, b""
            self._pass_noise(port, data)

    def _pass_noise(self, port: _Port, data: bytes) -> None:
        """Bytes that make no frame go on as they came: to every slave, or to the agent."""
        if port is self.agent:
            self._note("noise", -1, data, "from the agent")
            for p in set(self._slaves.values()):
                self._lines[p.master].send(data)
        else:
            self._to_agent(data, -1, "noise")

    @staticmethod
    def _split(port: _Port, length: Callable[[bytes], int | None]) -> list[bytes]:
        frames = []
        while port.buf:
            n = length(port.buf)
            if n is None or len(port.buf) < (n or 1):
                break
            if n == 0:  # not a frame start: one byte of noise
                n = 1
            frames.append(port.buf[:n])
            port.buf = port.buf[n:]
        return frames

    def _from_agent(self, port: _Port) -> None:
        for frame in self._split(port, request_length):
            if len(frame) == 1:
                self._pass_noise(port, frame)
                continue
            unit = frame[0]
            if self.echo:
                self._lines[self.agent.master].send(frame)
            target = self._slaves.get(unit)
            if unit == 0:
                self._note("request", 0, frame, "broadcast")
                for p in set(self._slaves.values()):
                    self._lines[p.master].send(frame)
            elif target is None or unit in self.silent_units or unit in self._off:
                why = ("no such unit" if target is None else
                       "unit silent" if unit in self.silent_units else "slave off")
                self._note("request_lost", unit, frame, why)
            else:
                self._note("request", unit, frame)
                self._lines[target.master].send(frame)

    def _from_slave(self, port: _Port) -> None:
        for frame in self._split(port, answer_length):
            if len(frame) == 1:
                self._pass_noise(port, frame)
                continue
            unit = frame[0]
            if unit in self._off or self._slaves.get(unit) is not port:
                self._note("answer_lost", unit, frame, "slave off")
                continue
            fault = self._next_fault(unit, frame)
            self._apply(fault, unit, frame)

    def _next_fault(self, unit: int, frame: bytes) -> Fault | None:
        for f in list(self._faults):
            if f.unit is None or f.unit == unit:
                self._faults.remove(f)
                return f
        return self.policy(unit, frame) if self.policy else None

    def _apply(self, fault: Fault | None, unit: int, frame: bytes) -> None:
        loop = self._lt.loop
        if fault is None:
            self._to_agent(frame, unit, "answer")
        elif fault.kind == "drop":
            self._note("drop", unit, frame)
        elif fault.kind == "late":
            self._note("late", unit, frame, f"held {fault.delay_s:g} s")
            loop.call_later(fault.delay_s, self._to_agent, frame, unit, "late_delivered")
        elif fault.kind == "dup" and fault.delay_s > 0:
            self._to_agent(frame, unit, "answer")
            loop.call_later(fault.delay_s, self._to_agent, frame, unit, "dup")
        elif fault.kind == "dup":
            # The copy follows 3.5 characters after the original: the host gets both in
            # one read (a UART's receive FIFO, a USB adapter's packet), so one write.
            self._note("answer", unit, frame)
            self._to_agent(frame + frame, unit, "dup")
        elif fault.kind == "crc":
            bad = bytearray(frame)
            bad[min(3, len(bad) - 3)] ^= 0x10
            self._to_agent(bytes(bad), unit, "crc")
        elif fault.kind == "truncate":
            self._to_agent(frame[:-fault.nbytes], unit, "truncate")

    def _to_agent(self, frame: bytes, unit: int, kind: str) -> None:
        self._note(kind, unit, frame)
        self._lines[self.agent.master].send(b"\x00" * self.leading_zeros + frame)

    def _note(self, kind: str, unit: int, frame: bytes, detail: str = "") -> None:
        self.events.append(Event(time.monotonic(), kind, unit, frame, detail))


class TcpFaultProxy:
    """A Modbus TCP proxy toward ``127.0.0.1:upstream_port`` that misbehaves on demand.

    ``close_after_answer``: the connection is closed right after each answer (both
    sides), as some gateways and PLCs do; one-shot :meth:`inject` faults and ``policy``
    as on the RTU bus (``late``, ``dup``, ``drop``; the unit is the MBAP unit id). A
    slave that is down (rebooting) makes the proxy close the connection it accepted.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.close_after_answer = False
        self.policy: Policy | None = None
        self.events: list[Event] = []
        self.connections = 0
        self._faults: deque[Fault] = deque()
        self._lt = _LoopThread("tcp-fault-proxy")
        self._server: asyncio.Server = self._lt.call(self._listen())
        self.port: int = self._server.sockets[0].getsockname()[1]

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._serve, "127.0.0.1", 0)

    def inject(self, *faults: Fault) -> None:
        self._faults.extend(faults)

    def count(self, kind: str) -> int:
        return sum(1 for e in list(self.events) if e.kind == kind)

    def close(self) -> None:
        self._lt.soon(self._server.close)
        self._lt.stop()

    def __enter__(self) -> TcpFaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _note(self, kind: str, unit: int, frame: bytes, detail: str = "") -> None:
        self.events.append(Event(time.monotonic(), kind, unit, frame, detail))

    @staticmethod
    async def _frame(reader: asyncio.StreamReader) -> bytes:
        head = await reader.readexactly(6)
        return head + await reader.readexactly(int.from_bytes(head[4:6], "big"))

    async def _serve(self, a_reader: asyncio.StreamReader, a_writer: asyncio.StreamWriter
                     ) -> None:
        self.connections += 1
        self._note("connect", -1, b"")
        try:
            s_reader, s_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError as exc:
            self._note("upstream_down", -1, b"", str(exc))
            a_writer.close()
            return
        loop = asyncio.get_running_loop()

        def send(frame: bytes, unit: int, kind: str) -> None:
            if not a_writer.is_closing():
                self._note(kind, unit, frame)
                a_writer.write(frame)

        async def requests() -> None:
            while True:
                frame = await self._frame(a_reader)
                self._note("request", frame[6], frame)
                s_writer.write(frame)

        async def answers() -> None:
            while True:
                frame = await self._frame(s_reader)
                unit = frame[6]
                fault = next((f for f in list(self._faults) if f.unit in (None, unit)), None)
                if fault is not None:
                    self._faults.remove(fault)
                elif self.policy is not None:
                    fault = self.policy(unit, frame)
                if fault is None:
                    send(frame, unit, "answer")
                elif fault.kind == "drop":
                    self._note("drop", unit, frame)
                elif fault.kind == "late":
                    self._note("late", unit, frame, f"held {fault.delay_s:g} s")
                    loop.call_later(fault.delay_s, send, frame, unit, "late_delivered")
                elif fault.kind == "dup":
                    send(frame, unit, "answer")
                    loop.call_later(fault.delay_s, send, frame, unit, "dup")
                else:
                    raise ValueError(f"fault {fault.kind!r} does not apply to TCP")
                if self.close_after_answer and fault is None:
                    await a_writer.drain()
                    self._note("closed", unit, b"", "after the answer")
                    return

        tasks = [asyncio.ensure_future(requests()), asyncio.ensure_future(answers())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for w in (a_writer, s_writer):
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()
