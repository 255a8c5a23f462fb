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
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from liftwatch.drivers.trace import Record, TraceError, TraceHeader, TraceReader

#: yield to the event loop at least this often when records are due at once
_YIELD_EVERY = 64


class TraceSource:
    """Plays ``path``; ``header`` is read on construction (raises ``TraceError``)."""

    def __init__(self, path: str | Path, speed: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 on_error: Callable[[TraceError], None] | None = None) -> None:
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
                yield rec
                self._t_next = None
        finally:
            self.finished = True
            self._reader.close()
