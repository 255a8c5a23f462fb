"""Modbus TCP against a real pymodbus server on a free loopback port."""

from __future__ import annotations

import asyncio
import random
import struct
import time

import pytest
from conftest import free_port
from liftwatch.drivers.controller import ModbusController
from liftwatch.drivers.modbus_bus import ModbusBus
from liftwatch.drivers.modbus_server import ModbusSimServer
from liftwatch.drivers.registermap import ReadRequest, parse_register_map
from modbus_helpers import (
    LANDINGS,
    VALUES,
    counts_balance,
    example_map,
    poll_until,
    run,
    tcp_settings,
)
from pymodbus.constants import ExcCodes

pytestmark = pytest.mark.timeout(60)


def server_on(port: int, units: tuple[int, ...] = (1,)) -> ModbusSimServer:
    srv = ModbusSimServer(example_map(), landings=LANDINGS, units=units, transport="tcp",
                          tcp_port=port)
    srv.set_values(VALUES)
    return srv


def test_full_map_over_tcp_and_two_units_behind_one_gateway() -> None:
    async def main() -> None:
        port = free_port()
        srv = server_on(port, units=(1, 7))
        srv.set_values({"floor": "B1", "mode": 0}, unit=7)
        await srv.start()
        m = example_map()
        c1 = ModbusController(tcp_settings(port, unit_id=1), m, LANDINGS, link_lost_s=0.5)
        c7 = ModbusController(tcp_settings(port, unit_id=7), m, LANDINGS, link_lost_s=0.5)
        try:
            assert await c1.poll() == VALUES
            assert await c7.poll() == {**VALUES, "floor": "B1", "mode": 0}
            assert c1.bus is c7.bus
            srv.silent_units.add(7)
            t0 = time.monotonic()
            while time.monotonic() - t0 < 1.0:
                a, b = await asyncio.gather(c1.poll(), c7.poll())
                assert a == VALUES and b is None
                await asyncio.sleep(0.03)
            assert c1.health()["state"] == "ok" and c7.health()["state"] == "lost"
            # the live unit keeps the shared connection up: it is never dropped
            assert c1.bus.stats()["disconnects"] == 0
            srv.silent_units.clear()
            await poll_until(c7, lambda v: v is not None, timeout=3.0)
            assert counts_balance(c1.bus.stats())
        finally:
            await c1.close()
            await c7.close()
            await srv.stop()
    run(main())


def test_server_restart_is_recovered_within_back_off() -> None:
    async def main() -> None:
        port = free_port()
        srv = server_on(port)
        await srv.start()
        settings = tcp_settings(port, backoff_max_s=0.6)
        ctl = ModbusController(settings, example_map(), LANDINGS, link_lost_s=0.4)
        try:
            assert await ctl.poll() == VALUES
            await srv.stop()
            for _ in range(15):  # peer gone: refused connections, counted, no exception
                assert await ctl.poll() is None
                await asyncio.sleep(0.05)
            h = ctl.health()
            assert h["state"] == "lost" and not h["connected"]
            assert h["bus"]["connect_failures"] >= 2
            srv = server_on(port)
            await srv.start()
            v, took = await poll_until(ctl, lambda v: v is not None, timeout=5.0)
            assert v == VALUES
            assert took <= settings.backoff_max_s + 2 * settings.timeout_s + 0.3
            h = ctl.health()
            assert h["state"] == "ok" and h["reconnects"] == 1
        finally:
            await ctl.close()
            await srv.stop()
    run(main())


def test_silent_peer_connection_is_dropped_and_reopened() -> None:
    """A half-open TCP peer (accepts, never answers) is reconnected, then recovered."""
    async def main() -> None:
        port = free_port()
        srv = server_on(port)
        await srv.start()
        ctl = ModbusController(tcp_settings(port), example_map(), LANDINGS, link_lost_s=0.3)
        try:
            assert await ctl.poll() == VALUES
            srv.silent_units.add(1)
            await poll_until(ctl, lambda v: ctl.health()["bus"]["disconnects"] >= 1,
                             timeout=3.0)
            h = ctl.health()
            assert h["timeouts"] >= 4 and h["state"] == "lost"
            srv.silent_units.clear()
            await poll_until(ctl, lambda v: v == VALUES, timeout=3.0)
            assert ctl.health()["bus"]["reconnects"] >= 1
        finally:
            await ctl.close()
            await srv.stop()
    run(main())


def test_link_lost_on_time_over_tcp() -> None:
    async def main() -> None:
        port = free_port()
        srv = server_on(port)
        await srv.start()
        lost_s = 0.5
        ctl = ModbusController(tcp_settings(port), example_map(), LANDINGS, link_lost_s=lost_s)
        try:
            assert await ctl.poll() == VALUES
            await srv.stop()
            t0 = time.monotonic()
            first_lost = None
            while time.monotonic() - t0 < lost_s + 0.4:
                await ctl.poll()
                if first_lost is None and ctl.health()["state"] == "lost":
                    first_lost = time.monotonic() - t0
                await asyncio.sleep(0.01)
            assert first_lost is not None and lost_s - 0.02 <= first_lost <= lost_s + 0.1
        finally:
            await ctl.close()
            await srv.stop()
    run(main())


