"""Modbus throughput: requests per second over a pty link at 115200 baud and over TCP.

Run: .venv/bin/python bench/bench_modbus.py [--seconds 3]

Both ends are the real code: the agent's ModbusBus / ModbusController (pymodbus async
client) against ModbusSimServer (pymodbus server) serving the example register map.
A pseudo-terminal does not pace bytes at the configured baud rate, so the pty figure
is the software's own limit; the wire limit of a real 115200 baud RS-485 line is
printed beside it for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from liftwatch.drivers.controller import ModbusController  # noqa: E402
from liftwatch.drivers.modbus_bus import ModbusBus  # noqa: E402
from liftwatch.drivers.modbus_server import ModbusSimServer  # noqa: E402
from liftwatch.drivers.registermap import ReadRequest  # noqa: E402
from liftwatch.drivers.settings import ControllerSettings  # noqa: E402
from modbus_helpers import LANDINGS, VALUES, example_map, rtu_settings, tcp_settings  # noqa: E402

BAUD = 115200


def wire_limit(req_bytes: int, resp_bytes: int, gap_ms: float) -> float:
    """Requests/s a real line allows (instant device): 11 bits a character, 3.5 characters
    of silence before the answer and the gap (at least 3.5 characters) before the next."""
    char = 11 / BAUD
    per = (req_bytes + resp_bytes) * char + 3.5 * char + max(3.5 * char, gap_ms / 1000)
    return 1 / per


async def reads_per_s(settings: ControllerSettings, seconds: float) -> tuple[float, int]:
    bus = ModbusBus(settings)
    req = ReadRequest(1, 3, 0, 8)
    assert (await bus.read(req)).values is not None
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        r = await bus.read(req)
        if r.values is None:
            raise RuntimeError(f"read failed: {r}")
        n += 1
    rate = n / (time.perf_counter() - t0)
    await bus.close()
    return rate, n


async def polls_per_s(settings: ControllerSettings, seconds: float) -> float:
    ctl = ModbusController(settings, example_map(), LANDINGS, link_lost_s=5)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        if await ctl.poll() != VALUES:
            raise RuntimeError(f"poll failed: {ctl.health()}")
        n += 1
    rate = n / (time.perf_counter() - t0)
    await ctl.close()
    return rate


async def bench_rtu(seconds: float) -> None:
    socat = shutil.which("socat")
    if socat is None:
        print("rtu: socat not installed, skipped")
        return
    with tempfile.TemporaryDirectory() as d:
        a, b = Path(d) / "ttyA", Path(d) / "ttyB"
        proc = subprocess.Popen([socat, f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while not (a.exists() and b.exists()):
                await asyncio.sleep(0.01)
            srv = ModbusSimServer(example_map(), landings=LANDINGS, transport="rtu",
                                  port=str(b), baudrate=BAUD)
            srv.set_values(VALUES)
            await srv.start()
            try:
                for gap in (0.0, 5.0):
                    s = rtu_settings(str(a), frame_gap_ms=gap, timeout_s=0.5)
                    rate, n = await reads_per_s(s, seconds)
                    print(f"rtu pty {BAUD} baud, frame_gap_ms={gap:g}: {rate:7.1f} requests/s "
                          f"(read 8 holding registers, {n} requests; a real line allows "
                          f"{wire_limit(8, 21, gap):.0f}/s)")
                s = rtu_settings(str(a), timeout_s=0.5, frame_gap_ms=5.0)
                print(f"rtu pty {BAUD} baud, frame_gap_ms={s.frame_gap_ms:g}: "
                      f"{await polls_per_s(s, seconds):7.1f} polls/s of the example map "
                      "(2 requests each)")
            finally:
                await srv.stop()
        finally:
            proc.terminate()
            proc.wait(timeout=5)


async def bench_tcp(seconds: float) -> None:
    import socket
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    srv = ModbusSimServer(example_map(), landings=LANDINGS, transport="tcp", tcp_port=port)
    srv.set_values(VALUES)
    await srv.start()
    try:
        s = replace(tcp_settings(port), timeout_s=0.5)
        rate, n = await reads_per_s(s, seconds)
        print(f"tcp loopback: {rate:7.1f} requests/s (read 8 holding registers, {n} requests)")
        print(f"tcp loopback: {await polls_per_s(s, seconds):7.1f} polls/s of the example map "
              "(2 requests each)")
    finally:
        await srv.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of each measurement")
    args = ap.parse_args()
    asyncio.run(bench_rtu(args.seconds))
    asyncio.run(bench_tcp(args.seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
