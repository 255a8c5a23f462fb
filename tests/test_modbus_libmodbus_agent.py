"""``liftwatch check`` and ``liftwatch run`` against the libmodbus slave (issue 22, Done when):
a controller that answers exception 02 for its main registers (a wrong map or address
base) fails commissioning naming the block, and the running agent raises the documented
fault within its timer, with the link's counters in its health message.

Real parts: the agent as a process, the libmodbus slave (tests/modbus_c) behind the
fault bus on pseudo-terminals (tests/faultbus.py), a real Mosquitto and a subscriber.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Broker
from faultbus import RtuFaultBus
from modbus_c.lwslave import LwSlave
from test_modbus_libmodbus import AUX_UNIT_MAP, BAUD, LANDINGS, example_registers, figures
from uplink_helpers import Observer

pytestmark = pytest.mark.timeout(90)

LIFT_ID = "310104-0002222"
LINK_LOST_S = 2.0
MAIN_BLOCK = "u1/holding/0-7"  # the example map's status, motion, floor, door, speed, fault
VALUES = {"mode": 1, "run": 0, "dir": 0, "floor": "2", "door": 2, "zone": 1, "speed": 0.0,
          "safety": 0, "lock": 0, "overload": 0, "fault": 0}


def config(tmp: Path, port: str, mqtt_port: int, register_map: str = "example") -> Path:
    p = tmp / "terminal.toml"
    p.write_text(f"""
[terminal]
lift_id = "{LIFT_ID}"

[lift]
landings = {json.dumps(LANDINGS)}
landing_heights_m = {[3.0 * i for i in range(len(LANDINGS))]}

[accel]
chip = "none"

[controller]
enabled = true
transport = "rtu"
port = "{port}"
baudrate = {BAUD}
parity = "N"
register_map = "{register_map}"
timeout_s = 0.1
retries = 1
poll_interval_s = 0.1

[detection]
link_lost_s = {LINK_LOST_S}

[uplink]
broker = "127.0.0.1"
port = {mqtt_port}
tls = false
health_s = 30.0
reconnect_min_s = 0.2
reconnect_max_s = 1.0

