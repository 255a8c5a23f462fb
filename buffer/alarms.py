"""The alarm ledger: alarms not yet acknowledged by the platform, across restarts.

EN 81-28 (events.md): an alarm-severity event is repeated every ``alarm_repeat_s``
until the platform's emergency centre sends ``ack`` for its ``eid`` — across
reconnects and restarts. The outbox only knows about PUBACK (the broker has it);
this ledger remembers which alarms still wait for the application-level ack, when
each was last sent and how often, so the agent can re-send them on time.

State lives in memory and is written whole, on every change, to one small TinyDB
file (table ``alarms``) through :class:`~liftwatch.buffer.atomic.AtomicJSONStorage`:
a power cut leaves the file before or after the change, never broken. The in-memory
state is the truth: a failed write (disk full, I/O error) raises
:class:`AlarmLedgerWriteError` but the alarm keeps being repeated, the ledger is marked
unsaved, and the next successful write (a change, or :meth:`AlarmLedger.sync`, which
the agent calls while the disk is failing) stores everything. The ledger does not log
the failure itself: the agent reports a failing disk as one fault. An
unreadable file is quarantined (moved to ``quarantine/`` beside it) and the
ledger starts empty — the alarms' messages are still in the outbox.

Times are wall-clock seconds (they must survive a restart). When the clock steps
back before an alarm's last send, that alarm counts as due: better one repeat too
early than an alarm left silent until the clock catches up.
"""

from __future__ import annotations

import base64
import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path

from liftwatch.buffer.atomic import AtomicJSONStorage, CorruptFileError, quarantine_file
from tinydb import TinyDB

log = logging.getLogger(__name__)

TABLE = "alarms"


class AlarmLedgerError(ValueError):
    """A bad argument to the ledger."""


class AlarmLedgerWriteError(OSError):
    """The ledger could not be saved; it is kept in memory and saved with the next change."""


@dataclass(frozen=True, slots=True)
class AlarmEntry:
    """One unacknowledged alarm. ``repeat`` is the value for the next send's ``repeat``
    field (0 before the first send); ``last_sent`` is None until sent once."""

    eid: str
    topic: str
    payload: bytes
    t_wall: float
    repeat: int
    last_sent: float | None


def _finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AlarmLedgerError(f"{name} must be a finite number of seconds, got {value!r}")
    return float(value)


class AlarmLedger:
    """Unacknowledged alarms, persisted in ``path`` (a file; its directory is created)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._entries: dict[str, AlarmEntry] = {}
        self.quarantined: str | None = None
        #: the file lags behind memory (a write failed); :meth:`sync` catches up
        self.unsaved = False
        db = TinyDB(self.path, storage=AtomicJSONStorage)
        self._storage: AtomicJSONStorage = db.storage  # type: ignore[assignment]
        try:
            for doc in db.table(TABLE).all():
                e = AlarmEntry(str(doc["eid"]), str(doc["topic"]),
                               base64.b64decode(doc["payload"], validate=True),
                               float(doc["t_wall"]), int(doc["repeat"]),
                               None if doc["last_sent"] is None else float(doc["last_sent"]))
                self._entries[e.eid] = e
        except (CorruptFileError, KeyError, TypeError, ValueError, AttributeError) as exc:
            self._storage.close()
            self._entries.clear()
            dest = quarantine_file(self.path, self.path.parent / "quarantine")
            self.quarantined = dest.name
            log.error("alarm ledger %s unreadable (%s): quarantined as %s; starting empty",
                      self.path, exc, dest.name)

    def _save(self) -> None:
        data = {TABLE: {str(i): {"eid": e.eid, "topic": e.topic,
                                 "payload": base64.b64encode(e.payload).decode(),
                                 "t_wall": e.t_wall, "repeat": e.repeat,
                                 "last_sent": e.last_sent}
                        for i, e in enumerate(self._entries.values(), start=1)}}
        try:
            self._storage.write(data)
        except OSError as exc:
            self.unsaved = True
            raise AlarmLedgerWriteError(exc.errno, f"alarm ledger not saved: {exc.strerror}",
                                        str(self.path)) from exc
        self.unsaved = False

    def sync(self) -> bool:
        """Write the ledger if a failed write left the file behind memory. True when
        the file is up to date; raises :class:`AlarmLedgerWriteError` when it still fails."""
        with self._lock:
            if self.unsaved:
                self._save()
            return True

    def add(self, eid: str, topic: str, payload: bytes, t_wall: float) -> None:
        """Remember an alarm until it is acknowledged. Adding a known ``eid`` again
        replaces its message (e.g. a newer rendering) and keeps its send count."""
        if not isinstance(eid, str) or not eid:
            raise AlarmLedgerError(f"eid must be a non-empty string, got {eid!r}")
        if not isinstance(topic, str) or not topic:
            raise AlarmLedgerError(f"topic must be a non-empty string, got {topic!r}")
        if not isinstance(payload, bytes | bytearray):
            raise AlarmLedgerError(f"payload must be bytes, got {type(payload).__name__}")
        t = _finite("t_wall", t_wall)
        with self._lock:
            old = self._entries.get(eid)
            self._entries[eid] = AlarmEntry(eid, topic, bytes(payload),
                                            old.t_wall if old else t,
                                            old.repeat if old else 0,
                                            old.last_sent if old else None)
            self._save()

    def ack(self, eid: str) -> bool:
        """The platform took the alarm: stop repeating it. False if it was not pending."""
        with self._lock:
            if not isinstance(eid, str) or eid not in self._entries:
                return False
            del self._entries[eid]
            self._save()
            return True

    @property
    def pending(self) -> int:
        """Alarms not yet acknowledged (no lock: a cheap check before :meth:`due`)."""
        return len(self._entries)

    def due(self, now_wall: float, repeat_s: float) -> list[AlarmEntry]:
        """Alarms to send now, oldest first: never sent, or last sent ``repeat_s`` ago."""
        now = _finite("now_wall", now_wall)
        every = _finite("repeat_s", repeat_s)
        if every <= 0:
            raise AlarmLedgerError(f"repeat_s must be > 0, got {repeat_s!r}")
        with self._lock:
            out = [e for e in self._entries.values()
                   if e.last_sent is None or now - e.last_sent >= every or now < e.last_sent]
        return sorted(out, key=lambda e: e.t_wall)

    def mark_sent(self, eid: str, now_wall: float) -> bool:
        """Record a send (the next one carries ``repeat`` + 1). False if not pending."""
        now = _finite("now_wall", now_wall)
        with self._lock:
            e = self._entries.get(eid) if isinstance(eid, str) else None
            if e is None:
                return False
            self._entries[eid] = AlarmEntry(e.eid, e.topic, e.payload, e.t_wall,
                                            e.repeat + 1, now)
            self._save()
            return True

    def get(self, eid: str) -> AlarmEntry | None:
        with self._lock:
            return self._entries.get(eid)

    def entries(self) -> list[AlarmEntry]:
        """All unacknowledged alarms, oldest first."""
        with self._lock:
            return sorted(self._entries.values(), key=lambda e: e.t_wall)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def close(self) -> None:
        self._storage.close()
