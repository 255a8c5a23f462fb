"""firmware_config/REFERENCE.md is generated from the settings dataclasses and kept fresh."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from liftwatch.agent.reference import REFERENCE_PATH, generate
from liftwatch.agent.schema import INPUTS_SECTION, SECTIONS, WIRING, field_specs, show

pytestmark = pytest.mark.timeout(60)


def test_committed_reference_is_current() -> None:
    assert REFERENCE_PATH == REPO / "firmware_config" / "REFERENCE.md"
    assert REFERENCE_PATH.read_text(encoding="utf-8") == generate(), (
        "firmware_config/REFERENCE.md is stale: run python -m liftwatch.agent.reference")


def _rows(text: str) -> dict[str, dict[str, list[str]]]:
    """section heading -> key -> cells of its table row."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("## ["):
            section = line[3:]
            out[section] = {}
        elif section and (m := re.match(r"\| `(\w+)` \|", line)):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            out[section][m.group(1)] = cells
    return out


def test_every_section_and_key_is_documented_with_type_default_and_flags() -> None:
    rows = _rows(generate())
    expected = {f"[{s}]": cls for s, cls in SECTIONS.items()} | {f"[{INPUTS_SECTION}.NAME]": WIRING}
    assert set(rows) == set(expected)
    for heading, cls in expected.items():
        specs = field_specs(cls)
        assert list(rows[heading]) == [s.name for s in specs], heading
        for s in specs:
            _key, typ, default, unit, _allowed, remote, meaning = rows[heading][s.name]
            assert typ == s.type_name
            if s.required:
                assert default == "**required**"
            elif "address" not in s.name:
                assert default == f"`{show(s.default)}`"
            assert unit == s.unit
            assert remote == ("**yes**" if s.remote else "no")
            assert meaning.startswith(s.doc.replace("|", "\\|")[:40])


def test_bounds_choices_and_secrets_are_shown() -> None:
    rows = _rows(generate())
    assert rows["[detection]"]["entrap_level_s"][2:6] == ["`45.0`", "s", "10 – 300", "**yes**"]
    assert rows["[uplink]"]["port"][4] == "1 – 65535"
    assert rows["[controller]"]["transport"][4] == '`"rtu"`, `"tcp"`'
    assert rows["[accel]"]["address"][2] == "`0x53`"
    assert "Secret" in rows["[uplink]"]["credentials_file"][6]
    assert rows["[terminal]"]["lift_id"][2] == "**required**"


def test_every_remote_key_has_a_safe_range_with_its_reason() -> None:
    """Issue 23: each key config_set may change is bounded on both sides, says which way
    weakens detection and why the range is what it is; the alarm timers' maxima are a
    few minutes (entrapment) and a few seconds (the press filter)."""
    text = generate()
    table = text[text.index("## Safe ranges of the remote keys"):]
    rows = {m.group(1): [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            for line in table.splitlines() if (m := re.match(r"\| `([\w.]+)` \|", line))}
    remote = {f"{sec}.{s.name}": s for sec, cls in SECTIONS.items() for s in field_specs(cls)
              if s.remote}
    assert set(rows) == set(remote)
    for key, spec in remote.items():
        assert spec.min is not None and spec.max is not None, key
        assert spec.min <= spec.default <= spec.max, key
        _k, allowed, _unit, _default, weaker, why = rows[key]
        assert " – " in allowed and weaker in ("raised", "lowered") and len(why) > 20, key
    maxima = {k: remote[f"detection.{k}"].max for k in (
        "entrap_level_s", "entrap_nonlevel_s", "outside_zone_s", "alarm_press_s",
        "alarm_hold_bypass_s", "alarm_repeat_s")}
    assert max(maxima.values()) <= 300 and maxima["alarm_press_s"] <= 3
    assert remote["uplink.health_s"].min >= 30 and remote["uplink.heartbeat_s"].min >= 1


def test_reference_tells_where_tls_files_are_checked() -> None:
    text = generate()
    assert "liftwatch check --config FILE" in text
    assert "LIFTWATCH_PROFILES" in text


def test_check_flag_detects_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "REFERENCE.md"
    stale.write_text(generate().replace("45.0", "40.0"), encoding="utf-8")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "liftwatch.agent.reference", *args],
                              cwd=REPO, capture_output=True, text=True, timeout=60)

    out = run("--check", "--out", str(stale))
    assert out.returncode == 1 and "stale" in out.stderr
    assert run("--out", str(stale)).returncode == 0
    assert stale.read_text(encoding="utf-8") == generate()
    assert run("--check", "--out", str(stale)).returncode == 0
