"""Load and validate a technician's terminal config (one TOML file per terminal).

Every problem is collected before anything is reported, so a technician on a car
roof fixes the whole file in one pass; each names the file, the dotted key, what
was expected and what was found. The schema comes from the settings dataclasses
(``liftwatch.agent.schema``); this module adds the cross-checks between keys and
the checks of the files a config refers to (profiles, credentials).

Remote changes (``config_set``) never touch the technician's file, which the shipped
unit keeps read-only: they live in an override file ``<data_dir>/remote.toml``
(:data:`OVERRIDE_NAME`) that :func:`load_config` merges over it. The override may
hold only remotely changeable keys; the merged config goes through the same checks
as the file (ranges included), and the detection pipeline the agent would run is
built once as the last check (:func:`_probe`). An override that fails any of that is
not applied: the config is the technician's file alone and ``override_issues`` says
why (the agent then sets the file aside; ``config check`` warns).
"""

from __future__ import annotations

import copy
import difflib
import errno
import importlib
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liftwatch.agent import plausibility
from liftwatch.agent.credentials import read_credentials, tls_problems
from liftwatch.agent.profiles import (
    NAME_RE,
    PlatformProfile,
    ProfileError,
    find_profile,
    load_profile,
    search_dirs,
)
from liftwatch.agent.reconnect import parse_address
from liftwatch.agent.schema import (
    INPUTS_SECTION,
    SECTIONS,
    WIRING,
    FieldSpec,
    article,
    coerce,
    field_specs,
    in_bounds,
    remote_keys,
    secret_keys,
    section_keys,
    show,
)
from liftwatch.agent.settings import (
    LIFT_ID_RE,
    TOPIC_PREFIX_RE,
    TerminalSettings,
    UplinkSettings,
)
from liftwatch.buffer.settings import StorageSettings
from liftwatch.drivers.settings import (
    INPUT_NAMES,
    AccelSettings,
    ControllerSettings,
    InputsSettings,
    InputWiring,
)
from liftwatch.signal.settings import DetectionParams, LiftParams

__all__ = ["ConfigError", "ConfigIssue", "TerminalConfig", "find_profile", "load_config",
           "load_credentials", "remote_keys", "validate_dict", "OVERRIDE_NAME",
           "override_path", "load_with_override", "setting_changes", "tracked_settings",
           "deep_merge", "flatten", "nest", "dump_override", "weakened_settings"]

REDACTED = "***"
#: Keys holding file paths: a relative path is relative to the config file's folder.
PATH_KEYS = frozenset({"uplink.ca_file", "uplink.cert_file", "uplink.key_file",
                       "uplink.credentials_file", "storage.data_dir"})
#: Sections a terminal config cannot do without although none of their keys is required
#: alone, and what they hold: an absent one is named, not its keys' defaults (an absent
#: [terminal] or [uplink] is already named by its one required key).
REQUIRED_SECTIONS = {"lift": "the landings and their heights"}
#: 7-bit addresses each accelerometer chip can answer on (its address pin).
CHIP_ADDRESSES = {"adxl345": (0x53, 0x1D), "lis3dh": (0x18, 0x19)}
ROTATION_TOL = 0.02
#: the remote-change override file, in the data directory (the service's writable state)
OVERRIDE_NAME = "remote.toml"
#: an override holds a few dozen keys at most: anything much larger is not one
MAX_OVERRIDE_BYTES = 64 * 1024
OVERRIDE_HEADER = ("# Remote changes (config_set) over the technician's config file, written by\n"
                   "# the liftwatch agent. Only keys marked remote in REFERENCE.md may appear.\n"
                   "# Delete this file (and restart or send SIGHUP) to return to the file's "
                   "values.\n")
PLAINTEXT_WARNING = ("uplink.tls = false: messages, and any username and password, go to "
                     "the broker unencrypted")


