"""The mistakes technicians make when commissioning a terminal (issue 18): each config
file or terminal state here gets a refusal or a FAIL naming the cause and the fix;
none passes silently.

The lift is the one of the issue's trial: 18 landings labelled 1 to 21 without 4, 13
and 14, 3.0 m apart, 1.75 m/s, Modbus RTU.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from liftwatch.agent import plausibility
from liftwatch.agent.config import ConfigError, ConfigIssue, load_config
from liftwatch.agent.tomltext import dump_toml

pytestmark = pytest.mark.timeout(60)

LABELS = [str(n) for n in range(1, 22) if n not in (4, 13, 14)]
HEIGHTS = [round(3.0 * i, 2) for i in range(len(LABELS))]
LIFT: dict[str, Any] = {
    "terminal": {"lift_id": "310115-0018018"},
    "lift": {"landings": LABELS, "landing_heights_m": HEIGHTS, "rated_speed": 1.75,
             "door_zone_m": 0.15},
    "inputs": {"door_closed": {"pin": "D5"}, "zone_up": {"pin": "D13"},
               "zone_down": {"pin": "D19"}, "mains_ok": {"pin": "D21"}},
    "accel": {"chip": "adxl345", "address": 0x53},
    "uplink": {"broker": "broker.example", "tls": False},
}


@pytest.fixture(autouse=True)
def _no_profile_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIFTWATCH_PROFILES", raising=False)


def config(tmp_path: Path, **sections: dict[str, Any]) -> Path:
    """The trial lift's config with the given sections' keys changed."""
    data = copy.deepcopy(LIFT)
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    path = tmp_path / "terminal.toml"
    path.write_text(dump_toml(data), encoding="utf-8")
    return path


def refused(path: Path, key: str) -> ConfigIssue:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    found = [i for i in info.value.issues if i.key == key]
    assert found, [str(i) for i in info.value.issues]
    return found[0]


def warned(path: Path, key: str) -> str:
    cfg = load_config(path)
    found = [w for w in cfg.warnings if w.startswith(key + ":")]
    assert found, cfg.warnings
    return found[0]


# ---------------------------------------------------------------- plausibility (item 1)

def test_the_trial_lift_is_plausible(tmp_path: Path) -> None:
    cfg = load_config(config(tmp_path))
    assert [w for w in cfg.warnings if "uplink.tls" not in w] == []


def test_rated_speed_in_m_per_min_is_refused_and_converted(tmp_path: Path) -> None:
    issue = refused(config(tmp_path, lift={"rated_speed": 105}), "lift.rated_speed")
    assert issue.found == "105"
    assert "m/s" in issue.expected and "51 m travel" in issue.expected
    assert issue.hint == "m/min? 105 m/min is 1.75 m/s: write rated_speed = 1.75"


def test_rated_speed_in_mm_per_s_is_refused(tmp_path: Path) -> None:
    issue = refused(config(tmp_path, lift={"rated_speed": 1750}), "lift.rated_speed")
    assert "write rated_speed = 1.75" in issue.hint and "mm/s" in issue.hint


def test_rated_speed_no_lift_has_is_refused(tmp_path: Path) -> None:
    issue = refused(config(tmp_path, lift={"landings": ["1", "2"], "landing_heights_m": [0, 3],
                                           "rated_speed": 5}), "lift.rated_speed")
    assert "overspeed threshold would be 5.75 m/s" in issue.hint


def test_rated_speed_never_reached_is_a_warning(tmp_path: Path) -> None:
    w = warned(config(tmp_path, lift={"rated_speed": 10.0}), "lift.rated_speed")
    assert "never reaches" in w and "at most 8.75 m/s" in w


def test_landing_heights_in_mm_are_refused(tmp_path: Path) -> None:
    mm = [h * 1000 for h in HEIGHTS]
    issue = refused(config(tmp_path, lift={"landing_heights_m": mm}), "lift.landing_heights_m")
    assert "51000 m from the lowest to the highest landing" in issue.found
    assert issue.hint.startswith("heights in mm? write them in metres: 3000 mm is 3 m")


def test_landing_heights_in_cm_are_refused(tmp_path: Path) -> None:
    cm = [h * 100 for h in HEIGHTS[:3]]
    issue = refused(config(tmp_path, lift={"landings": LABELS[:3], "landing_heights_m": cm}),
                    "lift.landing_heights_m[1]")
    assert "300 m between landings 0 and 1" in issue.found
    assert issue.hint.startswith("in cm? 300 cm is 3 m")


def test_a_landing_typed_twice_is_refused(tmp_path: Path) -> None:
    heights = HEIGHTS[:3] + [h + 0.05 for h in HEIGHTS[2:-1]]  # landing 3 typed as 2
    issue = refused(config(tmp_path, lift={"landing_heights_m": heights}),
                    "lift.landing_heights_m[3]")
    assert "0.05 m between landings 2 and 3" in issue.found and "typed twice" in issue.hint


def test_unusual_spacing_is_a_warning(tmp_path: Path) -> None:
    heights = HEIGHTS[:2] + [h + 17.0 for h in HEIGHTS[2:]]
    w = warned(config(tmp_path, lift={"landing_heights_m": heights}),
               "lift.landing_heights_m[2]")
    assert "express zone" in w and "a landing is missing" in w


def test_door_zone_in_mm_is_refused(tmp_path: Path) -> None:
    issue = refused(config(tmp_path, lift={"door_zone_m": 150}), "lift.door_zone_m")
    assert "half the smallest landing spacing (1.5 m)" in issue.expected
    assert issue.hint == "in mm? 150 mm is 0.15 m: write door_zone_m = 0.15"


def test_door_zone_wider_than_en81_is_a_warning(tmp_path: Path) -> None:
    w = warned(config(tmp_path, lift={"door_zone_m": 0.5}), "lift.door_zone_m")
    assert "EN 81-20" in w


def test_moving_speed_above_rated_speed_is_refused(tmp_path: Path) -> None:
    issue = refused(config(tmp_path, lift={"rated_speed": 0.5},
                           detection={"moving_speed": 0.6}), "detection.moving_speed")
    assert "never count as moving" in issue.expected


def test_coarse_accelerometer_range_is_a_warning(tmp_path: Path) -> None:
    w = warned(config(tmp_path, accel={"chip": "lis3dh", "address": 0x18, "range_g": 16}),
               "accel.range_g")
    assert "12 mg a count" in w and "use range_g = 2 or 4" in w
    w = warned(config(tmp_path, accel={"chip": "lis3dh", "address": 0x18, "range_g": 2,
                                       "rate_hz": 1600}), "accel.range_g")
    assert "rate_hz = 400" in w
    # the ADXL345 keeps full resolution on every range
    assert not any(w.startswith("accel.") for w in load_config(config(
        tmp_path, accel={"range_g": 16})).warnings)


def test_every_check_is_documented() -> None:
    text = (REPO / "firmware_config" / "README.md").read_text(encoding="utf-8")
    section = text.split("## Plausibility", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"^\| `(\w+)` \|", section, re.M))
    assert named == set(plausibility.CHECKS)


def test_shipped_examples_are_plausible() -> None:
    for path in sorted((REPO / "firmware_config" / "examples").glob("*.toml")):
        cfg = load_config(path)
        assert not [w for w in cfg.warnings if not w.startswith("uplink.tls")], path
