"""Issue 23, attacks through remote configuration: the exact payloads of the report are
refused with the range in the reply, a lift under attack still raises and delivers its
alarms to a real broker, and nothing a config_set leaves behind can stop the next start.

The agent runs as a process (``liftwatch run --trace``) on a real Mosquitto; the trace is
the entrapment example (a car stalls between floors with a passenger, who later
presses the alarm button), cut so that it plays in seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from conftest import Broker
from liftwatch.agent.config import ConfigError, deep_merge, load_config, load_with_override
from liftwatch.agent.override import OverrideFiles
from liftwatch.agent.replay import build_pipeline
from liftwatch.agent.runtime import Agent
from liftwatch.agent.tomltext import dump_toml
from liftwatch.agent.tools.config_cmd import check
from liftwatch.drivers.trace import TraceReader
from make_traces import PRESS_S, STALL_S
from test_runtime_trace import cut_trace, entrapment_example
from uplink_helpers import LIFT, Observer, Received, validate, write_config

#: the cut: 70 s of normal service before the stall, the alarm press 170 s in, end at 180 s
CUT_FROM = STALL_S - 70.0
CUT_TO = PRESS_S + 11.0
SPEED = "15"

#: the report's payloads, each with the keys the refusal must name and its range
ISSUE_1E9 = {"detection": {k: 1e9 for k in (
    "entrap_nonlevel_s", "entrap_level_s", "outside_zone_s", "alarm_press_s",
    "alarm_hold_bypass_s", "alarm_repeat_s")}}
ATTACKS: list[tuple[str, dict[str, Any], list[str]]] = [
    ("timers-1e9", ISSUE_1E9, [
        "detection.entrap_nonlevel_s: expected a number between 5 and 180, found 1000000000.0",
        "detection.entrap_level_s: expected a number between 10 and 300",
        "detection.outside_zone_s: expected a number between 10 and 300",
        "detection.alarm_press_s: expected a number between 0.1 and 3",
        "detection.alarm_hold_bypass_s: expected a number between 1 and 10",
        "detection.alarm_repeat_s: expected a number between 1 and 300"]),
    ("flood", {"uplink": {"health_s": 1e-9, "heartbeat_s": 1e-9}},
     ["uplink.health_s: expected a number between 30 and 3600",
      "uplink.heartbeat_s: expected a number between 1 and 3600"]),
    ("window-2**63", {"detection": {"anomaly_window": 2**63}},
     ["detection.anomaly_window: expected an integer between 1 and 50"]),
    ("reopen-400-digits", {"detection": {"reopen_count": int("9" * 400)}},
     ["detection.reopen_count: expected an integer between 2 and 30",
      "an integer of 400 digits"]),
    ("inf", {"detection": {"entrap_level_s": float("inf")}},
     ["detection.entrap_level_s: expected a number between 10 and 300", "inf"]),
    ("float-400-digits", {"detection": {"entrap_level_s": int("9" * 400)}},
     ["detection.entrap_level_s: expected a number between 10 and 300"]),
    ("broker", {"uplink": {"broker": "evil.example"}}, ["not changeable remotely: "
                                                        "uplink.broker"]),
]


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("attack") / "entrapment.jsonl"
    cut_trace(entrapment_example(), dst, CUT_FROM, CUT_TO, start="2026-11-23T08:00:00Z")
    return dst


def liftwatch(*args: str) -> list[str]:
    """The command line; ``run`` says --allow-root on purpose: CI runs the tests as root,
    and the lift here is a trace."""
    if args[:1] == ("run",):
        args = ("run", "--allow-root", *args[1:])
    return [sys.executable, "-m", "liftwatch.agent.cli", "-v", *args]


def cmd(cmd_id: str, patch: dict[str, Any]) -> bytes:
    # json.dumps writes inf as Infinity, which is not JSON: the platform's JSON for an
    # out-of-range float is 1e999 (Python reads it back as inf)
    return json.dumps({"id": cmd_id, "op": "config_set", "args": {"patch": patch}}
                      ).replace("Infinity", "1e999").encode()


def events(got: list[Received], code: str, state: str = "raised") -> list[dict[str, Any]]:
    out = []
    for m in got:
        if m.topic.endswith("/event"):
            body = m.json()
            if body["code"] == code and body["state"] == state:
                out.append(body)
    return out


def replies(got: list[Received]) -> dict[str, dict[str, Any]]:
    return {m.json()["id"]: m.json() for m in got if m.topic.endswith("/cmd/reply")}


def alarms_delivered(obs: Observer) -> bool:
    return obs.wait_for(lambda g: events(g, "entrapment_nonlevel") != []
                        and events(g, "alarm_button") != [], 60)


# ------------------------------------------------------------------ without the broker


@pytest.mark.parametrize(("name", "patch", "wants"), ATTACKS[:-1], ids=[a[0] for a in ATTACKS[:-1]])
def test_the_reported_values_are_refused_by_the_validator_of_config_check(
        tmp_path: Path, name: str, patch: dict[str, Any], wants: list[str]) -> None:
    """The same ranges hold for the technician's file and for a remote override."""
    cfg = write_config(tmp_path, 1883)
    with pytest.raises(ConfigError) as exc:
        load_with_override(cfg, patch)
    text = "; ".join(f"{i.key}: expected {i.expected}, found {i.found}"
                     for i in exc.value.issues)
    for want in wants:
        assert want in text, text
    # written into the technician's own file: refused the same way
    data = deep_merge(tomllib.loads(cfg.read_text()), patch)
    cfg.write_text(dump_toml(data))
    with pytest.raises(ConfigError) as exc:
        load_config(cfg)
    keys = {i.key for i in exc.value.issues}
    assert keys == {f"{s}.{k}" for s, t in patch.items() for k in t}, exc.value.issues


