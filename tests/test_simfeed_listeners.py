"""A second reader of a simulated terminal's inputs (issue 18, item 4): a tool attached to a
feed whose socket a running terminal owns listens beside it, and never takes the socket
over nor removes it; a running agent's outbox lock names its PID."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
from liftwatch.agent.cli import main
from liftwatch.buffer.outbox import Outbox, lock_holder
from liftwatch.drivers.pins import SimulatedPins
from liftwatch.drivers.simchips import QueueSource
from liftwatch.drivers.simfeed import RESCAN_S, SimFeed, SimFeedReceiver, socket_path

pytestmark = pytest.mark.timeout(30)


def receiver(directory: Path) -> tuple[SimFeedReceiver, SimulatedPins]:
    pins = SimulatedPins({"D17": False, "D27": False})
    pins.setup_input("D17", "none")
    pins.setup_input("D27", "none")
    rx = SimFeedReceiver(directory, pins=pins, accel=QueueSource())
    rx.start()
    return rx, pins


def wait_for(cond: object, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_a_second_listener_taps_the_feed_and_leaves_the_owner_alone(tmp_path: Path) -> None:
    owner, owner_pins = receiver(tmp_path)
    feed = SimFeed(tmp_path)
    try:
        feed.set_pins({"D17": 1})
        feed.hold_accel((0.0, 0.0, 1.0))
        assert wait_for(lambda: owner_pins.read("D17"))
        tool, tool_pins = receiver(tmp_path)  # monitor / check / calibrate attaching
        assert not owner.tap and owner.path == socket_path(tmp_path)
        assert tool.tap and tool.path.name == f"simfeed.{os.getpid()}.sock"
        time.sleep(RESCAN_S)  # however soon after its last look the sender sends
        feed.set_pins({"D27": 1})
        # the tap first gets the state so far, then the message: both pins, like the owner
        assert wait_for(lambda: tool_pins.read("D17") and tool_pins.read("D27"))
        assert wait_for(lambda: owner_pins.read("D27"))
        assert tool.messages == 2 and tool.bad_messages == 0
        tool.stop()  # the tool exits
        assert socket_path(tmp_path).exists() and not tool.path.exists()
        feed.set_pins({"D17": 0})  # the terminal still hears the feed
        assert wait_for(lambda: not owner_pins.read("D17"))
        assert owner.bad_messages == 0
    finally:
        feed.close()
        owner.stop()
    assert not socket_path(tmp_path).exists()


def test_the_owner_stopping_first_leaves_the_tap_listening(tmp_path: Path) -> None:
    owner, _ = receiver(tmp_path)
    tool, tool_pins = receiver(tmp_path)
    owner.stop()
    feed = SimFeed(tmp_path)
    try:
        assert tool.path.exists()
        feed.set_pins({"D27": 1})  # the owner is gone: the tap alone still gets it
        assert wait_for(lambda: tool_pins.read("D27"))
    finally:
        feed.close()
        tool.stop()


def test_a_stale_socket_is_taken_over_and_no_listener_is_an_error(tmp_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(str(socket_path(tmp_path)))
    stale.close()  # its process died: the file stays, nobody listens
    rx, pins = receiver(tmp_path)
    try:
        assert not rx.tap
        feed = SimFeed(tmp_path)
        feed.set_pins({"D17": 1})
        assert wait_for(lambda: pins.read("D17"))
    finally:
        rx.stop()
    from liftwatch.drivers.simfeed import SimFeedError
    with pytest.raises(SimFeedError, match="no simulated terminal listens"):
        feed.set_pins({"D17": 0})
    feed.close()


def test_a_tap_that_does_not_read_never_blocks_the_sender(tmp_path: Path) -> None:
    owner, owner_pins = receiver(tmp_path)
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # a tool stopped with Ctrl-Z
    stuck.bind(str(tmp_path / "simfeed.999999.sock"))
    feed = SimFeed(tmp_path)
    try:
        t0 = time.monotonic()
        for i in range(2000):
            feed.set_pins({"D17": i % 2})
        assert time.monotonic() - t0 < 5.0
        assert feed.tap_missed > 0  # counted, not waited for
        assert wait_for(lambda: owner.messages == 2000)  # the owner lost nothing
        assert owner_pins.read("D17") is True
    finally:
        feed.close()
        stuck.close()
        owner.stop()


def test_a_refused_start_names_the_pid_and_keeps_the_boot_number(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 18 noise: "outbox … in use by another process" with no PID, and a boot
    number used up by the refused start."""
    data = tmp_path / "data"
    cfg = tmp_path / "t.toml"
    cfg.write_text('[terminal]\nlift_id = "310104-0009999"\n[lift]\nlandings = ["1", "2"]\n'
                   'landing_heights_m = [0.0, 3.0]\n[controller]\nenabled = false\n'
                   f'[uplink]\nbroker = "127.0.0.1"\ntls = false\n[storage]\n'
                   f'data_dir = "{data}"\n')
    cfg.chmod(0o640)
    (data).mkdir()
    (data / "boot").write_text("41\n")
    running = Outbox(data / "outbox", 1 << 20)  # the agent already running
    try:
        assert lock_holder(data / "outbox" / ".lock") == os.getpid()
        code = main(["run", "--allow-root", "--config", str(cfg)])
        err = capsys.readouterr().err
    finally:
        running.close()
    assert code == 2
    assert f"is in use by another process (PID {os.getpid()})" in err
    assert (data / "boot").read_text().strip() == "41"
    assert lock_holder(data / "outbox" / ".lock") is None


