"""Files the technician tools write (``plot --out``, ``events --export``, ``outbox
--export``, ``record --out``): never over an existing file without ``--force``, never
through a symbolic link.

A mistyped ``--out`` must not silently replace a trace or a report, and a tool run as
root must not follow a link planted where its output goes (a dangling link would make it
create or truncate the link's target anywhere on the system). So the file is created
with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (``--force``: ``O_TRUNC | O_NOFOLLOW``, which
still refuses a link), and a write that fails removes what it left.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


class OutputRefused(OSError):
    """The output file exists (without ``--force``) or is a symbolic link."""

    def __str__(self) -> str:
        return str(self.strerror)


def check_output(path: str | Path, force: bool) -> None:
    """Raise :class:`OutputRefused` now for an output that :func:`output_file` would
    refuse (so a long job fails before it starts, not after)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise OutputRefused(errno.ELOOP, f"{path} is a symbolic link; refused (write to a "
                            "plain file name; remove the link first)", str(path))
    if not force:
        raise OutputRefused(errno.EEXIST, f"{path} exists (use --force to overwrite)",
                            str(path))


def output_refused(prog: str, path: str | Path | None, force: bool) -> bool:
    """:func:`check_output` for a command line: True (after saying why on stderr) when
    ``path`` would be refused; an absent option (None) is never refused."""
    if path is None:
        return False
    try:
        check_output(path, force)
    except OutputRefused as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return True
    return False


@contextlib.contextmanager
def output_file(path: str | Path, force: bool, *, binary: bool = False) -> Iterator[IO[Any]]:
    """The output file opened for writing (text UTF-8, or ``binary``), created afresh or,
    with ``force``, truncated; removed again when the ``with`` body raises."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    flags |= os.O_TRUNC if force else os.O_EXCL
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ELOOP):
            check_output(path, force)  # raises the refusal that says which
        raise
    try:
        with (os.fdopen(fd, "wb") if binary
              else os.fdopen(fd, "w", encoding="utf-8")) as fh:
            yield fh
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
