"""Attacks on the command path (issue 23), each against the real agent (``liftwatch run``
as a child process) and a real Mosquitto: a command id sent three times, a retained
``config_set`` waiting at connect, a 100 MB command, a burst of 10,000 commands ahead of
the platform's real ``ack``, ids that carry a newline, a lift id the MQTT topics cannot
hold. In every one the genuine alarm press of the trace still reaches the broker."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from attack_helpers import (
    CMD,
    AgentRun,
    alarms,
    attack_config,
    press_trace,
    wait_alarm,
    wait_replies,
)
from conftest import Broker
from liftwatch.agent.commands import MAX_PACKET, CommandInbox
from liftwatch.buffer.cmdids import FILE_NAME, CommandIdStore
from paho.mqtt.enums import CallbackAPIVersion
from uplink_helpers import LIFT, Observer, validate

SET_HEARTBEAT = b'{"id":"%s","op":"config_set","args":{"patch":{"uplink":{"heartbeat_s":%d}}}}'


def _heartbeat_in(cfg: Path) -> str | None:
    for line in cfg.read_text().splitlines():
        if line.strip().startswith("heartbeat_s"):
            return line.split("=", 1)[1].strip()
    return None


@pytest.mark.timeout(90)
def test_a_command_id_sent_three_times_is_applied_once_also_after_a_restart(
        broker: Broker, tmp_path: Path) -> None:
    obs = Observer(broker.port)
    cfg = attack_config(tmp_path, broker.port)
    trace = press_trace(tmp_path)
    agent = AgentRun(cfg, trace, args=("--confirm-s", "1"))
    try:
        wait_alarm(obs)
        for _ in range(3):
            obs.publish(CMD, SET_HEARTBEAT % (b"dup-1", 30))
        got = wait_replies(obs, lambda r: len(r) >= 3)
        assert [r["id"] for r in got] == ["dup-1"] * 3
        for r in got:
            validate("cmd_reply", r)
        first, *again = got
        assert first["ok"] and "uplink.heartbeat_s" in json.dumps(first["result"]), first
        for r in again:
            assert r["ok"] and r["result"]["already_applied"] is True, r
            assert r["result"]["result"] == first["result"]
        assert agent.log.count("command 'dup-1' (config_set) done") == 1, agent.log
        time.sleep(1.5)  # the change confirmed healthy (--confirm-s 1): no rollback pending
        assert agent.stop() == 0
    finally:
        agent.kill()
    # the change is in the remote override (config_set never rewrites the technician's
    # file); the technician drops it (INSTALL.md: rm remote.toml), and the platform's
    # broker delivers the same command again after the restart: it is not applied again
    remote = tmp_path / "data" / "remote.toml"
    assert _heartbeat_in(remote) == "30"
    remote.unlink()
    obs.got.clear()
    agent = AgentRun(cfg, trace)
    try:
        wait_alarm(obs)
        obs.publish(CMD, SET_HEARTBEAT % (b"dup-1", 30))
        (r,) = wait_replies(obs, lambda r: len(r) >= 1)
        assert r["id"] == "dup-1" and r["ok"] and r["result"]["already_applied"], r
        assert agent.stop() == 0
    finally:
        agent.kill()
    assert not remote.exists()  # the technician's fix stands
    assert _heartbeat_in(cfg) is None
    obs.close()


@pytest.mark.timeout(60)
def test_a_retained_config_set_is_refused_at_connect(broker: Broker, tmp_path: Path) -> None:
    obs = Observer(broker.port)
    cfg = attack_config(tmp_path, broker.port)
    before = cfg.read_bytes()
    # left on the broker, retained: it reaches the agent at every connect
    obs.client.publish(CMD, SET_HEARTBEAT % (b"kept-1", 7), qos=1,
                       retain=True).wait_for_publish(5)
    agent = AgentRun(cfg, press_trace(tmp_path))
    try:
        (r,) = wait_replies(obs, lambda r: len(r) >= 1)
        validate("cmd_reply", r)
        assert r["id"] == "kept-1" and not r["ok"] and "retained" in r["error"], r
        wait_alarm(obs)
        assert agent.stop() == 0
    finally:
        agent.kill()
    assert cfg.read_bytes() == before
    assert "'kept-1' (config_set) refused: it was a retained message" in agent.log
    obs.close()


def _publish_big(port: int, payload: bytes) -> None:
    """One QoS 1 publish of ``payload`` from a client of its own (paho's default in-flight
    window and queue would hold it twice over in this process, not in the agent)."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="big-sender")
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        c.publish(CMD, payload, qos=1).wait_for_publish(30)
    finally:
        c.loop_stop()
        c.disconnect()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("protocol", ["mqtt311", "mqtt5"])
