"""Crash-safe small-file writes, and a TinyDB storage built on them.

TinyDB's own ``JSONStorage`` truncates and rewrites its file in place, so a power
cut mid-write leaves half a JSON document and the whole database unreadable. Here
every write goes to a temporary file that is fsync'd, renamed over the old one and
followed by an fsync of the directory (so the rename itself survives a power cut):
a reader always finds either the old or the new document, never a mix.

Only meant for small documents rewritten now and then (outbox cursors, the alarm
ledger, one journal generation); the outbox's message data never goes through it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from tinydb.storages import Storage


class CorruptFileError(ValueError):
    """A file that should hold a JSON document does not (truncated, garbage, wrong shape)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def fsync_dir(directory: Path) -> None:
    """Make a created, renamed or deleted directory entry durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new file."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
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


def quarantine_file(path: Path, quarantine_dir: Path, label: str = "") -> Path:
    """Move a damaged file aside (kept for the technician) and return where it went."""
    quarantine_dir.mkdir(parents=True, exist_ok=True)
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

    def read(self) -> dict[str, dict[str, Any]] | None:
        if self._cache is not None:
            return self._cache
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
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
