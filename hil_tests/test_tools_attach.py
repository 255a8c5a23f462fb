"""Technician tools attached to a running terminal do not disturb it (issue 18, item 4).

The terminal is the demo's: a real ``liftwatch run`` on simulated inputs and
accelerometer fed by the software rig, its controller played over Modbus RTU on a
pseudo-terminal, publishing to a real Mosquitto. ``monitor --once``, ``check`` and
``calibrate --dry-run`` attach to it with its own config, one after the other. After
they exit the terminal must still be the one online (retained ``online`` 1), its feed
socket still there, and what the rig then plays (a trip and a door cycle) must reach
the platform. Before the fix, ``monitor --once`` took the feed socket over and removed
it on exit: the rig's next message failed with ``SimFeedError: no simulated terminal
listens`` and the terminal heard no input again.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from liftsim import LiftSim, SimLift
from liftwatch.drivers.simfeed import TAP_GLOB, socket_path
from mosquitto import Broker
from observer import Observer
from rig import LIFT_ID, SoftRig
from scenarios import Scenario


def trip_after_rest() -> Scenario:
    """At rest at landing 1, then a trip to 3 and a door cycle there."""
    lift = SimLift()
    sim = LiftSim(lift, seed=5, start_floor=1)
    sim.wait(1.0)
    sim.trip("3")
    sim.door_cycle(dwell_s=2.0)
    sim.wait(1.0)
    return Scenario("tools attach", lift, sim.drain(), sim.t, [])


def retained_online(host: str, port: int, timeout: float = 5.0) -> Any:
    """The retained ``online`` value a platform connecting now is given."""
    got: dict[str, Any] = {}
    done = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-online-probe")

    def on_connect(c: mqtt.Client, *_: Any) -> None:
        c.subscribe(f"lift/{LIFT_ID}/online", qos=1)

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        got.update(payload=json.loads(msg.payload.decode()), retained=bool(msg.retain))
        done.set()

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect(host, port)
    client.loop_start()
    try:
        done.wait(timeout)
    finally:
        client.loop_stop()
        client.disconnect()
    return got


async def tool(config: Path, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "liftwatch.agent.cli", *args, "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@pytest.mark.realtime(45)
@pytest.mark.timeout(150)
def test_monitor_check_and_calibrate_leave_the_demo_terminal_online(tmp_path: Path) -> None:
    broker = Broker(workdir=tmp_path / "broker")
    (tmp_path / "broker").mkdir()
    broker.start()
    observer = Observer(broker.host, broker.port, "lift", LIFT_ID)
    observer.start()
    rig = SoftRig(tmp_path / "rig", trip_after_rest(), broker, transport="rtu")
    (tmp_path / "rig").mkdir()

    async def main() -> dict[str, tuple[int, str]]:
        await rig.start()
        online = await asyncio.to_thread(
            observer.wait_for, lambda a: a.topic.endswith("/online") and a.payload == 1, 20)
        assert online is not None, rig.agent_log()
        cfg = rig.config_path
        outs = {"monitor": await tool(cfg, "monitor", "--once", "--settle", "1.5"),
                "check": await tool(cfg, "check", "--watch", "1.5", "--broker-timeout", "2"),
                "calibrate": await tool(cfg, "calibrate", "--dry-run", "--seconds", "1.5")}
        # the tools are gone; the terminal must still hear the rig and still be online
        assert rig.agent is not None and rig.agent.poll() is None, rig.agent_log()
        assert socket_path(rig.feed_dir).exists()
        assert list(rig.feed_dir.glob(TAP_GLOB)) == []  # each tool removed its own tap
        probe = await asyncio.to_thread(retained_online, broker.host, broker.port)
        assert probe == {"payload": 1, "retained": True}
        await rig.play(observer)  # SimFeedError here: the terminal lost its feed
        return outs

    try:
        outs = asyncio.run(main())
        t_done = time.monotonic()
        trip = observer.wait_for(lambda a: a.topic.endswith("/trip")
                                 and a.payload.get("to") == "3", 20)
        door_open = observer.wait_for(
            lambda a: a.topic.endswith("/status") and a.t > t_done - 30
            and a.payload.get("floor") == "3" and a.payload.get("door") == 4, 5)
    finally:
        asyncio.run(rig.stop())
        observer.stop()
        broker.stop()
    log = rig.agent_log()
    for name in ("monitor", "check", "calibrate"):
        assert "Traceback" not in outs[name][1], outs[name][1]
    mon = outs["monitor"][1]
    # its inputs and accelerometer through a tap of the feed, as the terminal has them
    assert "door closed" in mon and "door_closed=1" in mon and "adxl345 ok" in mon, mon
    # the controller's RS-485 link is the agent's: the tools name it, never poll it
    assert "not read: the running agent (PID" in mon and "Modbus RTU link" in mon, mon
    chk = outs["check"][1]
    assert "controller link     WARN  not read: the running agent (PID" in chk, chk
    assert "input door_closed" in chk and "accel identity" in chk, chk
    cal_rc, cal = outs["calibrate"]
    assert cal_rc == 0 and "sensor z axis is" in cal and "dry run" in cal, cal
    assert trip is not None, log[-3000:]
    assert door_open is not None, log[-3000:]
    assert "simulation feed: message refused" not in log
    assert "controller_link_lost" not in json.dumps([a.payload for a in observer.events()])
