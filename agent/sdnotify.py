"""systemd's notify protocol (sd_notify) without libsystemd: one datagram per message.

The runtime sends ``READY=1`` once acquisition runs, ``WATCHDOG=1`` only while every
loop's heartbeat is fresh (a stalled loop stops the pings, so systemd restarts the
agent), and ``STATUS=…`` for ``systemctl status``. Without ``NOTIFY_SOCKET`` (not
under systemd) every call is a no-op. Written by hand because it is a dozen lines and
the PyPI wrappers add nothing but a dependency.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    """Send sd_notify messages to ``$NOTIFY_SOCKET`` (path or abstract ``@name``)."""

    def __init__(self, address: str | None = None) -> None:
        addr = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + addr[1:] if addr.startswith("@") else addr
        self._sock: socket.socket | None = None
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, message: str) -> bool:
        """Send one message; False when not under systemd or the socket refused it."""
        if self._sock is None:
            return False
        try:
            self._sock.sendto(message.encode(), self.address)
        except OSError:
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval_s() -> float | None:
    """Half of systemd's WatchdogSec (``$WATCHDOG_USEC``), the recommended ping period."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        return None
