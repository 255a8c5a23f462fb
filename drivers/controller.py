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
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from liftwatch.drivers.modbus_bus import (
    EXCEPTION_NAMES,
    ModbusBus,
    ReadResult,
    acquire_bus,
    release_bus,
)
from liftwatch.drivers.registermap import (
    CTL_FIELDS,
    FIELD_DOMAINS,
    TABLE_NAMES,
    ReadRequest,
    RegisterMap,
)
from liftwatch.drivers.settings import ControllerSettings

log = logging.getLogger(__name__)

_COUNTED = ("requests", "timeouts", "crc_errors", "framing_errors", "exceptions")
#: ReadResult attempt outcomes -> this unit's health counters.
_TALLY_KEYS = {"timeout": "timeouts", "crc": "crc_errors", "framing": "framing_errors",
               "exception": "exceptions"}
#: Bus counters repeated at the top of health (the bus is shared: they are the line's).
BUS_KEYS = ("busy_retries", "mismatched", "late_answers", "duplicates", "echoes",
            "idle_bytes", "drained_bytes", "resyncs", "reconnects", "peer_closed")
#: Valid answers in a row after which a failing block is well again.
BLOCK_OK_COUNT = 3
#: A block's start/stop-failing log lines: at most one per block this often.
LOG_EVERY_S = 60.0


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

    def block_faults(self) -> list[dict[str, Any]]:
        """Register blocks failing while the rest answers (none for a simulated link)."""
        return []


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


def block_name(req: ReadRequest) -> str:
    """``u1/holding/0-5``: unit, table and the 0-based addresses one request reads."""
    return f"u{req.unit}/{TABLE_NAMES[req.function]}/{req.address}-{req.address + req.count - 1}"


@dataclass
class _Block:
    """One request of the read plan: its answers, failures and fault state."""

    req: ReadRequest
    fields: tuple[str, ...]
    answers: int = 0
    timeouts: int = 0
    crc_errors: int = 0
    framing_errors: int = 0
    skipped: int = 0
    exceptions: dict[str, int] = field(default_factory=dict)
    fail_since: float | None = None  # first failure after the last valid answer
    ok_run: int = 0
    failing: bool = False
    error: str = ""
    exception: int = 0
    last_log: float = -math.inf
    logged: bool = False  # this failure's start was logged: so will its end be
    unlogged: int = 0

    @property
    def name(self) -> str:
        return block_name(self.req)

    def view(self, now: float) -> dict[str, Any]:
        """The block as health and the fault event name it."""
        r = self.req
        out: dict[str, Any] = {"block": self.name, "unit": r.unit,
                               "table": TABLE_NAMES[r.function], "address": r.address,
                               "count": r.count, "fields": list(self.fields),
                               "error": self.error}
        if self.error == "exception":
            out["exception"] = self.exception
        if self.fail_since is not None:
            out["since_s"] = round(now - self.fail_since, 1)
        return out

    def counts(self) -> dict[str, Any]:
        return {"answers": self.answers, "timeouts": self.timeouts,
                "exceptions": dict(self.exceptions), "crc_errors": self.crc_errors,
                "framing_errors": self.framing_errors, "skipped": self.skipped,
                "fields": list(self.fields)}


@dataclass
class _Unit:
    """Back-off of one Modbus unit read by this controller (its own or an auxiliary)."""

    streak: int = 0
    retry_at: float = 0.0
    backoff: float = 0.0


