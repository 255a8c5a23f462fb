"""The MQTT credentials file and the private-file rule it and the TLS key follow.

A password never sits in the terminal config (which technicians copy around and
``config show`` prints): it lives in its own file, checked when the config is
validated and again each time it is read.

The rule for it and the TLS key: refused when other users can access it. Group
access is allowed on purpose: the installed layout (deploy/INSTALL.md) keeps the
secrets owned by root and readable by the ``liftwatch`` group only (mode 0640), so
the unprivileged service reads them but cannot change them; a root-owned 0600 file
would be unreadable by the service.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

KEYS = ("username", "password")
#: What a secret file must be, as config problems say it.
PRIVATE = "a file other users cannot access (owner and group only, e.g. mode 0640)"


def _mode_problem(path: Path, mode: int) -> str | None:
    mode &= 0o777
    if mode & 0o007:
        return f"mode {mode:04o}: other users can access it; fix with: chmod o-rwx {path}"
    return None


def permission_problem(path: Path) -> str | None:
    """Why other users could access ``path``, or None when only its owner and group can."""
    return _mode_problem(path, path.stat().st_mode)


def read_credentials(path: Path) -> tuple[dict[str, Any] | None, list[tuple[str, str]]]:
    """The parsed file and its (expected, found) problems; never shows its contents.

    The mode is taken from the open file (fstat), so a file swapped or chmod-ed
    between the check and the read cannot slip through.
    """
    try:
        if not path.is_file():
            return None, [("an existing credentials file", f"no file {path}")]
        with path.open("rb") as f:
            problem = _mode_problem(path, os.fstat(f.fileno()).st_mode)
            if problem:
                return None, [(PRIVATE, problem)]
            data = tomllib.loads(f.read().decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        # The parser's message may quote the file: it holds a password, so say less.
        return None, [("a TOML file with username and password", f"{path}: not valid TOML")]
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return None, [("a readable credentials file", f"{path}: {reason}")]
    problems = []
    for key in KEYS:
        if not isinstance(data.get(key), str) or not data[key]:
            problems.append((f"a non-empty string {key} in the credentials file",
                             f"{path}: {key} missing or not a string"))
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        problems.append(("only username and password in the credentials file",
                         f"{path}: unknown keys {', '.join(unknown)}"))
    return (None if problems else data), problems