def show_ident(value: str, limit: int = 40) -> str:
    """An identity value for an error line: control characters (a NUL) escaped, a long
    one cut (a 70,000-character lift_id must not become a 70,000-character message)."""
    shown = show(value[:limit]).encode("unicode_escape").decode("ascii").replace("\\\\", "\\")
    return shown if len(value) <= limit else f"{shown}… ({len(value)} characters)"


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file: where it is, what was expected, what was found."""

    file: str
    key: str
    expected: str
    found: str
    line: int | None = None
    hint: str = ""

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "")
        if self.key:
            where += f": {self.key}"
        text = f"{where}: expected {self.expected}, found {self.found}"
        return f"{text} ({self.hint})" if self.hint else text


class ConfigError(Exception):
    """A config that cannot be used; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


@dataclass
class TerminalConfig:
    """A validated terminal config: one settings object per section (docs/interfaces.md)."""

    path: Path
    terminal: TerminalSettings
    lift: LiftParams
    inputs: dict[str, InputWiring]
    inputs_settings: InputsSettings
    accel: AccelSettings
    controller: ControllerSettings
    register_map_path: Path | None
    detection: DetectionParams
    uplink: UplinkSettings
    platform: PlatformProfile
    storage: StorageSettings
    raw: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    #: where remote changes are read from (``<data_dir>/remote.toml``)
    override_path: Path | None = None
    #: the remote changes in force: dotted key -> (the file's value, the remote value)
    override: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    #: why an override file present was not applied (empty when none was refused)
    override_issues: list[ConfigIssue] = field(default_factory=list)

    def redacted(self) -> dict[str, Any]:
        """``raw`` with every secret value replaced by "***": safe to log or send."""
        return redact(self.raw)


def redact(raw: dict[str, Any]) -> dict[str, Any]:
    """A copy of an effective config dict with secret (and password) values hidden."""
    out = copy.deepcopy(raw)
    secrets = secret_keys()

    def walk(table: dict[str, Any], prefix: str) -> None:
        for key, value in table.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, dotted + ".")
            elif (dotted in secrets or "password" in key.lower()) and value not in ("", None):
                table[key] = REDACTED

    walk(out, "")
    return out


# --------------------------------------------------------------------------- checking


