"""Controller register maps: a TOML profile that says where each normalised ``ctl`` field lives.

A map is a *profile*, kept apart from the device instance (EdgeX device-modbus model):
the terminal config names the profile and gives the port and unit; the profile says
which table, address, data type and transform give ``mode``, ``run``, ``dir``, ``floor``,
``door``, ``zone``, ``speed``, ``safety``, ``lock``, ``overload`` and ``fault`` of
trace-format.md. The format is documented in firmware_config/controllers/README.md.

Three jobs, one source of truth so the agent and the simulator can never disagree:

- :func:`load_register_map` validates a file and names *every* problem at once
  (technicians fix a map in one round, not one error per run);
- :meth:`RegisterMap.read_plan` coalesces the fields into as few Modbus requests as the
  protocol limits and the configured gap allow (fewer frames on a slow RS-485 bus);
- :meth:`RegisterMap.decode` turns the answers into normalised fields, reporting bad
  values instead of raising (a controller sending nonsense must not stop the agent);
  :meth:`RegisterMap.encode` is its inverse for the simulator side.

Word and byte order are handled here with ``struct`` rather than pymodbus's
``convert_from_registers``: that helper knows word order only, while controllers in
the field also swap the bytes inside a register (BADC / DCBA layouts).
"""

from __future__ import annotations

import math
import struct
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Modbus tables by name and their read function codes.
TABLES: dict[str, int] = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
TABLE_NAMES: dict[int, str] = {v: k for k, v in TABLES.items()}
BIT_FUNCTIONS = (1, 2)

#: Register data types: (registers, struct code).
REGISTER_TYPES: dict[str, tuple[int, str]] = {
    "u16": (1, "H"), "s16": (1, "h"), "u32": (2, "I"), "s32": (2, "i"), "float32": (2, "f"),
}
TYPES = (*REGISTER_TYPES, "bool")
ORDERS = ("big", "little")

#: The normalised controller fields of trace-format.md, in its order.
CTL_FIELDS = ("mode", "run", "dir", "floor", "door", "zone", "speed", "safety", "lock",
              "overload", "fault")
#: Allowed values of the enumerated fields.
FIELD_DOMAINS: dict[str, range] = {
    "mode": range(0, 8), "run": range(0, 2), "dir": range(0, 3), "door": range(0, 7),
    "zone": range(0, 2), "safety": range(0, 2), "lock": range(0, 2), "overload": range(0, 2),
}
#: What an out-of-range value becomes, for the fields whose domain has an "unknown".
UNKNOWN_VALUE = {"mode": 7, "door": 0}

MAX_REGISTERS = 125  # per read request, Modbus application protocol 6.3/6.4
MAX_BITS = 2000      # per read request, 6.1/6.2

_MAP_KEYS = {"name", "description", "byte_order", "word_order", "max_gap", "max_bit_gap",
             "max_registers", "max_bits"}
_FIELD_KEYS = {"table", "function", "address", "unit", "type", "byte_order", "word_order",
               "bit", "width", "scale", "offset", "enum", "default", "index_base", "labels",
               "doc"}


class RegisterMapError(ValueError):
    """A register map that cannot be used; ``problems`` names every problem found."""

    def __init__(self, path: str | Path, problems: list[str]) -> None:
        self.path = str(path)
        self.problems = problems
        super().__init__(f"{self.path}: " + "; ".join(problems))


class EncodeError(ValueError):
    """Values that the map cannot express (simulator side)."""


@dataclass(frozen=True, order=True)
class ReadRequest:
    """One Modbus read: ``function`` 1..4 on ``unit`` from ``address`` (0-based), ``count``."""

    unit: int
    function: int
    address: int
    count: int


