"""Door cycles: from the door leaving closed to closed again, with open/close timing.

What each source can measure (documented because a contact alone cannot time a door):

- **Controller door state** (1 closing, 2 closed, 3 opening, 4 open, 5 locked, 6 held
  not fully closed): ``open_s`` = door starting to open (state 3, or the contact
  opening if that came first) until fully open (state 4); ``close_s`` = the last
  closing start (state 1) until closed (state 2/5, or the contact making if that
  came first). A reopen is a return to 3/4 from a closing attempt (1 or 6) without
  having closed.
- **Door contact only** (``door_closed``): the contact sees only closed / not closed,
  so neither the opening nor the closing *motion* can be timed: ``open_s`` and
  ``close_s`` are ``null``. The record carries ``dwell_s`` instead (contact open to
  contact made, the whole cycle). The cycle is over when the door-lock circuit makes
  after the contact (or, without a lock input, when the contact stays made for
  ``reopen_gap_s``); the contact opening again before that is a reopen (an obstructed
  door that touched closed and went back).

A contact opening shorter than ``contact_debounce_s`` with no controller door
movement is chatter, not a cycle. Every record also has ``t_start``, ``t_closed``,
``dwell_s`` and ``src`` (``ctl``, ``contact`` or ``both``); ``t`` is the time at which
the cycle was known to be over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from liftwatch.signal.state import DOOR_CLOSED_STATES

#: Contact-only terminals without a lock input: the contact made this long ends a cycle.
REOPEN_GAP_S = 1.0


@dataclass
class DoorCycle:
    """One door cycle at one stop, as far as it went."""

    t_start: float
    floor: str | None
    t_opening: float | None = None       # controller: state 3 first seen
    t_open: float | None = None          # controller: state 4 first seen
    t_first_closing: float | None = None
    t_last_closing: float | None = None
    closing: bool = False                # a closing attempt is in progress
    reopens: int = 0
    t_contact_made: float | None = None  # contact made, cycle not yet confirmed over
    used_ctl: bool = False
    used_contact: bool = False


class DoorTracker:
    """Follows the door through the controller state and/or the contact; emits records."""

    def __init__(self, reopen_gap_s: float = REOPEN_GAP_S, min_open_s: float = 0.1) -> None:
        self.reopen_gap_s = reopen_gap_s
        #: a contact opening shorter than this (contact_debounce_s) is chatter
        self.min_open_s = min_open_s
        self.cycle: DoorCycle | None = None
        self._ctl: int | None = None
        self._contact: bool | None = None     # True = closed
        self._lock: bool | None = None        # True = made
        #: time of the last reopen (rules read it to raise door_reopen_repeated)
        self.last_reopen_t: float | None = None
        #: since when the controller has been showing "opening" (3) without "open" (4)
        self.opening_since: float | None = None
        self.cycles_done = 0

    def deadline(self) -> float | None:
        """When a contact-only cycle will be confirmed over (advance() must look then)."""
        c = self.cycle
        if c is not None and c.t_contact_made is not None and self._ctl is None \
                and self._lock is None:
            return c.t_contact_made + self.reopen_gap_s
        return None

    def _start(self, t: float, floor: str | None) -> DoorCycle:
        if self.cycle is None:
            self.cycle = DoorCycle(t_start=t, floor=floor)
        return self.cycle

    def _reopen(self, t: float, c: DoorCycle) -> None:
        c.reopens += 1
        c.closing = False
        c.t_contact_made = None
        self.last_reopen_t = t

    def update(self, t: float, *, contact_closed: bool | None, lock_made: bool | None,
               ctl_door: int | None, floor: str | None, moving: bool) -> list[dict[str, Any]]:
        """Take the current door inputs; return the door records of cycles that ended."""
        out: list[dict[str, Any]] = []
        use_ctl = ctl_door is not None
        if self.cycle is not None and floor is not None and not moving:
            # A sensors-only terminal names the arrival floor only once its motion
            # tracker has booked the stop, after the door began to open: the floor known
            # while the car stands is the stop's, not the one the car left.
            self.cycle.floor = floor
        # --- controller door state
        if use_ctl and ctl_door != self._ctl:
            d = ctl_door
            self.opening_since = t if d == 3 else None
            if d not in DOOR_CLOSED_STATES:
                c = self._start(t, floor)
                c.used_ctl = True
                if d in (3, 4):
                    if c.closing:
                        self._reopen(t, c)
                    if d == 3 and c.t_opening is None and c.t_open is None:
                        c.t_opening = t
                    if d == 4 and c.t_open is None:
                        c.t_open = t
                elif d in (1, 6):
                    if not c.closing:
                        c.t_last_closing = t
                    if c.t_first_closing is None:
                        c.t_first_closing = t
                    c.closing = True
            elif self.cycle is not None:
                c = self.cycle
                t_closed = t
                if c.t_contact_made is not None and c.t_contact_made <= t:
                    t_closed = c.t_contact_made
                out.append(self._end(t, t_closed))
        self._ctl = ctl_door
        if not use_ctl:
            self.opening_since = None
        # --- door contact
        if contact_closed is not None and contact_closed != self._contact:
            if contact_closed is False:
                c = self.cycle
                if c is None:
                    c = self._start(t, floor)
                elif c.t_contact_made is not None and not use_ctl:
                    self._reopen(t, c)
                if c.t_start > t:
                    c.t_start = t
                c.used_contact = True
                c.t_contact_made = None
            elif self.cycle is not None:
                c = self.cycle
                if (not c.used_ctl and c.reopens == 0
                        and t - c.t_start < self.min_open_s):
                    self.cycle = None          # contact chatter, not a door cycle
                else:
                    c.t_contact_made = t
        self._contact = contact_closed
        # --- lock circuit (contact-only end of cycle)
        if lock_made is not None:
            c = self.cycle
            if (lock_made and not use_ctl and c is not None and c.t_contact_made is not None):
                out.append(self._end(t, c.t_contact_made))
            self._lock = lock_made
        # --- the car leaving, or (contact only, no lock input) the gap, ends the cycle
        c = self.cycle
        if c is not None and c.t_contact_made is not None and (
                moving or (not use_ctl and lock_made is None
                           and t >= c.t_contact_made + self.reopen_gap_s)):
            out.append(self._end(t, c.t_contact_made))
        return out

    def _end(self, t: float, t_closed: float) -> dict[str, Any]:
        c = self.cycle
        assert c is not None
        self.cycle = None
        self.cycles_done += 1
        open_s = close_s = None
        if c.used_ctl:
            if c.t_open is not None:
                start = c.t_start if c.t_opening is not None or c.used_contact else None
                if start is not None and c.t_open >= start:
                    open_s = round(c.t_open - start, 3)
            if c.t_last_closing is not None and t_closed >= c.t_last_closing:
                close_s = round(t_closed - c.t_last_closing, 3)
        return {"t": round(t, 3), "type": "door", "floor": c.floor, "open_s": open_s,
                "close_s": close_s, "reopens": c.reopens, "t_start": round(c.t_start, 3),
                "t_closed": round(t_closed, 3), "dwell_s": round(t_closed - c.t_start, 3),
                "src": "both" if c.used_ctl and c.used_contact else
                ("ctl" if c.used_ctl else "contact")}

    def finish(self, t: float) -> list[dict[str, Any]]:
        """End of input: the cycle in progress is reported; if its door had not closed,
        with ``complete: false``, no ``close_s`` and ``dwell_s`` up to ``t``."""
        c = self.cycle
        if c is None:
            return []
        if c.t_contact_made is not None:
            return [self._end(t, c.t_contact_made)]
        rec = self._end(t, t)
        rec.update(complete=False, close_s=None, t_closed=None)
        return [rec]