def test_a_100_mb_command_is_refused_without_being_held_in_memory(
        broker: Broker, tmp_path: Path, protocol: str) -> None:
    obs = Observer(broker.port)
    cfg = attack_config(tmp_path, broker.port, protocol=protocol)
    agent = AgentRun(cfg, press_trace(tmp_path))
    try:
        first = wait_alarm(obs)
        obs.publish(CMD, b'{"id":"small","op":"config_get"}')
        wait_replies(obs, lambda r: any(x["id"] == "small" for x in r))
        base_kb = agent.peak_rss_kb()
        size = 100 * 1024 * 1024
        head = b'{"id":"huge-1","op":"config_set","args":{"patch":{"uplink":{"x":"'
        _publish_big(broker.port, head + b"a" * (size - len(head) - 5) + b'"}}}}')
        obs.publish(CMD, b'{"id":"after","op":"config_get"}')
        got = wait_replies(obs, lambda r: any(x["id"] == "after" for x in r), 30)
        peak_kb = agent.peak_rss_kb()
        by_id = {r["id"]: r for r in got}
        if protocol == "mqtt311":  # received, cut to its head, refused naming it
            r = by_id["huge-1"]
            assert not r["ok"] and "payload too large" in r["error"], r
            assert f"{size} bytes" in r["error"], r
        else:  # the broker honours the Maximum Packet Size: it never sends it
            assert "huge-1" not in by_id
        assert by_id["after"]["ok"]
        # the agent never held the command: well under its 100 MB (today's paho read
        # it whole: a 250 MB command took the process to 905 MB)
        assert peak_kb - base_kb < 16 * 1024, (base_kb, peak_kb)
        assert alarms(obs)[0]["eid"] == first["eid"]
        assert agent.stop() == 0
    finally:
        agent.kill()
    obs.close()


@pytest.mark.timeout(90)
def test_a_burst_of_10000_commands_does_not_push_out_the_real_ack(
        broker: Broker, tmp_path: Path) -> None:
    obs = Observer(broker.port)
    cfg = attack_config(tmp_path, broker.port)
    agent = AgentRun(cfg, press_trace(tmp_path))
    try:
        alarm = wait_alarm(obs)
        eid = alarm["eid"]
        # it repeats while it waits for the command centre's ack
        assert obs.wait_for(lambda _g: any(a.get("repeat", 0) >= 1 for a in alarms(obs)), 10)
        flood = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="flood")
        flood.max_inflight_messages_set(1000)
        flood.connect("127.0.0.1", broker.port)
        flood.loop_start()
        try:
            for i in range(10_000):
                flood.publish(CMD, b'{"id":"f%d","op":"config_get"}' % i, qos=1)
            ack = flood.publish(CMD, json.dumps({"id": "the-ack", "op": "ack",
                                                 "args": {"eid": eid}}).encode(), qos=1)
            ack.wait_for_publish(30)
        finally:
            flood.loop_stop()
            flood.disconnect()
        got = wait_replies(obs, lambda r: any(x["id"] == "the-ack" for x in r), 30)
        ack_reply = next(r for r in got if r["id"] == "the-ack")
        assert ack_reply["ok"] and ack_reply["result"] == {"eid": eid}, ack_reply
        acked_at = len(alarms(obs))
        time.sleep(3.5)  # 3 repeat periods
        # what was in flight at the ack may still land; nothing is repeated after it
        assert len(alarms(obs)) <= acked_at + 1, alarms(obs)[acked_at:]
        # the drops are in health (a snapshot sends it now)
        obs.publish(CMD, b'{"id":"snap","op":"snapshot"}')
        assert obs.wait_for(lambda _g: any(
            json.loads(m.payload).get("link", {}).get("commands_dropped", 0) > 9000
            for m in obs.on("health")), 15), [json.loads(m.payload).get("link")
                                              for m in obs.on("health")]
        assert agent.stop() == 0
    finally:
        agent.kill()
    dropped_lines = [ln for ln in agent.lines if "command queue full" in ln]
    assert 1 <= len(dropped_lines) <= 3, dropped_lines  # once a minute, not per command
    obs.close()