class _Checker:
    """Collects the issues of one config dict and the values it would build."""

    def __init__(self, path: Path, label: str) -> None:
        self.path = path
        self.label = label
        self.base = path.resolve().parent
        self.issues: list[ConfigIssue] = []
        self.bad: set[str] = set()  # keys already reported: cross-checks skip them
        self.values: dict[str, dict[str, Any]] = {}
        self.wiring: dict[str, dict[str, Any]] = {}
        self.register_map_path: Path | None = None
        self.platform: PlatformProfile | None = None
        self.warnings: list[str] = []

    def add(self, key: str, expected: str, found: str, hint: str = "",
            line: int | None = None) -> None:
        self.issues.append(ConfigIssue(self.label, key, expected, found, line, hint))
        self.bad.add(key.split("[")[0])

    def ok(self, *keys: str) -> bool:
        return not any(k in self.bad for k in keys)

    # ---- structure and types

    def run(self, data: dict[str, Any]) -> None:
        for key, value in data.items():
            if key not in SECTIONS:
                self._unknown_section(key, value)
        for section, cls in SECTIONS.items():
            if section in REQUIRED_SECTIONS and section not in data:
                self._missing_section(section, field_specs(cls))
                continue
            table = data.get(section, {})
            if not isinstance(table, dict):
                self.add(section, f"a table [{section}]", show(table))
                table = {}
            extra = set(INPUT_NAMES) if section == INPUTS_SECTION else set()
            self.values[section] = self._table(section, field_specs(cls), table, extra)
            if section == INPUTS_SECTION:
                self._inputs(table)
        self._cross_checks()

    def _missing_section(self, section: str, specs: list[FieldSpec]) -> None:
        """One issue naming the absent section, instead of one per key it should hold
        (or, for [lift], a puzzling "landings: found []"); its keys are then skipped."""
        self.add(f"[{section}]", f"a section [{section}] ({REQUIRED_SECTIONS[section]})",
                 "none: the section is missing from the file")
        self.bad.update(f"{section}.{spec.name}" for spec in specs)
        self.values[section] = {spec.name: spec.default for spec in specs}

    def _unknown_section(self, key: str, value: Any) -> None:
        hint = _belongs_in(key) or _did_you_mean(key, list(SECTIONS))
        self.add(key, "one of the sections " + ", ".join(f"[{s}]" for s in SECTIONS),
                 f"unknown {'section' if isinstance(value, dict) else 'top-level key'} "
                 f"{key!r}", hint)

    def _table(self, prefix: str, specs: list[FieldSpec], table: dict[str, Any],
               extra: set[str]) -> dict[str, Any]:
        known = {s.name for s in specs}
        for key in table:
            if key not in known and key not in extra:
                hint = _belongs_in(key) or (INPUT_MEANT.get(key, "") if extra else "") \
                    or _did_you_mean(key, sorted(known | extra))
                self.add(f"{prefix}.{key}", f"a key of [{prefix}]", "an unknown key", hint)
        values: dict[str, Any] = {}
        for spec in specs:
            key = f"{prefix}.{spec.name}"
            if spec.name not in table:
                if spec.required:
                    self.add(key, f"{article(spec.type)} (a required key)", "nothing")
                values[spec.name] = spec.default
                continue
            value, problems = coerce(table[spec.name], spec.type, key)
            for k, expected, found in problems:
                if spec.choices is not None or spec.min is not None or spec.gt is not None \
                        or spec.max is not None:
                    expected = spec.expected()
                self.add(k, expected, show(found))
            if not problems and not in_bounds(spec, value):
                self.add(key, spec.expected(), show(table[spec.name]))
            if problems or key in self.bad:
                value = spec.default
            if key in PATH_KEYS and value:
                value = str(self.base / os.path.expanduser(value))
            values[spec.name] = value
        return values

    def _inputs(self, table: dict[str, Any]) -> None:
        specs = field_specs(WIRING)
        for name in INPUT_NAMES:
            if name not in table:
                continue
            wiring = table[name]
            if not isinstance(wiring, dict):
                self.add(f"inputs.{name}", f"a table [inputs.{name}] with at least pin",
                         show(wiring))
                continue
            self.wiring[name] = self._table(f"inputs.{name}", specs, wiring, set())

    # ---- cross-checks between keys and with other files

    def _cross_checks(self) -> None:
        self._terminal()
        self._lift()
        self._pins()
        self._accel()
        self._controller()
        self._detection()
        self._uplink()
        if not self.values["storage"]["data_dir"] and self.ok("storage.data_dir"):
            self.add("storage.data_dir", "a directory", '""')
        if not self.values["controller"]["enabled"] and not self.wiring:
            self.warnings.append("no lift data source: controller.enabled = false and no "
                                 "[inputs.NAME] table: only the accelerometer is read")
        for f in plausibility.judge(self.values, self.ok):  # the lift as a whole
            if f.error:
                self.add(f.key, f.expected, f.found, f.fix)
            else:
                self.warnings.append(str(f))

    def _terminal(self) -> None:
        lift_id = self.values["terminal"]["lift_id"]
        if self.ok("terminal.lift_id") and not LIFT_ID_RE.fullmatch(lift_id):
            self.add("terminal.lift_id", "a registration code without spaces, /, + or #: "
                     "1 to 64 of A-Z a-z 0-9 . _ - (it is part of every MQTT topic)",
                     show_ident(lift_id))

    def _lift(self) -> None:
        lift = self.values["lift"]
        labels, heights = lift["landings"], lift["landing_heights_m"]
        if self.ok("lift.landings"):
            if len(labels) < 2:
                self.add("lift.landings", "at least 2 landing labels, bottom to top",
                         show(labels))
            seen: dict[str, int] = {}
            for i, label in enumerate(labels):
                if not label.strip():
                    self.add(f"lift.landings[{i}]", "a floor label", show(label))
                elif label in seen:
                    self.add(f"lift.landings[{i}]", "a label no other landing has",
                             f"{show(label)} (also lift.landings[{seen[label]}])")
                seen.setdefault(label, i)
        if not self.ok("lift.landing_heights_m"):
            return
        if self.ok("lift.landings") and len(heights) != len(labels):
            self.add("lift.landing_heights_m",
                     f"{len(labels)} heights, one per label of lift.landings",
                     f"{len(heights)}: {show(heights)}")
        if heights and heights[0] != 0:
            self.add("lift.landing_heights_m[0]",
                     "0 (heights are measured from the lowest landing's sill)", show(heights[0]))
        for i in range(1, len(heights)):
            if not heights[i] > heights[i - 1]:
                self.add(f"lift.landing_heights_m[{i}]",
                         f"a height > {show(heights[i - 1])} (strictly increasing, bottom "
                         "to top)", show(heights[i]))

    def _pins(self) -> None:
        used: dict[str, str] = {}
        for name, wiring in self.wiring.items():
            key = f"inputs.{name}.pin"
            if not self.ok(key):
                continue
            pin = wiring["pin"]
            if not pin.strip():
                self.add(key, 'a pin name such as "D17"', show(pin))
            elif pin in used:
                self.add(key, "a pin no other input uses", f"{show(pin)} (also {used[pin]})")
            else:
                used[pin] = key

    def _accel(self) -> None:
        accel = self.values["accel"]
        chip, address = accel["chip"], accel["address"]
        if chip in CHIP_ADDRESSES and self.ok("accel.chip", "accel.address") \
                and address not in CHIP_ADDRESSES[chip]:
            self.add("accel.address",
                     " or ".join(f"0x{a:02X}" for a in CHIP_ADDRESSES[chip]) + f" for {chip}",
                     f"0x{address:02X}")
        if chip == "lis3dh" and self.ok("accel.chip", "accel.rate_hz") \
                and accel["rate_hz"] == 800:
            # the LIS3DH has no 800 Hz rate (it would run at 1344 Hz), and the analysis
            # chain needs a multiple of its 200 Hz analysis rate
            self.add("accel.rate_hz", "400 or 1600 for lis3dh (it has no 800 Hz rate)", "800")
        if self.ok("accel.rotation"):
            problem = _rotation_problem(accel["rotation"])
            if problem:
                self.add("accel.rotation", problem, show(accel["rotation"]))

    def _controller(self) -> None:
        ctl = self.values["controller"]
        if not ctl["enabled"]:
            return
        if ctl["transport"] == "tcp" and not ctl["host"] and self.ok("controller.host"):
            self.add("controller.host", 'a host name or address (required when transport '
                     '= "tcp")', show(ctl["host"]))
        if ctl["transport"] == "rtu" and not ctl["port"] and self.ok("controller.port"):
            self.add("controller.port", 'a serial device such as "/dev/ttyUSB0" (required '
                     'when transport = "rtu")', show(ctl["port"]))
        if self.ok("controller.register_map"):
            self.register_map_path = self._profile("controllers", "controller.register_map",
                                                   ctl["register_map"])
        if self.register_map_path is not None:
            for problem in _register_map_problems(self.register_map_path):
                self.add("controller.register_map", "a valid register map",
                         f"{self.register_map_path}: {problem}")

    def _detection(self) -> None:
        d = self.values["detection"]
        pairs = [  # (smaller, larger, strict)
            ("battery_low_pct", "battery_clear_pct", True),
            ("gravity_min_g", "gravity_max_g", True),
            ("anomaly_hits", "anomaly_window", False),
            ("alarm_press_s", "alarm_hold_bypass_s", False),
        ]
        for low, high, strict in pairs:
            if self.ok(f"detection.{low}", f"detection.{high}") and (
                    d[high] <= d[low] if strict else d[high] < d[low]):
                self.add(f"detection.{high}",
                         f"a value {'>' if strict else '>='} detection.{low} ({show(d[low])})",
                         show(d[high]))

    def _uplink(self) -> None:
        up = self.values["uplink"]
        if self.ok("uplink.broker") and not up["broker"].strip():
            self.add("uplink.broker", "a broker host name or address", show(up["broker"]))
        prefix = up["topic_prefix"]
        if self.ok("uplink.topic_prefix") and not TOPIC_PREFIX_RE.fullmatch(prefix):
            self.add("uplink.topic_prefix", "topic levels without spaces, + or #, no empty "
                     "level: 1 to 4 levels of 1 to 32 of A-Z a-z 0-9 . _ -, joined by /",
                     show_ident(prefix))
        if self.ok("uplink.reconnect_min_s", "uplink.reconnect_max_s") \
                and up["reconnect_min_s"] > up["reconnect_max_s"]:
            self.add("uplink.reconnect_max_s",
                     f"a value >= uplink.reconnect_min_s ({show(up['reconnect_min_s'])})",
                     show(up["reconnect_max_s"]))
        if self.ok("uplink.brokers"):
            for i, text in enumerate(up["brokers"]):
                try:
                    parse_address(text, up["port"])
                except ValueError as exc:
                    self.add(f"uplink.brokers[{i}]", "\"host\" or \"host:port\"", show(text),
                             str(exc))
        if bool(up["cert_file"]) != bool(up["key_file"]):
            missing = "uplink.key_file" if up["cert_file"] else "uplink.cert_file"
            self.add(missing, "a file path (mutual TLS needs both cert_file and key_file)",
                     '""')
        if self.ok("uplink.platform_profile"):
            path = self._profile("platforms", "uplink.platform_profile", up["platform_profile"])
            if path is not None:
                try:
                    self.platform = load_profile(path)
                except ProfileError as exc:
                    for problem in exc.problems:
                        self.add("uplink.platform_profile", "a valid platform profile",
                                 f"{path}: {problem}")
        if up["credentials_file"] and self.ok("uplink.credentials_file"):
            _, problems = read_credentials(Path(up["credentials_file"]))
            for expected, found in problems:
                self.add("uplink.credentials_file", expected, found)
        for key, expected, found in tls_problems(up):  # unreadable here, or the key open
            if self.ok(key):
                self.add(key, expected, found)
        if not up["tls"]:
            self.warnings.append(PLAINTEXT_WARNING)

    def _profile(self, kind: str, key: str, name: str) -> Path | None:
        if not NAME_RE.match(name):
            self.add(key, "a profile name (letters, digits, _ and -; not a path)", show(name))
            return None
        path = find_profile(kind, name, self.path)  # type: ignore[arg-type]
        if path is None:
            dirs = ", ".join(str(d / kind) for d in search_dirs(self.path))
            self.add(key, f"the name of a file {kind}/NAME.toml", f"no {kind}/{name}.toml",
                     f"searched {dirs}")
        return path


