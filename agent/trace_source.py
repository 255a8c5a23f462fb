"""A recorded trace played as a live source: an async iterator of ``Record`` in real time.

``liftwatch run --trace FILE --speed N`` runs the whole agent (detectors, outbox,
uplink) on a trace instead of hardware: each record is handed over when its trace
time comes on a real-time clock running N times faster than the trace, so timers,
heartbeats, rate limits and reconnects behave as they would live, only sooner.
``speed = 0`` plays as fast as the consumer takes the records (no clock at all).

``now()`` is the trace time that corresponds to this moment: the runtime's 0.1 s
tick calls ``Pipeline.advance(source.now())``, so a timer expires at the same trace
time as in ``liftwatch replay`` (principle 5). Records keep their trace ``t``.
Malformed lines are skipped and counted by the reader (``bad_lines``), never fatal.

A re-run publishes under the config's lift id: a trace recorded on another lift would
put that lift's callouts, with floors this one does not have, under this lift's name.
``liftwatch run --trace`` therefore refuses a trace whose header names another lift id
or other landings (:func:`lift_mismatch`) unless ``--other-lift`` is given; it shows its
progress (:class:`TraceSource`'s ``progress``) and ends with a summary of what it
published (:class:`RunReport`).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TextIO

from liftwatch.drivers.trace import Record, TraceError, TraceHeader, TraceReader

#: yield to the event loop at least this often when records are due at once
_YIELD_EVERY = 64
#: progress lines this often (wall seconds): on a terminal one line kept up to date
PROGRESS_S, PROGRESS_TTY_S = 10.0, 1.0


def lift_mismatch(header: TraceHeader, cfg: Any) -> list[str]:
    """How the trace's lift differs from the config's (id, landings); [] when it is this
    lift or the header does not say (the config's lift is then used)."""
    lift = header.lift or {}
    out = []
    trace_id = lift.get("id")
    if trace_id is not None and str(trace_id) != cfg.terminal.lift_id:
        out.append(f"lift id {trace_id} (the config's is {cfg.terminal.lift_id})")
    landings = lift.get("landings")
    if landings is not None and [str(x) for x in landings] != list(cfg.lift.landings):
        out.append(f"landings {json.dumps([str(x) for x in landings])} (the config's are "
                   f"{json.dumps(list(cfg.lift.landings))})")
    return out


class RunReport:
    """What a trace run sent: messages queued by kind and event code, status offers."""

    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()
        self.events: Counter[str] = Counter()

    def queued(self, kind: str, msg: dict[str, Any]) -> None:
        self.kinds[kind] += 1
        if kind == "event":
            self.events[f"{msg.get('code')} {msg.get('state')}"] += 1

    def progress(self) -> str:
        return ", ".join(f"{k} {n}" for k, n in sorted(self.kinds.items())) or "nothing yet"

    def summary(self, where: str, stats: Any, records: int, bad_lines: int,
                drained: bool) -> str:
        lines = [f"trace run: {records} records played ({bad_lines} bad lines skipped); "
                 f"sent to {where}:"]
        for kind, n in sorted(self.kinds.items()):
            lines.append(f"  {kind:<7}{n:>6}")
            if kind == "event":
                lines += [f"           {n:>4}  {code}" for code, n in sorted(
                    self.events.items())]
        lines.append(f"  status {stats.status_sent:>6} (latest value, QoS 0)")
        lines.append(f"acknowledged by the broker: {stats.acked} QoS 1 message(s)"
                     + ("" if drained else "; the rest stays in the outbox for the next "
                        "start"))
        return "\n".join(lines)


class TraceSource:
    """Plays ``path``; ``header`` is read on construction (raises ``TraceError``)."""

    def __init__(self, path: str | Path, speed: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 on_error: Callable[[TraceError], None] | None = None,
                 progress: Callable[[], str] | None = None,
                 progress_to: TextIO | None = None) -> None:
        """``progress`` (what has been sent so far) turns on progress lines on
        ``progress_to`` (stderr): every PROGRESS_S, or kept up to date on a terminal."""
        if not speed >= 0:
            raise ValueError(f"speed must be >= 0, found {speed!r}")
        self.path = Path(path)
        self.speed = float(speed)
        self._clock = clock
        self._reader = TraceReader(self.path, on_error=on_error)
        self.header: TraceHeader = self._reader.header
        self._t0_clock: float | None = None
        self._t_first = 0.0
        self._t_last = 0.0
        self._t_next: float | None = None  # read from the file, not yet handed over
        self.records = 0
        self.finished = False
        self._stopped = False
        self._progress = progress
        self._out = progress_to or sys.stderr
        self._tty = self._out.isatty()
        self._next_progress = 0.0

    @property
    def bad_lines(self) -> int:
        return self._reader.bad_lines

    def now(self) -> float:
        """Trace time up to which timers may run now.

        The clock's trace time, but never past a record read from the file and not yet
        handed over: timers must not expire ahead of samples that are due but still on
        their way (the consumer was busy), or a rule would fire that the samples would
        have prevented. ``Pipeline.advance(now())`` thus decides exactly what replay
        decides. Unclocked (speed 0) or finished: the last record's time.
        """
        if self._t0_clock is None:
            return self._t_first
        if self.speed == 0 or self.finished:
            return self._t_last
        t = self._t_first + (self._clock() - self._t0_clock) * self.speed
        if self._t_next is not None:
            t = min(t, self._t_next)
        return max(t, self._t_last)

    def stop(self) -> None:
        """Stop at the next record (SIGTERM: acquisition stops first)."""
        self._stopped = True

    def __aiter__(self) -> AsyncIterator[Record]:
        return self._play()

    async def _play(self) -> AsyncIterator[Record]:
        burst = 0
        try:
            for rec in self._reader:
                if self._stopped:
                    break
                self._t_next = rec.t
                if self._t0_clock is None:
                    self._t0_clock = self._clock()
                    self._t_first = rec.t
                if self.speed > 0:
                    due = self._t0_clock + (rec.t - self._t_first) / self.speed
                    delay = due - self._clock()
                    if delay > 0.001:
                        burst = 0
                        await asyncio.sleep(delay)
                        if self._stopped:
                            break
                burst += 1
                if burst >= _YIELD_EVERY:
                    burst = 0
                    await asyncio.sleep(0)
                self._t_last = rec.t
                self.records += 1
                if self._progress is not None:
                    self._show_progress()
                yield rec
                self._t_next = None
        finally:
            self.finished = True
            if self._progress is not None:
                self._show_progress(final=True)
            self._reader.close()

    def _show_progress(self, final: bool = False) -> None:
        now = time.monotonic()
        if now < self._next_progress and not final:
            return
        if self._next_progress == 0.0 and not final:   # the first line after one period
            self._next_progress = now + (PROGRESS_TTY_S if self._tty else PROGRESS_S)
            return
        self._next_progress = now + (PROGRESS_TTY_S if self._tty else PROGRESS_S)
        assert self._progress is not None
        line = (f"trace {self.path.name}: {self._reader.progress():.0%} read, t = "
                f"{self._t_last:.1f} s, {self.records} records; sent {self._progress()}")
        end = "\n" if final or not self._tty else ""
        print(("\r\x1b[K" if self._tty else "") + line, end=end, file=self._out, flush=True)