@pytest.mark.timeout(60)
def test_a_newline_in_a_command_id_cannot_forge_a_log_line(broker: Broker,
                                                           tmp_path: Path) -> None:
    obs = Observer(broker.port)
    cfg = attack_config(tmp_path, broker.port)
    agent = AgentRun(cfg, press_trace(tmp_path))
    forged = "ERROR liftwatch.agent.runtime: FORGED"
    try:
        wait_alarm(obs)
        for body in ({"id": f"x\n{forged} 1", "op": "config_get"},
                     {"id": f"y\n{forged} 2", "op": "ack", "args": {"eid": "none"}},
                     {"id": f"z\r\n{forged} 3", "op": "config_set",
                      "args": {"patch": {f"s\n{forged} 4": {"k": 1}}}}):
            obs.publish(CMD, json.dumps(body).encode())
        got = wait_replies(obs, lambda r: len(r) >= 3)
        assert {r["id"] for r in got} == {f"x\n{forged} 1", f"y\n{forged} 2",
                                          f"z\r\n{forged} 3"}
        wait_alarm(obs)
        assert agent.stop() == 0
    finally:
        agent.kill()
    assert not [ln for ln in agent.lines if ln.startswith(forged) or "\r" in ln]
    assert f"'x\\n{forged} 1'" in agent.log  # the id, escaped, on its one line
    obs.close()


def _check(cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "liftwatch.agent.cli", "config", "check",
                           str(cfg)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("key, value, shown", [
    ("lift_id", "L\\u0000", '"L\\x00"'),
    ("lift_id", "L" * 70_000, "(70000 characters)"),
    ("lift_id", "L+1", '"L+1"'),
    ("topic_prefix", "lift/\\u0000", '"lift/\\x00"'),
    ("topic_prefix", "p" * 70_000, "(70000 characters)"),
])
def test_config_check_fails_a_lift_id_or_prefix_the_topics_cannot_hold(
        tmp_path: Path, key: str, value: str, shown: str) -> None:
    cfg = attack_config(tmp_path, 1883)
    text = cfg.read_text()
    if key == "lift_id":
        text = text.replace(f'lift_id = "{LIFT}"', f'lift_id = "{value}"')
    else:
        text = text.replace("[uplink]\n", f'[uplink]\ntopic_prefix = "{value}"\n')
    cfg.write_text(text)
    r = _check(cfg)
    assert r.returncode != 0, r.stdout
    out = r.stdout + r.stderr
    assert "A-Z a-z 0-9 . _ -" in out and shown in out, out[-600:]
    assert len(out) < 2000  # a 70,000-character value is not printed whole


def test_run_as_root_is_refused_unless_told(tmp_path: Path) -> None:
    cfg = attack_config(tmp_path, 1883)
    env = {k: v for k, v in os.environ.items() if k != "LIFTWATCH_ALLOW_ROOT"}
    r = subprocess.run([sys.executable, "-m", "liftwatch.agent.cli", "run", "--config",
                        str(cfg), "--trace", str(tmp_path / "none.jsonl")],
                       capture_output=True, text=True, timeout=60, env=env)
    if os.geteuid() == 0:
        assert r.returncode == 2 and "refusing to run as root" in r.stderr, r.stderr
        assert "--allow-root" in r.stderr
        # told (a test rig): it goes on, here to the missing trace
        for extra_env, flag in (({}, ["--allow-root"]), ({"LIFTWATCH_ALLOW_ROOT": "1"}, [])):
            r = subprocess.run([sys.executable, "-m", "liftwatch.agent.cli", "run", *flag,
                                "--config", str(cfg), "--trace", str(tmp_path / "none.jsonl")],
                               capture_output=True, text=True, timeout=60,
                               env=dict(env, **extra_env))
            assert r.returncode == 2 and "not found" in r.stderr, r.stderr
    else:
        assert "refusing to run as root" not in r.stderr and "not found" in r.stderr


def test_the_advertised_packet_size_is_the_documented_one() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "platform-protocol.md").read_text()
    assert MAX_PACKET == 65536 and "64 KiB (65,536 bytes)" in doc