class ModbusController(ControllerLink):
    """One lift controller (a Modbus unit) read through its register map.

    Units on the same port (or TCP peer) share one bus with one request in flight.
    Each unit the map reads (the controller's own and any ``unit = N`` of a field) is
    backed off on its own after a poll it did not answer at all: exponentially, from
    ``poll_interval_s`` up to ``backoff_max_s``, probed then with a single attempt, so
    a dead auxiliary unit loses only its own fields and does not hold the bus against
    the live one. A poll that gets data from the controller's own unit is a valid poll
    (an auxiliary unit alone is not); the fields of a block that failed are left out
    (unknown), never kept from an earlier poll.

    A block without a valid answer for ``link_lost_s`` while others answer is
    *failing* (:meth:`block_faults`, health ``blocks_failing``, a log line when it
    starts and when it stops, at most one start per block a minute); it is well again after
    ``BLOCK_OK_COUNT`` valid answers in a row.
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
        self._partial = 0
        self._last_answer: float | None = None
        self._closed = False
        self._units: dict[int, _Unit] = {}
        self._blocks: dict[ReadRequest, _Block] = {}
        for req in regmap.read_plan(self.unit):
            names = tuple(f.name for f in regmap.fields
                          if (f.unit if f.unit is not None else self.unit) == req.unit
                          and f.function == req.function and req.address <= f.address
                          and f.address + f.size <= req.address + req.count)
            self._blocks[req] = _Block(req, names)
            self._units.setdefault(req.unit, _Unit())
        self._own_blocks = any(r.unit == self.unit for r in self._blocks)

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
        now = self._clock()
        if all(now < u.retry_at for u in self._units.values()):
            self._skipped += 1
            self._link.failed()
            self._update_blocks(now)
            return None
        blocks: dict[Any, list[int]] = {}
        silent: set[int] = set()      # units that timed out in this poll
        answered: set[int] = set()
        gone = False
        for req, blk in self._blocks.items():
            unit = self._units[req.unit]
            if gone or req.unit in silent or now < unit.retry_at:
                blk.skipped += 1
                self._block_failed(blk, now, blk.error or "timeout", blk.exception)
                continue
            probe = unit.streak >= 2  # a unit that has been silent: one attempt only
            res = await self._bus.read(req, retries=0 if probe else None)
            now = self._clock()
            self._count(res)
            if res.values is not None:
                blocks[req] = res.values
                answered.add(req.unit)
                self._block_ok(blk, now)
                blk.answers += 1
            elif res.error == "exception":
                answered.add(req.unit)
                code = str(res.exception_code)
                self._exception_codes[code] = self._exception_codes.get(code, 0) + 1
                blk.exceptions[code] = blk.exceptions.get(code, 0) + 1
                self._block_failed(blk, now, "exception", res.exception_code)
            else:
                if res.error == "timeout":
                    blk.timeouts += 1
                    # back off from a silent device only: a noisy line or a port that
                    # vanished (the bus paces its reconnects itself) is no reason to wait
                    if self._bus.connected:
                        silent.add(req.unit)
                elif res.error == "crc":
                    blk.crc_errors += 1
                elif res.error == "framing":
                    blk.framing_errors += 1
                else:  # disconnected, aborted: nothing else will get through now
                    gone = True
                self._block_failed(blk, now, res.error, 0)
        for u in answered:
            self._units[u] = _Unit()
        for u in silent - answered:
            self._back_off(self._units[u], now)
        self._update_blocks(now)
        # the controller's own unit must give data: an auxiliary unit alone is no link
        if not blocks or (self._own_blocks and not any(r.unit == self.unit for r in blocks)):
            self._link.failed()
            return None
        self._last_answer = now
        values, errors = self.regmap.decode_with_errors(blocks, unit=self.unit,
                                                       landings=self.landings)
        failed_fields = {n for b in self._blocks.values() if b.req not in blocks
                         for n in b.fields}
        errors = [e for e in errors if e.split(":", 1)[0] not in failed_fields]
        if errors:
            self._decode_errors += len(errors)
            self._last_decode_error = errors[-1]
        if not values:
            self._link.failed()
            return None
        if len(blocks) < len(self._blocks):
            self._partial += 1
        self._link.ok()
        return values

    def _count(self, res: ReadResult) -> None:
        for outcome, n in res.tally.items():
            key = _TALLY_KEYS.get(outcome)
            if key:
                self._counts[key] += n
            self._counts["requests"] += n

    def _back_off(self, unit: _Unit, now: float) -> None:
        unit.streak += 1
        if unit.streak < 2:  # one miss: retry at the normal cadence
            return
        s = self.settings
        unit.backoff = min(s.poll_interval_s * 2 ** (unit.streak - 2), s.backoff_max_s)
        unit.retry_at = now + unit.backoff

    # ------------------------------------------------------------------ blocks
    def _block_ok(self, blk: _Block, now: float) -> None:
        blk.ok_run += 1
        if not blk.failing:
            blk.fail_since = None
            blk.error, blk.exception = "", 0
        elif blk.ok_run >= BLOCK_OK_COUNT:
            blk.failing = False
            self._log_block(blk, now, f"controller block {blk.name} answers again after "
                            f"{now - (blk.fail_since or now):.1f} s", start=False)
            blk.fail_since = None
            blk.error, blk.exception = "", 0

    def _block_failed(self, blk: _Block, now: float, error: str, exception: int) -> None:
        blk.ok_run = 0
        if blk.fail_since is None:
            blk.fail_since = now
        blk.error, blk.exception = error, exception

    def _update_blocks(self, now: float) -> None:
        """Start failing blocks whose failure has lasted link_lost_s while others answer."""
        if not self._others_answer(now):
            return
        for blk in self._blocks.values():
            if (not blk.failing and blk.fail_since is not None
                    and now - blk.fail_since >= self._link.link_lost_s):
                blk.failing = True
                self._log_block(blk, now, f"controller block {blk.name} ({', '.join(blk.fields)}) "
                                f"failing for {now - blk.fail_since:.1f} s: "
                                f"{describe_failure(blk.error, blk.exception)}")

    def _others_answer(self, now: float) -> bool:
        return (self._last_answer is not None
                and now - self._last_answer < self._link.link_lost_s)

    def _log_block(self, blk: _Block, now: float, text: str, start: bool = True) -> None:
        """A block's failure starts (WARNING) and ends (INFO) in the log, at most one
        start per block per LOG_EVERY_S (a flapping block): the end of a failure whose
        start was not logged is not logged either, only counted in the next line."""
        if start:
            blk.logged = now - blk.last_log >= LOG_EVERY_S
        if not blk.logged:
            blk.unlogged += 1
            return
        if start:
            if blk.unlogged:
                text += f" ({blk.unlogged} start/stop line(s) left out since the last)"
            blk.last_log, blk.unlogged = now, 0
            log.warning("%s", text)
        else:
            log.info("%s", text)

    def block_faults(self) -> list[dict[str, Any]]:
        """Blocks failing while the controller otherwise answers (the fault event's
        detail); [] while the whole link is down (that is ``controller_link_lost``)."""
        now = self._clock()
        self._update_blocks(now)
        if not self._others_answer(now):
            return []
        return [b.view(now) for b in self._blocks.values() if b.failing]

    def block_stats(self) -> dict[str, dict[str, Any]]:
        """Every block's counts since the start, by block name (commissioning check)."""
        return {b.name: {**b.counts(), **b.view(self._clock())}
                for b in self._blocks.values()}

    def health(self) -> dict[str, Any]:
        """Link state, this controller's counts, its blocks and units, the bus's counts."""
        s = self.settings
        now = self._clock()
        out = self._link.state()
        bus = self._bus.stats() if self._bus else {}
        out.update({
            "transport": s.transport,
            "endpoint": f"{s.host}:{s.tcp_port}" if s.transport == "tcp" else s.port,
            "unit": self.unit,
            "polls_skipped": self._skipped,
            "polls_partial": self._partial,
            **self._counts,
            "exception_codes": dict(self._exception_codes),
            "decode_errors": self._decode_errors,
            "last_decode_error": self._last_decode_error,
            "backoff_s": round(max(0.0, self._units.get(self.unit, _Unit()).retry_at - now), 3),
            "connected": bool(self._bus and self._bus.connected),
            "timeout_s": round(max((self._bus.timeout_for(r) for r in self._blocks),
                                   default=s.timeout_s), 3) if self._bus else s.timeout_s,
            "blocks_failing": self.block_faults(),
            "blocks": {b.name: b.counts() for b in self._blocks.values()},
            "units": {str(u): {"backoff_s": round(max(0.0, st.retry_at - now), 3),
                               "silent_polls": st.streak}
                      for u, st in self._units.items() if st.streak},
            "bus": bus or None,
        })
        for key in BUS_KEYS:
            out[key] = bus.get(key, 0)
        return out

    async def close(self) -> None:
        """Release this unit's share of the bus."""
        if self._closed:
            return
        self._closed = True
        if self._bus is not None:
            await release_bus(self._bus)


def describe_failure(error: str, exception: int = 0) -> str:
    """``exception 02 (illegal data address)``, ``timeout``, ... for messages."""
    if error == "exception":
        return f"exception {exception:02d} ({EXCEPTION_NAMES.get(exception, 'unknown')})"
    return {"timeout": "no answer (timeout)", "crc": "answers with a bad CRC",
            "framing": "truncated or ambiguous answers", "aborted": "connection lost",
            "disconnected": "port not open"}.get(error, error or "unknown")


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
