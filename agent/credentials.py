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

import difflib
import grp
import os
import pwd
import tomllib
from pathlib import Path
from typing import Any

KEYS = ("username", "password")
#: What a secret file must be, as config problems say it.
PRIVATE = "a file other users cannot access (owner and group only, e.g. mode 0640)"
#: What every file the agent reads must be, as config problems say it.
READABLE = "a file the service user can read"
#: The service's group (deploy/install.sh): it reads the secrets, root owns them.
SERVICE_GROUP = "liftwatch"
#: The TLS files of [uplink], checked at every load (the credentials file is read).
TLS_KEYS = ("ca_file", "cert_file", "key_file")


def _owner(st: os.stat_result) -> str:
    def name(get: Any, n: int) -> str:
        try:
            return str(get(n)[0])
        except KeyError:
            return str(n)
    return (f"owner {name(pwd.getpwuid, st.st_uid)}:{name(grp.getgrgid, st.st_gid)}, "
            f"mode {st.st_mode & 0o777:04o}")


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def access_problem(path: Path) -> str | None:
    """Why this user cannot read ``path``, naming the file (or the folder above it that
    stops it) and the command that fixes it; None when it reads, or does not exist
    (the caller says "missing" in its own words)."""
    try:
        with path.open("rb"):
            return None
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        return f"{path} is a folder, not a file"
    except PermissionError:
        pass
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    for folder in reversed(path.parents):
        if not os.access(folder, os.X_OK):
            return (f"{path}: permission denied for user {_user()}: its folder {folder} "
                    f"cannot be entered ({_owner(folder.stat())}); fix with: chown "
                    f"root:{SERVICE_GROUP} {folder} && chmod 0750 {folder}")
    return (f"{path}: permission denied for user {_user()} ({_owner(path.stat())}); the "
            f"service reads it through group {SERVICE_GROUP}; fix with: chown "
            f"root:{SERVICE_GROUP} {path} && chmod 0640 {path}")


def service_user_problem(path: Path, user: str = SERVICE_GROUP) -> str | None:
    """Why the service user could not read ``path``, judged from owners and modes (for a
    check run as root, who reads everything); None when it could, when the file is
    missing or when there is no such user on this machine."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return None
    groups = {pw.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}

    def may(st: os.stat_result, bit: int) -> bool:    # bit: 4 read, 1 enter
        if st.st_uid == pw.pw_uid:
            return bool(st.st_mode & (bit << 6))
        if st.st_gid in groups:
            return bool(st.st_mode & (bit << 3))
        return bool(st.st_mode & bit)

    try:
        for folder in reversed(path.parents):
            if not may(folder.stat(), 1):
                return (f"{path}: the service user {user} cannot enter its folder {folder} "
                        f"({_owner(folder.stat())}); fix with: chown root:{SERVICE_GROUP} "
                        f"{folder} && chmod 0750 {folder}")
        st = path.stat()
    except OSError:
        return None
    if not may(st, 4):
        return (f"{path}: the service user {user} cannot read it ({_owner(st)}); fix with: "
                f"chown root:{SERVICE_GROUP} {path} && chmod 0640 {path}")
    return None


def tls_problems(uplink: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(key, expected, found) for each TLS file of an [uplink] that this user cannot read,
    and a key file other users can; a missing file is left to the commissioning check."""
    out = []
    for key in TLS_KEYS:
        value = uplink.get(key)
        if not value:
            continue
        path = Path(value)
        problem = access_problem(path)
        if problem:
            out.append((f"uplink.{key}", READABLE, problem))
        elif key == "key_file":
            try:
                problem = permission_problem(path)
            except FileNotFoundError:
                problem = None
            except (OSError, ValueError) as exc:
                problem = f"cannot check it: {exc}"
            if problem:
                out.append((f"uplink.{key}", PRIVATE, problem))
    return out


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
    except PermissionError:
        return None, [("a credentials file the service user can read",
                       access_problem(path) or f"{path}: permission denied")]
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
        hints = [f"{k} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(
            k, KEYS, n=1, cutoff=0.5)) else k for k in unknown]
        problems.append(("only username and password in the credentials file",
                         f"{path}: unknown keys {', '.join(hints)}"))
    return (None if problems else data), problems
