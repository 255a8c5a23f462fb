"""The technician config: validation names file, key, expected and found for every problem."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from liftwatch.agent.config import (
    REDACTED,
    ConfigError,
    ConfigIssue,
    TerminalConfig,
    load_config,
    load_credentials,
    remote_keys,
    validate_dict,
)
from liftwatch.agent.tomltext import dump_toml
from liftwatch.drivers.settings import InputWiring
from liftwatch.signal.settings import DetectionParams

pytestmark = pytest.mark.timeout(60)

BASE: dict[str, Any] = {
    "terminal": {"lift_id": "L-0001"},
    "lift": {"landings": ["1", "2", "3"], "landing_heights_m": [0.0, 3.0, 6.0]},
    "inputs": {"door_closed": {"pin": "D17"}, "zone_up": {"pin": "D22"},
               "zone_down": {"pin": "D23"}},
    "uplink": {"broker": "broker.example"},
}
PASSWORD = "s3cr3t-pa55word"


@pytest.fixture(autouse=True)
def _no_profile_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIFTWATCH_PROFILES", raising=False)


def write(tmp_path: Path, data: dict[str, Any] | str, name: str = "t.toml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else dump_toml(data), encoding="utf-8")
    return path


def with_(**sections: dict[str, Any]) -> dict[str, Any]:
    """BASE with the given sections' keys set (nested dicts merged)."""
    data = copy.deepcopy(BASE)
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return data


def issues(path: Path) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == "\n".join(str(i) for i in info.value.issues)
    return info.value.issues


def the_issue(path: Path, key: str) -> ConfigIssue:
    found = [i for i in issues(path) if i.key == key]
    assert found, f"no issue for {key}: {[str(i) for i in issues(path)]}"
    return found[0]


def test_base_config_loads_with_defaults_filled(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE))
    assert isinstance(cfg, TerminalConfig)
    assert cfg.terminal.lift_id == "L-0001"
    assert cfg.lift.landings == ["1", "2", "3"]
    assert cfg.detection == DetectionParams()
    assert cfg.inputs == {"door_closed": InputWiring(pin="D17"),
                          "zone_up": InputWiring(pin="D22"), "zone_down": InputWiring(pin="D23")}
    assert cfg.controller.enabled is False and cfg.register_map_path is None
    assert cfg.platform.name == "shanghai"
    assert cfg.raw["detection"]["entrap_level_s"] == 45.0
    assert cfg.raw["inputs"]["zone_up"]["debounce_ms"] == 20.0
    assert cfg.warnings == []


def test_int_is_accepted_for_a_number_and_converted(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, with_(detection={"entrap_level_s": 60})))
    assert cfg.detection.entrap_level_s == 60.0
    assert isinstance(cfg.detection.entrap_level_s, float)


