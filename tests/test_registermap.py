"""Register-map profiles: validation, read coalescing, decoding and encoding (no I/O)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from liftwatch.drivers.registermap import (
    CTL_FIELDS,
    EncodeError,
    ReadRequest,
    RegisterMap,
    RegisterMapError,
    load_register_map,
    parse_register_map,
)
from modbus_helpers import EXAMPLE_MAP, LANDINGS, VALUES, example_map

EXAMPLE = example_map()


def blocks_from_image(m: RegisterMap, image: dict, unit: int = 1) -> dict:
    out = {}
    for r in m.read_plan(unit):
        t = image.get((r.unit, r.function), {})
        out[r] = [t.get(a, 0) for a in range(r.address, r.address + r.count)]
    return out


def write_map(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "m.toml"
    p.write_text(text)
    return p


# ------------------------------------------------------------------ example map
def test_example_map_loads_with_every_field() -> None:
    m = load_register_map(EXAMPLE_MAP)
    assert m.name == "example"
    assert {f.name for f in m.fields} == set(CTL_FIELDS)


def test_example_map_reads_in_two_requests() -> None:
    # nine fields in holding registers 0..7 and one discrete input: two requests
    assert example_map().read_plan(3) == (ReadRequest(3, 2, 10, 1), ReadRequest(3, 3, 0, 8))


def test_example_round_trip_every_field() -> None:
    m = example_map()
    img = m.encode(VALUES, unit=1, landings=LANDINGS)
    got, errors = m.decode_with_errors(blocks_from_image(m, img), unit=1, landings=LANDINGS)
    assert errors == []
    assert got == VALUES
    assert list(got) == [k for k in CTL_FIELDS if k in got]  # trace-format order


def test_example_status_word_bits() -> None:
    """run bit 0, zone bit 1, safety-made bit 2, lock-made bit 3, mode code in bits 8..10."""
    m = example_map()
    status = (1 << 0) | (0 << 1) | (1 << 2) | (0 << 3) | (1 << 8)  # inspection, lock open
    blocks = {ReadRequest(1, 3, 0, 8): [status, 1, 3, 4, 0, 0, 0, 0],
              ReadRequest(1, 2, 10, 1): [0]}
    got = m.decode(blocks, unit=1, landings=LANDINGS)
    assert got == {"mode": 2, "run": 1, "dir": 1, "floor": "2", "door": 2, "zone": 0,
                   "speed": 0.0, "safety": 0, "lock": 1, "overload": 0, "fault": 0}


# --------------------------------------------------------- data types and orders
FLOAT_LAYOUTS = [  # 1.75 = 0x3FE00000; registers as they arrive on the wire
    ("big", "big", [0x3FE0, 0x0000]),        # ABCD
    ("big", "little", [0x0000, 0x3FE0]),     # CDAB
    ("little", "big", [0xE03F, 0x0000]),     # BADC
    ("little", "little", [0x0000, 0xE03F]),  # DCBA
]


@pytest.mark.parametrize(("byte_order", "word_order", "regs"), FLOAT_LAYOUTS)
def test_float32_byte_and_word_order(byte_order: str, word_order: str, regs: list[int]) -> None:
    m = parse_register_map({"fields": {"speed": {
        "table": "input", "address": 100, "type": "float32", "byte_order": byte_order,
        "word_order": word_order}}})
    assert m.decode({ReadRequest(1, 4, 100, 2): regs}) == {"speed": 1.75}
    assert m.encode({"speed": 1.75}) == {(1, 4): {100: regs[0], 101: regs[1]}}


@pytest.mark.parametrize(("ftype", "word_order", "regs", "value"), [
    ("u32", "big", [0x0001, 0x1171], 70001),
    ("u32", "little", [0x1171, 0x0001], 70001),
    ("s16", "big", [0xFFFF], -1),
    ("s32", "big", [0xFFFF, 0xFFFE], -2),
])
def test_integer_types(ftype: str, word_order: str, regs: list[int], value: int) -> None:
    # speed with scale 0.01 shows sign handling (magnitude) and scaling together
    m = parse_register_map({"map": {"word_order": word_order}, "fields": {
        "fault": {"table": "holding", "address": 0, "type": ftype, "offset": 5},
        "speed": {"table": "holding", "address": 10, "type": ftype, "scale": 0.01}}})
    blocks = {ReadRequest(1, 3, 0, 10 + len(regs)): regs + [0] * (10 - len(regs)) + regs}
    got, errors = m.decode_with_errors(blocks)
    assert got["speed"] == pytest.approx(abs(value) * 0.01)
    if value + 5 >= 0:
        assert got["fault"] == value + 5
    else:
        assert "fault" not in got and any("negative fault" in e for e in errors)


def test_bit_field_wider_than_one_bit_and_shared_register() -> None:
    """run and dir decoded from one motion code; mode from bits 4..6 of the same register."""
    m = parse_register_map({"fields": {
        "run": {"table": "holding", "address": 7, "width": 2, "bit": 0,
                "enum": {0: 0, 1: 1, 2: 1}},
        "dir": {"table": "holding", "address": 7, "width": 2, "bit": 0,
                "enum": {0: 0, 1: 1, 2: 2}},
        "mode": {"table": "holding", "address": 7, "bit": 4, "width": 3},
    }})
    assert m.decode({ReadRequest(1, 3, 7, 1): [(5 << 4) | 2]}) == {"mode": 5, "run": 1, "dir": 2}
    img = m.encode({"run": 1, "dir": 2, "mode": 6})
    assert img == {(1, 3): {7: (6 << 4) | 2}}
    with pytest.raises(EncodeError, match="contradicts"):
        m.encode({"run": 0, "dir": 1})


def test_floor_from_label_table_and_from_index_base() -> None:
    by_label = parse_register_map({"fields": {"floor": {
        "table": "input", "address": 0, "labels": {"10": "G", "11": "1", "12": "M"}}}})
    assert by_label.decode({ReadRequest(1, 4, 0, 1): [12]}) == {"floor": "M"}
    by_index = parse_register_map({"fields": {"floor": {
        "table": "input", "address": 0, "index_base": 1}}})
    assert by_index.decode({ReadRequest(1, 4, 0, 1): [1]}, landings=LANDINGS) == {"floor": "B2"}


def test_coils_and_discrete_inputs() -> None:
    m = parse_register_map({"fields": {
        "zone": {"table": "coil", "address": 3},
        "overload": {"function": 2, "address": 1999},
    }})
    assert m.read_plan() == (ReadRequest(1, 1, 3, 1), ReadRequest(1, 2, 1999, 1))
    got = m.decode({ReadRequest(1, 1, 3, 1): [True], ReadRequest(1, 2, 1999, 1): [False]})
    assert got == {"zone": 1, "overload": 0}


# ------------------------------------------------------------ decode problems
def test_decode_errors_are_reported_not_raised() -> None:
    m = example_map()
    img = m.encode(VALUES, unit=1, landings=LANDINGS)
    blocks = blocks_from_image(m, img)
    hold = ReadRequest(1, 3, 0, 8)
    regs = list(blocks[hold])
    regs[0] = (regs[0] & ~(7 << 8)) | (7 << 8)   # mode code 7: not in the vendor table
    regs[2] = 40                                 # floor index past the 7 landings
    regs[3] = 9                                  # door code 9: default 0 (unknown)
    regs[4], regs[5] = 0x0000, 0x7FC0            # speed NaN (CDAB)
    blocks[hold] = regs
    got, errors = m.decode_with_errors(blocks, unit=1, landings=LANDINGS)
    assert got["mode"] == 7 and got["door"] == 0     # mapped to "unknown" by default
    assert "floor" not in got and "speed" not in got
    assert any(e.startswith("floor: floor index 40") for e in errors)
    assert any(e.startswith("speed: non-finite") for e in errors)
    assert got["fault"] == VALUES["fault"]            # the rest is still decoded


def test_missing_block_loses_only_its_fields() -> None:
    m = example_map()
    img = m.encode(VALUES, unit=1, landings=LANDINGS)
    blocks = blocks_from_image(m, img)
    del blocks[ReadRequest(1, 2, 10, 1)]
    got, errors = m.decode_with_errors(blocks, unit=1, landings=LANDINGS)
    assert "overload" not in got and len(got) == len(CTL_FIELDS) - 1
    assert errors == ["overload: no answer for discrete 10 of unit 1"]


def test_out_of_domain_value_without_enum_is_reported() -> None:
    m = parse_register_map({"fields": {"dir": {"table": "holding", "address": 0},
                                       "mode": {"table": "holding", "address": 1}}})
    got, errors = m.decode_with_errors({ReadRequest(1, 3, 0, 2): [3, 65535]})
    assert got == {"mode": 7}
    assert sorted(errors) == ["dir: value 3 outside 0..2", "mode: value 65535 outside 0..7"]


def test_short_or_bad_answer_is_reported() -> None:
    m = example_map()
    got, errors = m.decode_with_errors({ReadRequest(1, 3, 0, 8): [1, 2],
                                        ReadRequest(1, 2, 10, 1): [1]}, landings=LANDINGS)
    # registers 0 and 1 arrived: the status word and motion code still decode
    assert got == {"mode": 1, "run": 1, "dir": 2, "zone": 0, "safety": 1, "lock": 1,
                   "overload": 1}
    assert sorted(e.split(":")[0] for e in errors) == ["door", "fault", "floor", "speed"]
    assert all("holds 2 values" in e for e in errors)
    got, errors = m.decode_with_errors({ReadRequest(1, 3, 0, 8): [70000] * 8})
    assert "out of range" in errors[0]


@settings(max_examples=150, deadline=None)
@given(st.fixed_dictionaries({
    "mode": st.integers(0, 7), "run": st.integers(0, 1), "dir": st.integers(0, 2),
    "floor": st.sampled_from(LANDINGS), "door": st.integers(0, 6), "zone": st.integers(0, 1),
    "speed": st.floats(0, 12, width=32), "safety": st.integers(0, 1),
    "lock": st.integers(0, 1), "overload": st.integers(0, 1),
    "fault": st.integers(0, 2**32 - 1)}))
def test_example_round_trip_property(values: dict) -> None:
    m = EXAMPLE
    img = m.encode(values, unit=5, landings=LANDINGS)
    assert m.decode(blocks_from_image(m, img, unit=5), unit=5, landings=LANDINGS) == values


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 0xFFFF), min_size=8, max_size=8), st.booleans())
def test_any_register_content_decodes_without_raising(regs: list[int], bit: bool) -> None:
    m = EXAMPLE
    got, errors = m.decode_with_errors({ReadRequest(1, 3, 0, 8): regs,
                                        ReadRequest(1, 2, 10, 1): [bit]}, landings=LANDINGS)
    assert set(got) | {e.split(":")[0] for e in errors} >= set(CTL_FIELDS) - {"floor", "speed"}


# --------------------------------------------------------------- read plan
def _fields_at(addresses: list[int], table: str = "holding") -> dict:
    names = ["mode", "run", "dir", "door", "zone", "safety", "lock", "overload", "fault"]
    return {n: {"table": table, "address": a} for n, a in zip(names, addresses, strict=False)}


def test_read_plan_merges_within_gap_and_splits_beyond() -> None:
    m = parse_register_map({"map": {"max_gap": 4}, "fields": _fields_at([0, 5, 10, 30])})
    assert m.read_plan() == (ReadRequest(1, 3, 0, 11), ReadRequest(1, 3, 30, 1))
    tight = parse_register_map({"map": {"max_gap": 0}, "fields": _fields_at([0, 1, 3])})
    assert tight.read_plan() == (ReadRequest(1, 3, 0, 2), ReadRequest(1, 3, 3, 1))


def test_read_plan_respects_register_and_bit_limits() -> None:
    m = parse_register_map({"map": {"max_gap": 125}, "fields": _fields_at([0, 124, 125])})
    assert m.read_plan() == (ReadRequest(1, 3, 0, 125), ReadRequest(1, 3, 125, 1))
    small = parse_register_map({"map": {"max_gap": 100, "max_registers": 16},
                                "fields": _fields_at([0, 15, 16])})
    assert [r.count for r in small.read_plan()] == [16, 1]
    bits = parse_register_map({"map": {"max_bit_gap": 2000},
                               "fields": _fields_at([0, 1999, 2000], table="coil")})
    assert bits.read_plan() == (ReadRequest(1, 1, 0, 2000), ReadRequest(1, 1, 2000, 1))


def test_read_plan_never_splits_a_32_bit_value() -> None:
    m = parse_register_map({"map": {"max_gap": 10, "max_registers": 4}, "fields": {
        "mode": {"table": "holding", "address": 0},
        "fault": {"table": "holding", "address": 3, "type": "u32"}}})
    assert m.read_plan() == (ReadRequest(1, 3, 0, 1), ReadRequest(1, 3, 3, 2))


def test_read_plan_groups_by_unit_and_function() -> None:
    m = parse_register_map({"fields": {
        "mode": {"table": "holding", "address": 0},
        "run": {"table": "input", "address": 1},
        "lock": {"table": "discrete", "address": 0, "unit": 9},
        "zone": {"table": "holding", "address": 1, "unit": 9}}})
    assert m.read_plan(2) == (ReadRequest(2, 3, 0, 1), ReadRequest(2, 4, 1, 1),
                              ReadRequest(9, 2, 0, 1), ReadRequest(9, 3, 1, 1))


# -------------------------------------------------------------- validation
BAD_MAP = """
colour = "red"
[map]
name = ""
byte_order = "middle"
max_gap = -1
typo = 1