def test_exception_answers_are_counted_by_code() -> None:
    async def main() -> None:
        port = free_port()
        srv = server_on(port)
        await srv.start()
        # a map that also reads holding 300, which this controller does not have
        wrong = parse_register_map({"fields": {
            "mode": {"table": "holding", "address": 0, "bit": 8, "width": 3},
            "fault": {"table": "holding", "address": 300}}})
        c_wrong = ModbusController(tcp_settings(port), wrong, LANDINGS, link_lost_s=5)
        try:
            v = await c_wrong.poll()
            assert v == {"mode": 3}  # vendor code 3 without the enum, fault refused
            h = c_wrong.health()
            assert h["exception_codes"] == {str(int(ExcCodes.ILLEGAL_ADDRESS)): 1}
            assert h["decode_errors"] == 0  # a refused block is a block failure
            assert h["blocks"]["u1/holding/300-300"]["exceptions"] == {"2": 1}
            srv.exception_next(4, ExcCodes.DEVICE_FAILURE)
            assert await c_wrong.poll() is None
            assert c_wrong.health()["exceptions"] == 3
        finally:
            await c_wrong.close()
            await srv.stop()
    run(main())


def test_garbage_from_the_peer_is_counted_and_survived() -> None:
    """A peer that answers with random bytes, half frames or a wrong MBAP header."""
    async def main() -> None:
        port = free_port()
        rng = random.Random(7)
        answers = [
            lambda req: rng.randbytes(rng.randint(1, 60)),
            lambda req: req[:4] + b"\x00\x13\x01\x03",                 # header, then nothing
            lambda req: req[:7] + b"\x83\x99",                          # bad exception code
            lambda req: b"\x00" * 300,                                  # flood
            lambda req: req[:4] + b"\xff\xff" + rng.randbytes(20),     # absurd length
        ]

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(260):
                    writer.write(rng.choice(answers)(data))
                    await writer.drain()
            except ConnectionError:
                pass
            finally:
                writer.close()
        junk = await asyncio.start_server(handle, "127.0.0.1", port)
        ctl = ModbusController(tcp_settings(port, backoff_max_s=0.2), example_map(), LANDINGS,
                               link_lost_s=0.3)
        try:
            results = [await ctl.poll() for _ in range(40)]
            assert all(r is None for r in results)
            h = ctl.health()
            assert h["requests"] > 0 and h["framing_errors"] > 0
            assert counts_balance(h["bus"]) and h["bus"]["answers"] == 0
            assert h["state"] == "lost"
            junk.close()
            await junk.wait_closed()
            srv = server_on(port)
            await srv.start()
            try:
                await poll_until(ctl, lambda v: v == VALUES, timeout=5.0)
            finally:
                await srv.stop()
        finally:
            await ctl.close()
            junk.close()
    run(main())


def test_server_starts_as_a_lift_at_rest() -> None:
    """Fields never set read as a lift at rest, not as the all-zero image (safety open)."""
    async def main() -> None:
        port = free_port()
        srv = ModbusSimServer(example_map(), landings=LANDINGS, transport="tcp", tcp_port=port)
        srv.set_values({"floor": "2", "door": 4})
        await srv.start()
        ctl = ModbusController(tcp_settings(port), example_map(), LANDINGS, link_lost_s=5)
        try:
            assert await ctl.poll() == {"mode": 1, "run": 0, "dir": 0, "floor": "2", "door": 4,
                                        "zone": 1, "speed": 0.0, "safety": 0, "lock": 0,
                                        "overload": 0, "fault": 0}
        finally:
            await ctl.close()
            await srv.stop()
    run(main())


def _mbap(tid: int, unit: int, fc: int, count: int, value: int) -> bytes:
    body = bytes([fc, 2 * count]) + struct.pack(f">{count}H", *[value] * count)
    return struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body


class ScriptedPeer:
    """A hand-made Modbus TCP peer: answers holding reads with ``value``; optionally closes
    after every answer (some gateways do) or sends a stale answer (old transaction id,
    other values) and a foreign one (wrong function) before the right one."""

    def __init__(self, value: int, close_after: bool = False, stale_first: bool = False
                 ) -> None:
        self.value, self.close_after, self.stale_first = value, close_after, stale_first
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                     ) -> None:
        self.connections += 1
        try:
            while True:
                hdr = await reader.readexactly(7)
                tid, _, length, unit = struct.unpack(">HHHB", hdr)
                pdu = await reader.readexactly(length - 1)
                _, count = struct.unpack(">HH", pdu[1:5])
                if self.stale_first:
                    # an older answer, then one that is not a holding read
                    writer.write(_mbap((tid - 1) & 0xFFFF, unit, 3, count, 0xDEAD))
                    writer.write(_mbap(tid, unit, 4, count, 0xBEEF))
                writer.write(_mbap(tid, unit, 3, count, self.value))
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def test_peer_closing_after_every_answer_is_reconnected_at_once() -> None:
    async def main() -> None:
        peer = ScriptedPeer(0x1234, close_after=True)
        await peer.start()
        bus = ModbusBus(tcp_settings(peer.port, timeout_s=0.5))
        req = ReadRequest(1, 3, 0, 4)
        try:
            slowest = 0.0
            for _ in range(20):
                t0 = time.monotonic()
                assert (await bus.read(req)).values == [0x1234] * 4
                slowest = max(slowest, time.monotonic() - t0)
                await asyncio.sleep(0.01)
            st = bus.stats()
            assert slowest < 0.25  # never the 0.5 s timeout
            assert st["timeouts"] == 0 and st["peer_closed"] >= 10
            assert peer.connections >= 11 and st["reconnects"] == peer.connections - 1
        finally:
            await bus.close()
            await peer.stop()
    run(main())


def test_stale_and_foreign_answers_are_discarded_by_transaction_id_and_function() -> None:
    async def main() -> None:
        peer = ScriptedPeer(0x0042, stale_first=True)
        await peer.start()
        bus = ModbusBus(tcp_settings(peer.port))
        try:
            for _ in range(5):
                assert (await bus.read(ReadRequest(1, 3, 0, 2))).values == [0x42, 0x42]
            st = bus.stats()
            assert st["mismatched"] == 10 and st["answers"] == 5 and counts_balance(st)
        finally:
            await bus.close()
            await peer.stop()
    run(main())