# Each case: sections to set on BASE (or a transform), the key path the error must name,
# text of "expected" and of "found".
BROKEN: list[tuple[str, Any, str, str, str]] = [
    ("negative_timer", with_(detection={"entrap_level_s": -3}),
     "detection.entrap_level_s", "a number between 10 and 300", "-3"),
    ("zero_timer", with_(detection={"alarm_press_s": 0}),
     "detection.alarm_press_s", "a number between 0.1 and 3", "0"),
    ("string_for_number", with_(lift={"rated_speed": "fast"}),
     "lift.rated_speed", "a number > 0", '"fast"'),
    ("bool_is_not_a_number", with_(detection={"overspeed_ratio": True}),
     "detection.overspeed_ratio", "a number between 1.05 and 1.4", "true"),
    ("float_for_integer", with_(accel={"i2c_bus": 1.5}),
     "accel.i2c_bus", "an integer between 0 and 255", "1.5"),
    ("bad_choice", with_(controller={"transport": "udp"}),
     "controller.transport", 'one of "rtu", "tcp"', '"udp"'),
    ("int_choice", with_(accel={"rate_hz": 500}),
     "accel.rate_hz", "one of 400, 800, 1600", "500"),
    ("out_of_range", with_(uplink={"port": 70000}),
     "uplink.port", "an integer between 1 and 65535", "70000"),
    ("percent_over_100", with_(detection={"battery_clear_pct": 130}),
     "detection.battery_clear_pct", "a number between 10 and 100", "130"),
    ("missing_lift_id", {k: v for k, v in BASE.items() if k != "terminal"},
     "terminal.lift_id", "a string (a required key)", "nothing"),
    ("missing_broker", with_(uplink={"broker": None}),
     "uplink.broker", "a string (a required key)", "nothing"),
    ("missing_pin", with_(inputs={"presence": {"pull": "up"}}),
     "inputs.presence.pin", "a string (a required key)", "nothing"),
    ("bad_pull", with_(inputs={"door_closed": {"pin": "D17", "pull": "weak"}}),
     "inputs.door_closed.pull", 'one of "up", "down", "none"', '"weak"'),
    ("input_not_a_table", with_(inputs={"presence": "D5"}),
     "inputs.presence", "a table [inputs.presence]", '"D5"'),
    ("section_not_a_table", with_() | {"storage": 5},
     "storage", "a table [storage]", "5"),
    ("list_item_type", with_(lift={"landings": [1, "2", "3"]}),
     "lift.landings[0]", "a string", "1"),
    ("one_landing", with_(lift={"landings": ["1"], "landing_heights_m": [0.0]}),
     "lift.landings", "at least 2 landing labels", '["1"]'),
    ("duplicate_label", with_(lift={"landings": ["1", "2", "1"]}),
     "lift.landings[2]", "a label no other landing has", '"1" (also lift.landings[0])'),
    ("heights_count", with_(lift={"landing_heights_m": [0.0, 3.0]}),
     "lift.landing_heights_m", "3 heights, one per label", "2: [0.0, 3.0]"),
    ("heights_not_increasing", with_(lift={"landing_heights_m": [0.0, 3.0, 3.0]}),
     "lift.landing_heights_m[2]", "a height > 3.0 (strictly increasing", "3.0"),
    ("heights_not_from_zero", with_(lift={"landing_heights_m": [100.0, 103.0, 106.0]}),
     "lift.landing_heights_m[0]", "0 (heights are measured from the lowest", "100.0"),
    ("pin_used_twice", with_(inputs={"zone_down": {"pin": "D22"}}),
     "inputs.zone_down.pin", "a pin no other input uses", '"D22" (also inputs.zone_up.pin)'),
    ("battery_clear_not_above_low", with_(detection={"battery_low_pct": 40}),
     "detection.battery_clear_pct", "a value > detection.battery_low_pct (40.0)", "30.0"),
    ("gravity_outside_its_range", with_(detection={"gravity_min_g": 1.2}),
     "detection.gravity_min_g", "a number between 0.5 and 0.99", "1.2"),
    ("anomaly_hits_over_window", with_(detection={"anomaly_hits": 6}),
     "detection.anomaly_window", "a value >= detection.anomaly_hits (6)", "5"),
    ("reconnect_min_over_max", with_(uplink={"reconnect_min_s": 20, "reconnect_max_s": 10}),
     "uplink.reconnect_max_s", "a value >= uplink.reconnect_min_s (20.0)", "10.0"),
    ("tcp_without_host", with_(controller={"enabled": True, "transport": "tcp"}),
     "controller.host", "a host name or address (required when transport", '""'),
    ("register_map_missing", with_(controller={"enabled": True, "register_map": "nosuch"}),
     "controller.register_map", "the name of a file controllers/NAME.toml",
     "no controllers/nosuch.toml"),
    ("register_map_is_a_path", with_(controller={"enabled": True,
                                                 "register_map": "../../etc/passwd"}),
     "controller.register_map", "a profile name (letters, digits, _ and -; not a path)",
     '"../../etc/passwd"'),
    ("platform_missing", with_(uplink={"platform_profile": "atlantis"}),
     "uplink.platform_profile", "the name of a file platforms/NAME.toml",
     "no platforms/atlantis.toml"),
    ("address_wrong_for_chip", with_(accel={"chip": "lis3dh"}),
     "accel.address", "0x18 or 0x19 for lis3dh", "0x53"),
    ("lis3dh_has_no_800_hz", with_(accel={"chip": "lis3dh", "address": 0x18, "rate_hz": 800}),
     "accel.rate_hz", "400 or 1600 for lis3dh (it has no 800 Hz rate)", "800"),
    ("rotation_not_3x3", with_(accel={"rotation": [[1.0, 0.0], [0.0, 1.0]]}),
     "accel.rotation", "a 3×3 matrix", "[[1.0, 0.0], [0.0, 1.0]]"),
    ("rotation_mirror", with_(accel={"rotation": [[1.0, 0, 0], [0, 1.0, 0], [0, 0, -1.0]]}),
     "accel.rotation", "determinant +1",
     "[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]]"),
    ("rotation_not_orthonormal", with_(accel={"rotation": [[2.0, 0, 0], [0, 1, 0], [0, 0, 1]]}),
     "accel.rotation", "a rotation matrix (orthonormal rows)",
     "[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]"),
    ("lift_id_breaks_topics", with_(terminal={"lift_id": "lift 7/#"}),
     "terminal.lift_id", "a registration code without spaces, /, + or #", '"lift 7/#"'),
    ("topic_prefix_wildcard", with_(uplink={"topic_prefix": "city/+"}),
     "uplink.topic_prefix", "topic levels without spaces, + or #", '"city/+"'),
    ("cert_without_key", with_(uplink={"cert_file": "/etc/liftwatch/tls/client.pem"}),
     "uplink.key_file", "mutual TLS needs both cert_file and key_file", '""'),
    ("unknown_key", with_(detection={"entrap_levl_s": 30}),
     "detection.entrap_levl_s", "a key of [detection]", "an unknown key"),
]


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _drop_none(v) if isinstance(v, dict) else v
            for k, v in data.items() if v is not None}


