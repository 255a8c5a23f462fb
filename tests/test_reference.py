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
    assert rows["[detection]"]["entrap_level_s"][2:6] == ["`45.0`", "s", "> 0", "**yes**"]
    assert rows["[uplink]"]["port"][4] == "1 – 65535"
    assert rows["[controller]"]["transport"][4] == '`"rtu"`, `"tcp"`'
    assert rows["[accel]"]["address"][2] == "`0x53`"
    assert "Secret" in rows["[uplink]"]["credentials_file"][6]
    assert rows["[terminal]"]["lift_id"][2] == "**required**"


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
