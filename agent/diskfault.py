"""A failing data directory (disk full, I/O error, read-only) as one reported fault.

Every write the agent makes while running (outbox appends, the alarm ledger, the
event journal) reports its ``OSError`` here instead of logging it: a full disk
would otherwise log a line per message or per tick, thousands in a minute, and
fill what is left of the disk with the log. The fault is logged once when it
starts (what, where, which errno), then a summary every ``summary_s`` counted from
the fault's start (a line about another part being hit does not put it off) with
the number of failed writes since the last summary, and once when writes succeed again;
the health message carries it (:meth:`DiskFault.health`) while it lasts.
A disk that is nearly full lets a small write through now and then (the slack of a
file's last block), so a fault can end and start again within seconds: a fault that
starts within ``summary_s`` of the end of the last one is a relapse, counted and
summed up like a failed write, not logged as a new fault.

The caller keeps what it could not write in memory and retries; this class only
decides when a retry is due (every ``retry_s`` while the fault lasts, so a full
disk costs one failing write a second, not one per record) and what is said.
"""

from __future__ import annotations

import errno as errno_mod
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

#: a failed write is retried this often while the fault lasts
RETRY_S = 1.0
#: failed writes during a fault are summed up in one log line this often
SUMMARY_S = 300.0


def errno_name(exc: BaseException) -> str:
    """``ENOSPC`` for an OSError with errno 28; the class name when there is no errno."""
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code:
        return errno_mod.errorcode.get(code, f"errno {code}")
    return type(exc).__name__


class DiskFault:
    """The state of the data directory's writes: ok, or failing since when, how often."""

    def __init__(self, *, retry_s: float = RETRY_S, summary_s: float = SUMMARY_S,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.retry_s = retry_s
        self.summary_s = summary_s
        self._clock = clock
        self._wall = wall
        self.since_ms: int | None = None  # wall ms of the first failure of this fault
        self.count = 0  # failed writes during this fault
        self.faults = 0  # faults since start (a fault that came and went counts once)
        self.error = ""  # errno name of the latest failure
        self.what: dict[str, str] = {}  # failing part -> its path
        self._since_mono = 0.0
        self._story_start = 0.0  # start of the fault (or of the one a relapse continues)
        self._suppressed = 0
        self._next_summary = float("inf")  # when the next summary line is due
        self._next_retry = -float("inf")
        self._recovered_at = -float("inf")
        self._quiet = False  # this fault is a relapse: its start and end are not logged
        self.relapses = 0

    @property
    def active(self) -> bool:
        return self.since_ms is not None

    def retry_due(self) -> bool:
        """Whether writing should be tried now: always while no fault is known, every
        ``retry_s`` during one."""
        return not self.active or self._clock() >= self._next_retry

    def failed(self, what: str, exc: BaseException, path: object = "") -> None:
        """A write of ``what`` (outbox, alarm ledger, ...) to ``path`` failed with ``exc``."""
        now = self._clock()
        if getattr(exc, "errno", None) or not self.error:  # a known errno wins
            self.error = errno_name(exc)
        self._next_retry = now + self.retry_s
        self.count += 1
        new_part = what not in self.what
        self.what[what] = str(path or getattr(exc, "filename", "") or "")
        if not self.active:
            self.since_ms = int(self._wall() * 1000)
            self._since_mono = now
            self.faults += 1
            self._quiet = now - self._recovered_at < self.summary_s
            if self._quiet:  # the last fault goes on: its start and summaries stand
                self._since_mono = self._story_start
                self.relapses += 1
                self._suppressed += 1
                self.summary()
                return
            self._suppressed = 0
            self._story_start = now
            self._next_summary = now + self.summary_s
            log.error("disk fault: %s not written (%s: %s) at %s; what cannot be written is "
                      "kept in memory and written when the disk takes it again; retrying "
                      "every %g s, further failures summed up every %g min", what, self.error,
                      getattr(exc, "strerror", None) or exc, self.what[what] or "?",
                      self.retry_s, self.summary_s / 60)
            return
        if new_part and not self._quiet:  # another part is hit too: a line of its own
            log.error("disk fault: %s not written either (%s) at %s", what, self.error,
                      self.what[what] or "?")
            return
        self._suppressed += 1
        self.summary()

    def summary(self) -> None:
        """The periodic line while the fault lasts (called on every failure and tick)."""
        now = self._clock()
        if not self.active or now < self._next_summary:
            return
        # every summary_s from the fault's start (catching up after a long gap at once)
        self._next_summary += self.summary_s * max(1, int((now - self._next_summary)
                                                          // self.summary_s) + 1)
        log.error("disk fault continues for %.0f s: %d failed write(s) since the last line "
                  "(%s; %s)%s", now - self._since_mono, self._suppressed, self.error,
                  ", ".join(sorted(self.what)),
                  f"; it ended and came back {self.relapses} time(s)" if self.relapses else "")
        self._suppressed = 0
        self.relapses = 0
        self._quiet = False  # spoken of: its end is logged too

    def recovered(self, detail: str = "") -> None:
        """Everything kept in memory has been written: the fault is over."""
        if not self.active:
            return
        now = self._clock()
        if not self._quiet:
            log.warning("disk fault over after %.0f s and %d failed write(s): writes succeed "
                        "again%s", now - self._since_mono, self.count,
                        f"; {detail}" if detail else "")
            self._suppressed = 0
        self._recovered_at = now
        self._quiet = False
        self.since_ms = None
        self.count = 0
        self.what = {}
        self._next_retry = -float("inf")

    def health(self) -> dict[str, object] | None:
        """The ``disk`` entry of the health message while the fault lasts, else None."""
        if not self.active:
            return None
        return {"error": self.error, "since": self.since_ms, "count": self.count,
                "parts": sorted(self.what)}
