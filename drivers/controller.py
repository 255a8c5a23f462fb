"""The lift-controller link: one interface, a Modbus backend and a simulated one.

python-can's model: the agent codes against :class:`ControllerLink`; the terminal
uses :class:`ModbusController` (RTU on RS-485 or TCP, pymodbus async client through a
shared :mod:`~liftwatch.drivers.modbus_bus`), tests of other modules and the demo use
:class:`SimulatedController`, whose values another party sets.

``poll()`` returns the normalised ``ctl`` fields of trace-format.md, or ``None`` for
a failed poll (a ``{"ctl": null}`` trace line): the decision that the link is lost
belongs to ``signal/``, which sees those ``None``. ``health()`` says the same thing for
the health message: ``state`` becomes ``"lost"`` after ``link_lost_s`` without a
successful poll.
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from liftwatch.drivers.modbus_bus import ModbusBus, acquire_bus, release_bus
from liftwatch.drivers.registermap import CTL_FIELDS, FIELD_DOMAINS, RegisterMap
from liftwatch.drivers.settings import ControllerSettings

_COUNTED = ("requests", "timeouts", "crc_errors", "framing_errors", "exceptions")
#: ReadResult attempt outcomes -> this unit's health counters.
_TALLY_KEYS = {"timeout": "timeouts", "crc": "crc_errors", "framing": "framing_errors",
               "exception": "exceptions"}


class ControllerLink(abc.ABC):
    """What the agent needs from a controller link."""

    @abc.abstractmethod
    async def poll(self) -> dict[str, Any] | None:
        """One poll: normalised ``ctl`` fields, or ``None`` when it failed."""

    @abc.abstractmethod
    def health(self) -> dict[str, Any]:
        """``state`` ("ok" or "lost") and counters, JSON-able, for the health message."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the port or connection."""


class _LinkClock:
    """Successful-poll bookkeeping shared by both backends (same health semantics)."""

    def __init__(self, link_lost_s: float, clock: Callable[[], float]) -> None:
        if not (link_lost_s > 0 and math.isfinite(link_lost_s)):
            raise ValueError(f"link_lost_s must be a positive number, found {link_lost_s!r}")
        self.link_lost_s = link_lost_s
        self.clock = clock
        self.started = clock()
        self.last_ok: float | None = None
        self.last_ok_wall: float | None = None
        self.polls = self.polls_ok = self.polls_failed = 0

    def ok(self) -> None:
        self.polls += 1
        self.polls_ok += 1
        self.last_ok = self.clock()
        self.last_ok_wall = time.time()

    def failed(self) -> None:
        self.polls += 1
        self.polls_failed += 1

    def state(self) -> dict[str, Any]:
        now = self.clock()
        since = self.last_ok if self.last_ok is not None else self.started
        return {
            "state": "lost" if now - since >= self.link_lost_s else "ok",
            "polls": self.polls, "polls_ok": self.polls_ok, "polls_failed": self.polls_failed,
            "last_ok": self.last_ok_wall,
            "last_ok_age_s": None if self.last_ok is None else round(now - self.last_ok, 3),
        }


