"""Shared bits of the Modbus tests (test_modbus_rtu.py, test_modbus_tcp.py, bench)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from liftwatch.drivers.controller import ModbusController
from liftwatch.drivers.registermap import RegisterMap, load_register_map
from liftwatch.drivers.settings import ControllerSettings

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_MAP = REPO / "firmware_config" / "controllers" / "example.toml"
LANDINGS = ["B2", "B1", "1", "2", "3", "5", "6"]
#: Every field of trace-format.md, with values off their defaults.
VALUES: dict[str, Any] = {"mode": 4, "run": 1, "dir": 2, "floor": "5", "door": 6, "zone": 1,
                          "speed": 1.75, "safety": 1, "lock": 1, "overload": 1,
                          "fault": 70001}


def example_map() -> RegisterMap:
    return load_register_map(EXAMPLE_MAP)


def rtu_settings(port: str, **kw: Any) -> ControllerSettings:
    base: dict[str, Any] = {"enabled": True, "transport": "rtu", "port": port,
                            "baudrate": 115200, "parity": "N", "timeout_s": 0.1,
                            "retries": 1, "poll_interval_s": 0.05, "frame_gap_ms": 2.0,
                            "backoff_max_s": 0.8}
    base.update(kw)
    return ControllerSettings(**base)


def tcp_settings(port: int, **kw: Any) -> ControllerSettings:
    base: dict[str, Any] = {"enabled": True, "transport": "tcp", "host": "127.0.0.1",
                            "tcp_port": port, "timeout_s": 0.1, "retries": 1,
                            "poll_interval_s": 0.05, "backoff_max_s": 0.8}
    base.update(kw)
    return ControllerSettings(**base)


async def poll_until(ctl: ModbusController, ok: Callable[[dict[str, Any] | None], bool],
                     timeout: float, interval: float = 0.02) -> tuple[dict[str, Any] | None,
                                                                     float]:
    """Poll at ``interval`` until ``ok(result)``; return the result and the time it took."""
    t0 = time.monotonic()
    while True:
        v = await ctl.poll()
        if ok(v):
            return v, time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"condition not met within {timeout} s; last poll {v!r}, "
                                 f"health {ctl.health()}")
        await asyncio.sleep(interval)


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def counts_balance(bus_stats: dict[str, Any]) -> bool:
    """Every request the bus sent ended in exactly one counted outcome."""
    b = bus_stats
    return b["requests"] == (b["answers"] + b["timeouts"] + b["crc_errors"]
                             + b["framing_errors"] + b["aborted"])
