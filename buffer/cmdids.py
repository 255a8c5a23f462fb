"""Command ids already handled, kept across restarts: a command is applied at most once.

The platform may send a command again (its retry after a lost reply, a broker that
re-delivers a QoS 1 message after a reconnect, an operator pressing twice); a
``config_set`` applied a second time can undo what a technician fixed in between. So
the id of every command that ran is remembered for ``WINDOW_S`` (24 h) and at most
``MAX_IDS`` (4096) ids, the oldest forgotten first; a repeat within that window is
answered from here and not run again (platform-protocol.md, Commands).

The store is an append-only file of JSON lines in the data directory
(``command_ids.jsonl``): ``run`` before the op starts (so a crash in the middle never
lets the op run twice), then ``ok``/``err`` with the outcome, or ``forget`` when the op
refused the command (nothing was applied; the same id may come again, corrected). Each
line is fsync'd. At opening, and when the file holds twice ``MAX_IDS`` lines, it is
rewritten (atomically) with what is still remembered: its size stays bounded. A torn
last line (a power cut mid-append) is skipped. A write that fails (disk full) is
logged once; the ids stay remembered in memory for as long as the agent runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liftwatch.buffer.atomic import (
    SymlinkRefused,
    atomic_write_bytes,
    open_nofollow,
    quarantine_file,
    read_nofollow,
)

log = logging.getLogger(__name__)

FILE_NAME = "command_ids.jsonl"
WINDOW_S = 24 * 3600.0
MAX_IDS = 4096
#: a result is kept for the repeat's reply only when its JSON is this short
RESULT_MAX = 512


@dataclass(frozen=True, slots=True)
class Handled:
    """What became of a command id. ``state``: ``run`` (started; the agent stopped before
    it finished), ``ok`` or ``err``."""

    id: str
    t_wall: float
    state: str
    result: Any = None
    error: str | None = None


class CommandIdStore:
    """Ids of the commands that ran, in ``data_dir/command_ids.jsonl``."""

    def __init__(self, data_dir: str | Path, *, window_s: float = WINDOW_S,
                 max_ids: int = MAX_IDS, clock: Callable[[], float] = time.time) -> None:
        self.dir = Path(data_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / FILE_NAME
        self.window_s = window_s
        self.max_ids = max_ids
        self._clock = clock
        self._lock = threading.Lock()
        self._ids: OrderedDict[str, Handled] = OrderedDict()
        self._lines = 0
        self._fd = -1
        self._failing = False
        self._load()
        self._compact()

    # -- file --------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            raw = read_nofollow(self.path)
        except FileNotFoundError:
            return
        except SymlinkRefused as exc:
            dest = quarantine_file(self.path, self.dir / "quarantine", "cmdids-")
            log.error("command id store: %s; quarantined as %s", exc, dest.name)
            return
        except OSError as exc:
            log.error("command id store %s unreadable (%s): starting empty", self.path, exc)
            return
        for line in raw.splitlines():
            try:
                rec = json.loads(line)
                self._apply(str(rec["id"]), float(rec["t"]), str(rec["s"]), rec.get("r"),
                            rec.get("e"))
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line, or damage: that record is lost, not the rest

    def _apply(self, cmd_id: str, t: float, state: str, result: Any, error: Any) -> None:
        if state == "forget":
            self._ids.pop(cmd_id, None)
            return
        if state not in ("run", "ok", "err"):
            raise ValueError(state)
        self._ids.pop(cmd_id, None)
        self._ids[cmd_id] = Handled(cmd_id, t, state, result,
                                    None if error is None else str(error))

    def _expire(self) -> None:
        horizon = self._clock() - self.window_s
        while self._ids:
            first = next(iter(self._ids.values()))
            # oldest first; after a clock step back an entry only lives longer (better
            # one repeat refused too many than one config_set applied twice)
            if len(self._ids) > self.max_ids or horizon > first.t_wall:
                self._ids.popitem(last=False)
            else:
                break

    def _compact(self) -> None:
        """Rewrite the file with what is still remembered (atomically)."""
        self._expire()
        text = "".join(self._line(h.id, h.t_wall, h.state, h.result, h.error)
                       for h in self._ids.values())
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        try:
            atomic_write_bytes(self.path, text.encode())
            self._fd = open_nofollow(self.path, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            self._write_failed(exc)
        self._lines = len(self._ids)

    @staticmethod
    def _line(cmd_id: str, t: float, state: str, result: Any, error: str | None) -> str:
        rec: dict[str, Any] = {"id": cmd_id, "t": round(t, 3), "s": state}
        if result is not None:
            rec["r"] = result
        if error is not None:
            rec["e"] = error
        return json.dumps(rec, separators=(",", ":"), ensure_ascii=True) + "\n"

    def _append(self, cmd_id: str, state: str, result: Any = None,
                error: str | None = None) -> None:
        t = self._clock()
        if state != "forget":
            old = self._ids.get(cmd_id)
            self._apply(cmd_id, old.t_wall if old and state != "run" else t, state, result,
                        error)
        else:
            self._ids.pop(cmd_id, None)
        self._expire()
        self._lines += 1
        if self._lines > 2 * self.max_ids:
            self._compact()
            return
        if self._fd < 0:
            return
        try:
            os.write(self._fd, self._line(cmd_id, t, state, result, error).encode())
            os.fsync(self._fd)
            self._failing = False
        except OSError as exc:
            self._write_failed(exc)

    def _write_failed(self, exc: OSError) -> None:
        if not self._failing:
            log.error("command id store %s not written (%s): ids are remembered in memory "
                      "until the agent stops", self.path, exc.strerror or exc)
        self._failing = True

    # -- API ---------------------------------------------------------------------------
    def get(self, cmd_id: str) -> Handled | None:
        """The earlier handling of ``cmd_id`` within the window, or None."""
        with self._lock:
            self._expire()
            return self._ids.get(cmd_id)

    def claim(self, cmd_id: str) -> None:
        """``cmd_id`` is about to run: recorded (durably) before it does."""
        with self._lock:
            self._append(cmd_id, "run")

    def finish(self, cmd_id: str, ok: bool, result: Any = None, error: str | None = None) -> None:
        """The outcome of a claimed command; a result too long to keep is left out."""
        if result is not None:
            try:
                if len(json.dumps(result, separators=(",", ":"))) > RESULT_MAX:
                    result = None
            except (TypeError, ValueError):
                result = None
        with self._lock:
            self._append(cmd_id, "ok" if ok else "err", result,
                         None if error is None else error[:RESULT_MAX])

    def forget(self, cmd_id: str) -> None:
        """A claimed command was refused before anything was applied: not remembered."""
        with self._lock:
            self._append(cmd_id, "forget")

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._ids)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = -1