def test_a_5000_digit_integer_in_the_file_is_an_error_not_a_crash(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, 1883)
    cfg.write_text(cfg.read_text() + "\n[detection]\nreopen_count = " + "9" * 5000 + "\n")
    assert check([str(cfg)]) == 2
    assert "expected valid TOML" in capsys.readouterr().out


def test_nan_in_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, 1883)
    cfg.write_text(cfg.read_text() + "\n[detection]\nentrap_level_s = nan\n")
    assert check([str(cfg)]) == 2
    assert "detection.entrap_level_s: expected a number between 10 and 300, found nan" in \
        capsys.readouterr().out


@pytest.mark.parametrize("content", [
    "[detection]\nanomaly_window = 9223372036854775808\n",     # what the old agent wrote
    "[detection]\nreopen_count = " + "9" * 400 + "\n",
    "[detection]\nentrap_nonlevel_s = nan\n",
    '[uplink]\nbroker = "evil.example"\n',                      # not a remote key
    "[detection\nentrap_level_s = 50\n",                         # not TOML
    "\xff\xfe",                                                  # not UTF-8
    "[detection]\nreopen_count = " + "9" * 5000 + "\n",             # Python refuses to read it
    "SYMLINK", "FIFO", "DIRECTORY",
], ids=["2**63", "400-digits", "nan", "broker", "toml", "utf8", "5000-digits", "symlink",
        "fifo", "directory"])
def test_a_bad_override_is_not_applied_and_config_check_says_so(
        tmp_path: Path, content: str, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, 1883)
    files = OverrideFiles(tmp_path / "data")
    files.dir.mkdir()
    if content == "SYMLINK":
        target = tmp_path / "elsewhere.toml"
        target.write_text("[detection]\nentrap_level_s = 50\n")
        files.path.symlink_to(target)
    elif content == "FIFO":
        os.mkfifo(files.path)  # opened for reading, it would block until a writer came
    elif content == "DIRECTORY":
        files.path.mkdir()
    else:
        files.path.write_bytes(content.encode("utf-8", "surrogateescape") if content != "\xff\xfe"
                               else b"\xff\xfe")
    loaded = load_config(cfg)
    assert loaded.override == {} and loaded.override_issues
    assert loaded.detection == load_config(cfg, with_override=False).detection
    assert check([str(cfg)]) == 0  # the agent starts on the file alone
    out = capsys.readouterr().out
    assert "WARNING" in out and "NOT applied" in out and f"OK {cfg}" in out


