"""docs/events.md stays true to the code: every code of its catalogue is the rule set's,
with the severity the code gives it and the number of the default platform profile, and
every default it names (`entrap_level_s` = 45 s, `disagree_s` (default 5 s), "debounce
100 ms", …) is the default of liftwatch.signal.settings.

The parser reads the table under "## Catalogue" (the first one whose header starts with
``code | pcode``) and the `name` = value pairs of the whole document; any other section
or table is left alone, so the document may grow.
"""

from __future__ import annotations

import ast
import re
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from liftwatch.agent.profiles import find_profile, load_profile
from liftwatch.agent.settings import UplinkSettings
from liftwatch.signal.events import CATALOGUE
from liftwatch.signal.settings import DetectionParams

EVENTS_MD = REPO / "docs" / "events.md"

#: The document's unit spellings and the settings' ``unit`` metadata they stand for;
#: "×" is a ratio (no unit).
UNITS = {"s": "s", "%": "%", "m/s²": "m/s²", "m/s": "m/s", "mm": "mm", "h": "h", "g": "g",
         "m": "m", "×": None}
_UNIT = r"(m/s²|m/s|mm|s|%|h|g|m|×)"
_NUM = r"(\d+(?:\.\d+)?)"
#: `name` = 45 s, `reopen_count` = 5th, `overspeed_ratio` = 1.15 ×
NAMED = re.compile(rf"`([a-z][a-z0-9_]*)` = {_NUM}(?:st|nd|rd|th)?(?:\s*{_UNIT}(?![\w/]))?")
#: `disagree_s` (default 5 s)
DEFAULTED = re.compile(rf"`([a-z][a-z0-9_]*)` \(default {_NUM}(?:\s*{_UNIT}(?![\w/]))?\)")