@dataclass(frozen=True)
class FieldSource:
    """Where one normalised field is read and how its raw value is transformed."""

    name: str
    function: int
    address: int
    unit: int | None = None
    type: str = "u16"
    byte_order: str = "big"
    word_order: str = "big"
    bit: int | None = None
    width: int = 1
    scale: float = 1.0
    offset: float = 0.0
    enum: Mapping[int, Any] | None = None
    default: Any = None
    index_base: int | None = None
    labels: Mapping[int, str] | None = None

    @property
    def size(self) -> int:
        """Registers (or bits, in a bit table) the field occupies."""
        return 1 if self.function in BIT_FUNCTIONS else REGISTER_TYPES[self.type][0]

    def mask(self) -> int:
        """The bits of the raw unsigned value this field uses (all for whole values)."""
        if self.bit is None:
            return (1 << (16 * self.size)) - 1
        return ((1 << self.width) - 1) << self.bit

    def location(self) -> tuple[Any, ...]:
        """Fields with equal locations share raw bits (and may be encoded together)."""
        return (self.unit, self.function, self.address, self.type, self.byte_order,
                self.word_order, self.bit, self.width)


#: One image per (unit, function): address -> raw register (0..65535) or bit (0/1).
Image = dict[tuple[int, int], dict[int, int]]


