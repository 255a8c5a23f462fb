"""The technician's TOML schema, built from the settings dataclasses.

The dataclasses (and their field metadata) are the one source of truth: this module
only reads them, so a new setting appears in validation, ``config show`` and
REFERENCE.md without being restated anywhere.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import typing
from dataclasses import MISSING, dataclass, fields
from typing import Any

from liftwatch.agent.settings import TerminalSettings, UplinkSettings
from liftwatch.buffer.settings import StorageSettings
from liftwatch.drivers.settings import (
    INPUT_NAMES,
    AccelSettings,
    ControllerSettings,
    InputsSettings,
    InputWiring,
)
from liftwatch.signal.settings import DetectionParams, LiftParams

#: TOML section -> settings dataclass, in file order. ``inputs`` also holds one
#: ``[inputs.NAME]`` table (``InputWiring``) per name of ``INPUT_NAMES``.
SECTIONS: dict[str, type] = {
    "terminal": TerminalSettings,
    "lift": LiftParams,
    "inputs": InputsSettings,
    "accel": AccelSettings,
    "controller": ControllerSettings,
    "detection": DetectionParams,
    "uplink": UplinkSettings,
    "storage": StorageSettings,
}
WIRING = InputWiring
INPUTS_SECTION = "inputs"


@dataclass(frozen=True)
class FieldSpec:
    """One key of the schema, with what the reference and the validator need."""

    name: str
    type: Any
    required: bool
    default: Any
    doc: str
    unit: str
    min: float | None
    max: float | None
    gt: float | None
    choices: tuple[Any, ...] | None
    remote: bool
    secret: bool
    weakens: str | None = None
    why: str = ""

    @property
    def type_name(self) -> str:
        return type_name(self.type)

    def expected(self) -> str:
        """What a valid value looks like, in words ("a number > 0")."""
        if self.choices is not None:
            return "one of " + ", ".join(show(c) for c in self.choices)
        base = article(self.type)
        bounds = []
        if self.gt is not None:
            bounds.append(f"> {fmt_num(self.gt)}")
        if self.min is not None and self.max is not None:
            return f"{base} between {fmt_num(self.min)} and {fmt_num(self.max)}" + (
                f" and {bounds[0]}" if bounds else "")
        if self.min is not None:
            bounds.append(f">= {fmt_num(self.min)}")
        if self.max is not None:
            bounds.append(f"<= {fmt_num(self.max)}")
        return f"{base} {' and '.join(bounds)}".rstrip()


@functools.cache
def _specs(cls: type) -> tuple[FieldSpec, ...]:
    hints = typing.get_type_hints(cls)
    specs = []
    for f in fields(cls):
        md = f.metadata
        if f.default is not MISSING:
            default, required = f.default, False
        elif f.default_factory is not MISSING:
            default, required = f.default_factory(), False
        else:
            default, required = None, True
        choices = md.get("choices")
        specs.append(FieldSpec(
            name=f.name, type=hints[f.name], required=required, default=default,
            doc=md.get("doc", ""), unit=md.get("unit", ""), min=md.get("min"),
            max=md.get("max"), gt=md.get("gt"),
            choices=tuple(choices) if choices is not None else None,
            remote=bool(md.get("remote", False)), secret=bool(md.get("secret", False)),
            weakens=md.get("weakens"), why=md.get("why", ""),
        ))
    return tuple(specs)


def field_specs(cls: type) -> list[FieldSpec]:
    """The schema of one section, in declaration order. Cached (type hints are slow to
    resolve); defaults are copied so callers may keep or change them."""
    return [dataclasses.replace(s, default=copy.deepcopy(s.default)) if isinstance(
        s.default, list) else s for s in _specs(cls)]


def section_keys(section: str) -> list[str]:
    """Keys a section may hold (for did-you-mean); ``inputs`` also holds input names."""
    keys = [s.name for s in field_specs(SECTIONS[section])]
    if section == INPUTS_SECTION:
        keys += list(INPUT_NAMES)
    return keys


def type_name(tp: Any) -> str:
    """A technician's name for a Python type: "number", "list of strings"."""
    origin = typing.get_origin(tp)
    if origin is list:
        inner = type_name(typing.get_args(tp)[0])
        plural = {"list of": "lists of"}.get(inner[:7], "")
        return "list of " + (plural + inner[7:] if plural else inner + "s")
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(tp, str(tp))


