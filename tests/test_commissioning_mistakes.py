"""The mistakes technicians make when commissioning a terminal (issue 18): each config
file or terminal state here gets a refusal or a FAIL naming the cause and the fix;
none passes silently.

The lift is the one of the issue's trial: 18 landings labelled 1 to 21 without 4, 13
and 14, 3.0 m apart, 1.75 m/s, Modbus RTU.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import grp
import json
import os
import pickle
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Broker
from liftwatch.agent import plausibility
from liftwatch.agent.config import ConfigError, ConfigIssue, load_config
from liftwatch.agent.credentials import service_user_problem
from liftwatch.agent.tomltext import dump_toml
from liftwatch.agent.tools import check as commissioning
from liftwatch.agent.tools import idle_check
from liftwatch.drivers.accel import AccelError, open_blinka_i2c
from liftwatch.drivers.pins import SimulatedPins
from liftwatch.drivers.simchips import SimI2C, make_sim_chip
from uplink_helpers import LIFT as TRACE_LIFT
from uplink_helpers import write_config

pytestmark = pytest.mark.timeout(60)

LABELS = [str(n) for n in range(1, 22) if n not in (4, 13, 14)]
HEIGHTS = [round(3.0 * i, 2) for i in range(len(LABELS))]
LIFT: dict[str, Any] = {
    "terminal": {"lift_id": "310115-0018018"},
    "lift": {"landings": LABELS, "landing_heights_m": HEIGHTS, "rated_speed": 1.75,
             "door_zone_m": 0.15},
    "inputs": {"door_closed": {"pin": "D5"}, "zone_up": {"pin": "D13"},
               "zone_down": {"pin": "D19"}, "mains_ok": {"pin": "D21"}},
    "accel": {"chip": "adxl345", "address": 0x53},
    "uplink": {"broker": "broker.example", "tls": False},
}


@pytest.fixture(autouse=True)
def _no_profile_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIFTWATCH_PROFILES", raising=False)


def config(tmp_path: Path, **sections: dict[str, Any]) -> Path:
    """The trial lift's config with the given sections' keys changed."""
    data = copy.deepcopy(LIFT)
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    path = tmp_path / "terminal.toml"
    path.write_text(dump_toml(data), encoding="utf-8")
    return path


def refused(path: Path, key: str) -> ConfigIssue:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    found = [i for i in info.value.issues if i.key == key]
    assert found, [str(i) for i in info.value.issues]
    return found[0]


def refusals(path: Path) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.issues


def warned(path: Path, key: str) -> str:
    cfg = load_config(path)
    found = [w for w in cfg.warnings if w.startswith(key + ":")]
    assert found, cfg.warnings
    return found[0]


# ---------------------------------------------------------------- plausibility (item 1)

def test_the_trial_lift_is_plausible(tmp_path: Path) -> None:
    cfg = load_config(config(tmp_path))
    assert [w for w in cfg.warnings if "uplink.tls" not in w] == []


def test_rated_speed_in_m_per_min_is_refused_and_converted(tmp_path: Path) -> None:
    issue = refused(config(tmp_path, lift={"rated_speed": 105}), "lift.rated_speed")
    assert issue.found == "105"
    assert "m/s" in issue.expected and "51 m travel" in issue.expected
    assert issue.hint == "m/min? 105 m/min is 1.75 m/s: write rated_speed = 1.75"


def test_rated_speed_in_mm_per_s_is_refused(tmp_path: Path) -> None:
    issue = refused(config(tmp_path, lift={"rated_speed": 1750}), "lift.rated_speed")
    assert "write rated_speed = 1.75" in issue.hint and "mm/s" in issue.hint


def test_rated_speed_no_lift_has_is_refused(tmp_path: Path) -> None:
    issue = refused(config(tmp_path, lift={"landings": ["1", "2"], "landing_heights_m": [0, 3],
                                           "rated_speed": 5}), "lift.rated_speed")
    assert "overspeed threshold would be 5.75 m/s" in issue.hint


def test_rated_speed_never_reached_is_a_warning(tmp_path: Path) -> None:
    w = warned(config(tmp_path, lift={"rated_speed": 10.0}), "lift.rated_speed")
    assert "never reaches" in w and "at most 8.75 m/s" in w


def test_landing_heights_in_mm_are_refused(tmp_path: Path) -> None:
    mm = [h * 1000 for h in HEIGHTS]
    issue = refused(config(tmp_path, lift={"landing_heights_m": mm}), "lift.landing_heights_m")
    assert "51000 m from the lowest to the highest landing" in issue.found
    assert issue.hint.startswith("heights in mm? write them in metres: 3000 mm is 3 m")


def test_landing_heights_in_cm_are_refused(tmp_path: Path) -> None:
    cm = [h * 100 for h in HEIGHTS[:3]]
    issue = refused(config(tmp_path, lift={"landings": LABELS[:3], "landing_heights_m": cm}),
                    "lift.landing_heights_m[1]")
    assert "300 m between landings 0 and 1" in issue.found
    assert issue.hint.startswith("in cm? 300 cm is 3 m")


def test_a_landing_typed_twice_is_refused(tmp_path: Path) -> None:
    heights = HEIGHTS[:3] + [h + 0.05 for h in HEIGHTS[2:-1]]  # landing 3 typed as 2
    issue = refused(config(tmp_path, lift={"landing_heights_m": heights}),
                    "lift.landing_heights_m[3]")
    assert "0.05 m between landings 2 and 3" in issue.found and "typed twice" in issue.hint


def test_unusual_spacing_is_a_warning(tmp_path: Path) -> None:
    heights = HEIGHTS[:2] + [h + 17.0 for h in HEIGHTS[2:]]
    w = warned(config(tmp_path, lift={"landing_heights_m": heights}),
               "lift.landing_heights_m[2]")
    assert "express zone" in w and "a landing is missing" in w


def test_door_zone_in_mm_is_refused(tmp_path: Path) -> None:
    issue = refused(config(tmp_path, lift={"door_zone_m": 150}), "lift.door_zone_m")
    assert "half the smallest landing spacing (1.5 m)" in issue.expected
    assert issue.hint == "in mm? 150 mm is 0.15 m: write door_zone_m = 0.15"


def test_door_zone_wider_than_en81_is_a_warning(tmp_path: Path) -> None:
    w = warned(config(tmp_path, lift={"door_zone_m": 0.5}), "lift.door_zone_m")
    assert "EN 81-20" in w


def test_moving_speed_above_rated_speed_is_refused(tmp_path: Path) -> None:
    # (within moving_speed's own safe range, 0.01-0.3 m/s: the lift as a whole is wrong)
    issue = refused(config(tmp_path, lift={"rated_speed": 0.25},
                           detection={"moving_speed": 0.28}), "detection.moving_speed")
    assert "never count as moving" in issue.expected


def test_coarse_accelerometer_range_is_a_warning(tmp_path: Path) -> None:
    w = warned(config(tmp_path, accel={"chip": "lis3dh", "address": 0x18, "range_g": 16}),
               "accel.range_g")
    assert "12 mg a count" in w and "use range_g = 2 or 4" in w
    w = warned(config(tmp_path, accel={"chip": "lis3dh", "address": 0x18, "range_g": 2,
                                       "rate_hz": 1600}), "accel.range_g")
    assert "rate_hz = 400" in w
    # the ADXL345 keeps full resolution on every range
    assert not any(w.startswith("accel.") for w in load_config(config(
        tmp_path, accel={"range_g": 16})).warnings)


def test_every_check_is_documented() -> None:
    text = (REPO / "firmware_config" / "README.md").read_text(encoding="utf-8")
    section = text.split("## Plausibility", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"^\| `(\w+)` \|", section, re.M))
    assert named == set(plausibility.CHECKS)


def test_shipped_examples_are_plausible() -> None:
    for path in sorted((REPO / "firmware_config" / "examples").glob("*.toml")):
        cfg = load_config(path)
        assert not [w for w in cfg.warnings if not w.startswith("uplink.tls")], path


# ---------------------------------------------------------------- secrets (item 3)

NOBODY = "nobody"


def as_nobody(fn: Callable[[], Any]) -> Any:
    """``fn()`` in a forked child that has become the unprivileged user nobody (CI runs as
    root, who reads every file); its result comes back pickled, its output is its own."""
    pw = pwd.getpwnam(NOBODY)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid)
            os.setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid)
            out: Any = ("ok", fn())
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
            out = ("error", f"{type(exc).__name__}: {exc}")
        with os.fdopen(w, "wb") as f:
            f.write(pickle.dumps(out))
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    status, value = pickle.loads(data)
    assert status == "ok", value
    return value


def problems(path: Path) -> list[str]:
    try:
        load_config(path)
    except ConfigError as exc:
        return [str(i) for i in exc.issues]
    return []


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder the unprivileged user may enter (pytest's are root's own)."""
    if os.geteuid() != 0:
        pytest.skip("becoming another user needs root (CI runs as root)")
    d = Path(tempfile.mkdtemp(prefix="lw-secrets-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def tls_config(d: Path, **uplink: Any) -> Path:
    tls = d / "tls"
    tls.mkdir(exist_ok=True)
    for name in ("ca.pem", "client.pem", "client.key"):
        (tls / name).write_text("-----BEGIN X-----\n")
        (tls / name).chmod(0o644 if name.endswith(".pem") else 0o640)
    up = {"tls": True, "ca_file": str(tls / "ca.pem"), "cert_file": str(tls / "client.pem"),
          "key_file": str(tls / "client.key"), **uplink}
    path = config(d, uplink=up)
    path.chmod(0o644)
    load_config(path)          # as root: usable, and every module the child needs imported
    return path


def test_unreadable_key_named_with_its_fix_as_the_service_user(shared_dir: Path) -> None:
    path = tls_config(shared_dir)
    key = shared_dir / "tls" / "client.key"
    key.chmod(0o600)           # root:root 0600: the service cannot read it
    got = as_nobody(lambda: problems(path))
    assert got == [f"{path}: uplink.key_file: expected a file the service user can read, "
                   f"found {key}: permission denied for user nobody (owner root:root, mode "
                   f"0600); the service reads it through group liftwatch; fix with: chown "
                   f"root:liftwatch {key} && chmod 0640 {key}"]
    assert problems(path) == []   # root reads it: only the service user's run tells


def test_unreadable_certificate_folder_named_with_its_fix(shared_dir: Path) -> None:
    path = tls_config(shared_dir)
    (shared_dir / "tls").chmod(0o700)
    got = as_nobody(lambda: problems(path))
    keys = [p.split(": ")[1] for p in got]
    assert keys == ["uplink.ca_file", "uplink.cert_file", "uplink.key_file"], got
    assert got[1].endswith(f"its folder {shared_dir / 'tls'} cannot be entered (owner "
                           f"root:root, mode 0700); fix with: chown root:liftwatch "
                           f"{shared_dir / 'tls'} && chmod 0750 {shared_dir / 'tls'}")


def test_unreadable_credentials_file_named_with_its_fix(shared_dir: Path) -> None:
    creds = shared_dir / "mqtt.toml"
    creds.write_text('username = "t"\npassword = "p"\n')
    creds.chmod(0o600)
    path = tls_config(shared_dir, credentials_file=str(creds))
    got = [p for p in as_nobody(lambda: problems(path)) if "credentials_file" in p]
    assert got == [f"{path}: uplink.credentials_file: expected a credentials file the "
                   f"service user can read, found {creds}: permission denied for user "
                   f"nobody (owner root:root, mode 0600); the service reads it through group "
                   f"liftwatch; fix with: chown root:liftwatch {creds} && chmod 0640 {creds}"]


def test_check_as_the_service_user_names_the_file(shared_dir: Path) -> None:
    path = tls_config(shared_dir)
    key = shared_dir / "tls" / "client.key"
    key.chmod(0o600)
    out = shared_dir / "check.out"

    def check() -> int:
        with out.open("w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
            return commissioning.run(argparse.Namespace(
                config=str(path), watch=1.0, backend=None, sim_dir=None, broker_timeout=1.0))

    out.touch()
    out.chmod(0o666)
    assert as_nobody(check) == 1
    text = out.read_text()
    assert f"uplink.key_file: expected a file the service user can read, found {key}: " \
           "permission denied for user nobody" in text
    assert f"fix with: chown root:liftwatch {key} && chmod 0640 {key}" in text


def test_check_as_root_judges_the_service_user(shared_dir: Path) -> None:
    """Root reads everything: check run with sudo judges the file for the service user."""
    tls_config(shared_dir)
    key = shared_dir / "tls" / "client.key"
    key.chmod(0o600)
    assert service_user_problem(key, NOBODY) == (
        f"{key}: the service user nobody cannot read it (owner root:root, mode 0600); fix "
        f"with: chown root:liftwatch {key} && chmod 0640 {key}")
    os.chown(key, 0, pwd.getpwnam(NOBODY).pw_gid)
    key.chmod(0o640)
    assert service_user_problem(key, NOBODY) is None
    assert service_user_problem(key, "no-such-user-here") is None


def test_credentials_file_typo_is_named(tmp_path: Path) -> None:
    creds = tmp_path / "mqtt.toml"
    creds.write_text('user = "t"\npassword = "p"\n')
    creds.chmod(0o640)
    issues = [str(i) for i in refusals(config(tmp_path, uplink={
        "credentials_file": str(creds)}))]
    assert any("unknown keys user (did you mean username?)" in i for i in issues), issues
    assert any("username missing" in i for i in issues), issues




# ---------------------------------------------------------------- check judges the lift (item 2)

#: a sensors-only terminal whose inputs read 1 when active (no pull, not active low)
SENSORS = ("door_closed", "door_lock", "zone_up", "zone_down", "presence", "alarm_button",
           "safety_ok", "mains_ok")
PINS = {name: f"D{5 + i}" for i, name in enumerate(SENSORS)}
AT_REST = {"door_closed": 1, "door_lock": 1, "zone_up": 1, "zone_down": 1, "presence": 0,
           "alarm_button": 0, "safety_ok": 1, "mains_ok": 1}


def sensors_only(tmp_path: Path, **accel: Any) -> Any:
    data = copy.deepcopy(LIFT)
    data["inputs"] = {n: {"pin": p} for n, p in PINS.items()}
    data["accel"] = {"chip": "none", **accel}
    data["uplink"] = {"broker": "127.0.0.1", "port": 9, "tls": False}
    data["storage"] = {"data_dir": str(tmp_path / "data")}
    path = tmp_path / "sensors.toml"
    path.write_text(dump_toml(data), encoding="utf-8")
    return load_config(path)


def check_rows(cfg: Any, levels: dict[str, int] | None = None, **kw: Any
               ) -> dict[str, commissioning.Row]:
    pins = SimulatedPins({PINS[n]: v for n, v in (levels or {}).items()})
    rows = asyncio.run(commissioning.run_checks(cfg, watch_s=0.4, broker_timeout_s=0.3,
                                                pins=pins, **kw))
    return {r.name: r for r in rows}


def input_verdicts(rows: dict[str, commissioning.Row]) -> dict[str, str]:
    return {k[6:]: r.status for k, r in rows.items() if k.startswith("input ")}


def test_a_lift_at_rest_passes(tmp_path: Path) -> None:
    rows = check_rows(sensors_only(tmp_path), AT_REST)
    assert set(input_verdicts(rows).values()) == {"PASS"}, rows
    assert "lift state" not in rows


@pytest.mark.parametrize(("name", "event"), [
    ("mains_ok", "power_loss"), ("safety_ok", "safety_circuit_open"),
    ("alarm_button", "alarm_button"), ("zone_up", "stopped_outside_zone"),
    ("zone_down", "stopped_outside_zone")])
def test_a_reversed_input_fails_naming_the_event_and_the_fix(
        tmp_path: Path, name: str, event: str) -> None:
    levels = dict(AT_REST, **{name: 1 - AT_REST[name]})
    rows = check_rows(sensors_only(tmp_path), levels)
    assert [k for k, v in input_verdicts(rows).items() if v == "FAIL"] == [name], rows
    detail = rows[f"input {name}"].detail
    assert f"the lift would raise {event}" in detail
    assert detail.endswith("likely cause: active_low reversed (set active_low = true) or "
                           f"the wrong pin (not {PINS[name]}); if it really is so ("
                           f"{idle_check.MEANING[name][AT_REST[name]]}), put that right "
                           "and check again")


def test_a_presence_sensor_seeing_someone_in_a_closed_car_fails(tmp_path: Path) -> None:
    rows = check_rows(sensors_only(tmp_path), dict(AT_REST, presence=1))
    detail = rows["input presence"].detail
    assert "the lift would raise entrapment_level" in detail and "if the car is empty" in detail


def test_an_impossible_door_picture_fails(tmp_path: Path) -> None:
    rows = check_rows(sensors_only(tmp_path), dict(AT_REST, door_closed=0))
    assert "lock circuit is only made with the doors closed" in rows["input door_closed"].detail
    assert rows["input door_lock"].status == "FAIL"
    rows = check_rows(sensors_only(tmp_path),
                      dict(AT_REST, door_closed=0, door_lock=0, zone_up=0, zone_down=0))
    assert "a door opens only in the door zone" in rows["input door_closed"].detail


def test_an_input_failing_on_its_own_does_not_blame_its_partner(tmp_path: Path) -> None:
    """The door_lock wire is cut after it read "made", then the door opens: the lock's
    last level is not the lift's, so the door-lock picture must not FAIL door_closed."""
    cfg = sensors_only(tmp_path)
    opened = dict(AT_REST, door_closed=0)
    obs = commissioning.Observed(
        levels=opened, records=[(0.0, "di", AT_REST), (0.2, "di", opened)], t_end=0.4,
        health={"inputs": {"inputs": {"door_lock": {"state": "failing",
                                                     "error": "wire cut"}}}})
    rows = {r.name: r for r in commissioning.input_rows(cfg, obs, 0.4)}
    assert rows["input door_lock"].status == "FAIL" and "wire cut" in \
        rows["input door_lock"].detail
    assert rows["input door_closed"].status == "PASS", rows["input door_closed"]
    # with the lock read correctly the same picture still blames both
    obs.health = {}
    rows = {r.name: r for r in commissioning.input_rows(cfg, obs, 0.4)}
    assert rows["input door_closed"].status == rows["input door_lock"].status == "FAIL"


def rtu_config(tmp_path: Path, port: str) -> Any:
    return load_config(config(tmp_path, controller={"enabled": True, "port": port}))


def test_a_missing_serial_port_is_named(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "ttyUSB0").touch()
    row = commissioning.serial_port_row(rtu_config(tmp_path, "/dev/ttyAMA0"), dev=dev)
    assert row is not None and row.status == "FAIL"
    assert row.detail.startswith(f"controller.port /dev/ttyAMA0 does not exist (serial ports "
                                 f"here: {dev / 'ttyUSB0'}): plug in the RS-485 adapter")
    assert "raspi-config nonint do_serial_hw 0" in row.detail


def test_a_simulated_controller_opens_no_serial_port_so_none_is_judged(tmp_path: Path) -> None:
    """``check --backend simulated`` on an RTU config: the simulated controller opens no
    port, so a port this machine lacks is no failure of the terminal."""
    cfg = rtu_config(tmp_path, "/dev/ttyAMA-absent")
    rows = asyncio.run(commissioning.run_checks(cfg, watch_s=0.3, broker_timeout_s=0.3,
                                                backend="simulated",
                                                sim_dir=str(tmp_path / "sim")))
    assert not [r for r in rows if r.name == "serial port"], rows
    assert commissioning.serial_port_row(cfg).status == "FAIL"   # the real link would


def test_a_serial_port_not_permitted_names_the_group(shared_dir: Path) -> None:
    master, slave = os.openpty()
    try:
        port = os.ttyname(slave)
        group = grp.getgrnam("dialout") if "dialout" in {g.gr_name for g in grp.getgrall()} \
            else grp.getgrgid(0)
        os.chown(port, 0, group.gr_gid)
        os.chmod(port, 0o660)
        cfg = rtu_config(shared_dir, port)
        assert commissioning.serial_port_row(cfg).status == "PASS"  # root may
        row = as_nobody(lambda: commissioning.serial_port_row(cfg))
    finally:
        os.close(master)
        os.close(slave)
    assert row.status == "FAIL"
    assert row.detail == (f"controller.port {port} is not permitted for user nobody (group "
                          f"{group.gr_name}, mode 0660): add the user to group "
                          f"{group.gr_name}: `usermod -aG {group.gr_name} nobody`, then "
                          "restart the service")


def test_an_i2c_bus_not_permitted_names_the_group(shared_dir: Path) -> None:
    (shared_dir / "i2c-1").touch(mode=0o600)

    def open_bus() -> str:
        try:
            open_blinka_i2c(1, dev_dir=shared_dir)
        except AccelError as exc:
            return str(exc)
        return "opened"

    assert as_nobody(open_bus) == (
        f"I2C bus 1: {shared_dir / 'i2c-1'} is not permitted for user nobody (group root, "
        "mode 0600): add the user to group root: `usermod -aG root nobody`, then restart "
        "the service")


def test_an_accelerometer_at_another_address_is_found(tmp_path: Path) -> None:
    cfg = sensors_only(tmp_path, chip="adxl345", address=0x53)
    rows = check_rows(cfg, AT_REST, i2c=SimI2C(make_sim_chip("adxl345", address=0x1D)))
    detail = rows["accel identity"].detail
    assert "no answer from an adxl345 at I2C address 0x53" in detail
    assert detail.endswith("addresses that answer on this bus: 0x1D (set accel.address to "
                           "the chip's, e.g. accel.address = 0x1D, and accel.chip)")
    rows = check_rows(cfg, AT_REST, i2c=SimI2C())
    assert rows["accel identity"].detail.endswith(
        "no device answers on this bus: check the chip's wiring (SDA, SCL, 3V3, GND) and "
        "its power")


# ---------------------------------------------------------------- re-runs (item 3)

def trace_file(path: Path, lift_id: str, landings: list[str]) -> Path:
    """A minute of a lift whose passenger stays shut in the car: entrapment_level."""
    header = {"trace": 1, "start": "2026-11-23T08:00:00Z",
              "lift": {"id": lift_id, "landings": landings,
                       "landing_heights_m": [3.0 * i for i in range(len(landings))]},
              "controller": {"present": False}}
    lines = [header,
             {"t": 0.0, "di": {"door_closed": 0, "zone_up": 1, "zone_down": 1, "presence": 0}},
             {"t": 2.0, "di": {"presence": 1}}, {"t": 5.0, "di": {"door_closed": 1}},
             {"t": 60.0, "di": {"presence": 1}}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def run_trace(cfg: Path, trace: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The minute of trace in one second."""
    return subprocess.run([sys.executable, "-m", "liftwatch.agent.cli", "run", "--allow-root",
                           "--config", str(cfg), "--trace", str(trace), "--speed", "60",
                           *extra],
                          capture_output=True, text=True, timeout=60)


def test_a_trace_of_another_lift_is_refused_unless_asked(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, 1)     # lift TRACE_LIFT, landings 1 and 2; no broker there
    trace = trace_file(tmp_path / "other.jsonl", "31100000000000000013", ["1", "2", "3"])
    r = run_trace(cfg, trace)
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines()[-1] == (
        f"liftwatch run: trace {trace} was recorded on another lift: lift id "
        f"31100000000000000013 (the config's is {TRACE_LIFT}); landings [\"1\", \"2\", \"3\"] (the "
        "config's are [\"1\", \"2\"]). Its events would be published as lift "
        f"{TRACE_LIFT}'s, with its floors. Give --other-lift to re-run it anyway, or use the "
        "config of the lift it was recorded on.")
    assert not (tmp_path / "data" / "outbox").exists()   # nothing was queued
    r = run_trace(cfg, trace, "--other-lift", "--drain-s", "0.2")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "re-running a trace of another lift (--other-lift): lift id" in r.stderr


@pytest.mark.timeout(90)
def test_a_trace_run_shows_progress_and_what_it_published(tmp_path: Path,
                                                           broker: Broker) -> None:
    cfg = write_config(tmp_path, broker.port)
    trace = trace_file(tmp_path / "mine.jsonl", TRACE_LIFT, ["1", "2"])
    r = run_trace(cfg, trace, "--drain-s", "5")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "trace mine.jsonl: 100% read, t = 60.0 s, 4 records; sent event 1" in r.stderr
    out = r.stdout.splitlines()
    assert out[0] == (f"trace run: 4 records played (0 bad lines skipped); sent to "
                      f"127.0.0.1:{broker.port} as lift {TRACE_LIFT}:")
    assert "  event       1" in out and "              1  entrapment_level raised" in out
    assert any(ln.startswith("  status ") for ln in out), out
    acked = re.fullmatch(r"acknowledged by the broker: (\d+) QoS 1 message\(s\)", out[-1])
    assert acked and int(acked.group(1)) >= 1, out     # the event at least