@pytest.mark.parametrize(("case", "data", "key", "expected", "found"), BROKEN,
                         ids=[c[0] for c in BROKEN])
def test_broken_config_names_key_expected_and_found(
        tmp_path: Path, case: str, data: dict[str, Any], key: str, expected: str,
        found: str) -> None:
    path = write(tmp_path, _drop_none(data), f"{case}.toml")
    all_issues = issues(path)
    assert len(all_issues) == 1, [str(i) for i in all_issues]
    issue = all_issues[0]
    assert issue.file == str(path)
    assert issue.key == key
    assert expected in issue.expected
    assert issue.found == found
    assert str(issue).startswith(f"{path}: {key}: expected {issue.expected}, found ")


def test_message_format_matches_the_technicians_example(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, with_(detection={"entrap_level_s": -3}), "rtu.toml")
    monkeypatch.chdir(tmp_path)
    (issue,) = issues(Path("rtu.toml"))
    assert str(issue) == ("rtu.toml: detection.entrap_level_s: expected a number between 10 "
                          "and 300, found -3")


def test_all_errors_are_reported_at_once(tmp_path: Path) -> None:
    data = with_(detection={"entrap_level_s": -3, "trust_door": "both"},
                 lift={"landing_heights_m": [0.0, 2.0, 1.0]},
                 inputs={"zone_down": {"pin": "D17"}},
                 uplink={"port": 0, "heartbeat": 10})
    del data["terminal"]
    keys = {i.key for i in issues(write(tmp_path, data))}
    assert keys == {"detection.entrap_level_s", "detection.trust_door",
                    "lift.landing_heights_m[2]", "inputs.zone_down.pin", "uplink.port",
                    "uplink.heartbeat", "terminal.lift_id"}


def test_unknown_keys_get_did_you_mean(tmp_path: Path) -> None:
    data = with_(detection={"entrap_levl_s": 30}, inputs={"door_close": {"pin": "D5"}})
    data["detecton"] = {"overspeed_s": 1.0}
    data["uplink"]["entrap_level_s"] = 30
    data["name"] = "top-level key meant for [terminal]"
    data["lift_id"] = "L-1"  # close to the section name "lift", but a key of [terminal]
    data["accel"] = {"port": 3}
    hints = {i.key: i.hint for i in issues(write(tmp_path, data))}
    assert hints == {
        "detection.entrap_levl_s": "did you mean entrap_level_s?",
        "inputs.door_close": "did you mean door_closed?",
        "detecton": "did you mean detection?",
        "uplink.entrap_level_s": "entrap_level_s belongs in [detection]",
        "name": "name belongs in [terminal]",
        "lift_id": "lift_id belongs in [terminal]",
        "accel.port": "port belongs in [controller] or [uplink]",
    }
    text = str(the_issue(write(tmp_path, data), "detection.entrap_levl_s"))
    assert text.endswith("found an unknown key (did you mean entrap_level_s?)")


def test_toml_syntax_error_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[terminal]\nlift_id = "L-1"\n[lift]\nrated_speed = \n')
    (issue,) = issues(path)
    assert issue.line == 4
    assert issue.expected == "valid TOML"
    assert str(issue).startswith(f"{path}:4: expected valid TOML, found ")


