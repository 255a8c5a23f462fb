"""The libmodbus test slave (lwslave.c) as a process a test drives: values in, answers logged.

Each request the slave answers comes back as a :class:`Served` record stamped with
``CLOCK_MONOTONIC`` (the clock of Python's ``time.monotonic``), taken when the answer's
values were read: a test knows exactly which values were on the wire, and when.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BINARY = REPO / ".venv" / "bin" / "lwslave"
SOURCE = Path(__file__).with_name("lwslave.c")
TABLES = ("coil", "discrete", "holding", "input")


@dataclass(frozen=True)
class Served:
    """One request as the slave handled it: ``kind`` served, exception or ignored."""

    kind: str
    t: float
    unit: int
    fc: int
    addr: int
    count: int
    values: tuple[int, ...] = ()
    code: int = 0


def ensure_built() -> Path:
    """The slave binary, built by tests/modbus_c/build (scripts/setup runs it) when stale."""
    if not BINARY.exists() or BINARY.stat().st_mtime < SOURCE.stat().st_mtime:
        p = subprocess.run([str(SOURCE.with_name("build"))], capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError("the libmodbus test slave could not be built (scripts/setup "
                               f"installs gcc, pkg-config and libmodbus-dev): {p.stderr}")
    return BINARY


class LwSlave:
    """One lwslave process: RTU on ``rtu`` (a tty path) or TCP on ``tcp_port`` (0: any).

    ``set`` values survive :meth:`reboot` (a controller comes back with its registers);
    faults do not.
    """

    def __init__(self, *, units: Sequence[int] = (1,), rtu: str | None = None,
                 baud: int = 19200, parity: str = "N", tcp_port: int | None = None) -> None:
        if (rtu is None) == (tcp_port is None):
            raise ValueError("give rtu (a tty path) or tcp_port")
        self.units = tuple(units)
        self.rtu, self.baud, self.parity = rtu, baud, parity
        self.tcp_port = tcp_port
        self.log: list[Served] = []
        self.rx_errors: list[tuple[float, str]] = []
        self._registers: dict[tuple[int, str, int], int] = {}
        self._cond = threading.Condition()
        self._acks = 0
        self._errors: list[str] = []
        self._sent = 0
        self._ready = False
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    # ----------------------------------------------------------------- process
    def start(self, timeout: float = 5.0) -> LwSlave:
        argv = [str(ensure_built())]
        if self.rtu is not None:
            argv += ["--rtu", self.rtu, "--baud", str(self.baud), "--parity", self.parity]
        else:
            argv += ["--tcp", str(self.tcp_port)]
        for u in self.units:
            argv += ["--unit", str(u)]
        self._acks = self._sent = 0
        self._ready = False
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True, bufsize=1)
        self._reader = threading.Thread(target=self._read, args=(self._proc,), daemon=True,
                                        name="lwslave-reader")
        self._reader.start()
        with self._cond:
            if not self._cond.wait_for(lambda: self._ready or self._proc.poll() is not None,
                                       timeout):
                raise TimeoutError(f"lwslave did not start: {argv}")
        if not self._ready:
            raise RuntimeError(f"lwslave exited with {self._proc.returncode}: {argv}")
        for (unit, table, addr), v in sorted(self._registers.items()):
            self._command(f"set {unit} {table} {addr} {v}")
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            w = line.split()
            if not w:
                continue
            with self._cond:
                if w[0] == "ready":
                    if w[1] == "tcp":
                        self.tcp_port = int(w[2])
                    self._ready = True
                elif w[0] == "ok":
                    self._acks = int(w[1])
                elif w[0] == "error":
                    self._errors.append(line.strip())
                    self._acks = int(w[1].rstrip(":"))
                elif w[0] in ("served", "exception", "ignored"):
                    t, unit, fc, addr, count = float(w[1]), *map(int, w[2:6])
                    rest = tuple(int(x) for x in w[6:])
                    code = rest[0] if w[0] == "exception" else 0
                    self.log.append(Served(w[0], t, unit, fc, addr, count,
                                           rest if w[0] == "served" else (), code))
                elif w[0] == "rxerror":
                    self.rx_errors.append((float(w[1]), " ".join(w[2:])))
                self._cond.notify_all()

    def kill(self) -> None:
        """Power off: SIGKILL, no goodbye on the line."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(timeout=5)
        if self._reader is not None:
            self._reader.join(timeout=5)

    def reboot(self, off_s: float) -> tuple[float, float]:
        """Off for ``off_s`` seconds, then up again; returns (off at, answering again at)."""
        t_off = time.monotonic()
        self.kill()
        time.sleep(max(0.0, off_s - (time.monotonic() - t_off)))
        self.start()
        return t_off, time.monotonic()

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.write("quit\n")
                self._proc.stdin.flush()
                self._proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait(timeout=5)
        if self._reader is not None:
            self._reader.join(timeout=5)

    def __enter__(self) -> LwSlave:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- control
    def _command(self, line: str, timeout: float = 5.0) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None or proc.stdin is None:
            raise RuntimeError("lwslave is not running")
        with self._cond:
            self._sent += 1
            n, errors = self._sent, len(self._errors)
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
            if not self._cond.wait_for(lambda: self._acks >= n, timeout):
                raise TimeoutError(f"lwslave did not acknowledge {line!r}")
            if len(self._errors) > errors:
                raise ValueError(self._errors[-1])

    def set(self, unit: int, table: str, addr: int, values: Iterable[int]) -> None:
        """Registers (or bits) from ``addr`` on; in place when this returns."""
        vals = [int(v) for v in values]
        if table not in TABLES:
            raise ValueError(f"table {table!r}: expected one of {TABLES}")
        for i, v in enumerate(vals):
            self._registers[(unit, table, addr + i)] = v
        self._command(f"set {unit} {table} {addr} " + " ".join(map(str, vals)))

    def fault(self, unit: int, table: str, addr: int, count: int, code: int) -> None:
        """Exception ``code`` to requests touching that range (``code`` 0 clears the table)."""
        self._command(f"fault {unit} {table} {addr} {count} {code}")

    def silent(self, unit: int, on: bool = True) -> None:
        self._command(f"silent {unit} {int(on)}")

    def busy(self, unit: int, n: int) -> None:
        """Exception 06 to the unit's next ``n`` requests."""
        self._command(f"busy {unit} {n}")

    def delay(self, unit: int, ms: int) -> None:
        self._command(f"delay {unit} {ms}")

    # ------------------------------------------------------------------ record
    def served(self, since: float = 0.0, until: float = float("inf"), **match: Any
               ) -> list[Served]:
        """Records in [since, until] whose fields equal ``match`` (unit=, fc=, addr=...)."""
        with self._cond:
            log = list(self.log)
        return [s for s in log if since <= s.t <= until
                and all(getattr(s, k) == v for k, v in match.items())]

    def wait_served(self, n: int, timeout: float = 5.0, **match: Any) -> list[Served]:
        """Block until ``n`` records match (a test waiting for the slave to be asked)."""
        deadline = time.monotonic() + timeout
        while len(got := self.served(**match)) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"lwslave saw {len(got)} of {n} requests {match}")
            time.sleep(0.01)
        return got

