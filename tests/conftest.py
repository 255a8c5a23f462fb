"""Shared fixtures: a real Mosquitto broker on a free loopback port, pseudo-terminal pairs.

Tests that need these talk to real parts (DEVELOPERS.md); mocks stand in only for
GPIO and I2C through the product's own simulated backends.
"""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import sys
import time
import tty
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: The example traces (hil_tests/make_traces.py makes them with the project's lift simulator).
EXAMPLE_TRACES = REPO / "hil_tests" / "traces"
sys.path.insert(0, str(REPO / "hil_tests"))

from mosquitto import Broker, free_port, wait_port  # noqa: E402
from mosquitto import mosquitto_path as _mosquitto_path  # noqa: E402

__all__ = ["Broker", "free_port", "wait_port", "REPO", "EXAMPLE_TRACES"]


def mosquitto_path() -> str:
    try:
        return _mosquitto_path()
    except RuntimeError as exc:
        pytest.fail(str(exc))


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
def example_traces() -> Path:
    """The example traces of hil_tests/traces/, each with its ``NAME.truth.json``."""
    if not EXAMPLE_TRACES.is_dir():
        pytest.fail(f"{EXAMPLE_TRACES} is missing: run hil_tests/make_traces.py")
    return EXAMPLE_TRACES


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Start the long real-time tests first, one on each worker.

    They spend minutes mostly waiting on a live agent. scripts/test runs pytest-xdist
    with ``--maxschedchunk 1``, which hands each worker two tests to start with and then
    one at a time: putting a real-time test at every other place, longest first (the
    marker's argument is its usual length in seconds), sends the first two to different
    workers at once, and the short tests fill in around them.
    """
    slow = sorted((item for item in items if item.get_closest_marker("realtime")),
                  key=lambda item: -item.get_closest_marker("realtime").args[0])
    rest = [item for item in items if not item.get_closest_marker("realtime")]
    paired = [x for pair in zip(slow, rest, strict=False) for x in pair]
    n = min(len(slow), len(rest))
    items[:] = paired + slow[n:] + rest[n:]