def test_unreadable_files_are_clear_errors(tmp_path: Path) -> None:
    (issue,) = issues(tmp_path / "absent.toml")
    assert issue.expected == "a readable config file" and "No such file" in issue.found
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b'[terminal]\nlift_id = "\xff\xfe"\n')
    (issue,) = issues(binary)
    assert issue.expected == "UTF-8 text" and issue.line == 2 and issue.found == "byte 0xff"


def test_empty_file_reports_every_missing_required_key_and_section(tmp_path: Path) -> None:
    keys = {i.key for i in issues(write(tmp_path, "", "empty.toml"))}
    assert keys == {"terminal.lift_id", "uplink.broker", "[lift]"}


def test_a_missing_lift_section_is_named_as_missing(tmp_path: Path) -> None:
    data = {k: v for k, v in BASE.items() if k != "lift"}
    path = write(tmp_path, data, "nolift.toml")
    found = issues(path)
    assert [i.key for i in found] == ["[lift]"]
    text = str(found[0])
    assert text.startswith(f"{path}: [lift]: expected a section [lift] (the landings")
    assert "the section is missing" in text and "found []" not in text
    # a required key absent from a section that is there is still named as the key
    data["lift"] = {"landing_heights_m": [0.0, 3.0]}
    assert "lift.landings" in {i.key for i in issues(write(tmp_path, data, "nolabels.toml"))}


# ------------------------------------------------------------------ files a config refers to


def creds(tmp_path: Path, mode: int, text: str | None = None) -> Path:
    path = tmp_path / "mqtt.cred"
    path.write_text(text if text is not None else
                    f'username = "terminal-1"\npassword = "{PASSWORD}"\n')
    path.chmod(mode)
    return path


def test_private_credentials_file_is_accepted_and_read(tmp_path: Path) -> None:
    cred = creds(tmp_path, 0o600)
    cfg = load_config(write(tmp_path, with_(uplink={"credentials_file": "mqtt.cred"})))
    assert cfg.uplink.credentials_file == str(cred)  # relative to the config's folder
    assert load_credentials(cfg.uplink.credentials_file) == ("terminal-1", PASSWORD)


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o606, 0o641, 0o664])
def test_credentials_readable_by_others_are_refused(tmp_path: Path, mode: int) -> None:
    cred = creds(tmp_path, mode)
    issue = the_issue(write(tmp_path, with_(uplink={"credentials_file": str(cred)})),
                      "uplink.credentials_file")
    assert issue.expected.startswith("a file other users cannot access")
    assert f"mode {mode:04o}" in issue.found and f"chmod o-rwx {cred}" in issue.found
    assert PASSWORD not in str(issue)
    with pytest.raises(ConfigError) as info:
        load_credentials(cred)
    assert "chmod o-rwx" in str(info.value) and PASSWORD not in str(info.value)


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o660, 0o400])
def test_credentials_readable_by_owner_and_group_only_are_accepted(tmp_path: Path,
                                                                   mode: int) -> None:
    """The installed layout: root-owned, group liftwatch, 0640 (deploy/INSTALL.md)."""
    cred = creds(tmp_path, mode)
    cfg = load_config(write(tmp_path, with_(uplink={"credentials_file": str(cred)})))
    assert load_credentials(cfg.uplink.credentials_file) == ("terminal-1", PASSWORD)


def test_credentials_permission_is_checked_again_at_load_time(tmp_path: Path) -> None:
    cred = creds(tmp_path, 0o600)
    cfg = load_config(write(tmp_path, with_(uplink={"credentials_file": str(cred)})))
    cred.chmod(0o644)
    with pytest.raises(ConfigError):
        load_credentials(cfg.uplink.credentials_file)


@pytest.mark.parametrize(("text", "found"), [
    ('username = "u"\n', "password missing or not a string"),
    ('username = "u"\npassword = 7\n', "password missing or not a string"),
    (f'user = "u"\npassword = "{PASSWORD}"\n', "username missing or not a string"),
    (f'username = "u"\npassword = "{PASSWORD}"\ntoken = "x"\n', "unknown keys token"),
    (f'username = "u"\npassword = "{PASSWORD}\n', "not valid TOML"),
])
def test_bad_credentials_file_is_refused_without_showing_it(tmp_path: Path, text: str,
                                                            found: str) -> None:
    cred = creds(tmp_path, 0o600, text)
    all_issues = issues(write(tmp_path, with_(uplink={"credentials_file": str(cred)})))
    assert all(i.key == "uplink.credentials_file" for i in all_issues)
    assert any(found in i.found for i in all_issues)
    assert PASSWORD not in "\n".join(str(i) for i in all_issues)


