"""``liftwatch check`` against simulated inputs and chip (simfeed), a pymodbus server over
TCP playing the controller, and a real Mosquitto."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Broker, free_port
from liftwatch.agent.cli import main
from liftwatch.agent.config import load_config
from liftwatch.agent.timebase import ClockState, kernel_clock_state
from liftwatch.agent.tools import check as chk
from liftwatch.buffer.outbox import Outbox
from liftwatch.drivers.modbus_server import ModbusSimServer
from liftwatch.drivers.pins import SimulatedPins
from liftwatch.drivers.registermap import load_register_map
from liftwatch.drivers.simchips import SimI2C
from liftwatch.drivers.simfeed import SimFeed, socket_path, write_initial
from uplink_helpers import make_certs, tls_listener_conf

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parent.parent
LANDINGS = ["B1", "1", "2", "3"]
WATCH_S = 1.5

CONFIG = """
[terminal]
lift_id = "310104-0009999"

[lift]
landings = ["B1", "1", "2", "3"]
landing_heights_m = [0.0, 3.5, 6.5, 9.5]

[inputs]
backend = "simulated"
sim_feed = "{feed}"

[inputs.door_closed]
pin = "D17"
pull = "up"
active_low = true

[inputs.door_lock]
pin = "D27"

[inputs.zone_up]
pin = "D22"

[accel]
chip = "adxl345"
backend = "simulated"
sim_feed = "{feed}"

[controller]
enabled = {controller}
transport = "tcp"
host = "127.0.0.1"
tcp_port = {modbus_port}
timeout_s = 0.2
retries = 0
poll_interval_s = 0.2

[uplink]
broker = "127.0.0.1"
port = {mqtt_port}
tls = false
protocol = "mqtt311"

