"""Hourly and daily counters for on-demand maintenance: the body of the ``stats`` message.

The platform decides maintenance intervals from wear counters (runs, running time,
distance, door cycles, reopens, starts per landing) and from how often each event
happened, including raises the daily cap kept off the uplink (EventBook.raised_count).
Each period (``hour``, ``day``) counts independently and is reset when closed.
"""

from __future__ import annotations

from typing import Any

from liftwatch.signal.events import EventBook

PERIODS = ("hour", "day")


class _Counters:
    def __init__(self, events_base: dict[str, int]) -> None:
        self.runs = 0
        self.run_s = 0.0
        self.distance_m = 0.0
        self.door_cycles = 0
        self.reopens = 0
        self.starts_by_floor: dict[str, int] = {}
        self.events_base = dict(events_base)


class Stats:
    """Counters per period; fed with the pipeline's trip and door records."""

    def __init__(self, book: EventBook) -> None:
        self.book = book
        self._c = {p: _Counters(book.raised_count) for p in PERIODS}

    def on_trip(self, rec: dict[str, Any]) -> None:
        for c in self._c.values():
            c.runs += 1
            dur = rec.get("duration_s")
            if isinstance(dur, int | float):
                c.run_s += float(dur)
            dist = rec.get("distance_m")
            if isinstance(dist, int | float):
                c.distance_m += abs(float(dist))
            f = rec.get("from")
            if f is not None:
                c.starts_by_floor[f] = c.starts_by_floor.get(f, 0) + 1

    def on_door(self, rec: dict[str, Any]) -> None:
        for c in self._c.values():
            c.door_cycles += 1
            c.reopens += int(rec.get("reopens") or 0)

    def peek(self, period: str) -> dict[str, Any]:
        """The running counters of ``period`` (not reset)."""
        return self._body(period, None, None)

    def _body(self, period: str, from_ms: int | None, to_ms: int | None) -> dict[str, Any]:
        if period not in self._c:
            raise ValueError(f"period must be one of {PERIODS}, found {period!r}")
        c = self._c[period]
        events = {code: n - c.events_base.get(code, 0)
                  for code, n in self.book.raised_count.items()
                  if n - c.events_base.get(code, 0) > 0}
        return {"period": period, "from": from_ms, "to": to_ms, "runs": c.runs,
                "run_s": round(c.run_s, 1), "distance_m": round(c.distance_m, 1),
                "door_cycles": c.door_cycles, "reopens": c.reopens,
                "starts_by_floor": dict(c.starts_by_floor), "events": events}

    def close_period(self, period: str, from_ms: int, to_ms: int) -> dict[str, Any]:
        """The ``stats`` message body for the period just ended; its counters restart."""
        body = self._body(period, from_ms, to_ms)
        self._c[period] = _Counters(self.book.raised_count)
        return body
