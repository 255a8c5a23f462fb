"""Modbus RTU against a real pymodbus server on the other end of a socat pseudo-terminal pair.

The agent side opens ``pty_pair.a`` with pyserial (through pymodbus), the simulated
controller serves ``pty_pair.b``. Garbage is written into ``b`` by the test itself, so it
reaches the agent exactly as line noise on RS-485 would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from pathlib import Path

import pytest
from conftest import PtyPair, _socat_pair
from liftwatch.drivers.controller import ModbusController
from liftwatch.drivers.modbus_bus import acquire_bus, release_bus
from liftwatch.drivers.modbus_server import ModbusSimServer
from liftwatch.drivers.registermap import load_register_map
from modbus_helpers import (
    LANDINGS,
    VALUES,
    counts_balance,
    example_map,
    poll_until,
    rtu_settings,
    run,
)
from pymodbus.constants import ExcCodes

pytestmark = pytest.mark.timeout(60)


def server_for(port: str, units: tuple[int, ...] = (1,), regmap=None) -> ModbusSimServer:
    srv = ModbusSimServer(regmap or example_map(), landings=LANDINGS, units=units,
                          transport="rtu", port=port, baudrate=115200)
    srv.set_values(VALUES)
    return srv


def test_full_map_decoding_and_live_changes(pty_pair: PtyPair) -> None:
    async def main() -> None:
        srv = server_for(pty_pair.b)
        await srv.start()
        ctl = ModbusController(rtu_settings(pty_pair.a), example_map(), LANDINGS,
                               link_lost_s=1.0)
        try:
            assert await ctl.poll() == VALUES
            srv.set_values({"floor": "B2", "door": 3, "speed": 0.25, "dir": 1})
            assert await ctl.poll() == {**VALUES, "floor": "B2", "door": 3, "speed": 0.25,
                                        "dir": 1}
            h = ctl.health()
            assert h["state"] == "ok" and h["polls_ok"] == 2 and h["requests"] == 4
            assert h["timeouts"] == h["crc_errors"] == h["exceptions"] == 0
        finally:
            await ctl.close()
            await srv.stop()
    run(main())


ORDERS_MAP = """
[map]
name = "orders"
byte_order = "little"
[fields.speed]
table = "input"
address = 20
type = "float32"
word_order = "little"            # DCBA in all
[fields.fault]
table = "input"
address = 22
type = "u32"
byte_order = "big"
word_order = "little"            # CDAB
[fields.floor]
table = "input"
address = 25
labels = { 100 = "B2", 101 = "B1", 102 = "1", 105 = "5" }
[fields.mode]
table = "holding"
address = 3
type = "u32"
bit = 17
width = 3                         # a bit field in the high word of a 32-bit register pair
[fields.zone]
table = "coil"
address = 37
[fields.safety]
table = "coil"
address = 40
enum = { 0 = 1, 1 = 0 }
"""


def test_word_byte_order_and_bit_fields_over_the_wire(pty_pair: PtyPair,
                                                       tmp_path: Path) -> None:
    (tmp_path / "orders.toml").write_text(ORDERS_MAP)
    m = load_register_map(tmp_path / "orders.toml")
    want = {"mode": 5, "floor": "5", "zone": 1, "speed": 2.5, "safety": 1, "fault": 0x12345678}

    async def main() -> None:
        srv = ModbusSimServer(m, transport="rtu", port=pty_pair.b, baudrate=115200)
        srv.set_values(want)
        # the raw words on the wire, as a technician reads them in the vendor manual
        words = [srv.image[(1, 4)][a] for a in (20, 21, 22, 23)]
        assert words == [0x0000, 0x2040, 0x5678, 0x1234]  # 2.5 = 0x40200000 as DCBA
        assert srv.image[(1, 3)][3] == 0x0A00  # mode 5 in bits 17..19, bytes swapped
        await srv.start()
        ctl = ModbusController(rtu_settings(pty_pair.a), m, [], link_lost_s=1.0)
        try:
            assert await ctl.poll() == {k: want[k] for k in
                                        ("mode", "floor", "zone", "speed", "safety", "fault")}
            assert [(r.function, r.address, r.count) for r in m.read_plan(1)] == [
                (1, 37, 4), (3, 3, 2), (4, 20, 6)]
        finally:
            await ctl.close()
            await srv.stop()
    run(main())


def test_two_units_one_bus_one_unplugged(pty_pair: PtyPair) -> None:
    """Unit 2 stops answering; unit 1 on the same line keeps answering every poll."""
    async def main() -> None:
        srv = server_for(pty_pair.b, units=(1, 2))
        srv.set_values({"floor": "3"}, unit=2)
        await srv.start()
        m = example_map()
        s1 = rtu_settings(pty_pair.a, unit_id=1, frame_gap_ms=10.0)
        s2 = rtu_settings(pty_pair.a, unit_id=2, frame_gap_ms=10.0)
        c1 = ModbusController(s1, m, LANDINGS, link_lost_s=0.5)
        c2 = ModbusController(s2, m, LANDINGS, link_lost_s=0.5)
        try:
            a, b = await asyncio.gather(c1.poll(), c2.poll())
            assert a == VALUES and b == {**VALUES, "floor": "3"}
            assert c1.bus is c2.bus  # one serial port, one request in flight
            srv.silent_units.add(2)
            t0 = time.monotonic()
            ok1 = fail2 = 0
            while time.monotonic() - t0 < 1.5:
                a, b = await asyncio.gather(c1.poll(), c2.poll())
                assert a == VALUES
                ok1 += 1
                fail2 += b is None
                await asyncio.sleep(0.05)
            h1, h2 = c1.health(), c2.health()
            assert fail2 == ok1 and ok1 >= 8
            assert h1["state"] == "ok" and h1["timeouts"] == 0
            assert h2["state"] == "lost" and h2["timeouts"] >= 2
            assert h2["polls_skipped"] > 0  # backed off instead of timing out every poll
            assert h2["timeouts"] < 2 * ok1  # (retries + 1) per poll without back-off
            # the frame gap was kept between every answer and the next request
            assert srv.counters.min_gap_s is not None and srv.counters.min_gap_s >= 0.009
            srv.silent_units.clear()
            _, took = await poll_until(c2, lambda v: v is not None, timeout=3.0)
            assert took <= s2.backoff_max_s + 2 * s2.timeout_s + 0.3
            assert c2.health()["state"] == "ok"
            assert counts_balance(c1.bus.stats())
        finally:
            await c1.close()
            await c2.close()
            await srv.stop()
    run(main())


def test_garbage_and_truncated_frames_are_counted_and_survived(pty_pair: PtyPair) -> None:
    async def main() -> None:
        srv = server_for(pty_pair.b)
        await srv.start()
        ctl = ModbusController(rtu_settings(pty_pair.a, retries=0), example_map(), LANDINGS,
                               link_lost_s=5.0)
        noise = os.open(pty_pair.b, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
        rng = random.Random(5)
        stop = asyncio.Event()

        async def line_noise() -> None:
            while not stop.is_set():
                with contextlib.suppress(BlockingIOError):  # line full: drop this burst
                    os.write(noise, rng.randbytes(rng.randint(1, 40)))
                await asyncio.sleep(rng.uniform(0.0, 0.01))
        try:
            assert await ctl.poll() == VALUES
            noise_task = asyncio.create_task(line_noise())
            results = []
            for _ in range(60):
                results.append(await ctl.poll())  # must never raise
            stop.set()
            await noise_task
            good = [r for r in results if r is not None]
            assert all(r == VALUES for r in good), "a garbled frame was decoded as data"
            # deterministic faults: a bad CRC, then a frame cut in half: the first block
            # (the discrete input) is lost, the other block still answers
            no_overload = {k: x for k, x in VALUES.items() if k != "overload"}
            srv.corrupt_next(1)
            assert await ctl.poll() == no_overload
            srv.truncate_next(1)
            assert await ctl.poll() == no_overload
            await asyncio.sleep(0.05)
            _, _ = await poll_until(ctl, lambda v: v == VALUES, timeout=3.0)
            h = ctl.health()
            assert h["crc_errors"] >= 1 and h["framing_errors"] >= 1
            failed_polls = len(results) - len(good) + 2
            assert (h["crc_errors"] + h["framing_errors"] + h["timeouts"]
                    + h["polls_skipped"]) >= failed_polls
            assert counts_balance(h["bus"])
        finally:
            stop.set()
            os.close(noise)
            await ctl.close()
            await srv.stop()
    run(main())


def test_serial_device_disappears_and_comes_back(pty_pair: PtyPair, tmp_path: Path) -> None:
    """The USB-RS485 adapter is unplugged (socat gone, path removed) and plugged back."""
    pairs = [pty_pair]

    async def main() -> None:
        srv = server_for(pty_pair.b)
        await srv.start()
        settings = rtu_settings(pty_pair.a, backoff_max_s=0.5)
        ctl = ModbusController(settings, example_map(), LANDINGS, link_lost_s=0.6)
        try:
            assert await ctl.poll() == VALUES
            await srv.stop()
            pty_pair.close()
            assert not Path(pty_pair.a).exists()
            _, _ = await poll_until(ctl, lambda v: v is None and not ctl.health()["connected"],
                                    timeout=2.0)
            for _ in range(20):  # polling a vanished port: cheap failures, no exception
                assert await ctl.poll() is None
                await asyncio.sleep(0.05)
            h = ctl.health()
            assert h["state"] == "lost" and h["bus"]["connect_failures"] >= 2
            new = _socat_pair(tmp_path)  # same link paths, new pseudo-terminals
            pairs.append(new)
            srv2 = server_for(new.b)
            await srv2.start()
            try:
                v, took = await poll_until(ctl, lambda v: v is not None, timeout=5.0)
                assert v == VALUES
                # connect back-off is at most backoff_max_s, plus one request's timeouts
                assert took <= settings.backoff_max_s + 2 * settings.timeout_s + 0.3
                h = ctl.health()
                assert h["state"] == "ok" and h["reconnects"] == 1
            finally:
                await srv2.stop()
        finally:
            await ctl.close()
    try:
        run(main())
    finally:
        for p in pairs:
            p.close()


def test_link_lost_reported_on_time(pty_pair: PtyPair) -> None:
    async def main() -> None:
        srv = server_for(pty_pair.b)
        await srv.start()
        lost_s = 0.6
        ctl = ModbusController(rtu_settings(pty_pair.a), example_map(), LANDINGS,
                               link_lost_s=lost_s)
        try:
            assert await ctl.poll() == VALUES
            srv.silent_units.add(1)
            t_ok = time.monotonic()  # the last good answer was just before this
            state_at: list[tuple[float, str]] = []

            async def watch() -> None:  # what the health loop would see, every 10 ms
                while time.monotonic() - t_ok < lost_s + 0.5:
                    state_at.append((time.monotonic() - t_ok, ctl.health()["state"]))
                    await asyncio.sleep(0.01)
            watcher = asyncio.create_task(watch())
            while not watcher.done():
                await ctl.poll()
                await asyncio.sleep(0.02)
            assert all(s == "ok" for t, s in state_at if t < lost_s - 0.02)
            first_lost = min(t for t, s in state_at if s == "lost")
            assert lost_s - 0.02 <= first_lost <= lost_s + 0.1
            assert all(s == "lost" for t, s in state_at if t >= first_lost)
            srv.silent_units.clear()
            await poll_until(ctl, lambda v: v is not None, timeout=3.0)
            assert ctl.health()["state"] == "ok"
        finally:
            await ctl.close()
            await srv.stop()
    run(main())


def test_exception_responses_are_counted_and_lose_only_their_fields(pty_pair: PtyPair
                                                                   ) -> None:
    async def main() -> None:
        srv = server_for(pty_pair.b)
        await srv.start()
        ctl = ModbusController(rtu_settings(pty_pair.a), example_map(), LANDINGS,
                               link_lost_s=1.0)
        try:
            # the plan reads the discrete input first
            srv.exception_next(1, ExcCodes.ILLEGAL_ADDRESS)
            v = await ctl.poll()
            assert v == {k: x for k, x in VALUES.items() if k != "overload"}
            srv.exception_next(2, ExcCodes.ILLEGAL_ADDRESS)
            assert await ctl.poll() is None  # both reads refused: no data at all
            h = ctl.health()
            assert h["exceptions"] == 3 and h["exception_codes"] == {"2": 3}
            assert h["blocks"]["u1/discrete/10-10"]["exceptions"] == {"2": 2}
            assert h["blocks"]["u1/holding/0-7"]["exceptions"] == {"2": 1}
            assert h["decode_errors"] == 0  # a refused block is a block failure, not a value
            assert h["polls_partial"] == 1
            assert h["timeouts"] == 0 and h["polls_skipped"] == 0  # it answered: no back-off
            assert await ctl.poll() == VALUES
        finally:
            await ctl.close()
            await srv.stop()
    run(main())


def test_units_on_one_line_must_agree_on_line_settings(pty_pair: PtyPair) -> None:
    async def main() -> None:
        first = acquire_bus(rtu_settings(pty_pair.a, unit_id=1))
        try:
            with pytest.raises(ValueError, match="disagree on the line settings"):
                acquire_bus(rtu_settings(pty_pair.a, unit_id=2, baudrate=9600))
            same = acquire_bus(rtu_settings(pty_pair.a, unit_id=3))
            assert same is first
            await release_bus(same)
        finally:
            await release_bus(first)
        assert acquire_bus(rtu_settings(pty_pair.a)) is not first  # closed when last left
    run(main())