def _belongs_in(key: str) -> str:
    """A key written in the wrong section (or above every section header)."""
    owners = [f"[{s}]" for s in SECTIONS if key in section_keys(s)]
    return f"{key} belongs in {' or '.join(owners)}" if owners else ""


#: [inputs.NAME] written as the contact is called in a wiring diagram: by spelling alone
#: "door" is nearest door_lock, which is another circuit (the lock, not the door)
INPUT_MEANT = {
    "door": "did you mean door_closed? door_lock is another circuit, the lock's",
    "doors": "did you mean door_closed?", "door_contact": "did you mean door_closed?",
    "lock": "did you mean door_lock?", "alarm": "did you mean alarm_button?",
    "zone": "did you mean zone_up and zone_down? one input each",
    "safety": "did you mean safety_ok?", "mains": "did you mean mains_ok?",
    "power": "did you mean mains_ok?", "person": "did you mean presence?",
}


def _did_you_mean(key: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    return f"did you mean {close[0]}?" if close else ""


def _rotation_problem(rot: list[list[float]]) -> str | None:
    if len(rot) != 3 or any(len(row) != 3 for row in rot):
        return "a 3×3 matrix: three rows of three numbers"
    for i in range(3):
        for j in range(3):
            dot = sum(rot[i][k] * rot[j][k] for k in range(3))
            if abs(dot - (1.0 if i == j else 0.0)) > ROTATION_TOL:
                return "a rotation matrix (orthonormal rows)"
    det = (rot[0][0] * (rot[1][1] * rot[2][2] - rot[1][2] * rot[2][1])
           - rot[0][1] * (rot[1][0] * rot[2][2] - rot[1][2] * rot[2][0])
           + rot[0][2] * (rot[1][0] * rot[2][1] - rot[1][1] * rot[2][0]))
    if det < 0:
        return "a rotation matrix (determinant +1, not a mirror image)"
    return None


def _register_map_problems(path: Path) -> list[str]:
    """Problems the register-map loader finds, when that driver module is installed."""
    try:
        registermap = importlib.import_module("liftwatch.drivers.registermap")
    except ModuleNotFoundError as exc:
        if exc.name != "liftwatch.drivers.registermap":
            raise
        return []
    try:
        registermap.load_register_map(path)
    except registermap.RegisterMapError as exc:
        return [str(p) for p in exc.problems] or [str(exc)]
    except Exception as exc:  # a loader bug must not crash config check
        return [f"the register map could not be read: {type(exc).__name__}: {exc}"]
    return []


def _checked(data: dict[str, Any], path: Path, label: str) -> _Checker:
    checker = _Checker(path, label)
    checker.run(data)
    return checker


def validate_dict(data: dict[str, Any], path: str | os.PathLike[str]) -> list[ConfigIssue]:
    """Every issue of a parsed config as if it were the file ``path`` (which need not be
    written yet): lets config_set check a patched config before writing it."""
    return _checked(data, Path(path), str(path)).issues


def _syntax_issue(label: str, exc: tomllib.TOMLDecodeError) -> ConfigIssue:
    text = str(exc)
    m = re.search(r"\s*\(at line (\d+), column (\d+)\)", text)
    if m:
        message = text[:m.start()] + text[m.end():]
        return ConfigIssue(label, "", "valid TOML",
                           f"{message[:1].lower()}{message[1:]} at column {m.group(2)}",
                           line=int(m.group(1)))
    return ConfigIssue(label, "", "valid TOML", text)


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a config file; raises ConfigError naming the file (and line) on failure."""
    label = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue(label, "", "a readable config file",
                                       exc.strerror or str(exc))]) from exc
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        found = f"byte 0x{exc.object[exc.start]:02x}"
        raise ConfigError([ConfigIssue(label, "", "UTF-8 text", found, line=line)]) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_issue(label, exc)]) from exc
    except ValueError as exc:  # an integer of over 4300 digits: Python refuses to read it
        raise ConfigError([ConfigIssue(label, "", "valid TOML", str(exc)[:120])]) from exc


def _build(path: str | os.PathLike[str], checker: _Checker) -> TerminalConfig:
    """The settings objects of a checked config; ConfigError if they cannot be built."""
    v = checker.values
    try:
        inputs = {name: InputWiring(**w) for name, w in checker.wiring.items()}
        built = {section: cls(**v[section]) for section, cls in SECTIONS.items()}
    except (TypeError, ValueError) as exc:  # a settings class refusing values it declared
        raise ConfigError([ConfigIssue(checker.label, "", "values the settings accept",
                                       str(exc))]) from exc
    raw: dict[str, Any] = copy.deepcopy(v)  # not shared with the settings objects' lists
    raw[INPUTS_SECTION].update(copy.deepcopy(checker.wiring))
    assert checker.platform is not None  # a missing profile is an issue above
    cfg = TerminalConfig(
        path=Path(path), terminal=built["terminal"], lift=built["lift"], inputs=inputs,
        inputs_settings=built["inputs"], accel=built["accel"],
        controller=built["controller"],
        register_map_path=checker.register_map_path, detection=built["detection"],
        uplink=built["uplink"], platform=checker.platform, storage=built["storage"],
        raw=raw, warnings=checker.warnings)
    problem = _probe(cfg)
    if problem:
        raise ConfigError([ConfigIssue(checker.label, "[detection]",
                                       "settings the detection pipeline can be built with",
                                       problem)])
    return cfg


def _probe(cfg: TerminalConfig) -> str | None:
    """Build the detection pipeline the agent would run with these settings, once, and
    say why it cannot be built: ``config check`` and ``config_set`` then refuse what
    the agent could not start with, whatever the ranges let through."""
    from liftwatch.signal.pipeline import Pipeline

    accel = cfg.accel.chip != "none"
    try:
        Pipeline(cfg.lift, cfg.detection, accel_fs=float(cfg.accel.rate_hz) if accel else None,
                 lsb_per_g=256.0 if accel else None, controller_present=cfg.controller.enabled,
                 rotation=cfg.accel.rotation if cfg.accel.orientation == "fixed" else None)
    except Exception as exc:  # whatever it is, the agent would crash on it at start
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return None


def override_path(data_dir: str | os.PathLike[str]) -> Path:
    """The remote-change override file of a data directory."""
    return Path(data_dir) / OVERRIDE_NAME


def _data_dir(values: dict[str, dict[str, Any]],
              data_dir: str | os.PathLike[str] | None) -> Path:
    return Path(data_dir) if data_dir is not None else Path(values["storage"]["data_dir"])


def read_override(path: Path) -> dict[str, Any] | None:
    """The parsed override file, None when there is none. A symbolic link is refused
    (the data directory is the service's: nothing there is followed). ConfigError."""
    label = str(path)
    try:
        # O_NONBLOCK: a FIFO planted there must not hang the start
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        why = "a symbolic link (refused)" if exc.errno == errno.ELOOP else \
            (exc.strerror or str(exc))
        raise ConfigError([ConfigIssue(label, "", "a readable override file", why)]) from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError([ConfigIssue(label, "", "a regular file", "something else")])
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(MAX_OVERRIDE_BYTES + 1)
        except OSError as exc:
            raise ConfigError([ConfigIssue(label, "", "a readable override file",
                                           exc.strerror or str(exc))]) from exc
    if len(data) > MAX_OVERRIDE_BYTES:
        raise ConfigError([ConfigIssue(label, "", f"at most {MAX_OVERRIDE_BYTES} bytes",
                                       "a larger file")])
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigIssue(label, "", "UTF-8 text", "other bytes")]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_issue(label, exc)]) from exc
    except ValueError as exc:  # an integer of over 4300 digits
        raise ConfigError([ConfigIssue(label, "", "valid TOML", str(exc)[:120])]) from exc


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"detection": {"x": 1}} -> {"detection.x": 1}."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`flatten` (for remote keys: section.key)."""
    out: dict[str, Any] = {}
    for dotted, v in flat.items():
        table = out
        *parts, last = dotted.split(".")
        for p in parts:
            table = table.setdefault(p, {})
        table[last] = v
    return out