[storage]
data_dir = "{tmp / 'data'}"
""")
    return p


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[tuple[RtuFaultBus, LwSlave]]:
    """The example controller on unit 1 behind the fault bus, a lift at rest at "2"."""
    with RtuFaultBus(tmp_path, baud=BAUD) as bus:
        slave = LwSlave(units=(1,), rtu=bus.slave_port(1), baud=BAUD)
        with slave:
            holding, overload = example_registers(VALUES)
            slave.set(1, "holding", 0, holding)
            slave.set(1, "discrete", 10, [overload])
            yield bus, slave


def test_check_fails_a_main_block_answering_exception_02(
        controller: tuple[RtuFaultBus, LwSlave], tmp_path: Path, broker: Broker) -> None:
    bus, slave = controller
    slave.fault(1, "holding", 0, 8, 2)  # only the discrete input still answers
    cfg = config(tmp_path, bus.agent_port, broker.port)
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "liftwatch.agent.cli", "check", "--config",
                        str(cfg), "--watch", "1.5"], capture_output=True, text=True,
                       timeout=30, cwd=REPO)
    figures("check exception 02", took_s=round(time.monotonic() - t0, 2))
    assert p.returncode == 1, p.stdout + p.stderr
    rows = p.stdout.splitlines()
    failed = [r for r in rows if "  FAIL  " in r]
    assert failed and all(MAIN_BLOCK in r for r in failed), p.stdout
    (row,) = failed
    assert "exception 02" in row and "register map" in row, row
    assert slave.served(kind="exception", code=2), "the check never read the block"
    assert any("u1/discrete/10-10" in r and "  PASS  " in r for r in rows), p.stdout


def start_agent(cfg: Path) -> subprocess.Popen[bytes]:
    """``liftwatch -v run`` with its output in agent.log beside the config."""
    with open(cfg.parent / "agent.log", "wb") as log:
        # --allow-root on purpose: CI runs the tests as root; the controller is a test slave
        return subprocess.Popen([sys.executable, "-m", "liftwatch.agent.cli", "-v", "run",
                                 "--allow-root", "--config", str(cfg)], cwd=cfg.parent,
                                stdout=log,
                                stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))


def stop_agent(agent: subprocess.Popen[bytes]) -> None:
    agent.send_signal(signal.SIGTERM)
    try:
        agent.wait(10)
    except subprocess.TimeoutExpired:
        agent.kill()
        agent.wait(5)


def _events(obs: Observer, code: str, state: str) -> list[dict[str, Any]]:
    out = []
    for r in obs.on("event"):
        e = r.json()
        if e.get("code") == code and e.get("state") == state:
            out.append(e)
    return out


def test_run_raises_the_block_fault_within_its_timer_and_reports_counters(
        controller: tuple[RtuFaultBus, LwSlave], tmp_path: Path, broker: Broker) -> None:
    bus, slave = controller
    cfg = config(tmp_path, bus.agent_port, broker.port)
    obs = Observer(broker.port, pattern=f"lift/{LIFT_ID}/#", client_id="h22-observer")
    agent = start_agent(cfg)
    try:
        slave.wait_served(20, timeout=20, kind="served", fc=3)  # running, polling well
        slave.fault(1, "holding", 0, 8, 2)
        first = slave.wait_served(1, kind="exception", code=2)[0]
        deadline = time.monotonic() + LINK_LOST_S + 5
        raised: list[dict[str, Any]] = []
        while not raised and time.monotonic() < deadline:
            raised = _events(obs, "controller_block_failed", "raised")
            time.sleep(0.02)
        took = time.monotonic() - first.t
        assert raised, ("no controller_block_failed event; events: "
                        f"{[r.json() for r in obs.on('event')]}")
        (ev,) = raised
        blocks = ev["detail"]["blocks"]
        assert [(b["block"], b["exception"]) for b in blocks] == [(MAIN_BLOCK, 2)], ev
        assert not _events(obs, "controller_link_lost", "raised")  # the link is not lost
        # the counters reach the platform in the health message (the platform asks for
        # one now: health_s is at least 30 s)
        obs.publish(f"lift/{LIFT_ID}/cmd", b'{"id":"snap-1","op":"snapshot"}')
        assert obs.wait_for(lambda _: any(
            any(b.get("block") == MAIN_BLOCK for b in
                (r.json().get("ctl_link") or {}).get("blocks_failing") or [])
            for r in obs.on("health")), timeout=5), [r.json() for r in obs.on("health")]
        health = [r.json()["ctl_link"] for r in obs.on("health")][-1]
        slave.fault(1, "holding", 0, 8, 0)
        t_fixed = time.monotonic()
        assert obs.wait_for(lambda _: _events(obs, "controller_block_failed", "cleared"),
                            timeout=5)
        cleared = time.monotonic() - t_fixed
    finally:
        stop_agent(agent)
        obs.close()
    text = (tmp_path / "agent.log").read_text(errors="replace")
    figures("run exception 02", raised_after_s=round(took, 2), timer_s=LINK_LOST_S,
            cleared_after_s=round(cleared, 2), exceptions=health.get("exceptions"),
            blocks=health.get("blocks"))
    assert LINK_LOST_S - 0.3 <= took <= LINK_LOST_S + 1.5, took
    assert int(health.get("exceptions") or 0) >= 1, health
    mentions = [ln for ln in text.splitlines() if MAIN_BLOCK in ln]
    # one line when it starts failing (naming the exception), one when it answers again
    assert len(mentions) == 2 and "exception 02" in mentions[0], mentions


def test_run_with_a_silent_auxiliary_unit_keeps_the_main_units_fields(
        tmp_path: Path, broker: Broker) -> None:
    """The load-weighing device (unit 2, one field) goes silent: its block fails after the
    timer, the link is not lost, and the status keeps coming with unit 1's fields."""
    (tmp_path / "controllers").mkdir()
    (tmp_path / "controllers" / "aux_unit.toml").write_text(AUX_UNIT_MAP)
    with RtuFaultBus(tmp_path, baud=BAUD) as bus, \
            LwSlave(units=(1,), rtu=bus.slave_port(1), baud=BAUD) as main, \
            LwSlave(units=(2,), rtu=bus.slave_port(2), baud=BAUD) as aux:
        main.set(1, "holding", 0, [1, 0, 4, 2])  # running, floor "3", door code 2
        aux.set(2, "discrete", 10, [1])
        cfg = config(tmp_path, bus.agent_port, broker.port, register_map="aux_unit")
        obs = Observer(broker.port, pattern=f"lift/{LIFT_ID}/#", client_id="h22-aux")
        agent = start_agent(cfg)
        try:
            first = main.wait_served(10, timeout=20, kind="served")[0]
            time.sleep(1.0)
            t_silent = time.monotonic()
            rate_before = len(main.served(first.t, t_silent, kind="served")) / (t_silent
                                                                               - first.t)
            aux.silent(2)
            assert obs.wait_for(lambda _: _events(obs, "controller_block_failed", "raised"),
                                timeout=LINK_LOST_S + 5), [r.json() for r in obs.on("event")]
            took = time.monotonic() - t_silent
            time.sleep(LINK_LOST_S)  # long enough for a link-lost timer to have run out
            t_count = time.monotonic()
            polls_silent = len(main.served(t_silent, t_count, kind="served"))
            statuses = [r.json() for r in obs.on("status")]
        finally:
            stop_agent(agent)
            obs.close()
    (ev,) = _events(obs, "controller_block_failed", "raised")
    assert [(b["block"], b["error"]) for b in ev["detail"]["blocks"]] == [
        ("u2/discrete/10-10", "timeout")], ev
    assert not _events(obs, "controller_link_lost", "raised")
    assert statuses[-1].get("floor") == "3" and statuses[-1].get("overload") is None, statuses
    rate = polls_silent / (t_count - t_silent)
    figures("run silent unit 2", raised_after_s=round(took, 2), timer_s=LINK_LOST_S,
            unit1_reads_per_s_before=round(rate_before, 1), unit1_reads_per_s=round(rate, 1))
    assert LINK_LOST_S - 0.3 <= took <= LINK_LOST_S + 1.5
    # a probe of unit 2 now and then costs a timeout; every poll waiting one would halve it
    assert rate >= 0.6 * rate_before, "unit 1 is read less often while unit 2 is silent"