def test_config_check_and_show_list_what_the_override_changes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, 1883)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "remote.toml").write_text("[detection]\nentrap_level_s = 60.0\n")
    assert check([str(cfg)]) == 0
    out = capsys.readouterr().out
    assert f"REMOTE {cfg}: detection.entrap_level_s = 60.0 (file: 45.0)" in out
    shown = subprocess.run(liftwatch("config", "show", str(cfg)), capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0
    assert "# REMOTE: detection.entrap_level_s = 60.0 (file: 45.0)" in shown.stdout
    assert "entrap_level_s = 60.0" in shown.stdout


def _raised_after_a_rebuild(trace: Path, at: float, seeded: bool) -> dict[str, float]:
    """Replay the trace, rebuilding the pipeline at ``at`` s as an accepted detection
    change does (optionally without giving it the input levels): code -> time of the
    first raise by the new pipeline."""
    with TraceReader(trace) as r:
        header, records = r.header, list(r)
    old = build_pipeline(header, None)
    new = build_pipeline(header, None, id_prefix="n")
    raised, t, pipeline = [], 0.0, old
    for rec in records:
        while t + 0.1 <= rec.t:
            t = round(t + 0.1, 6)
            if pipeline is old and t >= at:
                old.finish(t)
                pipeline = new
                if seeded:
                    raised += Agent._seed(new, old, t)
            raised += pipeline.advance(t)
        raised += pipeline.feed(rec.t, rec.kind, rec.data)
    raised += pipeline.advance(t)
    out: dict[str, float] = {}
    for x in raised:
        if x.get("type") == "event" and x["state"] == "raised" and x["id"].startswith("n"):
            out.setdefault(x["code"], x["t"])
    return out


def test_a_pipeline_rebuilt_by_a_change_sees_the_passenger_already_in_the_stalled_car(
        trace: Path) -> None:
    """Digital inputs are recorded only when they change: a pipeline rebuilt while the
    car stands stalled with a passenger must be given the current levels, or the
    car looks empty (stopped_outside_zone) and the entrapment waits for the press."""
    at = 75.0  # 5 s after the stall, the passenger inside, the door closed
    seeded = _raised_after_a_rebuild(trace, at, seeded=True)
    assert "stopped_outside_zone" not in seeded
    assert at < seeded["entrapment_nonlevel"] <= at + 30.0 + 1.0  # its timer, restarted
    blind = _raised_after_a_rebuild(trace, at, seeded=False)
    assert "stopped_outside_zone" in blind and blind["entrapment_nonlevel"] > 170.0


# ------------------------------------------------------------------ on a real broker


@pytest.mark.timeout(120)
def test_an_attacked_lift_refuses_with_the_range_reports_and_still_delivers_its_alarms(
        broker: Broker, tmp_path: Path, trace: Path) -> None:
    obs = Observer(broker.port)
    cfg = write_config(tmp_path, broker.port)
    before = cfg.read_bytes()
    p = subprocess.Popen(liftwatch("run", "--config", str(cfg), "--trace", str(trace),
                                   "--other-lift", "--speed", SPEED, "--drain-s", "5"),
                         stderr=subprocess.PIPE, text=True)
    try:
        assert obs.wait_for(lambda g: any(x.topic.endswith("/online") and x.payload == b"1"
                                          for x in g), 15)
        topic = f"lift/{LIFT}/cmd"
        for name, patch, _ in ATTACKS:
            obs.publish(topic, cmd(name, patch))
        obs.publish(topic, b'{"id":"nan","op":"config_set","args":{"patch":'
                           b'{"detection":{"entrap_level_s":NaN}}}}')
        # accepted: in range, but weaker than the default (reported as weakening)
        obs.publish(topic, cmd("weaker", {"detection": {"entrap_nonlevel_s": 40}}))
        # a second detection change at once: refused (it would restart the timers again)
        obs.publish(topic, cmd("again", {"detection": {"entrap_nonlevel_s": 45}}))
        obs.publish(topic, b'{"id":"snap","op":"snapshot"}')  # health now
        n = len(ATTACKS) + 4
        assert obs.wait_for(lambda g: len(replies(g)) >= n, 20), replies(obs.got)
        got = replies(obs.got)
        for rep in got.values():
            validate("cmd_reply", rep)
        for name, _patch, wants in ATTACKS:
            assert got[name]["ok"] is False, got[name]
            for want in wants:
                assert want in got[name]["error"], (name, got[name]["error"])
        # NaN is not JSON: refused before the id is read (the reply's id is null)
        assert got[None]["ok"] is False and "JSON" in got[None]["error"]
        assert got["weaker"]["ok"] is True
        assert got["weaker"]["result"]["applied"] == ["detection.entrap_nonlevel_s"]
        assert got["again"]["ok"] is False and "at most one change per 300 s" in \
            got["again"]["error"]
        # the alarms of the trace still reach the platform: the entrapment (40 s after
        # the stall now) and the passenger's press
        assert alarms_delivered(obs), [m.json().get("code") for m in obs.got
                                       if m.topic.endswith("/event")]
        assert p.wait(60) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
    err = p.stderr.read() if p.stderr else ""
    obs.close()
    # the one accepted change is reported: command id, old -> new, weakens
    (changed,) = events(obs.got, "detection_changed")
    validate("event", changed)
    assert changed["sev"] == "warning" and changed["detail"]["source"] == "config_set"
    assert changed["detail"]["cmd"] == "weaker" and changed["detail"]["weakens"] is True
    assert changed["detail"]["changes"] == [{"key": "detection.entrap_nonlevel_s",
                                             "old": 30.0, "new": 40.0, "weakens": True}]
    # and shown in health
    health = [m.json() for m in obs.got if m.topic.endswith("/health")]
    assert health and all(validate("health", h) is None for h in health)
    assert health[0]["config"] == {"remote": {}, "weakened": []}  # at start
    last = [h for h in health if "last_change" in h["config"]][-1]["config"]
    assert last["remote"] == {"detection.entrap_nonlevel_s": 40.0}
    assert last["weakened"] == ["detection.entrap_nonlevel_s"]
    assert last["last_change"]["cmd"] == "weaker"
    # the technician's file is untouched, the override holds the accepted key only
    assert cfg.read_bytes() == before
    assert load_config(cfg).override == {"detection.entrap_nonlevel_s": (30.0, 40.0)}
    assert not (tmp_path / "data" / "config_set.pending").exists()
    assert "Traceback" not in err


def run_to_end(cfg: Path, trace: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(liftwatch("run", "--config", str(cfg), "--trace", str(trace),
                                    "--other-lift", "--speed", "0", "--drain-s", "5"),
                          capture_output=True, text=True, timeout=90)


@pytest.mark.timeout(180)
def test_what_an_attack_left_on_disk_is_undone_at_the_next_start_and_the_alarms_arrive(
        broker: Broker, tmp_path: Path, trace: Path) -> None:
    """The state the report found after ``anomaly_window = 2**63``: the change written,
    the pending marker left, and every start crashing before the rollback. Now the
    marker is honoured before the config is loaded: the agent runs, the change is
    rolled back and reported, the alarms go out. An override a start died with is set
    aside at the next start, and one that breaks a check is set aside at once."""
    obs = Observer(broker.port)
    cfg = write_config(tmp_path, broker.port)
    data = tmp_path / "data"
    first = run_to_end(cfg, trace)  # a normal run: its settings are the reported ones
    assert first.returncode == 0, first.stderr[-2000:]
    files = OverrideFiles(data)

    # 1. the pending change that killed the agent: rolled back at start
    files.path.write_text("[detection]\nanomaly_window = 9223372036854775808\n")
    files.pending.write_text(json.dumps({"cmd": "x-2**63", "had_override": False}))
    obs.got.clear()
    second = run_to_end(cfg, trace)
    assert second.returncode == 0, second.stderr[-2000:]
    assert not files.path.exists() and not files.pending.exists()
    assert "remote config rolled back" in second.stderr
    assert alarms_delivered(obs)
    (rolled,) = events(obs.got, "detection_changed")
    assert rolled["detail"]["source"] == "start" and rolled["detail"]["cmd"] == "x-2**63"
    assert "rolled back" in rolled["detail"]["notes"][0]

    # 2. a valid override with which the last start did not reach running: set aside
    files.path.write_text("[detection]\nentrap_nonlevel_s = 40.0\n")
    files.starting.write_bytes(b"")
    obs.got.clear()
    third = run_to_end(cfg, trace)
    assert third.returncode == 0, third.stderr[-2000:]
    assert not files.path.exists() and files.rejected.exists()
    assert alarms_delivered(obs)
    assert "did not reach running" in events(obs.got, "detection_changed")[0]["detail"][
        "notes"][0]

    # 3. an override that breaks a check (the old agent's 400-digit write): set aside
    files.path.write_text("[detection]\nreopen_count = " + "9" * 400 + "\n")
    obs.got.clear()
    fourth = run_to_end(cfg, trace)
    assert fourth.returncode == 0, fourth.stderr[-2000:]
    assert not files.path.exists() and "reopen_count" in fourth.stderr
    assert alarms_delivered(obs)
    assert not files.starting.exists()

    # 4. the technician edits the file while the agent is stopped: reported at start
    cfg.write_text(cfg.read_text() + "\n[detection]\nentrap_level_s = 60\n")
    obs.got.clear()
    fifth = run_to_end(cfg, trace)
    assert fifth.returncode == 0, fifth.stderr[-2000:]
    assert alarms_delivered(obs)
    (edited,) = events(obs.got, "detection_changed")
    assert edited["detail"]["source"] == "start" and edited["detail"]["changes"] == [
        {"key": "detection.entrap_level_s", "old": 45.0, "new": 60.0, "weakens": True}]
    obs.close()


@pytest.mark.timeout(90)
def test_sighup_sets_a_bad_override_aside_and_reports_it(broker: Broker, tmp_path: Path,
                                                        trace: Path) -> None:
    obs = Observer(broker.port)
    cfg = write_config(tmp_path, broker.port)
    p = subprocess.Popen(liftwatch("run", "--config", str(cfg), "--trace", str(trace),
                                   "--other-lift", "--speed", "2", "--drain-s", "5"),
                         stderr=subprocess.PIPE, text=True)
    try:
        assert obs.wait_for(lambda g: any(x.topic.endswith("/online") and x.payload == b"1"
                                          for x in g), 15)
        files = OverrideFiles(tmp_path / "data")
        files.path.write_text("[detection]\nentrap_level_s = 1e9\n")
        p.send_signal(signal.SIGHUP)
        assert obs.wait_for(lambda g: events(g, "detection_changed") != [], 15)
        (ev,) = events(obs.got, "detection_changed")
        assert ev["detail"]["source"] == "sighup"
        assert "entrap_level_s" in ev["detail"]["notes"][0]
        assert files.rejected.exists() and not files.path.exists()
        p.send_signal(signal.SIGTERM)
        assert p.wait(15) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
    obs.close()


def test_a_start_refused_for_a_reason_it_gives_does_not_blame_the_override(
        tmp_path: Path) -> None:
    """Only a start that dies (a crash, a kill) leaves remote.starting for the next start
    to set the override aside; a start refused with a reason (here: no such trace)
    leaves the override in force."""
    cfg = write_config(tmp_path, 1883)
    files = OverrideFiles(tmp_path / "data")
    files.dir.mkdir()
    files.path.write_text("[detection]\nentrap_level_s = 60.0\n")
    out = subprocess.run(liftwatch("run", "--config", str(cfg), "--trace",
                                   str(tmp_path / "missing.jsonl")),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "not found" in out.stderr
    assert files.path.exists() and not files.starting.exists()
    assert files.recover_at_start() == [] and files.path.exists()


@pytest.mark.parametrize("before", [None, b"[detection]\nentrap_level_s = 50.0\n"],
                         ids=["no-override-before", "override-before"])
def test_an_unconfirmed_change_is_undone_to_exactly_what_was_there(
        tmp_path: Path, before: bytes | None) -> None:
    files = OverrideFiles(tmp_path / "data")
    files.dir.mkdir()
    if before is not None:
        files.path.write_bytes(before)
    files.begin(b"[detection]\nentrap_level_s = 60.0\n", "c-1")
    assert files.pending.exists()
    (done,) = files.recover_at_start()  # the agent died before confirming
    assert (done.action, done.cmd) == ("rolled_back", "c-1")
    assert (files.path.read_bytes() if files.path.exists() else None) == before
    assert not files.pending.exists()
    assert files.starting.exists() == (before is not None)


def test_an_unconfirmed_change_whose_previous_override_is_lost_is_set_aside(
        tmp_path: Path) -> None:
    files = OverrideFiles(tmp_path / "data")
    files.dir.mkdir()
    files.path.write_bytes(b"[detection]\nentrap_level_s = 50.0\n")
    files.begin(b"[detection]\nentrap_level_s = 60.0\n", "c-2")
    files.prev.unlink()
    files.recover_at_start()
    assert not files.path.exists() and b"60.0" in files.rejected.read_bytes()