def _override_structure(data: dict[str, Any], label: str) -> list[ConfigIssue]:
    """Only remotely changeable keys, each a section.key, may be in an override."""
    allowed = remote_keys()
    issues = []
    for section, table in data.items():
        if not isinstance(table, dict):
            issues.append(ConfigIssue(label, str(section), "a table of remote keys",
                                      show(table)))
            continue
        for key, value in table.items():
            dotted = f"{section}.{key}"
            if dotted not in allowed:
                issues.append(ConfigIssue(
                    label, dotted, "a key the platform may change (remote in REFERENCE.md)",
                    "a table" if isinstance(value, dict) else "a key only the technician's "
                    "config file may set"))
    return issues


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _with_override(path: str | os.PathLike[str], data: dict[str, Any], base: TerminalConfig,
                   override: dict[str, Any], opath: Path) -> TerminalConfig:
    """``base`` (the file alone) with ``override`` merged over it; ConfigError naming the
    override when it is not acceptable."""
    label = f"{opath} (over {path})"
    issues = _override_structure(override, label)
    if issues:
        raise ConfigError(issues)
    checker = _checked(deep_merge(data, override), Path(path), label)
    if checker.issues:
        raise ConfigError(checker.issues)
    cfg = _build(path, checker)
    cfg.override_path = opath
    for dotted in flatten(override):
        section, key = dotted.split(".", 1)
        cfg.override[dotted] = (base.raw[section][key], cfg.raw[section][key])
    return cfg


