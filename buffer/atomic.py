"""Crash-safe small-file writes, and a TinyDB storage built on them.

TinyDB's own ``JSONStorage`` truncates and rewrites its file in place, so a power
cut mid-write leaves half a JSON document and the whole database unreadable. Here
every write goes to a temporary file that is fsync'd, renamed over the old one and
followed by an fsync of the directory (so the rename itself survives a power cut):
a reader always finds either the old or the new document, never a mix.

Only meant for small documents rewritten now and then (outbox cursors, the alarm
ledger, one journal generation); the outbox's message data never goes through it.

Symbolic links. The agent's files live in its data directory, and anyone who can write
there (or a careless technician) can plant a link in place of one of them; an agent that
follows it writes, truncates or renames into the link's target (as root: any file of the
system). So every file of the data and config directories is opened through
:func:`open_nofollow` (``O_NOFOLLOW``: a link in the last path component is refused with
:class:`SymlinkRefused`, an ``OSError`` naming the file) and every temporary file is
created by :func:`tempfile.mkstemp` in the same directory (a fresh random name with
``O_EXCL``: a planted ``.NAME.tmp`` is never opened). Renaming over a link replaces the
link itself, never its target, so :func:`os.replace` needs no guard.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import logging
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

from tinydb.storages import Storage

log = logging.getLogger(__name__)


class CorruptFileError(ValueError):
    """A file that should hold a JSON document does not (truncated, garbage, wrong shape)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class SymlinkRefused(OSError):
    """A file of the agent's directories is a symbolic link; it is not followed."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(errno.ELOOP, f"{path} is a symbolic link; refused (a planted link "
                         "would make the agent write into its target)", str(path))
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.strerror)


def open_nofollow(path: str | Path, flags: int, mode: int = 0o640) -> int:
    """``os.open`` with ``O_NOFOLLOW`` (and ``O_CLOEXEC``): a symbolic link at ``path``
    raises :class:`SymlinkRefused` naming it, instead of opening the link's target."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        # O_NOFOLLOW on a link gives ELOOP (Linux); with O_CREAT|O_EXCL, EEXIST
        if exc.errno in (errno.ELOOP, errno.EMLINK, errno.EEXIST) and is_symlink(path):
            raise SymlinkRefused(path) from None
        raise


def is_symlink(path: str | Path) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False


def read_nofollow(path: str | Path) -> bytes:
    """The whole file at ``path``; :class:`SymlinkRefused` for a link, ``FileNotFoundError``
    when absent."""
    fd = open_nofollow(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def own_dir(directory: Path) -> Path:
    """Make sure ``directory`` (one the agent creates inside its data directory) is a
    real directory, not a link: a planted ``outbox/alarm -> /etc`` would have the
    agent quarantine (move away) every file of /etc as "not a segment". A link there is
    moved aside (renamed, its target untouched) with an error naming it, and the
    directory is created."""
    if is_symlink(directory):
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        aside = directory.with_name(f"{directory.name}.link-refused.{stamp}")
        os.replace(directory, aside)
        log.error("%s; moved aside as %s", SymlinkRefused(directory), aside.name)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def fsync_dir(directory: Path) -> None:
    """Make a created, renamed or deleted directory entry durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o640)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def clean_temps(path: Path) -> None:
    """Remove the temporary files a crash mid-:func:`atomic_write_bytes` of ``path`` left
    (an unlink removes a planted link itself, never its target)."""
    with contextlib.suppress(OSError):
        for p in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            with contextlib.suppress(OSError):
                p.unlink()


def quarantine_file(path: Path, quarantine_dir: Path, label: str = "") -> Path:
    """Move a damaged file aside (kept for the technician) and return where it went."""
    own_dir(quarantine_dir)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    base = f"{label}{path.name}.{stamp}"
    dest = quarantine_dir / base
    n = 1
    while dest.exists():
        dest = quarantine_dir / f"{base}.{n}"
        n += 1
    os.replace(path, dest)
    fsync_dir(path.parent)
    if quarantine_dir != path.parent:
        fsync_dir(quarantine_dir)
    return dest


class AtomicJSONStorage(Storage):
    """TinyDB storage: one JSON document, replaced atomically on every write.

    The last document written is kept in memory, so TinyDB's read-modify-write
    cycle costs one file write, not a read and a write. A failed write drops that
    cache (TinyDB may have mutated it) and the next read goes back to the file.
    A file that does not parse raises :class:`CorruptFileError`; callers quarantine it.
    """

    def __init__(self, path: str | Path, **_: Any) -> None:
        super().__init__()
        self.path = Path(path)
        self._cache: dict[str, dict[str, Any]] | None = None
        clean_temps(self.path)

    def read(self) -> dict[str, dict[str, Any]] | None:
        if self._cache is not None:
            return self._cache
        try:
            raw = read_nofollow(self.path)
        except FileNotFoundError:
            return None
        except SymlinkRefused as exc:  # quarantined (the link moved, not its target)
            raise CorruptFileError(self.path, str(exc)) from None
        if not raw.strip():
            return None
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptFileError(self.path, f"not a JSON document ({exc})") from None
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise CorruptFileError(self.path, "not a TinyDB document (object of tables)")
        self._cache = data
        return data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        self._cache = None
        payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        atomic_write_bytes(self.path, payload)
        self._cache = data

    def close(self) -> None:
        self._cache = None