[fields.mode]
table = "holding"
address = 70000

[fields.speed]
table = "holding"
address = 4
type = "float64"

[fields.door]
function = 6
address = 3
enum = { 1 = 9, x = 1 }

[fields.run]
table = "coil"
address = 1
type = "u16"
bit = 2

[fields.dir]
table = "holding"
address = 8
bit = 3
width = 2

[fields.zone]
table = "holding"
address = 8
bit = 4

[fields.floor]
table = "holding"
address = 9

[fields.altitude]
table = "holding"
address = 11

[fields.fault]
address = 12
scal = 2
scale = 0
"""


def test_every_problem_is_named_with_key_expected_and_found(tmp_path: Path) -> None:
    with pytest.raises(RegisterMapError) as info:
        load_register_map(write_map(tmp_path, BAD_MAP))
    problems = info.value.problems
    text = "\n".join(problems)
    expected = [
        "colour: unknown key",
        "map.typo: unknown key",
        "map.name: expected a non-empty string, found ''",
        "map.byte_order: expected one of big, little, found 'middle'",
        "map.max_gap: expected an integer 0..125, found -1",
        "fields.mode.address: expected an integer 0..65535, found 70000",
        "fields.speed.type: expected one of u16, s16, u32, s32, float32, bool, found 'float64'",
        "fields.door.function: expected a read function code 1, 2, 3 or 4, found 6",
        "fields.door.enum.1: expected an integer 0..6, found 9",
        "fields.door.enum.x: key must be a raw integer value, found 'x'",
        "fields.run.type: a coil is a single bit: expected bool, found 'u16'",
        "fields.run.bit: bit fields need a u16 or u32 register, found a coil",
        "fields.zone: overlaps fields.dir at holding 8",
        "fields.floor: give exactly one of index_base",
        "fields.altitude: unknown field",
        "fields.fault: missing table",
        "fields.fault.scal: unknown key",
        "fields.fault.scale: expected a finite non-zero number, found 0",
    ]
    for e in expected:
        assert e in text, f"missing problem {e!r} in:\n{text}"
    assert str(tmp_path / "m.toml") in str(info.value)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(RegisterMapError, match="cannot read the file"):
        load_register_map(tmp_path / "absent.toml")
    with pytest.raises(RegisterMapError, match="not valid TOML"):
        load_register_map(write_map(tmp_path, "[fields.mode\naddress = 1\n"))
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(RegisterMapError) as info:
        load_register_map(tmp_path / "bin.toml")
    assert len(info.value.problems) == 1


def test_map_without_fields_is_rejected() -> None:
    with pytest.raises(RegisterMapError, match="expected at least one"):
        parse_register_map({"map": {"name": "x"}})


def test_enum_default_and_scale_rules() -> None:
    with pytest.raises(RegisterMapError) as info:
        parse_register_map({"fields": {
            "door": {"table": "holding", "address": 0, "enum": {0: 1}, "scale": 2,
                     "default": 8},
            "mode": {"table": "holding", "address": 1, "default": 7},
            "speed": {"table": "holding", "address": 2, "type": "float32", "enum": {0: 0}},
            "floor": {"table": "holding", "address": 4, "labels": {"0": ""}}}})
    text = "\n".join(info.value.problems)
    for e in ["fields.door: enum and scale/offset exclude each other",
              "fields.door.default: expected an integer 0..6, found 8",
              "fields.mode.default: only used with enum",
              "fields.speed.enum: an enumeration needs an integer type, found float32",
              "fields.floor.labels.0: expected a non-empty string, found ''"]:
        assert e in text


# ----------------------------------------------------------------- encoding
def test_encode_rejects_values_the_map_cannot_express() -> None:
    m = example_map()
    with pytest.raises(EncodeError, match="floor 'Z' is not one of the landings"):
        m.encode({"floor": "Z"}, landings=LANDINGS)
    with pytest.raises(EncodeError, match="does not fit u32"):
        m.encode({"fault": 2**32})
    with pytest.raises(EncodeError, match="expected a number"):
        m.encode({"fault": "bad"})
    # mode 7 (unknown) has no vendor code: encoded as a code outside the table
    img = m.encode({"mode": 7})
    assert (img[(1, 3)][0] >> 8) & 7 == 7


def test_float_encoding_is_ieee() -> None:
    m = example_map()
    img = m.encode({"speed": 2.5})
    regs = [img[(1, 3)][5], img[(1, 3)][4]]  # CDAB: high word second
    assert struct.unpack(">f", struct.pack(">HH", *regs))[0] == 2.5


def test_encode_on_a_base_image_keeps_other_bits() -> None:
    m = EXAMPLE
    first = m.encode(VALUES, unit=1, landings=LANDINGS)
    second = m.encode({"mode": 0}, unit=1, landings=LANDINGS, base=first)
    assert first == m.encode(VALUES, unit=1, landings=LANDINGS)  # base not modified
    got = m.decode(blocks_from_image(m, second), unit=1, landings=LANDINGS)
    assert got == {**VALUES, "mode": 0}


def test_signed_floor_register_takes_negative_labels_and_index_base() -> None:
    """Basements numbered below zero in an s16 floor register (issue 22)."""
    m = parse_register_map({"fields": {"floor": {
        "table": "holding", "address": 0, "type": "s16",
        "labels": {"-2": "B2", "-1": "B1", "1": "1"}}}})
    image = m.encode({"floor": "B2"})
    assert image[(1, 3)][0] == 0xFFFE
    assert m.decode({m.read_plan()[0]: [0xFFFE]}) == {"floor": "B2"}
    landings = ["B2", "B1", "1"]
    m = parse_register_map({"fields": {"floor": {
        "table": "holding", "address": 0, "type": "s16", "index_base": -2}}})
    assert m.decode({m.read_plan()[0]: [0xFFFF]}, landings=landings) == {"floor": "B1"}
    with pytest.raises(RegisterMapError, match=r"labels.-2: raw value must be 0\.\.4294967295"):
        parse_register_map({"fields": {"floor": {"table": "holding", "address": 0,
                                                 "labels": {"-2": "B2"}}}})