def test_missing_credentials_file_is_refused(tmp_path: Path) -> None:
    issue = the_issue(write(tmp_path, with_(uplink={"credentials_file": "/nonexistent/c"})),
                      "uplink.credentials_file")
    assert issue.expected == "an existing credentials file"


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "client.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    key.chmod(0o644)
    data = with_(uplink={"cert_file": "client.pem", "key_file": "client.key"})
    issue = the_issue(write(tmp_path, data), "uplink.key_file")
    assert "chmod o-rwx" in issue.found
    for mode in (0o600, 0o640):  # group liftwatch may read a root-owned key
        key.chmod(mode)
        cfg = load_config(write(tmp_path, data))
        assert cfg.uplink.key_file == str(key)
    # TLS files that do not exist are the commissioning check's business, not ours.
    assert not (tmp_path / "client.pem").exists()


def test_plaintext_is_allowed_with_a_warning(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, with_(uplink={"tls": False, "port": 1883})))
    assert any("uplink.tls = false" in w for w in cfg.warnings)
    assert load_config(write(tmp_path, BASE)).warnings == []


def test_register_map_found_through_profile_path_and_validated(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profiles = tmp_path / "profiles"
    (profiles / "controllers").mkdir(parents=True)
    shutil.copy(REPO / "firmware_config" / "controllers" / "example.toml",
                profiles / "controllers" / "mymap.toml")
    (profiles / "controllers" / "broken.toml").write_text('[map]\nname = 5\n')
    monkeypatch.setenv("LIFTWATCH_PROFILES", f"/nonexistent:{profiles}")
    cfg_dir = tmp_path / "site"
    cfg_dir.mkdir()
    ok = write(cfg_dir, with_(controller={"enabled": True, "register_map": "mymap"}))
    assert load_config(ok).register_map_path == profiles / "controllers" / "mymap.toml"
    bad = write(cfg_dir, with_(controller={"enabled": True, "register_map": "broken"}))
    found = issues(bad)
    assert found and all(i.key == "controller.register_map" for i in found)
    assert all(i.expected == "a valid register map" for i in found)
    assert all(str(profiles / "controllers" / "broken.toml") in i.found for i in found)


def test_register_map_ignored_when_controller_disabled(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, with_(controller={"register_map": "nosuch"})))
    assert cfg.register_map_path is None


# ------------------------------------------------------------------ remote changes


def test_remote_keys_are_timers_and_thresholds_only() -> None:
    keys = remote_keys()
    assert {"detection.entrap_level_s", "detection.overspeed_ratio", "uplink.heartbeat_s",
            "uplink.health_s"} <= keys
    for refused in ("uplink.broker", "uplink.credentials_file", "uplink.tls",
                    "uplink.topic_prefix", "uplink.key_file", "terminal.lift_id",
                    "inputs.door_closed.pin", "controller.port", "storage.data_dir"):
        assert refused not in keys
    assert all(k.split(".")[0] in {"detection", "uplink"} for k in keys)


