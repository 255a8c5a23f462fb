"""Partial answers are faults: a refused block or a silent auxiliary unit, seen through
the controller (pymodbus simulated controller over a socat pseudo-terminal pair)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from conftest import PtyPair
from liftwatch.agent.health import assess, ctl_link_view
from liftwatch.agent.tools.check import FAIL, PASS, Observed, controller_rows
from liftwatch.agent.tools.monitor import ctl_link_lines
from liftwatch.drivers.controller import ModbusController
from liftwatch.drivers.modbus_server import ModbusSimServer
from liftwatch.drivers.registermap import load_register_map
from modbus_helpers import LANDINGS, VALUES, example_map, rtu_settings, run
from pymodbus.constants import ExcCodes

pytestmark = pytest.mark.timeout(60)

AUX_MAP = """
[fields.mode]
table = "holding"
address = 0
[fields.door]
table = "holding"
address = 1
[fields.overload]
table = "discrete"
address = 10
unit = 2
"""


def test_refused_block_fails_alone_logs_and_recovers(pty_pair: PtyPair,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Exception 02 for the main block while the discrete input answers: the holding
    fields are unknown, the block is failing after link_lost_s (a log line, the fault's
    detail names it), the link itself stays up; it recovers after 3 good answers."""
    caplog.set_level(logging.INFO, logger="liftwatch.drivers.controller")

    async def main() -> None:
        srv = ModbusSimServer(example_map(), landings=LANDINGS, transport="rtu",
                              port=pty_pair.b, baudrate=115200)
        srv.set_values(VALUES)
        await srv.start()
        ctl = ModbusController(rtu_settings(pty_pair.a), example_map(), LANDINGS,
                               link_lost_s=0.4)
        try:
            srv.refused[3] = ExcCodes.ILLEGAL_ADDRESS  # the map's holding block is refused
            faults = []
            t0 = time.monotonic()
            while time.monotonic() - t0 < 1.0:
                v = await ctl.poll()
                assert v == {"overload": VALUES["overload"]}  # never stale, never default
                faults = ctl.block_faults()
                if faults:
                    break
                await asyncio.sleep(0.05)
            took = time.monotonic() - t0
            assert 0.35 <= took <= 0.8
            (f,) = faults
            assert f["block"] == "u1/holding/0-7" and f["exception"] == 2
            assert f["error"] == "exception" and "mode" in f["fields"]
            h = ctl.health()
            assert h["state"] == "ok" and h["polls_partial"] >= 3 and h["polls_failed"] == 0
            view = ctl_link_view({"ok": True, "last_valid_s": 0.1}, h)
            assert view["blocks_failing"][0]["block"] == "u1/holding/0-7"
            state, why = assess({"ctl_link": view}, [], 0)
            assert state == "degraded" and why == ["ctl_block:u1/holding/0-7"]
            rows = controller_rows(_Cfg(), Observed(ctl_polls=10, ctl_answers=10,
                                                    health={"controller": h}))
            by = {r.name: r for r in rows}
            row = by["controller block u1/holding/0-7"]
            assert row.status == FAIL and "exception 02" in row.detail
            assert "register map" in row.detail and "unit id" in row.detail
            assert by["controller block u1/discrete/10-10"].status == PASS
            shown = "\n".join(ctl_link_lines(h))
            assert "exceptions" in shown and "FAILING u1/holding/0-7" in shown
            assert "exception 02" in shown
            del srv.refused[3]
            for _ in range(3):
                assert await ctl.poll() == VALUES
            assert ctl.block_faults() == []
            text = caplog.text
            assert "u1/holding/0-7" in text and "failing" in text and "answers again" in text
            assert text.count("failing for") == 1 and text.count("answers again") == 1
        finally:
            await ctl.close()
            await srv.stop()
    run(main())


class _Ctl:
    enabled = True
    unit_id = 1
    transport = "rtu"
    port = "/dev/ttyUSB0"
    baudrate = 115200
    parity = "N"
    stopbits = 1


class _Cfg:
    controller = _Ctl()


def test_silent_auxiliary_unit_degrades_only_its_fields(pty_pair: PtyPair,
                                                       tmp_path: Path) -> None:
    (tmp_path / "aux.toml").write_text(AUX_MAP)
    m = load_register_map(tmp_path / "aux.toml")

    async def main() -> None:
        srv = ModbusSimServer(m, transport="rtu", port=pty_pair.b, baudrate=115200,
                              units=(1, 2))
        srv.set_values({"mode": 1, "door": 2, "overload": 1})
        await srv.start()
        s = rtu_settings(pty_pair.a, backoff_max_s=0.4)
        ctl = ModbusController(s, m, [], link_lost_s=0.5)
        try:
            assert await ctl.poll() == {"mode": 1, "door": 2, "overload": 1}
            srv.silent_units.add(2)
            t0 = time.monotonic()
            slow = 0
            while time.monotonic() - t0 < 1.5:
                t1 = time.monotonic()
                assert await ctl.poll() == {"mode": 1, "door": 2}
                slow += time.monotonic() - t1 > s.timeout_s
                await asyncio.sleep(0.03)
            h = ctl.health()
            assert h["state"] == "ok" and h["polls_failed"] == 0
            assert h["units"]["2"]["silent_polls"] >= 2
            assert h["blocks"]["u2/discrete/10-10"]["skipped"] > 0  # backed off, not polled
            assert slow <= 6  # only the probes of unit 2 wait its timeout
            assert [f["block"] for f in ctl.block_faults()] == ["u2/discrete/10-10"]
            srv.silent_units.clear()
            t0 = time.monotonic()
            while await ctl.poll() != {"mode": 1, "door": 2, "overload": 1}:
                assert time.monotonic() - t0 < 2.0
                await asyncio.sleep(0.03)
            assert ctl.block_faults()  # well again after 3 valid answers in a row
            for _ in range(2):
                assert await ctl.poll() == {"mode": 1, "door": 2, "overload": 1}
            assert ctl.block_faults() == []
            # the controller's own unit silent: the auxiliary unit alone is no link
            srv.silent_units.add(1)
            assert await ctl.poll() is None
            assert ctl.block_faults() == []  # that is controller_link_lost, not a block
        finally:
            await ctl.close()
            await srv.stop()
    run(main())
