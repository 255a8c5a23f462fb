"""install.sh's credentials step, run by the installed virtualenv's Python.

    install_credentials.py check FILE SHOWN_AS
    install_credentials.py name-in-config CONFIG CREDENTIALS

``check`` reads FILE with the agent's own reader (liftwatch.agent.credentials), so the
installer refuses exactly what the agent would refuse at start, naming the problem but
never the file's contents. ``name-in-config`` sets ``uplink.credentials_file`` in the
terminal's config to the installed file: only that line changes (comments and layout
stay), the result must read back equal apart from that key, and the file is replaced
atomically with its owner and mode kept. A config that already names another file is
left alone and refused: which of the two is meant is the technician's call.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

from liftwatch.agent.credentials import read_credentials
from liftwatch.agent.tools.calibrate import write_atomically

HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\s*(#.*)?$")
KEY = re.compile(r"^\s*credentials_file\s*=")


def check(path: Path, shown_as: str) -> int:
    _, problems = read_credentials(path)
    for expected, found in problems:
        print(f"install: {shown_as}: expected {expected}, found "
              f"{found.replace(str(path), shown_as)}", file=sys.stderr)
    if problems:
        print('install: the file is TOML with two keys: username = "..." and '
              'password = "..."', file=sys.stderr)
    return 1 if problems else 0


def with_credentials_file(text: str, value: str) -> str:
    """``text`` with ``uplink.credentials_file = value``: an empty one replaced, or the
    line added at the top of [uplink] (a new [uplink] table at the end if none)."""
    lines = text.splitlines(keepends=True)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    line = f"credentials_file = {json.dumps(value)}{newline}"
    start = next((i for i, ln in enumerate(lines)
                  if (m := HEADER.match(ln)) and m.group(1).strip() == "uplink"), None)
    if start is None:
        tail = "" if not lines or lines[-1].endswith("\n") else newline
        return text + tail + f"{newline}[uplink]{newline}" + line
    end = next((i for i in range(start + 1, len(lines)) if HEADER.match(lines[i])), len(lines))
    body = [ln for ln in lines[start + 1:end] if not KEY.match(ln)]
    return "".join(lines[:start + 1] + [line] + body + lines[end:])


def name_in_config(config: Path, credentials: str) -> int:
    text = config.read_text(encoding="utf-8")
    old = tomllib.loads(text)
    named = old.get("uplink", {}).get("credentials_file", "")
    if named == credentials:
        print(f"install: {config} already names {credentials}")
        return 0
    if named:
        print(f"install: {config} has uplink.credentials_file = {json.dumps(named)}, not the "
              f"installed {credentials}: set the one you mean (sudoedit {config})",
              file=sys.stderr)
        return 1
    new_text = with_credentials_file(text, credentials)
    expected = {**old, "uplink": {**old.get("uplink", {}), "credentials_file": credentials}}
    try:
        same = tomllib.loads(new_text) == expected
    except tomllib.TOMLDecodeError:
        same = False
    if not same:
        print(f"install: {config}: uplink.credentials_file could not be set in place (dotted "
              f"keys?): set uplink.credentials_file = {json.dumps(credentials)} yourself",
              file=sys.stderr)
        return 1
    write_atomically(config, new_text, backup=False)
    print(f"install: {config}: uplink.credentials_file = {json.dumps(credentials)}")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "check":
        return check(Path(argv[1]), argv[2])
    if len(argv) == 3 and argv[0] == "name-in-config":
        return name_in_config(Path(argv[1]), argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
