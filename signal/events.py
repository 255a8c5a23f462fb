"""The event catalogue of events.md and the book that keeps one open event per code.

Every detector raises and clears through one :class:`EventBook`, so the rules that
apply to all of them live in one place: one open event per code, an id shared by
the raised and cleared records, the duration on clear, the daily cap per code
(further raises only counted), and mode suppression of fault rules.

The daily cap exists to keep a chattering fault from flooding the platform; it never
applies to alarm-severity codes. EN 81-28 expects every alarm to reach the rescue
service, and a cap would let 20 prank presses in the morning silence a passenger
trapped in the afternoon: prank presses are reported as a pattern
(``alarm_button_abuse``), never filtered out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ALARM, FAULT, WARNING, INFO = "alarm", "fault", "warning", "info"


@dataclass(frozen=True)
class Code:
    """One row of the catalogue: severity and whether service modes suppress it."""

    name: str
    severity: str
    suppressible: bool


def _c(name: str, severity: str, suppressible: bool = True) -> tuple[str, Code]:
    return name, Code(name, severity, suppressible)


CATALOGUE: dict[str, Code] = dict([
    _c("entrapment_level", ALARM, False),
    _c("entrapment_nonlevel", ALARM, False),
    _c("alarm_button", ALARM, False),
    _c("stopped_outside_zone", FAULT),
    _c("overtravel_top", FAULT),
    _c("overtravel_bottom", FAULT),
    _c("overspeed", FAULT),
    _c("door_open_while_moving", FAULT),
    _c("moving_with_door_open", FAULT),
    _c("power_loss", FAULT),
    _c("safety_circuit_open", FAULT),
    _c("door_open_fault", FAULT),
    _c("door_close_fault", FAULT),
    _c("door_lock_circuit_open", FAULT),
    _c("motor_runtime_exceeded", FAULT),
    _c("floor_position_lost", FAULT),
    _c("door_reopen_repeated", FAULT),
    _c("battery_low", FAULT),
    _c("vibration_abnormal", WARNING),
    _c("controller_link_lost", FAULT, False),
    _c("sensor_fault", FAULT, False),
    _c("controller_block_failed", FAULT, False),
    _c("sensor_disagreement", WARNING),
    _c("door_slow", WARNING),
    _c("leveling_drift", WARNING),
    _c("alarm_button_abuse", WARNING),
    _c("door_open_trend", WARNING, False),
    _c("door_close_trend", WARNING, False),
    _c("reopen_trend", WARNING, False),
    _c("vibration_trend", WARNING, False),
    _c("acceleration_trend", WARNING, False),
    _c("leveling_trend", WARNING, False),
    _c("run_time_trend", WARNING, False),
    _c("mode_change", INFO, False),
    _c("self_test", INFO, False),
    _c("detection_changed", WARNING, False),
])

#: Codes reported once, with no cleared record.
SINGLE_SHOT = frozenset({"mode_change", "self_test"})

#: Service modes (trace-format.md) during which fault rules are suppressed: inspection,
#: fire return, firefighter, emergency power. Maintenance is reported by controllers as
#: inspection or out of service; "out of service" (0) is not a suppressing mode: a lift
#: taken out of service with a person inside must still be seen.
SUPPRESSING_MODES = frozenset({2, 3, 4, 5})

DAY_S = 86400.0


@dataclass
class OpenEvent:
    id: str
    code: str
    t_raised: float
    floor: str | None


class EventBook:
    """Raise and clear events; returns the replay/uplink records to emit.

    ``t`` is the monotonic (or trace) time of the decision. The daily cap counts raises
    per code in a sliding 24-hour window on that clock, so a wall-clock step cannot
    reset it.
    """

    def __init__(self, max_per_day: int = 20, id_prefix: str = "") -> None:
        self.max_per_day = max_per_day
        self.id_prefix = id_prefix
        self.open: dict[str, OpenEvent] = {}
        self._seq = 0
        self._raises: dict[str, list[float]] = {}
        #: raises not reported because of the daily cap, by code (for the stats message)
        self.capped: dict[str, int] = {}
        #: every raise, reported or capped, by code (for the stats message)
        self.raised_count: dict[str, int] = {}
        #: capped conditions still open: cleared silently
        self._capped_open: set[str] = set()
        #: where the car stands when it is between two landings (set by the pipeline): a
        #: raise then says so, not only the last landing passed
        self.between: Callable[[], list[str] | None] | None = None

    def is_open(self, code: str) -> bool:
        return code in self.open or code in self._capped_open

    def raise_(self, t: float, code: str, floor: str | None = None,
               detail: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Raise ``code`` unless it is already open; [] when open or capped."""
        if code not in CATALOGUE:
            raise KeyError(f"unknown event code {code!r}")
        if self.is_open(code):
            return []
        self.raised_count[code] = self.raised_count.get(code, 0) + 1
        if CATALOGUE[code].severity == ALARM:
            return self._record(t, code, floor, detail)   # never capped: see module doc
        window = [x for x in self._raises.get(code, []) if t - x < DAY_S]
        if len(window) >= self.max_per_day:
            self._raises[code] = window
            self.capped[code] = self.capped.get(code, 0) + 1
            if code not in SINGLE_SHOT:
                self._capped_open.add(code)
            return []
        window.append(t)
        self._raises[code] = window
        return self._record(t, code, floor, detail)

    def _record(self, t: float, code: str, floor: str | None,
                detail: dict[str, Any] | None) -> list[dict[str, Any]]:
        """Open ``code`` (unless single-shot) and give its raised record."""
        self._seq += 1
        eid = f"{self.id_prefix}{self._seq}"
        if code not in SINGLE_SHOT:
            self.open[code] = OpenEvent(eid, code, t, floor)
        rec: dict[str, Any] = {"t": round(t, 3), "type": "event", "code": code,
                               "state": "raised", "id": eid, "floor": floor,
                               "sev": CATALOGUE[code].severity}
        between = self.between() if self.between is not None else None
        if between:
            rec["between"] = between
        if detail:
            rec["detail"] = detail
        return [rec]

    def clear(self, t: float, code: str, floor: str | None = None,
              detail: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Clear ``code`` if open; the record carries the raise's id and the duration."""
        self._capped_open.discard(code)
        ev = self.open.pop(code, None)
        if ev is None:
            return []
        rec: dict[str, Any] = {"t": round(t, 3), "type": "event", "code": code,
                               "state": "cleared", "id": ev.id,
                               "floor": floor if floor is not None else ev.floor,
                               "sev": CATALOGUE[code].severity,
                               "duration_s": round(t - ev.t_raised, 3)}
        if detail:
            rec["detail"] = detail
        return [rec]

    def set(self, t: float, code: str, active: bool, floor: str | None = None,
            detail: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Raise when ``active`` and not open, clear when not ``active`` and open."""
        if active:
            return self.raise_(t, code, floor, detail)
        return self.clear(t, code, floor, detail)

    def state(self) -> dict[str, Any]:
        """JSON-able state, so open events and the sequence survive a restart."""
        return {"seq": self._seq,
                "open": {c: [e.id, e.t_raised, e.floor] for c, e in self.open.items()}}
