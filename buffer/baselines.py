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
from pathlib import Path
from typing import Any

from liftwatch.buffer.atomic import AtomicJSONStorage, CorruptFileError, quarantine_file
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
