"""Platform code profiles: the shipped numberings, their validation and the search path."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO
from liftwatch.agent.config import ConfigError, load_config
from liftwatch.agent.profiles import (
    MODE_NAMES,
    PlatformProfile,
    ProfileError,
    find_profile,
    load_profile,
    parse_profile,
    search_dirs,
)
from liftwatch.agent.tomltext import dump_toml
from liftwatch.signal.events import CATALOGUE

pytestmark = pytest.mark.timeout(60)

PLATFORMS = REPO / "firmware_config" / "platforms"

#: The pcode column of events.md (the national / Shanghai list), transcribed.
SHANGHAI = {
    "entrapment_level": 7, "entrapment_nonlevel": 8, "alarm_button": 21,
    "stopped_outside_zone": 6, "overtravel_top": 1, "overtravel_bottom": 2, "overspeed": 3,
    "door_open_while_moving": 4, "moving_with_door_open": 5, "power_loss": 9,
    "safety_circuit_open": 10, "door_open_fault": 11, "door_close_fault": 12,
    "door_lock_circuit_open": 13, "motor_runtime_exceeded": 17, "floor_position_lost": 19,
    "door_reopen_repeated": 20, "battery_low": 22, "vibration_abnormal": 38,
}
#: The issue's Chongqing numbering (fault 8, re-run prevention, has no liftwatch code).
CHONGQING = {
    "safety_circuit_open": 1, "door_close_fault": 2, "door_open_fault": 3,
    "stopped_outside_zone": 4, "moving_with_door_open": 5, "motor_runtime_exceeded": 6,
    "floor_position_lost": 7, "alarm_button": 90, "overtravel_bottom": 91,
    "overtravel_top": 92, "entrapment_level": 93, "entrapment_nonlevel": 93,
}


@pytest.fixture(autouse=True)
def _no_profile_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIFTWATCH_PROFILES", raising=False)


def test_shanghai_numbers_every_code_of_the_national_list_and_nothing_else() -> None:
    p = load_profile(PLATFORMS / "shanghai.toml")
    assert p.name == "shanghai"
    for code in CATALOGUE:
        assert p.pcode(code) == SHANGHAI.get(code), code
    # ext codes, mode_change and self_test: symbolic code only.
    assert p.pcode("controller_link_lost") is None and p.pcode("self_test") is None
    assert all(p.mode_pcode(m) is None for m in range(len(MODE_NAMES)))


def test_chongqing_numbering() -> None:
    p = load_profile(PLATFORMS / "chongqing.toml")
    for code in CATALOGUE:
        assert p.pcode(code) == CHONGQING.get(code), code
    assert [p.mode_pcode(m) for m in range(8)] == list(range(40, 48))
    assert p.mode_pcode(8) is None
    assert p.pcode("overspeed") is None  # unmapped: symbolic code only


def test_single_mode_change_code_applies_to_every_mode(tmp_path: Path) -> None:
    p = parse_profile("city", {"codes": {"mode_change": 30}}, tmp_path / "city.toml")
    assert [p.mode_pcode(m) for m in range(8)] == [30] * 8
    assert PlatformProfile("empty").mode_pcode(1) is None


@pytest.mark.parametrize(("data", "problem"), [
    ({"codes": {"entrapment_levle": 7}},
     "codes: unknown key 'entrapment_levle' (did you mean entrapment_level?)"),
    ({"codes": {"overspeed": -1}}, "codes.overspeed: expected an integer between 0 and 65535"),
    ({"codes": {"overspeed": "3"}}, "codes.overspeed: expected an integer"),
    ({"codes": {"overspeed": True}}, "codes.overspeed: expected an integer"),
    ({"codes": {"overspeed": 70000}}, "codes.overspeed: expected an integer"),
    ({"mode_codes": {"inspecton": 42}},
     "mode_codes: unknown key 'inspecton' (did you mean inspection?)"),
    ({"codes": 5}, "codes: expected a table [codes], found 5"),
    ({"cods": {}}, "top level: unknown key 'cods' (did you mean codes?)"),
    ({"description": 3}, "description: expected a string, found 3"),
])
def test_broken_profile_names_the_problem(tmp_path: Path, data: dict, problem: str) -> None:
    path = tmp_path / "platforms" / "city.toml"
    path.parent.mkdir()
    path.write_text(dump_toml(data))
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith(problem)


def test_profile_errors_are_collected_and_reach_config_check(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "platforms").mkdir()
    (tmp_path / "platforms" / "city.toml").write_text(
        dump_toml({"codes": {"overspeed": -1, "nosuch": 3}}))
    with pytest.raises(ProfileError) as info:
        load_profile(tmp_path / "platforms" / "city.toml")
    assert len(info.value.problems) == 2
    cfg = tmp_path / "t.toml"
    cfg.write_text(dump_toml({
        "terminal": {"lift_id": "L-1"},
        "lift": {"landings": ["1", "2"], "landing_heights_m": [0.0, 3.0]},
        "uplink": {"broker": "b", "platform_profile": "city"}}))
    with pytest.raises(ConfigError) as cerr:
        load_config(cfg)
    assert [i.key for i in cerr.value.issues] == ["uplink.platform_profile"] * 2
    assert all(i.expected == "a valid platform profile" for i in cerr.value.issues)


def test_unreadable_profiles(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[codes\n")
    with pytest.raises(ProfileError, match="TOML syntax error"):
        load_profile(bad)
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(tmp_path / "absent.toml")


def test_search_path_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env1, env2 = tmp_path / "env1", tmp_path / "env2"
    site = tmp_path / "etc" / "site"
    site.mkdir(parents=True)
    config = site / "terminal.toml"

    def put(root: Path, name: str) -> Path:
        path = root / "platforms" / f"{name}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('description = "test"\n')
        return path

    monkeypatch.setenv("LIFTWATCH_PROFILES", f"{env1}::{env2}")
    assert search_dirs(config)[:4] == [env1, env2, site, site.parent]
    # Not anywhere but the repository: the repository's copy.
    assert find_profile("platforms", "shanghai", config) == PLATFORMS / "shanghai.toml"
    assert find_profile("platforms", "shanghai", None) == PLATFORMS / "shanghai.toml"
    # The parent of the config's folder beats the repository, its folder beats the parent.
    parent = put(site.parent, "shanghai")
    assert find_profile("platforms", "shanghai", config) == parent
    own = put(site, "shanghai")
    assert find_profile("platforms", "shanghai", config) == own
    # $LIFTWATCH_PROFILES beats everything, in its own order.
    second = put(env2, "shanghai")
    assert find_profile("platforms", "shanghai", config) == second
    first = put(env1, "shanghai")
    assert find_profile("platforms", "shanghai", config) == first
    assert find_profile("platforms", "atlantis", config) is None
    assert find_profile("controllers", "shanghai", config) is None  # kinds are kept apart


@pytest.mark.parametrize("name", ["../platforms/shanghai", "/etc/passwd", "", ".hidden",
                                  "a/b", "shanghai.toml"])
def test_profile_names_are_never_paths(name: str) -> None:
    assert find_profile("platforms", name, REPO / "firmware_config" / "examples" / "x.toml") \
        is None


def test_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="kind"):
        find_profile("firmware", "x", None)  # type: ignore[arg-type]


def test_env_profile_overrides_the_platform_a_config_gets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    override = tmp_path / "override" / "platforms"
    override.mkdir(parents=True)
    (override / "shanghai.toml").write_text("[codes]\nentrapment_level = 700\n")
    monkeypatch.setenv("LIFTWATCH_PROFILES", str(override.parent))
    cfg = load_config(REPO / "firmware_config" / "examples" / "sensors_only.toml")
    assert cfg.platform.pcode("entrapment_level") == 700