def article(tp: Any) -> str:
    name = type_name(tp)
    if name.startswith("list"):
        return f"a {name}"
    return ("an " if name[0] in "aeiou" else "a ") + name


def fmt_num(x: float) -> str:
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def show(value: Any) -> str:
    """A value as the technician wrote it (TOML-like), for error messages and the reference."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, int):
        if abs(value) >= 10**18:  # unreadable; and str() of over 4300 digits is refused
            if value.bit_length() < 14_000:
                return f"an integer of {len(str(abs(value)))} digits"
            return "an integer of over 4000 digits"
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "a table"
    return f"{value} ({type(value).__name__})"


def coerce(value: Any, tp: Any, key: str) -> tuple[Any, list[tuple[str, str, Any]]]:
    """Check a TOML value against a field type; return it converted (int -> float for
    numbers) and a list of (key, expected, found) problems. bool is never a number."""
    origin = typing.get_origin(tp)
    if origin is list:
        if not isinstance(value, list):
            return value, [(key, article(tp), value)]
        (inner,) = typing.get_args(tp)
        out, problems = [], []
        for i, item in enumerate(value):
            v, p = coerce(item, inner, f"{key}[{i}]")
            out.append(v)
            problems += p
        if len(problems) > 1 and len({e for _, e, _ in problems}) == 1 \
                and typing.get_origin(inner) is None:
            # one mistake made for every item (landings = [1, 2, …] for ["1", "2", …]) is
            # one problem naming them all, not one line per landing
            where = ", ".join(k[len(key) + 1:-1] for k, _, _ in problems)
            found = [f for _, _, f in problems]
            quote = f' (in quotes: "{found[0]}", not {show(found[0])})' \
                if inner is str and not isinstance(found[0], list | dict) else ""
            return out, [(f"{key}[{where}]", f"{problems[0][1]} for each item{quote}", found)]
        return out, problems
    expected = None
    if tp is bool and not isinstance(value, bool):
        expected = "a boolean (true or false)"
    elif tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        expected = "an integer"
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            expected = "a number"
        else:
            try:
                value = float(value)
            except OverflowError:  # an integer of hundreds of digits
                expected = "a finite number"
            else:
                if not math.isfinite(value):
                    expected = "a finite number"
    elif tp is str and not isinstance(value, str):
        expected = "a string"
    elif tp not in (bool, int, float, str):
        raise TypeError(f"settings field {key} has a type the schema does not know: {tp}")
    return value, [] if expected is None else [(key, expected, value)]


def in_bounds(spec: FieldSpec, value: Any) -> bool:
    """Bounds and choices of the metadata (value already has the right type)."""
    if spec.choices is not None:
        return value in spec.choices
    if not isinstance(value, int | float):
        return True
    if spec.gt is not None and not value > spec.gt:
        return False
    if spec.min is not None and value < spec.min:
        return False
    return not (spec.max is not None and value > spec.max)


def _keys_where(flag: str) -> set[str]:
    """Dotted keys whose field metadata sets ``flag`` (remote, secret)."""
    keys = set()
    for section, cls in SECTIONS.items():
        keys |= {f"{section}.{s.name}" for s in field_specs(cls) if getattr(s, flag)}
    for name in INPUT_NAMES:
        keys |= {f"inputs.{name}.{s.name}" for s in field_specs(WIRING) if getattr(s, flag)}
    return keys


def remote_keys() -> set[str]:
    """Dotted keys the platform may change with config_set (metadata remote=True)."""
    return _keys_where("remote")


def secret_keys() -> set[str]:
    """Dotted keys whose values are never shown (metadata secret=True)."""
    return _keys_where("secret")