[storage]
data_dir = "{data}"
outbox_max_mb = 1
"""


#: pins of a lift at rest, level at a landing with its door closed (door_closed is
#: active low): check judges the lift's state, and this one raises nothing
AT_REST = {"D17": 0, "D27": 1, "D22": 1}


def write_config(tmp: Path, mqtt_port: int, modbus_port: int = 1,
                 controller: bool = True, pins: dict[str, int] | None = None) -> Path:
    (tmp / "data").mkdir(exist_ok=True)
    write_initial(tmp / "feed", {"pins": AT_REST if pins is None else pins})
    p = tmp / "terminal.toml"
    p.write_text(CONFIG.format(feed=tmp / "feed", data=tmp / "data", mqtt_port=mqtt_port,
                               modbus_port=modbus_port, controller=str(controller).lower()))
    return p


def by_name(rows: list[chk.Row]) -> dict[str, chk.Row]:
    return {r.name: r for r in rows}


async def _wait_socket(directory: Path, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not socket_path(directory).exists():
        if time.monotonic() > deadline:
            raise AssertionError("the check never opened its simulation feed")
        await asyncio.sleep(0.02)


def test_check_passes_with_everything_there_and_shows_what_it_saw(
        tmp_path: Path, broker: Broker) -> None:
    """Controller answers, inputs read (one operated), chip at rest, broker up."""
    modbus_port = free_port()
    door_open = {"D17": 1, "D27": 0, "D22": 1}  # at a landing, the door open
    cfg = load_config(write_config(tmp_path, broker.port, modbus_port, pins=door_open))
    srv = ModbusSimServer(load_register_map(cfg.register_map_path), landings=LANDINGS,
                          transport="tcp", tcp_port=modbus_port)
    srv.set_values({"mode": 1, "run": 0, "dir": 0, "floor": "2", "door": 2, "zone": 1,
                    "speed": 0.0, "safety": 0})

    async def main() -> list[chk.Row]:
        await srv.start()

        async def technician() -> None:  # closes the door during the window
            await _wait_socket(tmp_path / "feed")
            feed = SimFeed(tmp_path / "feed")
            await asyncio.sleep(0.5)  # first levels read: door open (pull-up, active low)
            feed.set_inputs({"door_closed": 1, "door_lock": 1}, cfg.inputs)
            feed.close()

        try:
            tech = asyncio.create_task(technician())
            rows = await chk.run_checks(cfg, watch_s=WATCH_S)
            await tech
            return rows
        finally:
            await srv.stop()

    rows = asyncio.run(main())
    table = chk.format_table(rows)
    r = by_name(rows)
    assert chk.verdict(rows) == 0, table
    assert r["controller link"].status == "PASS"
    assert f"Modbus TCP 127.0.0.1:{modbus_port} unit 1" in r["controller link"].detail
    assert "floor=2" in r["controller values"].detail and "door=2" in r["controller values"].detail
    assert r["input door_closed"].status == "PASS"
    assert r["input door_closed"].detail.startswith("pin D17: 1 (door closed), changed 1x")
    assert r["input zone_up"].detail == f"pin D22: 1 (in its zone), no change in {WATCH_S:g} s"
    assert r["input door_lock"].detail == \
        f"pin D27: 1 (lock circuit made), changed 1x in {WATCH_S:g} s"
    assert r["accel identity"].detail.endswith("DEVID 0xE5")
    assert r["accel rate"].status == "PASS", table
    assert r["accel gravity"].status == "PASS" and "|g| = 1.0" in r["accel gravity"].detail
    # tls = false: reachable, but said loudly
    assert r["broker"].status == "WARN"
    assert f"127.0.0.1:{broker.port}: connected" in r["broker"].detail
    assert "WITHOUT TLS" in r["broker"].detail
    assert r["clock"].status == ("PASS" if kernel_clock_state().synced else "WARN")
    assert r["disk"].status == "PASS" and r["outbox"].detail == "empty (not created yet)"


def test_check_fails_with_a_precise_line_for_each_missing_part(
        tmp_path: Path, broker: Broker) -> None:
    """Broker down, controller silent, one input absent and one failing, chip missing."""
    modbus_port = free_port()  # nobody listens there
    cfg = load_config(write_config(tmp_path, broker.port, modbus_port))
    broker.stop()
    pins = SimulatedPins()
    pins.remove("D27")
    pins.fail("D22", "read error")

    rows = asyncio.run(chk.run_checks(cfg, watch_s=WATCH_S, pins=pins, i2c=SimI2C(),
                                      broker_timeout_s=2.0))
    r = by_name(rows)
    assert chk.verdict(rows) == 1
    assert r["broker"].status == "FAIL"
    assert r["broker"].detail == f"127.0.0.1:{broker.port}: connection refused (broker down " \
                                 "or wrong port)"
    assert r["controller link"].status == "FAIL"
    assert r["controller link"].detail.startswith(
        f"Modbus TCP 127.0.0.1:{modbus_port} unit 1: no answer to ")
    assert r["controller link"].detail.endswith("polls (not connected)")
    assert r["input door_lock"].status == "FAIL"
    assert r["input door_lock"].detail.startswith("pin D27 absent: pin D27 does not exist")
    assert r["input zone_up"].status == "FAIL"
    assert r["input zone_up"].detail == "pin D22 failing: pin D22: read error"
    assert r["input door_closed"].status == "PASS"  # the others are still checked
    assert r["accel identity"].status == "FAIL"
    assert r["accel identity"].detail.startswith(
        "adxl345 on I2C bus 1 address 0x53 absent: no answer from an adxl345 at I2C "
        "address 0x53")


def test_accelerometer_failing_during_the_check_is_a_fail(tmp_path: Path) -> None:
    """The chip answers at first, then its I/O fails (unplugged during the window)."""
    cfg = load_config(write_config(tmp_path, free_port(), controller=False))

    async def main() -> list[chk.Row]:
        async def unplug() -> None:
            await _wait_socket(tmp_path / "feed")
            await asyncio.sleep(0.3)
            feed = SimFeed(tmp_path / "feed")
            feed.chip_fault(io_error="remote I/O error")
            feed.close()

        task = asyncio.create_task(unplug())
        rows = await chk.run_checks(cfg, watch_s=WATCH_S, broker_timeout_s=1.0)
        await task
        return rows

    r = by_name(asyncio.run(main()))
    assert r["accel identity"].status == "FAIL"
    assert "failing" in r["accel identity"].detail
    assert "remote I/O error" in r["accel identity"].detail


def test_tilted_or_shaken_sensor_gravity_verdicts(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, free_port(), controller=False))
    lsb = 256.0
    still = [[0, 0, 256 + (i % 3) - 1] for i in range(400)]
    assert chk.gravity_row(cfg, still, lsb, "ok").status == "PASS"
    heavy = [[0, 0, 320]] * 400  # 1.25 g at rest: wrong range or scale
    row = chk.gravity_row(cfg, heavy, lsb, "ok")
    assert row.status == "FAIL" and row.detail.startswith("|g| = 1.250 g")
    shaken = [[0, 0, 256 + (60 if i % 2 else -60)] for i in range(400)]
    assert chk.gravity_row(cfg, shaken, lsb, "ok").status == "WARN"
    assert chk.gravity_row(cfg, [], lsb, "absent").status == "FAIL"


def test_clock_disk_and_outbox_rows(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, free_port(), controller=False))
    synced = ClockState(True, 0, 0, 1200, 5000)
    unsynced = ClockState(False, 5, 0x40, 16_000_000, 16_000_000)
    assert chk.clock_row(lambda: synced).status == "PASS"
    row = chk.clock_row(lambda: unsynced)
    assert row.status == "WARN" and "NOT synchronised" in row.detail
    assert chk.disk_row(cfg).status == "PASS"
    with Outbox(Path(cfg.storage.data_dir) / "outbox", 1 << 20) as ob:
        ob.append("alarm", "lift/x/event", b'{"code":"entrapment"}')
        ob.append("record", "lift/x/trip", b"{}")
        ob.append("record", "lift/x/trip", b"{}")
    row = chk.outbox_row(cfg)
    assert row.status == "PASS" and row.detail.startswith("alarm 1, event 0, record 2 waiting")
    (Path(cfg.storage.data_dir) / "outbox").rename(tmp_path / "moved")
    (Path(cfg.storage.data_dir)).rmdir()
    row = chk.disk_row(cfg)  # before the first start: systemd will create it
    assert row.status == "WARN" and "does not exist yet" in row.detail
    Path(cfg.storage.data_dir).write_text("not a directory")
    row = chk.disk_row(cfg)
    assert row.status == "FAIL" and row.detail.endswith("is not a directory")


def _cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "liftwatch.agent.cli", "check", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_cli_exit_code_tells_pass_or_fail(tmp_path: Path, broker: Broker) -> None:
    cfg_path = write_config(tmp_path, broker.port, controller=False)
    ok = _cli("--config", str(cfg_path), "--watch", "0.8")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "accel identity" in ok.stdout and "PASS: 0 check(s) failed" in ok.stdout
    broker.stop()
    bad = _cli("--config", str(cfg_path), "--watch", "0.8", "--broker-timeout", "1")
    assert bad.returncode == 1
    line = next(ln for ln in bad.stdout.splitlines() if ln.startswith("broker"))
    assert f"FAIL  127.0.0.1:{broker.port}: connection refused" in line


def test_check_on_a_pc_names_the_missing_i2c_bus(tmp_path: Path, broker: Broker) -> None:
    """The real accelerometer backend where the bus is missing (a PC, I2C not enabled):
    one precise line, not Blinka's "cannot import name 'i2cPorts'" nor its stdout noise."""
    cfg_path = write_config(tmp_path, broker.port, controller=False)
    text = cfg_path.read_text().replace('chip = "adxl345"\nbackend = "simulated"',
                                        'chip = "adxl345"\nbackend = "blinka"\ni2c_bus = 250')
    assert "i2c_bus = 250" in text
    cfg_path.write_text(text)
    r = _cli("--config", str(cfg_path), "--watch", "0.8")
    assert r.returncode == 1
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("accel identity"))
    assert "FAIL  adxl345 on I2C bus 250 address 0x53 absent: no I2C bus 250 on this " \
           "machine: /dev/i2c-250 does not exist (Blinka" in line
    assert "i2cPorts" not in r.stdout + r.stderr
    assert "not fully supported" not in r.stdout + r.stderr


