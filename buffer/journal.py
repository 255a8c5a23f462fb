"""The event journal: the last N events, kept on the terminal for technicians.

TinyDB rewrites its whole file on every insert, so one 10,000-event file would
cost a 3 MB rewrite per event and get slower as it fills. The journal is instead a
series of small TinyDB files, **generations** of ``generation_size`` events
(``gen-00000001.json``, ...): inserts go to the newest one, a full one is left as
it is and a new one started, and the oldest generation is deleted once the ones
after it hold ``max_events``. An insert therefore rewrites at most one small file,
whatever the journal holds. Every file is written through
:class:`~liftwatch.buffer.atomic.AtomicJSONStorage` (temp file, fsync, rename), so a
power cut leaves each generation either before or after the insert; a file that
does not parse any more is moved to ``quarantine/`` and the rest is still read.

Events are stored as given (JSON objects) plus ``ts``, UTC milliseconds of the
insert when the record has none; ``query(since=...)`` compares against it.

A failed write (disk full, I/O error, read-only file system) raises
:class:`JournalWriteError` (an ``OSError``), but the event is not lost: it waits in
memory, is answered by ``query`` like the stored ones, and is written, in order,
before the next event or by :meth:`EventJournal.sync`. At most ``max_pending`` events
wait; beyond that the oldest waiting one is dropped (the journal keeps the last N
events anyway, and every event is also in the outbox) and counted in ``dropped``.
The journal does not log the failure itself: the agent reports a failing disk as
one fault.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from liftwatch.buffer.atomic import (
    AtomicJSONStorage,
    CorruptFileError,
    is_symlink,
    own_dir,
    quarantine_file,
)
from tinydb import TinyDB

log = logging.getLogger(__name__)

GEN_NAME = re.compile(r"^gen-(\d{8})\.json$")
TABLE = "events"
MAX_EVENT_BYTES = 64 * 1024
#: events kept in memory while they cannot be written (about 300 bytes each)
MAX_PENDING = 1000


class JournalError(ValueError):
    """A record the journal cannot keep, or a bad query argument."""


class JournalWriteError(OSError):
    """An event could not be written; it waits in memory (see the module's docstring)."""


class EventJournal:
    """Keeps the last ``max_events`` events in ``path`` (a directory, created if missing).

    Thread-safe: one lock around every call (the agent may query from a command
    handler while the loop adds).
    """

    def __init__(self, path: str | Path, max_events: int = 10_000, *,
                 generation_size: int | None = None, max_pending: int = MAX_PENDING) -> None:
        if not isinstance(max_events, int) or isinstance(max_events, bool) or max_events < 1:
            raise JournalError(f"max_events must be a positive integer, got {max_events!r}")
        if generation_size is not None and (not isinstance(generation_size, int)
                                            or generation_size < 1):
            raise JournalError(f"generation_size must be a positive integer, "
                               f"got {generation_size!r}")
        self.path = Path(path)
        self.max_events = max_events
        self.generation_size = generation_size or max(10, min(100, max_events // 100))
        self._keep = -(-max_events // self.generation_size) + 1  # generations kept on disk
        self._lock = threading.Lock()
        self._pending: deque[dict] = deque()
        self.max_pending = max(1, max_pending)
        self.dropped = 0  # waiting events dropped because max_pending were waiting
        self._qdir = self.path / "quarantine"
        self.quarantined: list[str] = []
        own_dir(self.path)
        self._gens: list[int] = sorted(
            int(m.group(1)) for p in self.path.iterdir() if (m := GEN_NAME.match(p.name)))
        self._db: TinyDB | None = None
        self._active_count = 0
        self._open_active()

    def _gen_path(self, n: int) -> Path:
        return self.path / f"gen-{n:08d}.json"

    def _read_gen(self, n: int) -> list[dict]:
        """Events of one generation; a damaged file is quarantined and counts as empty."""
        db = TinyDB(self._gen_path(n), storage=AtomicJSONStorage)
        try:
            return [dict(d) for d in db.table(TABLE).all()]
        except (CorruptFileError, AttributeError, TypeError, ValueError) as exc:
            db.close()
            self._quarantine(n, exc)
            return []
        db.close()

    def _quarantine(self, n: int, exc: Exception) -> None:
        path = self._gen_path(n)
        if path.exists() or is_symlink(path):
            dest = quarantine_file(path, self._qdir)
            self.quarantined.append(dest.name)
            log.error("event journal: %s unreadable (%s); quarantined as %s", path.name, exc,
                      dest.name)
        if n in self._gens:
            self._gens.remove(n)

    def _open_active(self) -> None:
        while self._gens:
            n = self._gens[-1]
            db = TinyDB(self._gen_path(n), storage=AtomicJSONStorage)
            try:
                self._active_count = len(db.table(TABLE))
            except (CorruptFileError, AttributeError, TypeError, ValueError) as exc:
                db.close()
                self._quarantine(n, exc)
                continue
            self._db = db
            return
        self._new_generation()

    def _new_generation(self) -> None:
        if self._db is not None:
            self._db.close()
        n = (self._gens[-1] + 1) if self._gens else 1
        self._gens.append(n)
        self._db = TinyDB(self._gen_path(n), storage=AtomicJSONStorage)
        self._active_count = 0
        while len(self._gens) > self._keep:
            old = self._gens.pop(0)
            self._gen_path(old).unlink(missing_ok=True)

    def add(self, event_record: Mapping[str, Any], *, defer: bool = False) -> None:
        """Keep one event (durable when this returns, unless it raised
        :class:`JournalWriteError`). ``defer``: when events already wait for the disk,
        only queue this one behind them (the caller knows the disk is failing and
        calls :meth:`sync` when it wants a try)."""
        if not isinstance(event_record, Mapping):
            raise JournalError(f"an event must be a JSON object, got "
                               f"{type(event_record).__name__}")
        record = dict(event_record)
        if "code" in record and not isinstance(record["code"], str):
            raise JournalError(f"event code must be a string, got {record['code']!r}")
        record.setdefault("ts", int(time.time() * 1000))
        if not isinstance(record["ts"], int) or isinstance(record["ts"], bool):
            raise JournalError(f"event ts must be integer UTC milliseconds, got {record['ts']!r}")
        try:
            text = json.dumps(record, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise JournalError(f"event is not plain JSON: {exc}") from None
        if len(text) > MAX_EVENT_BYTES:
            raise JournalError(f"event is {len(text)} bytes, at most {MAX_EVENT_BYTES}")
        record = json.loads(text)  # keys as strings, no parts shared with the caller
        with self._lock:
            if self._db is None:
                raise JournalError("event journal is closed")
            if len(self._pending) >= self.max_pending:
                self._pending.popleft()
                self.dropped += 1
            self._pending.append(record)
            if defer and len(self._pending) > 1:
                return
            self._write_pending()

    @property
    def pending(self) -> int:
        """Events waiting in memory for the disk."""
        return len(self._pending)

    def sync(self) -> int:
        """Write the events waiting in memory; returns how many were written. Raises
        :class:`JournalWriteError` when the disk still refuses (they keep waiting)."""
        with self._lock:
            if self._db is None:
                return 0
            return self._write_pending()

    def _write_pending(self) -> int:
        done = 0
        while self._pending:
            try:
                if self._active_count >= self.generation_size:
                    self._new_generation()
                assert self._db is not None
                self._db.table(TABLE).insert(self._pending[0])
            except OSError as exc:  # the storage dropped its cache: the next try rereads
                raise JournalWriteError(exc.errno, f"event journal not written: "
                                        f"{exc.strerror or exc}",
                                        str(self._gen_path(self._gens[-1]))) from exc
            self._pending.popleft()
            self._active_count += 1
            done += 1
        return done

    def _all(self) -> list[dict]:
        out: list[dict] = []
        for n in list(self._gens):
            out.extend(self._read_gen(n))
        out.extend(dict(e) for e in self._pending)
        return out[-self.max_events:]

    def query(self, code: str | None = None, since: int | None = None,
              limit: int | None = None) -> list[dict]:
        """Kept events, oldest first: those of ``code``, with ``ts >= since`` (UTC ms);
        ``limit`` keeps the newest that many."""
        if code is not None and not isinstance(code, str):
            raise JournalError(f"code must be a string, got {code!r}")
        if since is not None and (not isinstance(since, int | float) or isinstance(since, bool)):
            raise JournalError(f"since must be UTC milliseconds, got {since!r}")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                                  or limit < 0):
            raise JournalError(f"limit must be a non-negative integer, got {limit!r}")
        with self._lock:
            events = self._all()
        if code is not None:
            events = [e for e in events if e.get("code") == code]
        if since is not None:
            events = [e for e in events if isinstance(e.get("ts"), int | float)
                      and e["ts"] >= since]
        if limit is not None:
            events = events[len(events) - limit:] if limit else []
        return events

    def export_jsonl(self, fh: IO[str]) -> int:
        """Write every kept event, oldest first, one compact JSON object a line."""
        with self._lock:
            events = self._all()
        for e in events:
            fh.write(json.dumps(e, separators=(",", ":")) + "\n")
        return len(events)

    def __len__(self) -> int:
        with self._lock:
            return len(self._all())

    def close(self) -> None:
        """Close the files; events still waiting for the disk get one last try."""
        with self._lock:
            if self._db is not None:
                if self._pending:
                    try:
                        self._write_pending()
                    except OSError as exc:
                        log.error("event journal: %d event(s) not written at close: %s",
                                  len(self._pending), exc)
                self._db.close()
                self._db = None