@dataclass(frozen=True)
class RegisterMap:
    """A validated register-map profile (see :func:`load_register_map`)."""

    name: str
    fields: tuple[FieldSource, ...]
    description: str = ""
    max_gap: int = 8
    max_bit_gap: int = 64
    max_registers: int = MAX_REGISTERS
    max_bits: int = MAX_BITS
    source: str = ""
    _plans: dict[int, tuple[ReadRequest, ...]] = field(default_factory=dict, compare=False,
                                                       repr=False)

    # ---------------------------------------------------------------- reading
    def read_plan(self, unit: int = 1) -> tuple[ReadRequest, ...]:
        """The fewest read requests that cover every field (``unit``: the device's default).

        Spans of one (unit, function) are merged while the hole between them is at most
        ``max_gap`` registers (``max_bit_gap`` bits) and the request stays within
        ``max_registers`` (``max_bits``). Reading a few unused registers costs less on
        RS-485 than another request/response turnaround.
        """
        if unit in self._plans:
            return self._plans[unit]
        spans: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for f in self.fields:
            key = (f.unit if f.unit is not None else unit, f.function)
            spans.setdefault(key, []).append((f.address, f.address + f.size))
        plan: list[ReadRequest] = []
        for (u, fn), ranges in sorted(spans.items()):
            bits = fn in BIT_FUNCTIONS
            gap = self.max_bit_gap if bits else self.max_gap
            limit = self.max_bits if bits else self.max_registers
            ranges.sort()
            start, end = ranges[0]
            for s, e in ranges[1:]:
                if s - end <= gap and max(end, e) - start <= limit:
                    end = max(end, e)
                else:
                    plan.append(ReadRequest(u, fn, start, end - start))
                    start, end = s, e
            plan.append(ReadRequest(u, fn, start, end - start))
        result = tuple(plan)
        self._plans[unit] = result
        return result

    def decode(self, blocks: Mapping[ReadRequest, Sequence[int]], *, unit: int = 1,
               landings: Sequence[str] = ()) -> dict[str, Any]:
        """Normalised ``ctl`` fields from read answers; fields that fail are left out."""
        return self.decode_with_errors(blocks, unit=unit, landings=landings)[0]

    def decode_with_errors(self, blocks: Mapping[ReadRequest, Sequence[int]], *,
                           unit: int = 1, landings: Sequence[str] = ()
                           ) -> tuple[dict[str, Any], list[str]]:
        """Like :meth:`decode`, also returning one message per field that could not be decoded.

        ``blocks`` maps each :class:`ReadRequest` of the plan to its values (registers as
        ints, bits as bools/ints); a request missing from it (failed or exception answer)
        only loses the fields inside it.
        """
        out: dict[str, Any] = {}
        errors: list[str] = []
        for f in self.fields:
            try:
                raw = self._raw(f, blocks, unit)
                value = self._to_field(f, raw, landings)
            except _DecodeProblem as exc:
                errors.append(f"{f.name}: {exc}")
                if f.name in UNKNOWN_VALUE and exc.unknown:
                    out[f.name] = UNKNOWN_VALUE[f.name]
                continue
            out[f.name] = value
        ordered = {k: out[k] for k in CTL_FIELDS if k in out}
        return ordered, errors

    @staticmethod
    def _raw(f: FieldSource, blocks: Mapping[ReadRequest, Sequence[int]], unit: int
             ) -> int | float:
        u = f.unit if f.unit is not None else unit
        for req, values in blocks.items():
            if (req.unit == u and req.function == f.function and req.address <= f.address
                    and f.address + f.size <= req.address + req.count):
                i = f.address - req.address
                if len(values) < i + f.size:
                    raise _DecodeProblem(f"answer to {req} holds {len(values)} values")
                if f.function in BIT_FUNCTIONS:
                    return 1 if values[i] else 0
                words = [int(w) for w in values[i:i + f.size]]
                if any(not 0 <= w <= 0xFFFF for w in words):
                    raise _DecodeProblem(f"register values out of range: {words}")
                return _unpack(f, words)
        raise _DecodeProblem(f"no answer for {TABLE_NAMES[f.function]} {f.address} "
                             f"of unit {u}")

    @staticmethod
    def _to_field(f: FieldSource, raw: int | float, landings: Sequence[str]) -> Any:
        if f.bit is not None:
            raw = (int(raw) >> f.bit) & ((1 << f.width) - 1)
        if f.name == "floor":
            key = int(raw)
            if f.labels is not None:
                if key not in f.labels:
                    raise _DecodeProblem(f"raw floor {key} is not in the label table")
                return f.labels[key]
            idx = key - (f.index_base or 0)
            if not landings:
                raise _DecodeProblem("floor index given but the lift's landings are unknown")
            if not 0 <= idx < len(landings):
                raise _DecodeProblem(f"floor index {key} outside the {len(landings)} landings")
            return landings[idx]
        if f.enum is not None:
            if isinstance(raw, float):
                raise _DecodeProblem("enumeration of a float value")
            if raw in f.enum:
                return f.enum[raw]
            if f.default is not None:
                return f.default
            raise _DecodeProblem(f"raw value {raw} is not in the enumeration", unknown=True)
        if isinstance(raw, float) and not math.isfinite(raw):
            raise _DecodeProblem(f"non-finite value {raw}", unknown=True)
        value = raw * f.scale + f.offset
        if f.scale != 1.0 or f.offset != 0.0:
            value = round(value, 9)  # 1200 * 0.001 is 1.2, not 1.2000000000000002
        if f.name == "speed":
            return abs(float(value))
        ivalue = int(round(value))
        if f.name == "fault":
            if ivalue < 0:
                raise _DecodeProblem(f"negative fault code {ivalue}")
            return ivalue
        if ivalue not in FIELD_DOMAINS[f.name]:
            d = FIELD_DOMAINS[f.name]
            raise _DecodeProblem(f"value {ivalue} outside {d.start}..{d.stop - 1}",
                                 unknown=True)
        return ivalue

    # ---------------------------------------------------------------- writing
    def encode(self, values: Mapping[str, Any], *, unit: int = 1,
               landings: Sequence[str] = (), base: Image | None = None) -> Image:
        """Register and bit images that decode to ``values`` (for the simulator/server).

        Fields sharing one register location (e.g. ``run`` and ``dir`` from one motion
        code) are encoded together: the raw value chosen satisfies all of them, or
        :class:`EncodeError` says they contradict each other. With ``base`` (an earlier
        image, not modified) fields not given keep their bits, so a bit field can change
        alone inside a status word.
        """
        problems: list[str] = []
        chosen: dict[tuple[Any, ...], tuple[FieldSource, list[int | float]]] = {}
        for f in self.fields:
            if f.name not in values or values[f.name] is None:
                continue
            try:
                cands = self._candidates(f, values[f.name], landings)
            except EncodeError as exc:
                problems.append(f"{f.name}: {exc}")
                continue
            loc = f.location()
            if loc in chosen:
                prev_f, prev = chosen[loc]
                both = [c for c in prev if c in cands]
                if not both:
                    problems.append(f"{f.name}={values[f.name]!r} contradicts {prev_f.name} "
                                    "in the same register")
                    continue
                chosen[loc] = (prev_f, both)
            else:
                chosen[loc] = (f, cands)
        if problems:
            raise EncodeError("; ".join(problems))
        image: Image = {k: dict(v) for k, v in (base or {}).items()}
        for f, cands in chosen.values():
            u = f.unit if f.unit is not None else unit
            table = image.setdefault((u, f.function), {})
            raw = cands[0]
            if f.function in BIT_FUNCTIONS:
                table[f.address] = 1 if raw else 0
                continue
            if f.bit is not None:  # read-modify-write the other bits of the value
                words = [table.get(f.address + i, 0) for i in range(f.size)]
                old = int(_unpack(f, words))
                m = f.mask()
                raw = (old & ~m) | ((int(raw) << f.bit) & m)
            for i, w in enumerate(_pack(f, raw)):
                table[f.address + i] = w
        return image

    def _candidates(self, f: FieldSource, value: Any, landings: Sequence[str]
                    ) -> list[int | float]:
        if f.name == "floor":
            if f.labels is not None:
                raws = [k for k, v in f.labels.items() if v == str(value)]
                if not raws:
                    raise EncodeError(f"floor {value!r} is not in the label table")
                return raws
            if str(value) not in landings:
                raise EncodeError(f"floor {value!r} is not one of the landings")
            return self._fit(f, [list(landings).index(str(value)) + (f.index_base or 0)])
        if f.enum is not None:
            raws = [k for k, v in f.enum.items() if v == value]
            if not raws and f.default is not None and value == f.default:
                limit = 1 << (f.width if f.bit is not None else 16 * f.size)
                raws = [next(r for r in range(limit) if r not in f.enum)]
            if not raws:
                raise EncodeError(f"{value!r} has no raw value in the enumeration")
            return self._fit(f, raws)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise EncodeError(f"expected a number, found {value!r}")
        raw = (float(value) - f.offset) / f.scale
        if f.type == "float32":
            return [raw]
        return self._fit(f, [int(round(raw))])

    @staticmethod
    def _fit(f: FieldSource, raws: list[int]) -> list[int | float]:
        if f.function in BIT_FUNCTIONS:
            lo, hi = 0, 1
        elif f.bit is not None:
            lo, hi = 0, (1 << f.width) - 1
        elif f.type == "float32":
            return [float(r) for r in raws]
        else:
            bits = 16 * f.size
            signed = f.type.startswith("s")
            lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        ok: list[int | float] = [r for r in raws if lo <= r <= hi]
        if not ok:
            raise EncodeError(f"raw value {raws[0]} does not fit {f.type}")
        return ok


