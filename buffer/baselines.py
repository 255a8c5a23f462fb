"""Learned baselines of the lift, kept across restarts (TinyDB in the data directory).

The pipeline learns what is normal for this lift (door times per landing, trip
vibration per direction, ...); losing that on every restart would mean days of blind
anomaly rules. The state is the pipeline's JSON-able ``baselines_state()``, one
document per lift in ``baselines.db`` (a TinyDB JSON file), replaced atomically
(:class:`~liftwatch.buffer.atomic.AtomicJSONStorage`): a power cut mid-save leaves
the previous save. A damaged file is moved to ``quarantine/`` and learning starts
over; the reason is kept in ``problem`` for the health message.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

from liftwatch.buffer.atomic import (
    AtomicJSONStorage,
    CorruptFileError,
    atomic_write_bytes,
    quarantine_file,
)
from tinydb import Query, TinyDB

log = logging.getLogger(__name__)

FILE_NAME = "baselines.db"


class BaselineStore:
    """``load()`` the last saved baselines of ``lift_id``; ``save(state)`` replaces them."""

    def __init__(self, data_dir: str | Path, lift_id: str = "lift") -> None:
        self.dir = Path(data_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / FILE_NAME
        self.lift_id = lift_id
        self.problem = ""
        self._db = self._open()

    def _open(self) -> TinyDB:
        db = TinyDB(self.path, storage=AtomicJSONStorage)
        try:
            db.table("baselines").all()
        except CorruptFileError as exc:
            db.close()
            dest = quarantine_file(self.path, self.dir / "quarantine", "baselines-")
            self.problem = f"{exc.reason}; moved to {dest}"
            log.warning("learned baselines unreadable, starting over: %s", self.problem)
            db = TinyDB(self.path, storage=AtomicJSONStorage)
        return db

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when nothing (valid) was saved for this lift."""
        doc = self._db.table("baselines").get(Query().lift == self.lift_id)
        if not isinstance(doc, dict) or not isinstance(doc.get("state"), dict):
            return None
        return doc["state"]

    def save(self, state: dict[str, Any]) -> None:
        """Replace the saved state (durable when this returns)."""
        if not isinstance(state, dict):
            raise TypeError("baselines state must be a JSON object")
        self._db.table("baselines").upsert({"lift": self.lift_id, "state": state},
                                           Query().lift == self.lift_id)

    def close(self) -> None:
        self._db.close()


#: A maintenance visit noted by the technician (``liftwatch maintenance --done``) while
#: the agent may be running: a marker in the data directory that the agent takes (and
#: deletes) at its next tick or start. A marker, not an edit of ``baselines.db``: the
#: running agent owns that file and would overwrite the edit at its next save.
MAINTENANCE_MARKER = "maintenance_done"


def mark_maintenance(data_dir: str | Path, note: bytes = b"") -> Path:
    """Leave the maintenance marker (durable when this returns); its path."""
    d = Path(data_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / MAINTENANCE_MARKER
    atomic_write_bytes(path, note)
    return path


def take_maintenance_mark(data_dir: str | Path) -> bool:
    """True once per marker left by :func:`mark_maintenance` (it is removed). A symlink
    in its place is removed and not taken (nothing in the data directory is followed)."""
    path = Path(data_dir) / MAINTENANCE_MARKER
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    path.unlink(missing_ok=True)
    return stat.S_ISREG(st.st_mode)