#: Figures a row gives without naming the setting: (code, regex on the row, settings the
#: groups are the defaults of, factor from the setting's unit to the document's).
UNNAMED: list[tuple[str, str, tuple[str, ...], float]] = [
    ("overspeed", r"speed below rated for (\d+) s", ("overspeed_clear_s",), 1),
    ("door_open_while_moving", r"debounce (\d+) ms", ("contact_debounce_s",), 1000),
    ("door_lock_circuit_open", r"debounce (\d+) ms", ("contact_debounce_s",), 1000),
    ("power_loss", r"mains back for (\d+) s", ("power_restore_s",), 1),
    ("safety_circuit_open", r"circuit made for (\d+) s", ("safety_clear_s",), 1),
    ("battery_low", r"level above (\d+) %", ("battery_clear_pct",), 1),
    ("vibration_abnormal", r"on (\d+) of the last (\d+) trips",
     ("anomaly_hits", "anomaly_window"), 1),
    ("vibration_abnormal", r"(\d+) consecutive normal trips", ("normal_clear_count",), 1),
    ("controller_link_lost", r"(\d+) valid responses in a row", ("link_ok_count",), 1),
    ("sensor_fault", r"within (\d+(?:\.\d+)?)–(\d+(?:\.\d+)?) g",
     ("gravity_min_g", "gravity_max_g"), 1),
    ("sensor_fault", r"behaves again for (\d+) trips", ("sensor_ok_trips",), 1),
    ("sensor_disagreement", r"agree for (\d+) s", ("agree_clear_s",), 1),
    ("door_slow", r"on (\d+) of the last (\d+) cycles", ("anomaly_hits", "anomaly_window"), 1),
    ("door_slow", r"(\d+) consecutive normal cycles", ("normal_clear_count",), 1),
    ("leveling_drift", r"on (\d+) of the last (\d+) stops", ("anomaly_hits", "anomaly_window"),
     1),
    ("leveling_drift", r"(\d+) consecutive stops", ("normal_clear_count",), 1),
]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def catalogue(text: str) -> list[dict[str, str]]:
    """The rows of the catalogue table, as {column: cell}, with their line numbers."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "## Catalogue"), None)
    assert start is not None, "docs/events.md has no '## Catalogue' section"
    i = start + 1
    while i < len(lines) and not (lines[i].lstrip().startswith("|")
                                  and _cells(lines[i])[:2] == ["code", "pcode"]):
        if lines[i].startswith("## "):
            pytest.fail("the Catalogue section has no table with columns code | pcode | …")
        i += 1
    assert i < len(lines), "no catalogue table in docs/events.md"
    header = _cells(lines[i])
    rows = []
    for n in range(i + 2, len(lines)):  # past the |---| line
        if not lines[n].lstrip().startswith("|"):
            break
        cells = _cells(lines[n])
        assert len(cells) == len(header), f"docs/events.md line {n + 1}: {len(cells)} cells"
        row = dict(zip(header, cells, strict=True))
        row["code"] = row["code"].strip("`")
        row["line"] = str(n + 1)
        rows.append(row)
    return rows


def settings_fields() -> dict[str, Field[Any]]:
    return {f.name: f for f in fields(DetectionParams)}


def default_of(f: Field[Any]) -> Any:
    assert f.default is not MISSING, f"{f.name} has no plain default"
    return f.default


def default_profile() -> dict[str, int]:
    name = next(f.default for f in fields(UplinkSettings) if f.name == "platform_profile")
    path = find_profile("platforms", str(name), None)
    assert path is not None and path.is_relative_to(REPO), f"default profile {name!r} not found"
    return dict(load_profile(path).codes)


def raised_by_rules() -> set[str]:
    """String constants of the rule modules (signal/ but its catalogue): codes a rule raises."""
    found: set[str] = set()
    for py in (REPO / "signal").glob("*.py"):
        if py.name == "events.py":
            continue
        for node in ast.walk(ast.parse(py.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value)
    return found


@pytest.fixture(scope="module")
def doc() -> str:
    return EVENTS_MD.read_text()


def test_every_catalogue_code_is_the_rule_sets_with_its_severity(doc: str) -> None:
    rows = catalogue(doc)
    codes = [r["code"] for r in rows]
    assert len(codes) == len(set(codes)), "a code appears twice in the catalogue"
    rules = raised_by_rules()
    for r in rows:
        where = f"docs/events.md line {r['line']} ({r['code']})"
        assert r["code"] in CATALOGUE, f"{where}: no such code in liftwatch.signal.events"
        assert r["severity"] == CATALOGUE[r["code"]].severity, \
            f"{where}: severity {r['severity']}, the code says {CATALOGUE[r['code']].severity}"
        assert r["code"] in rules, f"{where}: no rule in signal/ raises it"
    missing = sorted(set(CATALOGUE) - set(codes))
    assert not missing, f"codes of liftwatch.signal.events missing from docs/events.md: {missing}"


def test_every_pcode_is_the_default_platform_profiles(doc: str) -> None:
    profile = default_profile()
    rows = catalogue(doc)
    for r in rows:
        where = f"docs/events.md line {r['line']} ({r['code']})"
        if r["pcode"].isdigit():
            assert profile.get(r["code"]) == int(r["pcode"]), \
                f"{where}: pcode {r['pcode']}, the default profile says {profile.get(r['code'])}"
        else:
            assert r["pcode"] in ("ext", "profile"), f"{where}: pcode {r['pcode']!r}"
            assert r["code"] not in profile, \
                f"{where}: pcode {r['pcode']}, the default profile numbers it {profile[r['code']]}"
    numbered = {r["code"] for r in rows if r["pcode"].isdigit()}
    assert set(profile) <= numbered, \
        f"the default profile numbers codes the catalogue does not: {set(profile) - numbered}"


def _check_named(where: str, name: str, value: str, unit: str | None) -> None:
    known = settings_fields()
    assert name in known, f"{where}: `{name}` is not a setting of DetectionParams"
    f = known[name]
    assert float(value) == pytest.approx(default_of(f)), \
        f"{where}: `{name}` = {value}, the default is {default_of(f)}"
    if unit is not None:
        assert UNITS[unit] == f.metadata.get("unit"), \
            f"{where}: `{name}` in {unit}, the setting is in {f.metadata.get('unit')}"


def test_every_named_default_is_the_settings_default(doc: str) -> None:
    seen = set()
    for n, line in enumerate(doc.splitlines(), start=1):
        code = _cells(line)[0].strip("`") if line.lstrip().startswith("|") else ""
        where = f"docs/events.md line {n}" + (f" ({code})" if code else "")
        for rx in (NAMED, DEFAULTED):
            for m in rx.finditer(line):
                _check_named(where, m.group(1), m.group(2), m.group(3))
                seen.add(m.group(1))
    # the catalogue's own timers are all there (a sanity check of the parser)
    assert {"entrap_level_s", "entrap_nonlevel_s", "outside_zone_s", "runtime_limit_s",
            "vib_limit_z", "vib_limit_xy", "overspeed_ratio", "reopen_count", "disagree_s",
            "moving_speed", "alarm_repeat_s", "max_per_day"} <= seen


def test_every_unnamed_figure_of_a_row_is_the_settings_default(doc: str) -> None:
    rows = {r["code"]: r for r in catalogue(doc)}
    known = settings_fields()
    for code, rx, names, factor in UNNAMED:
        r = rows[code]
        where = f"docs/events.md line {r['line']} ({code})"
        m = re.search(rx, " ".join(v for k, v in r.items() if k not in ("code", "line")))
        assert m, f"{where}: the row no longer says /{rx}/ (update UNNAMED in this test)"
        for value, name in zip(m.groups(), names, strict=True):
            want = default_of(known[name]) * factor
            assert float(value) == pytest.approx(want), \
                f"{where}: {m.group(0)!r} but {name} defaults to {default_of(known[name])}"


#: "keeps going on the source it trusts more (configurable; default: sensors for door and
#: zone, controller for floor and mode)"
TRUST = re.compile(r"default: (\w+) for door and zone, (\w+) for floor and mode")


def test_the_trusted_sources_are_the_settings_defaults(doc: str) -> None:
    m = TRUST.search(" ".join(doc.split()))
    assert m, "docs/events.md no longer says which source is trusted by default"
    known = settings_fields()
    for value, names in zip(m.groups(), (("trust_door", "trust_zone"),
                                         ("trust_floor", "trust_mode")), strict=True):
        for name in names:
            assert value == default_of(known[name]), \
                f"docs/events.md: {value} trusted, but {name} defaults to {default_of(known[name])}"


def test_every_setting_of_the_rules_is_in_the_document(doc: str) -> None:
    """The reverse: no rule has a default the contract does not state."""
    covered = {m.group(1) for rx in (NAMED, DEFAULTED) for m in rx.finditer(doc)}
    covered |= {n for _c, _rx, names, _f in UNNAMED for n in names}
    covered |= {"trust_door", "trust_zone", "trust_floor", "trust_mode"}
    missing = sorted(set(settings_fields()) - covered)
    assert not missing, f"settings of DetectionParams docs/events.md does not state: {missing}"


def test_the_parser_names_the_row_that_disagrees(tmp_path: Path) -> None:
    """A doc whose timer drifted from the code fails with the row's line and code."""
    text = EVENTS_MD.read_text().replace("`entrap_level_s` = 45 s", "`entrap_level_s` = 60 s")
    with pytest.raises(AssertionError, match=r"line \d+ \(entrapment_level\).*= 60"):
        test_every_named_default_is_the_settings_default(text)
    text = EVENTS_MD.read_text().replace("| `overspeed` | 3 |", "| `overspeed` | 4 |")
    with pytest.raises(AssertionError, match=r"line \d+ \(overspeed\): pcode 4"):
        test_every_pcode_is_the_default_platform_profiles(text)
