"""The RTU transaction against the bytes a real RS-485 line delivers: late answers,
duplicated frames, idle bytes, an echoing adapter, foreign frames, a busy slave.

A small hand-made slave (:class:`ScriptedSlave`) answers on the far end of a socat
pseudo-terminal pair; the faults are its own bytes on the line. Every register it
serves carries the block and the poll it was served for (``0xA000 | k``), so a wrong
answer taken for the right one cannot go unnoticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from collections.abc import Callable

import pytest
from conftest import PtyPair
from liftwatch.drivers.modbus_bus import (
    ModbusBus,
    answer_problem,
    crc16,
    find_rtu_frame,
    request_pdu,
    rtu_adu,
)
from liftwatch.drivers.registermap import ReadRequest
from modbus_helpers import counts_balance, rtu_settings, run

pytestmark = pytest.mark.timeout(60)

A = ReadRequest(1, 3, 0, 6)   # two blocks of the same shape: 6 holding registers
B = ReadRequest(1, 3, 10, 6)


class ScriptedSlave:
    """An RTU slave on ``path`` answering reads of unit 1 from ``value(address)``."""

    def __init__(self, path: str, value: Callable[[int], int]) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self.value = value
        self.buf = bytearray()
        self.requests = 0
        self.prefix = b""                      # bytes before every answer
        self.echo = False                      # repeat the request first (adapter echo)
        self.duplicate = False                 # send every answer twice
        self.late: dict[int, float] = {}       # request number -> delay of its answer
        self.busy = 0                          # answer the next n requests with exception 06
        self.foreign = b""                     # a valid frame of another exchange first
        self.silent_units: set[int] = set()
        self._handles: list[asyncio.TimerHandle] = []
        asyncio.get_running_loop().add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self.buf += os.read(self.fd, 4096)
        while len(self.buf) >= 8:
            req = bytes(self.buf[:8])
            del self.buf[:8]
            if crc16(req[:6]) != req[6:]:
                self.buf.clear()
                return
            self._answer(req)

    def _answer(self, req: bytes) -> None:
        unit, fc, addr, count = struct.unpack(">BBHH", req[:6])
        self.requests += 1
        n = self.requests
        if unit in self.silent_units:
            return
        if self.busy:
            self.busy -= 1
            pdu = bytes([fc | 0x80, 6])
        else:
            regs = [self.value(a) for a in range(addr, addr + count)]
            pdu = bytes([fc, 2 * count]) + b"".join(r.to_bytes(2, "big") for r in regs)
        frame = self.prefix + rtu_adu(unit, pdu)
        if self.duplicate:
            frame += rtu_adu(unit, pdu)
        if self.echo:
            frame = req + frame
        frame = self.foreign + frame
        delay = self.late.get(n)
        if delay is None:
            os.write(self.fd, frame)
        else:  # built now (the values of now), sent later
            loop = asyncio.get_running_loop()
            self._handles.append(loop.call_later(delay, os.write, self.fd, frame))

    def close(self) -> None:
        for h in self._handles:
            h.cancel()
        asyncio.get_running_loop().remove_reader(self.fd)
        os.close(self.fd)


async def _polls(pty_pair: PtyPair, n: int, setup: Callable[[ScriptedSlave], None],
                 **kw: object) -> tuple[ModbusBus, ScriptedSlave, int]:
    """``n`` polls of blocks A and B; every answer taken must be this poll's. Returns
    the bus, the slave and how many reads got their values."""
    poll = 0

    def value(addr: int) -> int:
        return (0xA000 if addr < 10 else 0xB000) | poll

    slave = ScriptedSlave(pty_pair.b, value)
    setup(slave)
    bus = ModbusBus(rtu_settings(pty_pair.a, **kw))
    good = 0
    try:
        for poll in range(1, n + 1):
            for req, tag in ((A, 0xA000), (B, 0xB000)):
                res = await bus.read(req)
                if res.values is not None:
                    assert res.values == [tag | poll] * 6, (
                        f"poll {poll}: {req} took {[hex(v) for v in res.values]}; "
                        f"{bus.stats()}")
                    good += 1
            await asyncio.sleep(0.005)
    finally:
        await bus.close()
        slave.close()
    return bus, slave, good


def test_late_answers_past_the_timeout_are_never_taken_for_the_next_block(
        pty_pair: PtyPair) -> None:
    """The issue's case: an answer 1.12 x the timeout late, and the slave answers the
    retry as well; with two blocks of the same shape the late one would read as B.
    Answers up to 4 timeouts late too (past the late window: caught as a second answer
    or as a repeat of an answer already taken)."""
    def setup(s: ScriptedSlave) -> None:
        # every 5th request answered late, by 1.05 .. 4 timeouts (timeout 0.1 s)
        delays = (0.105, 0.112, 0.15, 0.19, 0.25, 0.4)
        s.late = {n: delays[(n // 5) % 6] for n in range(5, 400, 5)}

    async def main() -> None:
        bus, slave, good = await _polls(pty_pair, 40, setup)
        st = bus.stats()
        assert good >= 70  # a late answer costs a retry, not the block's values
        assert st["timeouts"] >= 6 and st["late_answers"] >= 6
        assert counts_balance(st)
    run(main())


def test_duplicated_answers_are_dropped_not_taken_for_the_next(pty_pair: PtyPair) -> None:
    def setup(s: ScriptedSlave) -> None:
        s.duplicate = True

    async def main() -> None:
        bus, _, good = await _polls(pty_pair, 30, setup)
        st = bus.stats()
        assert good == 60 and st["duplicates"] == 60 and st["timeouts"] == 0
    run(main())


def test_leading_idle_bytes_echo_and_a_foreign_frame_are_skipped(pty_pair: PtyPair) -> None:
    foreign = rtu_adu(7, bytes([3, 12]) + bytes(12))  # another unit's answer, same shape

    def setup(s: ScriptedSlave) -> None:
        s.prefix = b"\x00\xff\x00"
        s.echo = True
        s.foreign = foreign

    async def main() -> None:
        bus, _, good = await _polls(pty_pair, 20, setup)
        st = bus.stats()
        assert good == 40
        assert st["idle_bytes"] == 3 * 40 and st["echoes"] == 40 and st["mismatched"] == 40
        assert st["crc_errors"] == st["timeouts"] == 0
    run(main())


def test_busy_slave_is_retried_with_back_off(pty_pair: PtyPair) -> None:
    async def main() -> None:
        slave = ScriptedSlave(pty_pair.b, lambda a: 0xA000 | 1)
        bus = ModbusBus(rtu_settings(pty_pair.a, retries=0))
        try:
            slave.busy = 2
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            res = await bus.read(A)
            took = loop.time() - t0
            assert res.values == [0xA001] * 6
            assert bus.stats()["busy_retries"] == 2 and bus.stats()["exceptions"] == 2
            assert 0.15 <= took < 0.6  # 50 + 100 ms of back-off, no timeout
            slave.busy = 10  # busy for good: bounded, then reported as the exception
            res = await bus.read(A)
            assert res.error == "exception" and res.exception_code == 6
            assert bus.stats()["busy_retries"] == 5
        finally:
            await bus.close()
            slave.close()
    run(main())


def test_a_silent_unit_does_not_delay_reads_of_another_shape(pty_pair: PtyPair) -> None:
    """A timed-out read owes an answer only to reads of its own shape: unit 1's next
    read is sent at once, a same-shaped read waits for the late window."""
    async def main() -> None:
        slave = ScriptedSlave(pty_pair.b, lambda a: 0xA000)
        slave.silent_units.add(2)
        bus = ModbusBus(rtu_settings(pty_pair.a, retries=0))
        loop = asyncio.get_running_loop()
        try:
            assert (await bus.read(ReadRequest(2, 3, 0, 6))).error == "timeout"
            t0 = loop.time()
            assert (await bus.read(A)).values is not None  # other unit: no wait
            assert loop.time() - t0 < 0.06
            assert (await bus.read(ReadRequest(1, 3, 0, 6))).values is not None
            slave.silent_units.add(1)
            assert (await bus.read(A)).error == "timeout"
            slave.silent_units.clear()
            t0 = loop.time()
            assert (await bus.read(B)).values is not None  # same shape: waits the window
            assert loop.time() - t0 >= 0.09
        finally:
            await bus.close()
            slave.close()
    run(main())


def test_answer_rules() -> None:
    pdu = request_pdu(A)
    assert pdu == bytes([3, 0, 0, 0, 6])
    ok = bytes([3, 12]) + bytes(12)
    assert answer_problem(A, 1, ok) == ""
    assert "unit" in answer_problem(A, 2, ok)
    assert "function" in answer_problem(A, 1, bytes([4, 12]) + bytes(12))
    assert "byte count" in answer_problem(A, 1, bytes([3, 10]) + bytes(10))
    assert answer_problem(A, 1, bytes([0x83, 2])) == ""
    bits = ReadRequest(1, 2, 0, 9)
    assert answer_problem(bits, 1, bytes([2, 2, 0xFF, 1])) == ""
    assert "byte count" in answer_problem(bits, 1, bytes([2, 1, 0xFF]))
    write = ReadRequest(1, 6, 5, 1)
    req = bytes([6, 0, 5, 0, 9])
    assert answer_problem(write, 1, req, req) == ""
    assert "echoed" in answer_problem(write, 1, bytes([6, 0, 6, 0, 9]), req)
    frame = rtu_adu(1, ok)
    assert find_rtu_frame(b"\x00\x13" + frame + b"\x01") == (2, 2 + len(frame))
    assert find_rtu_frame(frame[:-1] + bytes([frame[-1] ^ 1])) is None


def test_timeout_follows_baud_rate_with_the_setting_as_floor(pty_pair: PtyPair) -> None:
    big = ReadRequest(1, 3, 0, 125)
    fast = ModbusBus(rtu_settings(pty_pair.a, baudrate=115200, timeout_s=0.1))
    slow = ModbusBus(rtu_settings(pty_pair.a, baudrate=1200, parity="E", timeout_s=0.1,
                                  turnaround_ms=50.0))
    assert fast.timeout_for(big) == 0.1
    # (8 + 5 + 250 bytes) x 11 bits / 1200 + 50 ms
    assert slow.timeout_for(big) == pytest.approx(263 * 11 / 1200 + 0.05)
    assert slow.quiet_s == pytest.approx(3.5 * 11 / 1200)
