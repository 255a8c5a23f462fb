"""Modbus TCP against a real pymodbus server on a free loopback port."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from conftest import free_port
from liftwatch.drivers.controller import ModbusController
from liftwatch.drivers.modbus_server import ModbusSimServer
from liftwatch.drivers.registermap import parse_register_map
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