class ModbusController(ControllerLink):
    """One lift controller (a Modbus unit) read through its register map.

    Units on the same port (or TCP peer) share one bus with one request in flight.
    After a poll without any answer the unit backs off exponentially, from
    ``poll_interval_s`` up to ``backoff_max_s``, returning ``None`` at once meanwhile,
    so that a dead unit does not hold the bus against a live neighbour; it is polled
    normally again from its first answer.
    """

    def __init__(self, settings: ControllerSettings, regmap: RegisterMap,
                 landings: Sequence[str], *, link_lost_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if settings.transport == "tcp" and not settings.host:
            raise ValueError("controller.host: expected the controller's address for "
                             "transport = \"tcp\", found an empty string")
        self.settings = settings
        self.regmap = regmap
        self.landings = list(landings)
        self.unit = settings.unit_id
        self._link = _LinkClock(link_lost_s, clock)
        self._clock = clock
        self._bus: ModbusBus | None = None
        self._counts = dict.fromkeys(_COUNTED, 0)
        self._exception_codes: dict[str, int] = {}
        self._decode_errors = 0
        self._last_decode_error: str | None = None
        self._skipped = 0
        self._streak = 0
        self._retry_at = 0.0
        self._backoff = 0.0
        self._closed = False

    @property
    def bus(self) -> ModbusBus | None:
        """The shared bus, once the first poll has opened it."""
        return self._bus

    async def poll(self) -> dict[str, Any] | None:
        """Read the map's requests and decode them; ``None`` when the unit gave no usable data."""
        if self._closed:
            return None
        if self._bus is None:
            self._bus = acquire_bus(self.settings)
        if self._clock() < self._retry_at:
            self._skipped += 1
            self._link.failed()
            return None
        blocks: dict[Any, list[int]] = {}
        answered = False
        gone = None
        for req in self.regmap.read_plan(self.unit):
            res = await self._bus.read(req)
            for outcome, n in res.tally.items():
                key = _TALLY_KEYS.get(outcome)
                if key:
                    self._counts[key] += n
                self._counts["requests"] += n
            if res.values is not None:
                blocks[req] = res.values
                answered = True
            elif res.error == "exception":
                answered = True
                code = str(res.exception_code)
                self._exception_codes[code] = self._exception_codes.get(code, 0) + 1
            else:
                gone = res.error
                break
        if gone is not None or not blocks:
            self._link.failed()
            # back off from a silent device only: a noisy line or a port that vanished
            # (the bus paces its reconnects itself) is no reason to wait longer
            if not answered and gone == "timeout" and self._bus.connected:
                self._back_off()
            return None
        values, errors = self.regmap.decode_with_errors(blocks, unit=self.unit,
                                                       landings=self.landings)
        if errors:
            self._decode_errors += len(errors)
            self._last_decode_error = errors[-1]
        if not values:
            self._link.failed()
            return None
        self._streak = 0
        self._backoff = 0.0
        self._retry_at = 0.0
        self._link.ok()
        return values

    def _back_off(self) -> None:
        self._streak += 1
        if self._streak < 2:  # one miss: retry at the normal cadence
            return
        s = self.settings
        self._backoff = min(s.poll_interval_s * 2 ** (self._streak - 2), s.backoff_max_s)
        self._retry_at = self._clock() + self._backoff

    def health(self) -> dict[str, Any]:
        """Link state, this unit's counts and the shared bus's counts."""
        s = self.settings
        out = self._link.state()
        out.update({
            "transport": s.transport,
            "endpoint": f"{s.host}:{s.tcp_port}" if s.transport == "tcp" else s.port,
            "unit": self.unit,
            "polls_skipped": self._skipped,
            **self._counts,
            "exception_codes": dict(self._exception_codes),
            "decode_errors": self._decode_errors,
            "last_decode_error": self._last_decode_error,
            "backoff_s": round(max(0.0, self._retry_at - self._clock()), 3),
            "connected": bool(self._bus and self._bus.connected),
            "reconnects": self._bus.counters.reconnects if self._bus else 0,
            "bus": self._bus.stats() if self._bus else None,
        })
        return out

    async def close(self) -> None:
        """Release this unit's share of the bus."""
        if self._closed:
            return
        self._closed = True
        if self._bus is not None:
            await release_bus(self._bus)


class SimulatedController(ControllerLink):
    """A controller whose values another party sets (tests, demo, HIL rig in-process).

    ``set(...)`` validates like a decoded map would, so a test that feeds nonsense finds
    out at once; ``answering = False`` makes polls fail as an unplugged link does.
    """

    def __init__(self, values: Mapping[str, Any] | None = None, *, link_lost_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._link = _LinkClock(link_lost_s, clock)
        self._values: dict[str, Any] = {}
        self.answering = True
        if values:
            self.set(**values)

    def set(self, **fields: Any) -> None:
        """Change some fields; raises ValueError naming a bad field or value."""
        for name, v in fields.items():
            _check_field(name, v)
        self._values.update(fields)

    @property
    def values(self) -> dict[str, Any]:
        """The current values, in trace-format.md order."""
        return {k: self._values[k] for k in CTL_FIELDS if k in self._values}

    async def poll(self) -> dict[str, Any] | None:
        """The current values, or ``None`` while not answering or before any value is set."""
        if not self.answering or not self._values:
            self._link.failed()
            return None
        self._link.ok()
        return self.values

    def health(self) -> dict[str, Any]:
        """Same ``state`` semantics as :class:`ModbusController`."""
        out = self._link.state()
        out.update({"transport": "simulated", "connected": self.answering})
        return out

    async def close(self) -> None:
        """Nothing to release."""
        self.answering = False


def _check_field(name: str, v: Any) -> None:
    if name not in CTL_FIELDS:
        raise ValueError(f"{name}: not a controller field; expected one of {CTL_FIELDS}")
    if name == "floor":
        if not isinstance(v, str) or not v:
            raise ValueError(f"floor: expected a landing label (string), found {v!r}")
    elif name == "speed":
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
                or v < 0:
            raise ValueError(f"speed: expected a magnitude >= 0 in m/s, found {v!r}")
    elif name == "fault":
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"fault: expected a code >= 0, found {v!r}")
    elif isinstance(v, bool) or not isinstance(v, int) or v not in FIELD_DOMAINS[name]:
        d = FIELD_DOMAINS[name]
        raise ValueError(f"{name}: expected an integer {d.start}..{d.stop - 1}, found {v!r}")