def test_validate_dict_checks_a_patched_config_without_writing(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    data = tomllib.loads(path.read_text())
    data.setdefault("detection", {})["entrap_level_s"] = 0
    found = validate_dict(data, path)
    assert [(i.key, i.found) for i in found] == [("detection.entrap_level_s", "0")]
    data["detection"]["entrap_level_s"] = 50
    assert validate_dict(data, path) == []
    assert "detection" not in tomllib.loads(path.read_text())  # file untouched


# ------------------------------------------------------------------ the CLI


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "liftwatch.agent.cli", "config", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_examples_check_ok_through_the_real_cli() -> None:
    examples = sorted(str(p.relative_to(REPO))
                      for p in (REPO / "firmware_config" / "examples").glob("*.toml"))
    assert len(examples) == 3
    out = cli("check", *examples)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines() == [f"OK {e}" for e in examples]


def test_cli_check_reports_every_file_and_exits_2(tmp_path: Path) -> None:
    good = write(tmp_path, BASE, "good.toml")
    bad = write(tmp_path, with_(detection={"entrap_level_s": -3}, uplink={"port": 0}),
                "bad.toml")
    out = cli("check", str(bad), str(good))
    assert out.returncode == 2
    lines = out.stdout.splitlines()
    assert lines == [
        f"{bad}: detection.entrap_level_s: expected a number between 10 and 300, found -3",
        f"{bad}: uplink.port: expected an integer between 1 and 65535, found 0",
        f"FAILED {bad}: 2 problem(s)",
        f"OK {good}",
    ]


def test_cli_check_prints_warnings(tmp_path: Path) -> None:
    path = write(tmp_path, with_(uplink={"tls": False}))
    out = cli("check", str(path))
    assert out.returncode == 0
    assert f"WARNING {path}: uplink.tls = false" in out.stdout


def test_cli_show_fills_defaults_and_redacts(tmp_path: Path) -> None:
    cred = creds(tmp_path, 0o600)
    key = tmp_path / "client.key"
    key.write_text("key")
    key.chmod(0o600)
    path = write(tmp_path, with_(uplink={"credentials_file": "mqtt.cred",
                                         "cert_file": "client.pem", "key_file": "client.key"}))
    out = cli("show", str(path))
    assert out.returncode == 0, out.stderr
    assert PASSWORD not in out.stdout and str(cred) not in out.stdout
    assert str(key) not in out.stdout
    shown = tomllib.loads(out.stdout)  # the output is TOML that reads back
    cfg = load_config(path)
    assert shown == cfg.redacted()
    assert shown["uplink"]["credentials_file"] == REDACTED
    assert shown["uplink"]["key_file"] == REDACTED
    assert shown["uplink"]["cert_file"] == str(tmp_path / "client.pem")
    assert shown["detection"]["entrap_level_s"] == 45.0
    assert shown["inputs"]["door_closed"] == {"pin": "D17", "pull": "none", "active_low": False,
                                              "debounce_ms": 20.0}
    as_json = cli("show", "--json", str(path))
    assert json.loads(as_json.stdout) == shown


def test_cli_show_of_a_broken_file_exits_2(tmp_path: Path) -> None:
    out = cli("show", str(write(tmp_path, with_(lift={"rated_speed": -1}))))
    assert out.returncode == 2
    assert "lift.rated_speed: expected a number > 0 and <= 10000, found -1" in out.stderr
    assert out.stdout == ""


def test_redacted_hides_password_fields_anywhere(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE))
    cfg.raw["uplink"]["password"] = PASSWORD  # e.g. a future inline field
    assert cfg.redacted()["uplink"]["password"] == REDACTED
    assert cfg.raw["uplink"]["password"] == PASSWORD  # the copy, not the original
    assert cfg.redacted()["uplink"]["credentials_file"] == ""  # nothing to hide


# ------------------------------------------------------------------ robustness

_scalars = (st.none() | st.booleans() | st.integers(-10**6, 10**6)
            | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8)
            | st.sampled_from(["D17", "D22", "tcp", "lis3dh", "fixed", "example", "nosuch",
                               "\x00", "../x", "mqtt.cred"]))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=12)
_known = sorted({k.split(".")[-1] for k in remote_keys()} | {
    "pin", "pull", "landings", "landing_heights_m", "rotation", "chip", "address", "enabled",
    "transport", "host", "register_map", "credentials_file", "key_file", "cert_file", "tls",
    "platform_profile", "lift_id", "broker", "door_closed", "zone_up", "data_dir"})
_sections = st.dictionaries(st.sampled_from(_known) | st.text(max_size=6), _values, max_size=6)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutation=st.dictionaries(
    st.sampled_from(["terminal", "lift", "inputs", "accel", "controller", "detection", "uplink",
                     "storage", "bogus"]), _sections | _values, max_size=4))
def test_any_config_dict_gives_issues_never_an_exception(tmp_path: Path,
                                                         mutation: dict[str, Any]) -> None:
    data = copy.deepcopy(BASE)
    for section, value in mutation.items():
        if isinstance(value, dict) and isinstance(data.get(section), dict):
            data[section].update(value)
        else:
            data[section] = value
    found = validate_dict(data, tmp_path / "fuzz.toml")
    assert all(isinstance(i, ConfigIssue) and i.key is not None for i in found)
    assert all(str(i).startswith(str(tmp_path / "fuzz.toml")) for i in found)


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(max_size=200))
def test_any_file_content_gives_config_error_never_a_crash(tmp_path: Path,
                                                            garbage: bytes) -> None:
    path = tmp_path / "garbage.toml"
    path.write_bytes(garbage)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.issues
