"""The car accelerometer: chip interface, sample timestamping and sensor supervision.

One small module per chip (the mqtt-io model): :mod:`liftwatch.drivers.adxl345` and
:mod:`liftwatch.drivers.lis3dh` implement :class:`Accelerometer` at register level over
any ``busio.I2C``-like bus (Blinka's on the terminal, :mod:`~liftwatch.drivers.simchips`
in the tests, so the real register code runs there). A chip driver only sets the chip up
and drains its FIFO; everything that is the same for every chip is here, in
:class:`AccelReader`:

**Timestamps come from the sample count, not the read time.** Sample ``k`` after the
anchor is at ``t_anchor + k / fs``: FIFO reads arrive in bursts at irregular times, but
the chip samples on its own steady clock. The anchor is set when the FIFO is started.
**Resynchronisation:** after each read the reader checks the count-based time of the
newest sample against the read time ``now``. It must lie in
``[now - (fifo_depth + 2) / fs - read_slack_s, now]``; outside (an overrun lost samples,
the chip's oscillator drifted from nominal, the process stalled), the anchor is moved so
the newest sample sits at ``now`` and ``resyncs`` is counted. A block's time never goes
back before the previous block's (the trace must not go backwards).

**Supervision** (:meth:`AccelReader.health`): dropouts (FIFO overrun reported by the
chip: samples were lost), stuck output (identical samples on ``stuck_s`` worth of
consecutive samples), saturation (an axis at the range limit), a silent or frozen
chip (no new sample for ``silent_s``), and I2C errors (counted; the loop goes on).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liftwatch.drivers.settings import AccelSettings

log = logging.getLogger(__name__)

#: A read may come this late without losing samples: the reader reads when the FIFO holds
#: all but this much (at least half of it). It covers the scheduler and the GIL (whose
#: switch interval is 5 ms) on a loaded Pi; ``read_gap_max_ms`` in the health shows how
#: late reads really came. A read later still is an overrun: counted, resynced, logged.
READ_MARGIN_S = 0.02
#: After a FIFO overrun the reader reads at a quarter FIFO for this long.
OVERRUN_WARY_S = 60.0

Sample = tuple[int, int, int]


class AccelError(RuntimeError):
    """The accelerometer cannot be used: absent, wrong chip, bus failure at set-up."""


class AccelIdentityError(AccelError):
    """The chip at the address is not the configured one (identity register mismatch)."""


class RegisterBus:
    """Register reads and writes on one I2C device through a ``busio.I2C``-like bus.

    Takes the bus lock around each transaction as CircuitPython requires; a lock not
    obtained within ``lock_timeout_s`` is an :class:`OSError` like any bus failure.
    """

    def __init__(self, i2c: Any, address: int, lock_timeout_s: float = 0.5) -> None:
        self.i2c = i2c
        self.address = address
        self.lock_timeout_s = lock_timeout_s

    def _lock(self) -> None:
        deadline = time.monotonic() + self.lock_timeout_s
        while not self.i2c.try_lock():
            if time.monotonic() > deadline:
                raise OSError(f"I2C bus busy: lock not obtained in {self.lock_timeout_s} s")
            time.sleep(0.0002)

    def read(self, register: int, n: int) -> bytes:
        return self.read_repeated(register, n, 1)[0]

    def read_repeated(self, register: int, n: int, times: int) -> list[bytes]:
        """``times`` reads of ``n`` bytes from ``register`` under one bus lock (draining
        a FIFO whose entries must each be read separately, as the ADXL345's)."""
        out: list[bytes] = []
        if times <= 0:
            return out
        reg = bytes([register])
        buf = bytearray(n)
        self._lock()
        try:
            for _ in range(times):
                self.i2c.writeto_then_readfrom(self.address, reg, buf)
                out.append(bytes(buf))
        finally:
            self.i2c.unlock()
        return out

    def read_u8(self, register: int) -> int:
        return self.read(register, 1)[0]

    def write_u8(self, register: int, value: int) -> None:
        self._lock()
        try:
            self.i2c.writeto(self.address, bytes([register, value & 0xFF]))
        finally:
            self.i2c.unlock()

    def present(self) -> bool:
        """True when the address answers a bus scan."""
        self._lock()
        try:
            return self.address in self.i2c.scan()
        finally:
            self.i2c.unlock()


class Accelerometer(ABC):
    """One accelerometer chip: set-up and FIFO draining at register level.

    After :meth:`open`, ``fs`` is the chip's actual output data rate in Hz (it may
    differ from the rate asked for: see the chip module), ``lsb_per_g`` the counts per
    g of the returned samples and ``limits`` the (min, max) counts an axis can read.
    """

    chip: str = "?"
    fifo_depth: int = 32
    fs: float = 0.0
    lsb_per_g: float = 0.0
    limits: tuple[int, int] = (0, 0)

    def __init__(self, i2c: Any, address: int, rate_hz: int, range_g: int) -> None:
        self.bus = RegisterBus(i2c, address)
        self.address = address
        self.rate_hz = rate_hz
        self.range_g = range_g

    def _check_identity(self, register: int, expected: int, what: str) -> None:
        try:
            found = self.bus.read_u8(register)
        except OSError as exc:
            raise AccelError(f"no answer from an {self.chip} at I2C address "
                             f"0x{self.address:02X}: {exc}; {self._who_answers()}") from exc
        if found != expected:
            raise AccelIdentityError(
                f"the chip at I2C address 0x{self.address:02X} is not an {self.chip}: "
                f"{what} (register 0x{register:02X}) reads 0x{found:02X}, expected "
                f"0x{expected:02X}")

    def _who_answers(self) -> str:
        """What a bus scan finds, for a chip silent at its address: the technician's next
        step (another address, or the wiring)."""
        try:
            self.bus._lock()
            try:
                found = sorted(self.bus.i2c.scan())
            finally:
                self.bus.i2c.unlock()
        except (OSError, AttributeError) as exc:
            return f"the bus cannot be scanned ({exc})"
        if not found:
            return ("no device answers on this bus: check the chip's wiring (SDA, SCL, "
                    "3V3, GND) and its power")
        listed = ", ".join(f"0x{a:02X}" for a in found)
        return (f"addresses that answer on this bus: {listed} (set accel.address to the "
                f"chip's, e.g. accel.address = 0x{found[0]:02X}, and accel.chip)")

    @abstractmethod
    def open(self) -> None:
        """Check the identity, set range and rate, start the FIFO in stream mode."""

    @abstractmethod
    def read_fifo(self) -> tuple[list[Sample], bool]:
        """Drain the FIFO: (samples oldest first, overrun since the last read)."""

    def close(self) -> None:  # noqa: B027 - optional hook: most chips need nothing
        """Put the chip in standby (best effort)."""


def make_accelerometer(i2c: Any, settings: AccelSettings) -> Accelerometer:
    """The driver for ``settings.chip`` over ``i2c`` (not yet opened)."""
    if settings.chip == "adxl345":
        from liftwatch.drivers.adxl345 import ADXL345
        return ADXL345(i2c, settings.address, settings.rate_hz, settings.range_g)
    if settings.chip == "lis3dh":
        from liftwatch.drivers.lis3dh import LIS3DH
        return LIS3DH(i2c, settings.address, settings.rate_hz, settings.range_g)
    raise AccelError(f"accel.chip must be adxl345 or lis3dh, found {settings.chip!r}")


def open_blinka_i2c(bus: int, dev_dir: str | Path = "/dev") -> Any:
    """The terminal's I2C bus ``bus`` through Blinka (bus 1 is board.SCL/SDA on a Pi).

    A bus is the kernel's ``/dev/i2c-N``: when it is missing the error says so, rather
    than whatever Blinka fails with first (on a PC it is ``cannot import name
    'i2cPorts'``: Blinka has no pin table for such boards). On those boards an existing
    bus is opened through Blinka's generic Linux driver, which needs no pin table.
    """
    node = Path(dev_dir) / f"i2c-{bus}"
    if not node.exists():
        raise AccelError(f"no I2C bus {bus} on this machine: {node} does not exist "
                         f"({_blinka_board()}); on a Raspberry Pi enable I2C with "
                         "`raspi-config nonint do_i2c 0` and reboot")
    if not os.access(node, os.R_OK | os.W_OK):
        raise AccelError(f"I2C bus {bus}: {not_permitted(node)}")
    try:
        from adafruit_blinka.agnostic import chip_id

        if bus == 1 and chip_id not in (None, "GENERIC_X86"):
            import board
            import busio
            if hasattr(board, "SCL") and hasattr(board, "SDA"):
                return busio.I2C(board.SCL, board.SDA)
        from adafruit_blinka.microcontroller.generic_linux.i2c import I2C as LinuxI2C
        return _LockedI2C(LinuxI2C(bus))
    except Exception as exc:  # Blinka raises many kinds when the bus is absent
        raise AccelError(f"I2C bus {bus} cannot be opened: {exc}") from exc


def not_permitted(node: Path) -> str:
    """A device node this user may not open, with the group that may (i2c, dialout)."""
    import grp
    import pwd

    st = node.stat()
    user = pwd.getpwuid(os.geteuid()).pw_name
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return (f"{node} is not permitted for user {user} (group {group}, mode "
            f"{st.st_mode & 0o777:04o}): add the user to group {group}: "
            f"`usermod -aG {group} {user}`, then restart the service")


def _blinka_board() -> str:
    """The board as Blinka detects it, for error messages."""
    try:
        from adafruit_blinka.agnostic import board_id
    except Exception as exc:  # detection reads /proc and /sys: anything may fail
        return f"Blinka cannot detect the board: {exc}"
    return f"Blinka board {board_id}" if board_id else "Blinka: board not detected"


class _LockedI2C:
    """busio.I2C's locking around Blinka's generic Linux bus for buses other than 1."""

    def __init__(self, bus: Any) -> None:
        self._bus = bus
        self._lock = threading.Lock()

    def try_lock(self) -> bool:
        return self._lock.acquire(blocking=False)

    def unlock(self) -> None:
        self._lock.release()

    def scan(self) -> list[int]:
        return list(self._bus.scan())

    def writeto(self, address: int, buffer: bytes, *, start: int = 0,
                end: int | None = None) -> None:
        self._bus.writeto(address, buffer, start=start, end=end)

    def readfrom_into(self, address: int, buffer: bytearray, *, start: int = 0,
                      end: int | None = None) -> None:
        self._bus.readfrom_into(address, buffer, start=start, end=end)

    def writeto_then_readfrom(self, address: int, buffer_out: bytes, buffer_in: bytearray, *,
                              out_start: int = 0, out_end: int | None = None,
                              in_start: int = 0, in_end: int | None = None) -> None:
        self._bus.writeto_then_readfrom(address, buffer_out, buffer_in, out_start=out_start,
                                        out_end=out_end, in_start=in_start, in_end=in_end)


@dataclass
class AccelBlock:
    """Consecutive samples: the first at ``t``, the next every ``1/fs`` s.

    ``gap`` is True when the time base was resynchronised at this block (samples lost
    to an overrun, a frozen or failing chip, oscillator drift): its first sample is then
    not exactly ``1/fs`` after the previous block's last.
    """

    t: float
    samples: list[list[int]]
    index: int
    gap: bool = False


@dataclass
class _Health:
    samples: int = 0
    blocks: int = 0
    reads: int = 0
    overruns: int = 0
    resyncs: int = 0
    i2c_errors: int = 0
    consecutive_errors: int = 0
    last_error: str = ""
    saturated_samples: int = 0
    saturated_recent: bool = False
    stuck_run: int = 0
    stuck_episodes: int = 0
    read_gap_max_s: float = 0.0  # the longest time between two reads of the run loop
    last_sample_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class AccelReader:
    """Timestamps and supervises an opened-or-not :class:`Accelerometer` (module doc).

    ``read(now)`` drains the FIFO once and returns an :class:`AccelBlock` or ``None``;
    it never raises for a bus error (counted, the chip is then reported failing).
    ``run(emit, stop)`` does that every ``read_interval_s`` in a worker thread.
    """

    def __init__(self, chip: Accelerometer, clock: Callable[[], float] = time.monotonic, *,
                 stuck_s: float = 2.0, silent_s: float = 1.0, read_slack_s: float = 0.05,
                 read_interval_s: float | None = None, reopen_s: float = 1.0) -> None:
        self.chip = chip
        self.reopen_s = reopen_s
        self.reopens = 0
        self._next_reopen = 0.0
        self.clock = clock
        self.stuck_s = stuck_s
        self.silent_s = silent_s
        self.read_slack_s = read_slack_s
        self._read_interval_s = read_interval_s
        self._wary_until = -float("inf")  # reads at a quarter FIFO until then
        self._anchor = 0.0
        self._count = 0  # samples since the anchor
        self._last_block_t = 0.0
        self._last_sample: Sample | None = None
        self._gap = False
        self.opened = False
        self.open_error = ""
        self._h = _Health()
        self._lock = threading.Lock()

    @property
    def fs(self) -> float:
        return self.chip.fs

    @property
    def read_interval_s(self) -> float:
        """Read when the FIFO holds all but ``READ_MARGIN_S`` of samples, at least half
        of it and at most 0.1 s apart (400 Hz: 24 of 32 samples, every 60 ms): each read
        wakes a core, and on a Pi-class core a wake-up costs more than the reading. Once
        a read has come too late (an overrun: the machine is loaded), at a quarter full
        for the next ``OVERRUN_WARY_S``: a start-up or a burst of load passes, and a
        terminal that hiccuped once should not wake more often for the years after."""
        if self._read_interval_s is not None:
            return self._read_interval_s
        fifo_s = self.chip.fifo_depth / self.chip.fs
        if self.clock() < self._wary_until:
            return min(0.1, fifo_s / 4)
        return min(0.1, max(fifo_s / 2, fifo_s - READ_MARGIN_S))

    def open(self, now: float | None = None) -> None:
        """Open the chip (raises AccelError) and anchor the sample clock."""
        try:
            self.chip.open()
        except OSError as exc:
            self.open_error = f"{self.chip.chip} set-up failed: {exc}"
            raise AccelError(self.open_error) from exc
        except AccelError as exc:
            self.open_error = str(exc)
            raise
        # The first sample is ready one period after the FIFO starts.
        self._anchor = (self.clock() if now is None else now) + 1.0 / self.chip.fs
        self._count = 0
        self._h.last_sample_at = self._anchor
        self._h.consecutive_errors = 0
        self.open_error = ""
        if self.opened:
            self._gap = True  # re-opened: the sample count starts again
        self.opened = True

    def header(self) -> dict[str, Any]:
        """The trace header's ``accel`` object."""
        return {"fs": self.chip.fs, "lsb_per_g": self.chip.lsb_per_g, "axes": "xyz"}

    def read(self, now: float | None = None) -> AccelBlock | None:
        """Drain the FIFO once (see the class doc)."""
        with self._lock:
            self._h.reads += 1
            try:
                samples, overrun = self.chip.read_fifo()
            except OSError as exc:
                self._h.i2c_errors += 1
                self._h.consecutive_errors += 1
                self._h.last_error = str(exc)
                if self._h.consecutive_errors == 1:
                    log.warning("%s: I2C error: %s", self.chip.chip, exc)
                self._gap = True
                return None
            t_now = self.clock() if now is None else now
            self._h.consecutive_errors = 0
            if overrun:
                self._h.overruns += 1
                self._gap = True
                self._wary_until = (self.clock() if now is None else now) + OVERRUN_WARY_S
                log.warning("%s: FIFO overrun, samples lost", self.chip.chip)
            if not samples:
                return None
            self._supervise(samples, t_now)
            return self._stamp(samples, t_now)

    def _stamp(self, samples: list[Sample], now: float) -> AccelBlock:
        fs = self.chip.fs
        n = len(samples)
        newest = self._anchor + (self._count + n - 1) / fs
        window = (self.chip.fifo_depth + 2) / fs + self.read_slack_s
        resync = self._gap or newest > now + 1e-9 or newest < now - window
        if resync:
            if self._h.blocks:  # the first block after open needs no resync to report
                self._h.resyncs += 1
            self._anchor = now - (n - 1) / fs - self._count / fs
        t = self._anchor + self._count / fs
        t = max(t, self._last_block_t)
        block = AccelBlock(t=t, samples=[list(s) for s in samples], index=self._h.samples,
                           gap=resync and self._h.blocks > 0)
        self._gap = False
        self._count += n
        self._last_block_t = t
        self._h.samples += n
        self._h.blocks += 1
        return block

    def _supervise(self, samples: list[Sample], now: float) -> None:
        lo, hi = self.chip.limits
        stuck_n = max(2, int(self.stuck_s * self.chip.fs))
        last = self._last_sample
        run = self._h.stuck_run
        sat = 0
        for s in samples:  # one pass, no generator per sample: 400 samples a second
            x, y, z = s
            if x <= lo or x >= hi or y <= lo or y >= hi or z <= lo or z >= hi:
                sat += 1
            if s == last:
                run += 1
                if run == stuck_n:
                    self._h.stuck_episodes += 1
                    log.warning("%s: output stuck at %s", self.chip.chip, s)
            else:
                run = 1
            last = s
        self._h.saturated_samples += sat
        self._h.saturated_recent = sat > 0
        self._h.stuck_run, self._last_sample = run, last
        self._h.last_sample_at = now

    def health(self, now: float | None = None) -> dict[str, Any]:
        """State ok / absent / failing / silent / stuck / saturated, and the counters."""
        t = self.clock() if now is None else now
        with self._lock:
            h = self._h
            stuck_n = max(2, int(self.stuck_s * self.chip.fs)) if self.chip.fs else 0
            age = None if h.last_sample_at is None else max(0.0, t - h.last_sample_at)
            if not self.opened:
                state = "absent"
            elif h.consecutive_errors >= 3:
                state = "failing"
            elif stuck_n and h.stuck_run >= stuck_n:
                state = "stuck"
            elif age is not None and age > self.silent_s:
                state = "silent"
            elif h.saturated_recent:
                state = "saturated"
            else:
                state = "ok"
            return {"chip": self.chip.chip, "state": state, "ok": state == "ok",
                    "error": "" if state == "ok" else self.open_error or h.last_error,
                    "reopens": self.reopens, "fs": self.chip.fs,
                    "lsb_per_g": self.chip.lsb_per_g, "samples": h.samples,
                    "reads": h.reads, "overruns": h.overruns, "resyncs": h.resyncs,
                    "i2c_errors": h.i2c_errors, "saturated_samples": h.saturated_samples,
                    "stuck_episodes": h.stuck_episodes,
                    "read_gap_max_ms": round(1000.0 * h.read_gap_max_s, 1),
                    "last_sample_age_s": None if age is None else round(age, 3)}

    def step(self, now: float | None = None) -> AccelBlock | None:
        """One turn of the read loop: drain the FIFO, and set the chip up again when it
        has been failing or silent (a brown-out or re-plugged chip comes back in standby
        with its registers reset), at most every ``reopen_s``."""
        block = self.read(now)
        if block is not None:
            return block
        t = self.clock() if now is None else now
        with self._lock:
            h = self._h
            silent = h.last_sample_at is not None and t - h.last_sample_at > self.silent_s
            bad = h.consecutive_errors >= 3 or silent
        if bad and t >= self._next_reopen:
            self._next_reopen = t + self.reopen_s
            try:
                self.open(t)
            except AccelError as exc:
                log.debug("%s: set-up again failed: %s", self.chip.chip, exc)
            else:
                self.reopens += 1
                log.warning("%s: set up again after it failed or fell silent", self.chip.chip)
        return None

    def run(self, emit: Callable[[AccelBlock], None], stop: threading.Event) -> None:
        """Call :meth:`step` every ``read_interval_s`` until ``stop``; emit each block.

        Sleeps with ``time.sleep`` (cheaper to wake than ``Event.wait``); ``stop`` is
        seen within one interval, and the FIFO is drained once more then, so what the
        chip measured before the stop is not left in it."""
        next_t = self.clock()
        last_read = next_t
        while not stop.is_set():
            now = self.clock()
            self._h.read_gap_max_s = max(self._h.read_gap_max_s, now - last_read)
            last_read = now
            block = self.step()
            if block is not None:
                emit(block)
            interval = self.read_interval_s
            next_t += interval
            now = self.clock()
            if next_t < now - interval:
                next_t = now
            if next_t > now:
                time.sleep(next_t - now)
        if self.opened:
            block = self.read()
            if block is not None:
                emit(block)

    def close(self) -> None:
        """Put an opened chip in standby (best effort: it may be gone)."""
        if not self.opened:
            return
        self.opened = False
        try:
            self.chip.close()
        except OSError as exc:
            log.debug("%s: close failed: %s", self.chip.chip, exc)
