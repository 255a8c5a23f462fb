"""Wall time for messages, taken from the monotonic clock, and its quality ``tq``.

Detection runs on the monotonic clock (events.md); only messages carry wall time.
``tq`` says whether the system clock was synchronised when ``ts`` was taken: a
terminal without RTC boots in 1970 or at its last shutdown time until NTP answers,
and the platform must not trust those stamps. Whether the clock is synchronised is
the kernel's own answer: ``adjtimex(2)`` with ``modes = 0`` (read only, needs no
privilege) returns ``TIME_ERROR`` and sets ``STA_UNSYNC`` until an NTP daemon
(chrony, systemd-timesyncd, ntpd) has disciplined the clock. Nothing is guessed
from the year or from file times.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

#: a change of wall - monotonic larger than this between two stamps is a clock step
STEP_S = 1.0
#: adjtimex(2) return value: "clock not synchronised"
TIME_ERROR = 5
#: timex.status bit: "clock unsynchronised"
STA_UNSYNC = 0x0040


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class Timex(ctypes.Structure):
    """``struct timex`` of <sys/timex.h> (Linux, glibc); ctypes adds the same padding."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


@dataclass(frozen=True)
class ClockState:
    """The kernel's view of the system clock; ``synced`` is what ``tq`` reports."""

    synced: bool
    state: int  # adjtimex return value (TIME_OK .. TIME_ERROR), -1 when unavailable
    status: int  # timex.status bits
    esterror_us: int  # estimated error
    maxerror_us: int  # maximum error


def is_synced(state: int, status: int) -> bool:
    """The kernel's rule (and ntp_gettime's): unsynchronised on TIME_ERROR or STA_UNSYNC."""
    return state >= 0 and state != TIME_ERROR and not status & STA_UNSYNC


_libc: ctypes.CDLL | None = None


def kernel_clock_state() -> ClockState:
    """Ask the kernel (adjtimex, read only). Unavailable (not Linux): reported unsynced."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        tx = Timex()
        tx.modes = 0
        ret = int(_libc.adjtimex(ctypes.byref(tx)))
    except (OSError, AttributeError) as exc:
        log.warning("cannot read the kernel clock state (adjtimex): %s; tq will be 0", exc)
        return ClockState(False, -1, 0, 0, 0)
    if ret < 0:
        log.warning("adjtimex failed (errno %d); tq will be 0", ctypes.get_errno())
        return ClockState(False, -1, 0, 0, 0)
    return ClockState(is_synced(ret, tx.status), ret, int(tx.status), int(tx.esterror),
                      int(tx.maxerror))


class Timebase:
    """Wall-clock stamps for messages, and their quality.

    The kernel is asked at most every ``probe_interval_s`` (a syscall, but messages
    can come in bursts of thousands after a reconnect). ``wall_ms(mono)`` turns a
    monotonic instant into wall milliseconds using the current offset between the two
    clocks, so a stamp taken for an observation made a moment ago is not shifted by
    the time the agent took to build the message.
    """

    def __init__(self, probe: Callable[[], ClockState] = kernel_clock_state,
                 probe_interval_s: float = 10.0,
                 wall: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic) -> None:
        self._probe = probe
        self._interval = probe_interval_s
        self._wall = wall
        self._mono = mono
        self._last_probe = -float("inf")
        self._state = ClockState(False, -1, 0, 0, 0)
        self.synced_changes = 0
        #: clock steps seen between two stamps: (monotonic time, step in ms)
        self.steps: list[tuple[float, int]] = []
        self._offset: float | None = None  # wall - monotonic at the last stamp

    def clock_state(self) -> ClockState:
        now = self._mono()
        if now - self._last_probe >= self._interval:
            state = self._probe()
            if state.synced != self._state.synced and self._last_probe != -float("inf"):
                self.synced_changes += 1
                log.info("system clock %s", "synchronised" if state.synced else
                         "no longer synchronised")
            self._state = state
            self._last_probe = now
        return self._state

    def monotonic(self) -> float:
        return self._mono()

    def wall_ms(self, mono: float | None = None) -> int:
        """UTC ms since the epoch at monotonic instant ``mono`` (default: now).

        Also notices a step of the system clock (NTP's first sync on a terminal
        without RTC, a manual date): the offset between the wall and the monotonic
        clock moves by more than ``STEP_S`` between two calls, which drift never does.
        """
        wall, now = self._wall(), self._mono()
        offset = wall - now
        if self._offset is not None and abs(offset - self._offset) > STEP_S:
            step_ms = int(round((offset - self._offset) * 1000.0))
            self.steps.append((now, step_ms))
            log.info("system clock stepped by %+.3f s", step_ms / 1000.0)
        self._offset = offset
        at = now if mono is None else mono
        return int(round((wall - (now - at)) * 1000.0))

    def stamp(self, mono: float | None = None) -> tuple[int, int]:
        """(ts, tq) for an observation at monotonic instant ``mono`` (default: now)."""
        return self.wall_ms(mono), 1 if self.clock_state().synced else 0

    def health(self) -> dict[str, object]:
        """The ``clock`` object of the health message."""
        st = self.clock_state()
        return {"synced": st.synced, "esterror_ms": round(st.esterror_us / 1000.0, 1)}


async def sleep_on_grid(period: float) -> None:
    """Sleep to the next multiple of ``period`` on the event loop's clock.

    The loops that wake periodically (the tick, the live source's hand-off) share one
    grid, so the event loop wakes once for all of them instead of once for each: on a
    Pi-class core the wake-up costs more than the work it does.
    """
    loop = asyncio.get_running_loop()
    now = loop.time()
    await asyncio.sleep(period - now % period)


def clock_time(ms: Any, utc: bool = False) -> str:
    """Wall-clock milliseconds as a reader wants them: local time (``TZ`` honoured) with
    its zone, or UTC with ``utc``; "?" for a missing time."""
    if not isinstance(ms, int | float) or isinstance(ms, bool):
        return "?"
    try:
        dt = datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return "?"
    if utc:
        return dt.strftime("%Y-%m-%d %H:%M:%S UTC")
    local = dt.astimezone()
    zone = local.tzname() or local.strftime("UTC%z")
    return local.strftime("%Y-%m-%d %H:%M:%S ") + zone
