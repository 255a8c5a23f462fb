"""Platform code profiles and the search path of every shared profile file.

City platforms number the same events differently (events.md): the numbering is
configuration, kept in ``firmware_config/platforms/NAME.toml`` so a new city needs
a file, not a release. Register maps (``controllers/``) are found the same way.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from liftwatch.signal.events import CATALOGUE

#: Service modes of trace-format.md by number; profile files name them.
MODE_NAMES = ("out_of_service", "normal", "inspection", "fire_return", "firefighter",
              "emergency_power", "earthquake", "unknown")

KINDS = ("controllers", "platforms")
ENV_VAR = "LIFTWATCH_PROFILES"
#: A profile is named, never given as a path: no separators, no "..".
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
PCODE_MAX = 65535

#: The repository's firmware_config/ (editable install; a wheel ships its controllers/
#: and platforms/ there too, see pyproject.toml) and the system locations.
REPO_PROFILES = Path(__file__).resolve().parents[1] / "firmware_config"
SYSTEM_DIRS = (Path("/etc/liftwatch"), Path("/usr/share/liftwatch/firmware_config"))


def search_dirs(config_path: str | os.PathLike[str] | None) -> list[Path]:
    """Folders searched for ``KIND/NAME.toml``, first match wins (see firmware_config/README.md).

    $LIFTWATCH_PROFILES (colon-separated), then the config file's folder and its parent,
    then the repository's firmware_config/, /etc/liftwatch, /usr/share/liftwatch/firmware_config.
    """
    dirs = [Path(p) for p in os.environ.get(ENV_VAR, "").split(":") if p.strip()]
    if config_path is not None:
        folder = Path(config_path).resolve().parent
        dirs += [folder, folder.parent]
    dirs += [REPO_PROFILES, *SYSTEM_DIRS]
    seen: set[Path] = set()
    out = []
    for d in dirs:
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def find_profile(kind: Literal["controllers", "platforms"], name: str,
                 config_path: str | os.PathLike[str] | None) -> Path | None:
    """The file ``KIND/NAME.toml`` in the first search folder that has it, else None."""
    if kind not in KINDS:
        raise ValueError(f"profile kind must be one of {KINDS}, not {kind!r}")
    if not NAME_RE.match(name):
        return None
    for d in search_dirs(config_path):
        candidate = d / kind / f"{name}.toml"
        if candidate.is_file():
            return candidate
    return None


class ProfileError(Exception):
    """A platform profile that cannot be used; ``problems`` lists every reason."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(f"{path}: {p}" for p in problems))


@dataclass(frozen=True)
class PlatformProfile:
    """How one platform numbers the agent's symbolic event codes."""

    name: str
    description: str = ""
    codes: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    mode_codes: Mapping[int, int] = field(default_factory=lambda: MappingProxyType({}))

    def pcode(self, code: str) -> int | None:
        """The platform's number for a symbolic code; None: send the symbolic code only."""
        return self.codes.get(code)

    def mode_pcode(self, mode: int) -> int | None:
        """The number of a mode_change to ``mode`` (trace-format.md): per mode when the
        profile has [mode_codes] (Chongqing: 40-47), else its single mode_change code."""
        if self.mode_codes:
            return self.mode_codes.get(mode)
        return self.codes.get("mode_change")


def _pcode_problem(where: str, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= PCODE_MAX:
        return f"{where}: expected an integer between 0 and {PCODE_MAX}, found {value!r}"
    return None


def _unknown(where: str, key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{where}: unknown key {key!r}{hint}"


def parse_profile(name: str, data: dict[str, Any], path: Path) -> PlatformProfile:
    """Validate a parsed profile table; raises ProfileError with every problem."""
    problems: list[str] = []
    for key in data:
        if key not in ("description", "codes", "mode_codes"):
            problems.append(_unknown("top level", key, ["description", "codes", "mode_codes"]))
    description = data.get("description", "")
    if not isinstance(description, str):
        problems.append(f"description: expected a string, found {description!r}")
    tables: dict[str, dict[str, Any]] = {}
    for table in ("codes", "mode_codes"):
        value = data.get(table, {})
        if not isinstance(value, dict):
            problems.append(f"{table}: expected a table [{table}], found {value!r}")
            value = {}
        tables[table] = value
    codes: dict[str, int] = {}
    for code, value in tables["codes"].items():
        if code not in CATALOGUE:
            problems.append(_unknown("codes", code, list(CATALOGUE)))
        elif (p := _pcode_problem(f"codes.{code}", value)) is not None:
            problems.append(p)
        else:
            codes[code] = value
    modes: dict[int, int] = {}
    for mode_name, value in tables["mode_codes"].items():
        if mode_name not in MODE_NAMES:
            problems.append(_unknown("mode_codes", mode_name, list(MODE_NAMES)))
        elif (p := _pcode_problem(f"mode_codes.{mode_name}", value)) is not None:
            problems.append(p)
        else:
            modes[MODE_NAMES.index(mode_name)] = value
    if problems:
        raise ProfileError(path, problems)
    return PlatformProfile(name=name, description=description or "",
                           codes=MappingProxyType(codes), mode_codes=MappingProxyType(modes))


def load_profile(path: str | os.PathLike[str]) -> PlatformProfile:
    """Read ``platforms/NAME.toml``; the profile's name is the file's stem."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise ProfileError(path, [f"cannot read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ProfileError(path, [f"not UTF-8 text: {exc.reason}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(path, [f"TOML syntax error: {exc}"]) from exc
    return parse_profile(path.stem, data, path)
