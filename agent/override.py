"""The files of remote configuration in the data directory, and their rollback.

``config_set`` never writes the technician's config file (the shipped unit keeps
/etc/liftwatch read-only to the service): it writes the override ``remote.toml``
that :func:`liftwatch.agent.config.load_config` merges over that file. Around it, in
the same directory (the service's writable state):

- ``remote.toml.prev``: the override as it was before the change under way;
- ``config_set.pending``: a change written but not yet confirmed healthy, with its
  command id and whether there was an override before;
- ``remote.starting``: a start with an override that has not yet reached running;
- ``remote.toml.rejected``: an override set aside (invalid, or a start died with it).

The rules, which nothing in the override can defeat because they run before the
config is loaded (:meth:`OverrideFiles.recover_at_start`): a pending change found at
start was never confirmed (the reply saying ``ok`` is sent only after confirmation),
so it is rolled back; an override with which the previous start did not reach
running is set aside. Each is logged and reported to the platform by the runtime.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liftwatch.agent.config import OVERRIDE_NAME
from liftwatch.buffer.atomic import atomic_write_bytes

log = logging.getLogger(__name__)

PENDING = "config_set.pending"
PREV = OVERRIDE_NAME + ".prev"
STARTING = "remote.starting"
REJECTED = OVERRIDE_NAME + ".rejected"


@dataclass(frozen=True)
class Recovery:
    """What :meth:`OverrideFiles.recover_at_start` did, for the log and the event."""

    action: str  # "rolled_back" or "set_aside"
    why: str
    cmd: str | None = None


class OverrideFiles:
    """The override file of one data directory and its rollback markers."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(data_dir)
        self.path = self.dir / OVERRIDE_NAME
        self.prev = self.dir / PREV
        self.pending = self.dir / PENDING
        self.starting = self.dir / STARTING
        self.rejected = self.dir / REJECTED

    def _read(self, path: Path) -> bytes | None:
        """A regular file's bytes, without following a link or waiting on a FIFO; None
        when absent. OSError for anything else there."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        with os.fdopen(fd, "rb") as f:
            return f.read(1 << 20)

    def _pending_info(self) -> dict[str, Any]:
        try:
            raw = self._read(self.pending)
            info = json.loads(raw or b"{}")
        except (OSError, ValueError):  # unreadable: a pending change all the same
            return {}
        return info if isinstance(info, dict) else {}

    # ---- a change
    def begin(self, new: bytes, cmd_id: str | None) -> None:
        """Write a new override, keeping the previous one and a pending marker first, so
        that a crash at any point leaves something :meth:`recover_at_start` undoes.
        Raises OSError (nothing is then changed: each write is atomic)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        old = self._read(self.path)
        if old is not None:
            atomic_write_bytes(self.prev, old)
        atomic_write_bytes(self.pending, json.dumps(
            {"cmd": cmd_id, "had_override": old is not None}).encode())
        try:
            atomic_write_bytes(self.path, new)
        except OSError:
            with contextlib.suppress(OSError):
                self.pending.unlink()
            raise

    def confirm(self) -> None:
        """The change is healthy: it stays."""
        self.pending.unlink(missing_ok=True)

    def restore(self) -> None:
        """Put the previous override back (or none, when there was none). OSError."""
        info = self._pending_info()
        had = info.get("had_override", self.prev.exists())
        prev = self._read(self.prev) if had else None
        if prev is not None:
            atomic_write_bytes(self.path, prev)
        elif had:  # the previous one is lost: better none than the unconfirmed one
            self.set_aside()
        else:
            self.path.unlink(missing_ok=True)
        self.pending.unlink(missing_ok=True)

    def set_aside(self) -> None:
        """Move the override out of the loader's way (kept for the technician)."""
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path, self.rejected)

    # ---- at start
    def recover_at_start(self) -> list[Recovery]:
        """Before the config is loaded: roll back a change that was never confirmed, set
        aside an override the previous start died with, and mark this start."""
        done: list[Recovery] = []
        try:
            if self.pending.exists():
                cmd = self._pending_info().get("cmd")
                self.restore()
                done.append(Recovery("rolled_back", "the previous run ended before it "
                                     "confirmed the change healthy",
                                     cmd if isinstance(cmd, str) else None))
            elif self.starting.exists() and self.path.exists():
                self.set_aside()
                done.append(Recovery("set_aside", "the previous start with it did not "
                                     "reach running"))
            if self.path.exists():
                atomic_write_bytes(self.starting, b"")
            else:
                self.starting.unlink(missing_ok=True)
        except OSError as exc:  # the data directory refuses: the loader still decides
            log.error("remote config: the rollback files in %s cannot be handled: %s",
                      self.dir, exc)
        for r in done:
            log.error("remote config %s: %s (%s)", r.action.replace("_", " "), self.path,
                      r.why)
        return done

    def started(self) -> None:
        """This start reached running: the override is not what kills it."""
        try:
            self.starting.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("remote config: %s not removed: %s", self.starting, exc)