class _DecodeProblem(Exception):
    def __init__(self, msg: str, *, unknown: bool = False) -> None:
        super().__init__(msg)
        self.unknown = unknown


def _unpack(f: FieldSource, words: list[int]) -> int | float:
    """Registers to a value: bytes of each register in byte_order, registers in word_order."""
    if f.word_order == "little":
        words = words[::-1]
    data = b"".join(w.to_bytes(2, f.byte_order) for w in words)  # type: ignore[arg-type]
    code = REGISTER_TYPES[f.type][1]
    if f.bit is not None:
        code = code.upper()  # bit fields read the unsigned pattern
    return struct.unpack(">" + code, data)[0]


def _pack(f: FieldSource, raw: int | float) -> list[int]:
    code = REGISTER_TYPES[f.type][1]
    if f.bit is not None:
        code = code.upper()
    data = struct.pack(">" + code, raw)
    words = [int.from_bytes(data[i:i + 2], f.byte_order) for i in range(0, len(data), 2)]  # type: ignore[arg-type]
    return words[::-1] if f.word_order == "little" else words


# -------------------------------------------------------------------- loading
def load_register_map(path: str | Path) -> RegisterMap:
    """Read and validate a register-map TOML file; raise :class:`RegisterMapError` listing all
    problems (each names the key path, what was expected and what was found)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RegisterMapError(p, [f"cannot read the file: {exc}"]) from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegisterMapError(p, [f"not valid TOML: {exc}"]) from exc
    return parse_register_map(doc, source=str(p))


def parse_register_map(doc: Mapping[str, Any], *, source: str = "<map>") -> RegisterMap:
    """Validate an already parsed map (a dict as tomllib gives it)."""
    problems: list[str] = []
    for key in doc:
        if key not in ("map", "fields"):
            problems.append(f"{key}: unknown key; expected [map] or [fields.NAME]")
    meta = doc.get("map", {})
    if not isinstance(meta, Mapping):
        problems.append(f"map: expected a table, found {meta!r}")
        meta = {}
    for key in meta:
        if key not in _MAP_KEYS:
            problems.append(f"map.{key}: unknown key; expected one of {sorted(_MAP_KEYS)}")
    name = meta.get("name", Path(source).stem)
    if not isinstance(name, str) or not name:
        problems.append(f"map.name: expected a non-empty string, found {name!r}")
        name = "?"
    desc = meta.get("description", "")
    if not isinstance(desc, str):
        problems.append(f"map.description: expected a string, found {desc!r}")
        desc = ""
    byte_order = _choice(meta, "byte_order", ORDERS, "big", "map", problems)
    word_order = _choice(meta, "word_order", ORDERS, "big", "map", problems)
    max_gap = _int(meta, "max_gap", 8, 0, MAX_REGISTERS, "map", problems)
    max_bit_gap = _int(meta, "max_bit_gap", 64, 0, MAX_BITS, "map", problems)
    max_registers = _int(meta, "max_registers", MAX_REGISTERS, 2, MAX_REGISTERS, "map",
                         problems)
    max_bits = _int(meta, "max_bits", MAX_BITS, 1, MAX_BITS, "map", problems)

    raw_fields = doc.get("fields")
    fields: list[FieldSource] = []
    if not isinstance(raw_fields, Mapping) or not raw_fields:
        problems.append(f"fields: expected at least one [fields.NAME] table (NAME one of "
                        f"{', '.join(CTL_FIELDS)}), found {raw_fields!r}")
        raw_fields = {}
    for fname, spec in raw_fields.items():
        where = f"fields.{fname}"
        if fname not in CTL_FIELDS:
            problems.append(f"{where}: unknown field; expected one of {', '.join(CTL_FIELDS)}")
            continue
        if not isinstance(spec, Mapping):
            problems.append(f"{where}: expected a table, found {spec!r}")
            continue
        f = _parse_field(fname, spec, where, byte_order, word_order, problems)
        if f is not None:
            fields.append(f)
    _check_overlaps(fields, problems)
    if problems:
        raise RegisterMapError(source, problems)
    fields.sort(key=lambda f: CTL_FIELDS.index(f.name))
    return RegisterMap(name=name, description=desc, fields=tuple(fields), max_gap=max_gap,
                       max_bit_gap=max_bit_gap, max_registers=max_registers, max_bits=max_bits,
                       source=source)


def _parse_field(name: str, spec: Mapping[str, Any], where: str, byte_order: str,
                 word_order: str, problems: list[str]) -> FieldSource | None:
    n_before = len(problems)
    for key in spec:
        if key not in _FIELD_KEYS:
            problems.append(f"{where}.{key}: unknown key; expected one of {sorted(_FIELD_KEYS)}")
    # table / function
    function = 0
    if "table" in spec and "function" in spec:
        problems.append(f"{where}: give table or function, not both")
    elif "table" in spec:
        t = spec["table"]
        if t in TABLES:
            function = TABLES[t]
        else:
            problems.append(f"{where}.table: expected one of {', '.join(TABLES)}, found {t!r}")
    elif "function" in spec:
        fc = spec["function"]
        if isinstance(fc, int) and not isinstance(fc, bool) and fc in TABLE_NAMES:
            function = fc
        else:
            problems.append(f"{where}.function: expected a read function code 1, 2, 3 or 4, "
                            f"found {fc!r}")
    else:
        problems.append(f"{where}: missing table (one of {', '.join(TABLES)}) or function")
    bits_table = function in BIT_FUNCTIONS
    address = _int(spec, "address", None, 0, 65535, where, problems)
    unit = _int(spec, "unit", -1, 0, 247, where, problems)
    ftype = _choice(spec, "type", TYPES, "bool" if bits_table else "u16", where, problems)
    if function and bits_table and ftype != "bool":
        problems.append(f"{where}.type: a {TABLE_NAMES[function]} is a single bit: expected "
                        f"bool, found {ftype!r}")
    if function and not bits_table and ftype == "bool":
        problems.append(f"{where}.type: registers hold u16, s16, u32, s32 or float32; for "
                        "one bit of a register use bit = N; found 'bool'")
    size = 1 if bits_table or ftype not in REGISTER_TYPES else REGISTER_TYPES[ftype][0]
    if address is not None and address + size > 65536:
        problems.append(f"{where}.address: value of {size} registers must end by 65535, found "
                        f"{address}")
    bo = _choice(spec, "byte_order", ORDERS, byte_order, where, problems)
    wo = _choice(spec, "word_order", ORDERS, word_order, where, problems)
    bit = None
    width = 1
    if "bit" in spec or "width" in spec:
        if bits_table or ftype in ("float32", "s16", "s32", "bool"):
            problems.append(f"{where}.bit: bit fields need a u16 or u32 register, found "
                            f"{'a ' + TABLE_NAMES[function] if bits_table else ftype}")
        nbits = 16 * size
        bit = _int(spec, "bit", 0, 0, nbits - 1, where, problems)
        width = _int(spec, "width", 1, 1, nbits, where, problems)
        if bit is not None and width is not None and bit + width > nbits:
            problems.append(f"{where}.width: bit {bit} + width {width} exceeds the {nbits}-bit "
                            "value")
    # raw keys (labels, enum, index_base) a register of this type can hold: a signed
    # floor register numbers basements below zero
    if ftype in ("s16", "s32"):
        half = 1 << (16 * size - 1)
        key_lo, key_hi = -half, half - 1
    else:
        key_lo, key_hi = 0, 0xFFFFFFFF
    scale = _number(spec, "scale", 1.0, where, problems, nonzero=True)
    offset = _number(spec, "offset", 0.0, where, problems)
    enum = default = labels = index_base = None
    numeric_ok = name in ("speed", "fault") or name in FIELD_DOMAINS
    if name == "floor":
        if "enum" in spec or "default" in spec or "scale" in spec or "offset" in spec:
            problems.append(f"{where}: floor takes index_base or labels, not enum/default/"
                            "scale/offset")
        if ("labels" in spec) == ("index_base" in spec):
            problems.append(f"{where}: give exactly one of index_base (raw value is the landing "
                            "index, counted from it) or labels (raw value -> label table)")
        if "index_base" in spec:
            index_base = _int(spec, "index_base", 0, max(key_lo, -65535), min(key_hi, 65535),
                              where, problems)
        if "labels" in spec:
            labels = _int_keyed(spec["labels"], f"{where}.labels", problems,
                                lambda v: isinstance(v, str) and v != "", "a non-empty string",
                                key_lo, key_hi)
    else:
        if "labels" in spec or "index_base" in spec:
            problems.append(f"{where}: labels/index_base belong to the floor field only")
        if "enum" in spec:
            if "scale" in spec or "offset" in spec:
                problems.append(f"{where}: enum and scale/offset exclude each other")
            if ftype == "float32":
                problems.append(f"{where}.enum: an enumeration needs an integer type, found "
                                "float32")
            enum = _int_keyed(spec["enum"], f"{where}.enum", problems,
                              lambda v: _in_domain(name, v), _domain_text(name), key_lo, key_hi)
            if "default" in spec:
                default = spec["default"]
                if not _in_domain(name, default):
                    problems.append(f"{where}.default: expected {_domain_text(name)}, found "
                                    f"{default!r}")
        elif "default" in spec:
            problems.append(f"{where}.default: only used with enum")
        if not numeric_ok:  # pragma: no cover - every non-floor field is numeric
            problems.append(f"{where}: cannot be decoded")
    if len(problems) > n_before or not function or address is None:
        return None
    return FieldSource(name=name, function=function, address=address,
                       unit=None if unit == -1 else unit, type=ftype, byte_order=bo,
                       word_order=wo, bit=bit, width=width or 1, scale=scale, offset=offset,
                       enum=enum, default=default, index_base=index_base, labels=labels)


def _check_overlaps(fields: list[FieldSource], problems: list[str]) -> None:
    """Different fields may share a location exactly, never overlap it partially."""
    cells: dict[tuple[Any, int, int], list[tuple[int, FieldSource]]] = {}
    for f in fields:
        if f.function in BIT_FUNCTIONS:
            masks = [1]
        else:
            m = f.mask()
            masks = [(m >> (16 * (f.size - 1 - i))) & 0xFFFF for i in range(f.size)]
        for i, m in enumerate(masks):
            for other_mask, g in cells.get((f.unit, f.function, f.address + i), []):
                if m & other_mask and g.location() != f.location():
                    problems.append(f"fields.{f.name}: overlaps fields.{g.name} at "
                                    f"{TABLE_NAMES[f.function]} {f.address + i}; expected "
                                    "separate bits or the very same location")
            cells.setdefault((f.unit, f.function, f.address + i), []).append((m, f))


def _in_domain(name: str, v: Any) -> bool:
    if isinstance(v, bool) or not isinstance(v, int):
        return False
    if name == "fault":
        return v >= 0
    if name == "speed":
        return v >= 0
    return v in FIELD_DOMAINS[name]


def _domain_text(name: str) -> str:
    if name in ("fault", "speed"):
        return "an integer >= 0"
    d = FIELD_DOMAINS[name]
    return f"an integer {d.start}..{d.stop - 1}"


def _int_keyed(table: Any, where: str, problems: list[str], ok: Any, expected: str,
               lo: int = 0, hi: int = 0xFFFFFFFF) -> dict[int, Any] | None:
    if not isinstance(table, Mapping) or not table:
        problems.append(f"{where}: expected a non-empty table raw = value, found {table!r}")
        return None
    out: dict[int, Any] = {}
    for k, v in table.items():
        try:
            raw = int(k, 0) if isinstance(k, str) else int(k)
        except ValueError:
            problems.append(f"{where}.{k}: key must be a raw integer value, found {k!r}")
            continue
        if not lo <= raw <= hi:
            problems.append(f"{where}.{k}: raw value must be {lo}..{hi} for this type, "
                            f"found {raw}")
            continue
        if not ok(v):
            problems.append(f"{where}.{k}: expected {expected}, found {v!r}")
            continue
        out[raw] = v
    return out


def _choice(spec: Mapping[str, Any], key: str, choices: Sequence[str], default: str,
            where: str, problems: list[str]) -> str:
    v = spec.get(key, default)
    if v not in choices:
        problems.append(f"{where}.{key}: expected one of {', '.join(choices)}, found {v!r}")
        return default
    return v


def _int(spec: Mapping[str, Any], key: str, default: int | None, lo: int, hi: int, where: str,
         problems: list[str]) -> int | None:
    if key not in spec:
        if default is None:
            problems.append(f"{where}.{key}: missing; expected an integer {lo}..{hi}")
        return default
    v = spec[key]
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        problems.append(f"{where}.{key}: expected an integer {lo}..{hi}, found {v!r}")
        return default
    return v


def _number(spec: Mapping[str, Any], key: str, default: float, where: str,
            problems: list[str], *, nonzero: bool = False) -> float:
    v = spec.get(key, default)
    if (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)
            or (nonzero and v == 0)):
        problems.append(f"{where}.{key}: expected a finite{' non-zero' if nonzero else ''} "
                        f"number, found {v!r}")
        return default
    return float(v)
