"""Shared fixtures: a real Mosquitto broker on a free loopback port, pseudo-terminal pairs.

Tests that need these talk to real parts (DEVELOPERS.md); mocks stand in only for
GPIO and I2C through the product's own simulated backends.
"""

from __future__ import annotations

import os
import pty
import shutil
import socket
import subprocess
import time
import tty
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_TRACES = REPO.parent / "shared" / "traces"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


def mosquitto_path() -> str:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(exe):
        pytest.fail("mosquitto is not installed: run the README's test command, which installs "
                    "it with apt-get")
    return exe


@dataclass
class Broker:
    """A Mosquitto process on 127.0.0.1:port. ``stop()``/``start()`` simulate an outage."""

    workdir: Path
    port: int = field(default_factory=free_port)
    extra_conf: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def conf_path(self) -> Path:
        conf = self.workdir / f"mosquitto-{self.port}.conf"
        persistence = self.workdir / "mosq-data"
        persistence.mkdir(exist_ok=True)
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {persistence}/\n"
            "max_queued_messages 100000\n"
            "log_type error\nlog_type warning\n"
            f"log_dest file {self.workdir / 'mosquitto.log'}\n" + self.extra_conf
        )
        return conf

    def start(self) -> None:
        if self.proc and self.proc.poll() is None:
            return
        self.proc = subprocess.Popen([mosquitto_path(), "-c", str(self.conf_path())],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_port(self.port)
        except TimeoutError:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the broker abruptly (SIGKILL), as a crashed or unplugged broker would."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def log_text(self) -> str:
        p = self.workdir / "mosquitto.log"
        return p.read_text(errors="replace") if p.exists() else ""


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A fresh Mosquitto for one test, on its own free port; killable by the test."""
    b = Broker(workdir=tmp_path)
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def session_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One Mosquitto shared by the tests of a session that do not stop it."""
    b = Broker(workdir=tmp_path_factory.mktemp("broker"))
    b.start()
    yield b
    b.stop()


@dataclass
class PtyPair:
    """Two connected pseudo-terminals: open ``a`` and ``b`` with pyserial like real ports."""

    a: str
    b: str
    proc: subprocess.Popen[bytes] | None = None

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=5)


def _socat_pair(workdir: Path) -> PtyPair:
    a, b = workdir / "ttyA", workdir / "ttyB"
    socat = shutil.which("socat")
    if socat is None:
        pytest.fail("socat is not installed: run the README's test command, which installs it")
    proc = subprocess.Popen(
        [socat, "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while not (a.exists() and b.exists()):
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError("socat did not create the pty pair")
        time.sleep(0.02)
    return PtyPair(str(a), str(b), proc)


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[PtyPair]:
    """A connected serial link over two pseudo-terminals (socat), both ends named paths.

    Removing the link (``pty_pair.close()``) makes the device disappear, as an unplugged
    USB-RS485 adapter does.
    """
    pair = _socat_pair(tmp_path)
    yield pair
    pair.close()


@pytest.fixture
def raw_pty() -> Iterator[tuple[int, str]]:
    """One pseudo-terminal: (master fd, slave path), for writing raw bytes to a serial reader."""
    master, slave = pty.openpty()
    tty.setraw(master)
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


@pytest.fixture
def shared_traces() -> Path:
    """The example traces of ../shared/traces (made by an independent lift simulator)."""
    if not SHARED_TRACES.is_dir():
        pytest.fail(f"{SHARED_TRACES} is missing: the shared/ folder must sit beside the repo")
    return SHARED_TRACES