def load_config(path: str | os.PathLike[str], *,
                data_dir: str | os.PathLike[str] | None = None,
                with_override: bool = True) -> TerminalConfig:
    """Read, validate and build a terminal config; raises ConfigError with every issue.

    The technician's file must be valid on its own. Then the remote changes of
    ``<data_dir>/remote.toml`` (``data_dir``: the agent's ``--data-dir``, else the
    file's ``storage.data_dir``) are merged over it when they pass every check; when
    they do not, the file's config is returned with ``override_issues`` saying why."""
    data = read_toml(path)
    checker = _checked(data, Path(path), str(path))
    if checker.issues:
        raise ConfigError(checker.issues)
    base = _build(path, checker)
    if not with_override:
        return base
    opath = override_path(_data_dir(checker.values, data_dir))
    base.override_path = opath
    try:
        override = read_override(opath)
        if override is None:
            return base
        return _with_override(path, data, base, override, opath)
    except ConfigError as exc:
        base.override_issues = exc.issues
        return base


def load_with_override(path: str | os.PathLike[str], override: dict[str, Any], *,
                       data_dir: str | os.PathLike[str] | None = None) -> TerminalConfig:
    """The config the agent would run with ``override`` as its remote changes (config_set
    checks a new override with it before writing it): the same checks as
    :func:`load_config`, but an unacceptable override raises ConfigError."""
    data = read_toml(path)
    checker = _checked(data, Path(path), str(path))
    if checker.issues:
        raise ConfigError(checker.issues)
    base = _build(path, checker)
    opath = override_path(_data_dir(checker.values, data_dir))
    base.override_path = opath
    if not override:
        return base
    return _with_override(path, data, base, override, opath)


