"""A real Mosquitto broker on a free loopback port, for the tests, the rig and the demo."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
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
        raise RuntimeError("mosquitto is not installed: scripts/test and scripts/demo "
                           "install it with apt-get")
    return exe


@dataclass
class Broker:
    """A Mosquitto process on 127.0.0.1:port. ``stop()``/``start()`` simulate an outage.

    Persistence is on, so a QoS 1 subscriber's session survives the outage as it would
    on a platform's broker.
    """

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
        persistence.mkdir(parents=True, exist_ok=True)
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {persistence}/\n"
            "max_queued_messages 100000\n"
            # started as root, Mosquitto drops to the mosquitto user, which cannot write
            # the test's private directories: stay root there (loopback only)
            + ("user root\n" if os.geteuid() == 0 and "user " not in self.extra_conf else "")
            # a killed broker keeps the sessions it saved: a platform consumer with a
            # persistent session misses nothing published while it reconnects
            + ("autosave_interval 1\n" if "autosave_interval" not in self.extra_conf else "") +
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
            wait_port(self.port)
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