# ---------------------------------------------------------------- the parts, fast

def test_the_id_store_is_bounded_in_time_count_and_file_size(tmp_path: Path) -> None:
    now = [1_000_000.0]
    store = CommandIdStore(tmp_path, window_s=3600, max_ids=20, clock=lambda: now[0])
    store.claim("a")
    store.finish("a", True, {"x": 1})
    store.claim("b")
    store.forget("b")  # refused before anything was applied: may come again
    store.claim("c")   # the agent stops before it finishes
    store.close()
    with (tmp_path / FILE_NAME).open("a") as fh:
        fh.write('{"id":"d","t":1000000.0,"s":"o')  # torn by a power cut
    store = CommandIdStore(tmp_path, window_s=3600, max_ids=20, clock=lambda: now[0])
    assert store.get("a") is not None and store.get("a").result == {"x": 1}
    assert store.get("b") is None and store.get("d") is None
    assert store.get("c") is not None and store.get("c").state == "run"
    now[0] += 3601
    assert store.get("a") is None  # out of the window
    for i in range(100):
        store.claim(f"id{i}")
        store.finish(f"id{i}", True, "r" * 600)  # a long result is not kept
    assert len(store) <= 20 and store.get("id99").result is None
    assert store.get("id0") is None  # the oldest forgotten first
    assert (tmp_path / FILE_NAME).stat().st_size < 2 * 2 * 20 * 120
    store.close()


def test_the_inbox_serves_acks_first_and_never_drops_one_whose_alarm_waits(
        caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        inbox = CommandInbox(lambda eid: eid == "real", other_max=4, ack_max=2)
        for i in range(1000):
            inbox.offer(b'{"id":"o%d","op":"config_get"}' % i)
        for i in range(10):
            inbox.offer(b'{"id":"b%d","op":"ack","args":{"eid":"bogus"}}' % i)
        assert inbox.offer(b'{"id":"r","op":"ack","args":{"eid":"real"}}')
        assert not inbox.offer(b'{"id":"k","op":"ack","args":{"eid":"real"}}', retained=True)
        assert inbox.dropped == 996 + 8 + 1
        got = [json.loads(await inbox.get())["id"] for _ in range(len(inbox))]
        assert got == ["b0", "b1", "r", "o0", "o1", "o2", "o3"]

    caplog.set_level("WARNING", logger="liftwatch.agent.commands")
    asyncio.run(main())
    full = [r for r in caplog.records if "command queue full" in r.getMessage()]
    assert len(full) == 1  # once per minute, not per command