def test_cli_reports_a_broken_config_and_bad_arguments(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[terminal]\nlift_id = "x"\n[accel]\nrate_hz = 500\n')
    assert main(["check", "--config", str(cfg)]) == 1
    got = capsys.readouterr()
    assert "accel.rate_hz" in got.err and "config  FAIL" in got.out
    assert main(["check", "--config", str(cfg), "--watch", "0"]) == 2
    assert "--watch must be > 0" in capsys.readouterr().err


def test_broker_check_over_mutual_tls(tmp_path: Path) -> None:
    """A real TLS connection with the configured files; precise lines when TLS fails."""
    certs = make_certs(tmp_path / "certs")
    for key in certs.glob("*.key"):
        key.chmod(0o600)
    tls_broker = Broker(workdir=tmp_path, extra_conf=tls_listener_conf(certs))
    tls_broker.start()
    try:
        def row(ca: str, cert: str) -> chk.Row:
            text = write_config(tmp_path, tls_broker.port, controller=False).read_text()
            text = text.replace("tls = false", f'tls = true\nca_file = "{certs / ca}.crt"\n'
                                f'cert_file = "{certs / cert}.crt"\n'
                                f'key_file = "{certs / cert}.key"')
            (tmp_path / "tls.toml").write_text(text)
            return chk.broker_row(load_config(tmp_path / "tls.toml"), timeout_s=3.0)

        where = f"127.0.0.1:{tls_broker.port}"
        good = row("ca", "client")
        assert good.status == "PASS", good.detail
        assert re.match(rf"{re.escape(where)}: connected over TLSv1\.[23] in ", good.detail)
        untrusted = row("rogue", "client")  # the broker's certificate is not from this CA
        assert untrusted.status == "FAIL"
        assert untrusted.detail.startswith(f"{where}: TLS: the broker's certificate is not "
                                           "trusted (")
        refused = row("ca", "wrong")  # a client certificate the broker does not accept
        assert refused.status == "FAIL" and refused.detail.startswith(f"{where}: ")
        assert "closed before CONNACK" in refused.detail
        assert refused.detail.endswith("does it accept this terminal's client certificate "
                                       "(uplink.cert_file)?")
    finally:
        tls_broker.stop()