def dump_override(override: dict[str, Any]) -> bytes:
    """The text of an override file holding ``override`` ({section: {key: value}})."""
    from liftwatch.agent.tomltext import dump_toml

    return (OVERRIDE_HEADER + "\n" + dump_toml(override)).encode("utf-8")


def tracked_settings(cfg: TerminalConfig) -> dict[str, Any]:
    """The settings whose changes are reported (``detection_changed``): every key of
    [lift] and [detection] (what the pipeline decides with) and the remote keys of
    [uplink] (how often the platform hears from the terminal); dotted key -> value."""
    out = {f"lift.{k}": v for k, v in cfg.raw["lift"].items()}
    out.update({f"detection.{k}": v for k, v in cfg.raw["detection"].items()})
    out.update({k: cfg.raw["uplink"][k.split(".", 1)[1]] for k in sorted(remote_keys())
                if k.startswith("uplink.")})
    return out


def _weakens(dotted: str, old: Any, new: Any) -> bool:
    section, key = dotted.split(".", 1)
    spec = next((s for s in field_specs(SECTIONS[section]) if s.name == key), None)
    if spec is None or spec.weakens is None or not isinstance(old, int | float) \
            or not isinstance(new, int | float) or isinstance(old, bool):
        return False
    return new > old if spec.weakens == "up" else new < old


def setting_changes(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """Each tracked setting that differs between two :func:`tracked_settings`, as
    {"key", "old", "new", "weakens"}; ``weakens``: the change makes detection or
    reporting weaker (the field's ``weakens`` direction)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a != b:
            out.append({"key": key, "old": a, "new": b, "weakens": _weakens(key, a, b)})
    return out


def weakened_settings(cfg: TerminalConfig) -> list[str]:
    """Tracked settings set weaker than their defaults (for ``health``)."""
    out = []
    for section in ("detection", "uplink"):
        for spec in field_specs(SECTIONS[section]):
            if spec.weakens and _weakens(f"{section}.{spec.name}", spec.default,
                                         cfg.raw[section][spec.name]):
                out.append(f"{section}.{spec.name}")
    return out


def load_credentials(path: str | os.PathLike[str]) -> tuple[str, str]:
    """(username, password) of a credentials file, checked again at load time (its mode
    may have changed since the config was validated). Raises ConfigError."""
    data, problems = read_credentials(Path(path))
    if data is None:
        raise ConfigError([ConfigIssue(str(path), "", e, f) for e, f in problems])
    return data["username"], data["password"]