def test_beside_a_running_agent_the_tools_leave_its_real_devices_alone(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """GPIO, the I2C accelerometer and a Modbus RTU link serve one process at a time: a
    tool attached to a running agent does not open them and says why, naming the PID."""
    import asyncio

    from liftwatch.agent.config import load_config
    from liftwatch.agent.tools.check import run_checks

    data = tmp_path / "data"
    cfg_path = tmp_path / "t.toml"
    cfg_path.write_text(
        '[terminal]\nlift_id = "310104-0009999"\n[lift]\nlandings = ["1", "2"]\n'
        'landing_heights_m = [0.0, 3.0]\n[inputs.door_closed]\npin = "D17"\n'
        '[accel]\nchip = "adxl345"\n[controller]\nenabled = true\ntransport = "rtu"\n'
        f'port = "{tmp_path / "ttyAMA0"}"\nregister_map = "example"\n'
        f'[uplink]\nbroker = "127.0.0.1"\nport = 1\ntls = false\n[storage]\ndata_dir = "{data}"\n')
    cfg_path.chmod(0o640)
    cfg = load_config(cfg_path)
    running = Outbox(data / "outbox", 1 << 20)  # the agent, holding its outbox
    try:
        rows = asyncio.run(run_checks(cfg, watch_s=0.3, broker_timeout_s=0.5))
        code = main(["calibrate", "--config", str(cfg_path), "--dry-run", "--seconds", "1"])
        err = capsys.readouterr().err
        rec = main(["record", "--config", str(cfg_path), "--out", str(tmp_path / "r.jsonl"),
                    "--duration", "0.3"])
        rec_err = capsys.readouterr().err
    finally:
        running.close()
    by_name = {r.name: r for r in rows}
    pid = f"the running agent (PID {os.getpid()}) uses"
    for name, what in (("inputs", "the GPIO inputs"), ("accelerometer", "the adxl345 "
                                                                         "accelerometer"),
                       ("controller link", f"the Modbus RTU link on {tmp_path}/ttyAMA0")):
        assert by_name[name].status == "WARN"
        assert by_name[name].detail.startswith(f"not read: {pid} {what}"), by_name[name]
    assert not any(r.name.startswith(("input ", "accel ")) for r in rows)
    assert code == 1
    assert f"not read: {pid} the adxl345 accelerometer" in err and "stop it" in err
    # record too: the trace lacks the devices the agent uses, and it says so
    assert rec == 0, rec_err
    for what in ("the GPIO inputs", "the adxl345 accelerometer", "the Modbus RTU link"):
        assert f"not read: {pid} {what}" in rec_err, rec_err
