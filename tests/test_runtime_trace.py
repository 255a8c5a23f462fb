"""``liftwatch run --trace`` end to end against a real Mosquitto: the messages that reach
the broker are the ones the pipeline decides in replay of the same trace, every one
valid against its schema and marked as replayed on the trace's clock (a live run's are
not); SIGTERM stops within 5 s with ``online`` 0; commands work over the broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLE_TRACES, Broker
from liftwatch.agent.replay import build_pipeline, replay_records
from liftwatch.drivers.trace import TraceHeader, TraceReader, TraceWriter
from make_traces import PRESS_S, STALL_S
from uplink_helpers import LIFT, Observer, kind_of_topic, validate, write_config

CUT_START = "2026-11-23T23:59:00Z"
CUT_START_MS = 1795478340000  # CUT_START in ms
#: 140 s of the entrapment example: the boarding, the run that stalls between landings
#: (the run drops 23.9 s in), the entrapment 30 s later, midnight at 60 s (CUT_START), the
#: alarm press 123.9 s in (make_traces places the stall at STALL_S, the press at PRESS_S)
CUT_FROM = STALL_S - 23.9
CUT_TO = CUT_FROM + 140.0
assert CUT_FROM < PRESS_S < CUT_TO


def entrapment_example() -> Path:
    return EXAMPLE_TRACES / "entrapment_between_floors.jsonl.gz"


def cut_trace(src: Path, dst: Path, t_from: float, t_to: float, start: str) -> None:
    """A piece of a trace, without accelerometer blocks (so it plays fast), rebased
    to t = 0 with a first di line holding every input's level, as the format requires;
    ``start`` is the header's wall-clock start."""
    with TraceReader(src) as r:
        hdr = r.header
        di: dict[str, int] = {}
        ctl: dict[str, Any] | None = None
        out = TraceWriter(dst, TraceHeader(start=start, lift=hdr.lift, accel=None,
                                           controller_present=hdr.controller_present))
        started = False
        for rec in r:
            if rec.t > t_to:
                break
            if rec.kind == "acc":
                continue
            if rec.t < t_from:
                if rec.kind == "di":
                    di.update(rec.data)
                elif rec.kind == "ctl":
                    ctl = rec.data
                continue
            if not started:
                out.write(0.0, "di", di)
                if ctl is not None:
                    out.write(0.0, "ctl", ctl)
                started = True
            out.write(rec.t - t_from, rec.kind, rec.data)
        out.close()


def replay_oracle(trace: Path) -> list[dict[str, Any]]:
    with TraceReader(trace) as r:
        return [x for x in replay_records(r, build_pipeline(r.header, None))
                if x["type"] in ("event", "trip")]


def liftwatch(*args: str) -> list[str]:
    """The command line; ``run`` says --allow-root on purpose: CI runs the tests as root,
    and the agent here plays a trace (no real lift, a throw-away data directory)."""
    if args[:1] == ("run",):
        args = ("run", "--allow-root", *args[1:])
    return [sys.executable, "-m", "liftwatch.agent.cli", "-v", *args]


@pytest.fixture(scope="module")
def entrapment_cut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("traces") / "entrapment_cut.jsonl"
    # it starts a minute before midnight: an hour and a day of stats close during it
    cut_trace(entrapment_example(), dst, CUT_FROM, CUT_TO, start=CUT_START)
    return dst


@pytest.mark.timeout(120)
def test_run_trace_delivers_what_replay_decides(broker: Broker, tmp_path: Path,
                                                entrapment_cut: Path) -> None:
    expected = replay_oracle(entrapment_cut)
    codes = [(x["code"], x["state"]) for x in expected if x["type"] == "event"]
    assert ("entrapment_nonlevel", "raised") in codes and ("alarm_button", "raised") in codes
    obs = Observer(broker.port)
    # the live terminal of this lift, connected under its own client id: a re-run must
    # not take its session over (the broker would disconnect it)
    live = Observer(broker.port, client_id=f"lw-{LIFT}")
    live_drops: list[object] = []
    live.client.on_disconnect = lambda *args: live_drops.append(args[3])
    cfg = write_config(tmp_path, broker.port)
    t0 = time.monotonic()
    r = subprocess.run(liftwatch("run", "--config", str(cfg), "--trace", str(entrapment_cut),
                                 "--other-lift", "--speed", "60", "--drain-s", "10"),
                       capture_output=True, text=True, timeout=100)
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr[-2000:]
    assert live_drops == [] and live.client.is_connected(), live_drops
    live.close()
    assert elapsed < 140 / 60 + 15
    assert obs.wait_for(lambda g: any(x.topic.endswith("/online") and x.payload == b"0"
                                      for x in g), 5)
    got = list(obs.got)
    # every message the agent sent validates against the schema of its type
    for m in got:
        kind = kind_of_topic(m.topic)
        if kind is not None:
            validate(kind, m.json())
    # a re-run never looks live (issue 13): every message is marked as replayed and
    # stamped on the trace's own clock (tq 0), not on the wall clock of the re-run
    bodies = [m.json() for m in got if kind_of_topic(m.topic) is not None]
    assert bodies and all(b.get("replay") is True and b["tq"] == 0 for b in bodies)
    trace_end_ms = CUT_START_MS + 140_000
    assert all(CUT_START_MS <= b["ts"] <= trace_end_ms for b in bodies)
    events = [m.json() for m in got if m.topic == f"lift/{LIFT}/event"]
    trips = [m.json() for m in got if m.topic == f"lift/{LIFT}/trip"]
    # events and trips: stamped at the trace time of their decision, which replay gives
    # within the next record (a timer decided on the tick, the trace's now, never runs
    # past a record not yet fed; the records here are at most 1 s apart)
    want = [CUT_START_MS + x["t"] * 1000 for k in ("event", "trip") for x in expected
            if x["type"] == k]
    got_ts = [m["ts"] for m in events + trips]
    assert len(got_ts) == len(want)
    assert all(abs(a - b) <= 1000 for a, b in zip(got_ts, want, strict=True)), (got_ts, want)
    assert [(e["code"], e["state"]) for e in events] == codes
    # eids pair raises and clears exactly as the pipeline's ids do (prefixed by boot)
    want_pairs = [(x["code"], x["id"]) for x in expected if x["type"] == "event"]
    got_pairs = [(e["code"], e["eid"].split("-", 1)[1]) for e in events]
    assert got_pairs == [(c, i.lstrip("e")) for c, i in want_pairs]
    assert {e["pcode"] for e in events if e["code"] == "entrapment_nonlevel"} == {8}
    assert [(t["from"], t["to"]) for t in trips] == \
        [(x["from"], x["to"]) for x in expected if x["type"] == "trip"]
    # status heartbeats and health went out; the session began with online 1
    assert [m.payload for m in got if m.topic.endswith("/online")] == [b"1", b"0"]
    # ... on the re-run's own topic: the lift's retained online stays the terminal's
    assert {m.topic for m in got if m.topic.endswith("/online")} == {f"lift/{LIFT}/replay/online"}
    assert any(m.topic.endswith("/status") for m in got)
    assert any(m.topic.endswith("/health") for m in got)
    ids = [m.json()["id"] for m in got if kind_of_topic(m.topic) not in (None, "cmd_reply")]
    assert len(ids) == len(set(ids))
    # stats close on the trace's own clock: the hour and the day that end at midnight
    stats = {m.json()["period"]: m.json() for m in got if m.topic.endswith("/stats")}
    midnight = CUT_START_MS + 60_000
    assert set(stats) == {"hour", "day"}
    for st in stats.values():
        assert (st["from"], st["to"]) == (CUT_START_MS, midnight)
    assert stats["hour"]["runs"] == stats["day"]["runs"]
    obs.close()


@pytest.mark.timeout(60)
def test_sigterm_stops_within_5s_and_publishes_offline(broker: Broker, tmp_path: Path,
                                                       entrapment_cut: Path) -> None:
    obs = Observer(broker.port)
    cfg = write_config(tmp_path, broker.port)
    p = subprocess.Popen(liftwatch("run", "--config", str(cfg), "--trace", str(entrapment_cut),
                                   "--other-lift", "--speed", "1"),
                         stderr=subprocess.PIPE, text=True)
    try:
        assert obs.wait_for(lambda g: any(x.topic.endswith("/online") and x.payload == b"1"
                                          for x in g), 15)
        time.sleep(0.5)
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        rc = p.wait(10)
        assert time.monotonic() - t0 < 5.0
        assert rc == 0
    finally:
        if p.poll() is None:
            p.kill()
    assert obs.wait_for(lambda g: [x.payload for x in g if x.topic.endswith("/online")]
                        == [b"1", b"0"], 5)
    obs.close()


@pytest.mark.timeout(60)
def test_commands_over_the_broker(broker: Broker, tmp_path: Path,
                                  entrapment_cut: Path) -> None:
    obs = Observer(broker.port)
    cfg = write_config(tmp_path, broker.port)
    before = cfg.read_bytes()
    p = subprocess.Popen(liftwatch("run", "--config", str(cfg), "--trace", str(entrapment_cut),
                                   "--other-lift", "--speed", "1"),
                         stderr=subprocess.PIPE, text=True)
    try:
        assert obs.wait_for(lambda g: any(x.topic.endswith("/online") and x.payload == b"1"
                                          for x in g), 15)
        cmd = f"lift/{LIFT}/cmd"
        obs.publish(cmd, b'{"id":"a","op":"config_get"}')
        obs.publish(cmd, b"{not json")
        obs.publish(cmd, b'{"id":"b","op":"format_disk"}')
        obs.publish(cmd, b'{"id":"c","op":"config_set","args":{"patch":'
                         b'{"uplink":{"broker":"evil.example"}}}}')
        obs.publish(cmd, b'{"id":"d","op":"config_set","args":{"patch":'
                         b'{"uplink":{"heartbeat_s":30},"detection":{"entrap_level_s":50}}}}')
        obs.publish(cmd, b'{"id":"e","op":"snapshot"}')
        assert obs.wait_for(lambda g: len([x for x in g if x.topic.endswith("/cmd/reply")])
                            >= 6, 20)
        replies = {x.json()["id"]: x.json() for x in obs.got if x.topic.endswith("/cmd/reply")}
        for rep in replies.values():
            validate("cmd_reply", rep)
            assert rep["replay"] is True  # the replies of a trace run are marked too
        assert replies["a"]["ok"] and replies["a"]["result"]["terminal"]["lift_id"] == LIFT
        assert not replies[None]["ok"] and "JSON" in replies[None]["error"]
        assert not replies["b"]["ok"] and "unknown op" in replies["b"]["error"]
        assert not replies["c"]["ok"] and "uplink.broker" in replies["c"]["error"]
        assert replies["d"]["ok"], replies["d"]
        assert replies["d"]["result"]["applied"] == ["detection.entrap_level_s",
                                                     "uplink.heartbeat_s"]
        assert replies["e"]["ok"]
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
    finally:
        if p.poll() is None:
            p.kill()
    # the technician's file is never written: the change is in the data directory's override
    assert cfg.read_bytes() == before
    text = (tmp_path / "data" / "remote.toml").read_text()
    assert "heartbeat_s = 30" in text and "entrap_level_s = 50" in text
    assert "broker" not in text
    assert not (tmp_path / "data" / "config_set.pending").exists()
    obs.close()


LIVE_SIMULATED = """[terminal]
lift_id = "{lift}"

[lift]
landings = ["1", "2"]
landing_heights_m = [0.0, 3.0]

[inputs]
backend = "simulated"
sim_feed = "{feed}"

[inputs.door_closed]
pin = "D17"

[accel]
chip = "adxl345"
backend = "simulated"
sim_feed = "{feed}"

[controller]
enabled = false

[uplink]
broker = "127.0.0.1"
port = {port}
tls = false

[storage]
data_dir = "{data}"
"""


@pytest.mark.timeout(60)
def test_a_live_run_on_simulated_backends_is_not_marked_replayed(broker: Broker,
                                                                 tmp_path: Path) -> None:
    obs = Observer(broker.port)
    cfg = tmp_path / "live.toml"
    cfg.write_text(LIVE_SIMULATED.format(lift=LIFT, feed=tmp_path / "feed", port=broker.port,
                                         data=tmp_path / "data"))
    p = subprocess.Popen(liftwatch("run", "--config", str(cfg)), stderr=subprocess.PIPE,
                         text=True)
    try:
        assert obs.wait_for(lambda g: {"status", "health"} <= {kind_of_topic(x.topic)
                                                               for x in g}, 20)
        obs.publish(f"lift/{LIFT}/cmd", b'{"id":"t","op":"self_test"}')
        assert obs.wait_for(lambda g: any(x.topic.endswith("/cmd/reply") for x in g)
                            and any(x.topic.endswith("/event") for x in g), 15)
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
    finally:
        if p.poll() is None:
            p.kill()
    bodies = [(kind_of_topic(m.topic), m.json()) for m in obs.got
              if kind_of_topic(m.topic) is not None]
    assert {"status", "health", "event", "cmd_reply"} <= {k for k, _ in bodies}
    for kind, body in bodies:
        validate(kind, body)
        assert "replay" not in body
    # stamped on this machine's clock, now
    assert all(abs(b["ts"] - time.time() * 1000) < 60_000 for _, b in bodies)
    obs.close()


def test_bad_arguments_are_clear_errors(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, 1883)
    r = subprocess.run(liftwatch("run", "--config", str(cfg), "--trace",
                                 str(tmp_path / "missing.jsonl")),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not found" in r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[uplink]\nport = 'x'\n")
    r = subprocess.run(liftwatch("run", "--config", str(bad)), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "uplink.port" in r.stderr
    env = dict(os.environ)
    r = subprocess.run(liftwatch("run", "--config", str(cfg), "--trace", str(cfg),
                                 "--speed", "5"), capture_output=True, text=True, timeout=60,
                       env=env)
    assert r.returncode == 2 and "header" in r.stderr


@pytest.mark.timeout(90)
def test_alarm_repeats_until_ack_across_a_kill(broker: Broker, tmp_path: Path,
                                               entrapment_cut: Path) -> None:
    """EN 81-28: an alarm is repeated every alarm_repeat_s until the platform acks its
    eid, also after the agent was SIGKILLed and started again."""
    obs = Observer(broker.port)
    cfg = write_config(tmp_path, broker.port)
    cfg.write_text(cfg.read_text() + "\n[detection]\nalarm_repeat_s = 1.0\n")
    args = liftwatch("run", "--config", str(cfg), "--trace", str(entrapment_cut),
                     "--other-lift", "--speed", "40")
    # the second run must outlast the acks below: the agent stops when its trace ends
    args2 = liftwatch("run", "--config", str(cfg), "--trace", str(entrapment_cut),
                      "--other-lift", "--speed", "10")

    def alarm_msgs() -> list[dict[str, Any]]:
        return [m.json() for m in obs.got if m.topic.endswith("/event")
                and m.json()["code"] == "entrapment_nonlevel" and m.json()["state"] == "raised"]

    p = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    try:
        assert obs.wait_for(lambda g: any(m["repeat"] >= 1 for m in alarm_msgs()), 30)
        p.kill()  # SIGKILL: no clean stop
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
    # the broker publishes the will: online 0, retained
    assert obs.wait_for(lambda g: [x.payload for x in g if x.topic.endswith("/online")]
                        == [b"1", b"0"], 10)
    first = alarm_msgs()
    eid = first[0]["eid"]
    assert [m["repeat"] for m in first][:2] == [0, 1] and {m["eid"] for m in first} == {eid}
    p = subprocess.Popen(args2, stderr=subprocess.DEVNULL)
    try:
        # the restarted agent (a new boot) repeats the old alarm: same eid, new message id
        # (messages of boot 1 that were not PUBACKed may come again too: same id)
        def boot2() -> list[dict[str, Any]]:
            return [m for m in alarm_msgs() if m["eid"] == eid and m["id"].split("-")[1] == "2"]

        assert obs.wait_for(lambda g: bool(boot2()), 20)
        assert boot2()[0]["repeat"] > max(m["repeat"] for m in first)
        old_ids = {m["id"]: m for m in first}
        for m in alarm_msgs():
            if m["id"] in old_ids:
                assert m == old_ids[m["id"]]
        obs.publish(f"lift/{LIFT}/cmd", json.dumps({"id": "k", "op": "ack",
                                                    "args": {"eid": eid}}).encode())
        assert obs.wait_for(lambda g: any(x.topic.endswith("/cmd/reply") for x in g), 10)
        reply = [x.json() for x in obs.got if x.topic.endswith("/cmd/reply")][0]
        assert reply["ok"] and reply["result"] == {"eid": eid}
        n_acked = len([m for m in alarm_msgs() if m["eid"] == eid])
        time.sleep(2.5)
        assert len([m for m in alarm_msgs() if m["eid"] == eid]) <= n_acked + 1  # one in flight
        obs.publish(f"lift/{LIFT}/cmd", json.dumps({"id": "k2", "op": "ack",
                                                    "args": {"eid": eid}}).encode())
        assert obs.wait_for(lambda g: len([x for x in g if x.topic.endswith("/cmd/reply")])
                            >= 2, 10)
        second = [x.json() for x in obs.got if x.topic.endswith("/cmd/reply")][1]
        assert not second["ok"] and "no unacknowledged alarm" in second["error"]
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
    finally:
        if p.poll() is None:
            p.kill()
    obs.close()


@pytest.mark.timeout(60)
def test_sighup_with_a_broken_config_keeps_running_on_the_old_one(
        broker: Broker, tmp_path: Path, entrapment_cut: Path) -> None:
    obs = Observer(broker.port)
    cfg = write_config(tmp_path, broker.port)
    p = subprocess.Popen(liftwatch("run", "--config", str(cfg), "--trace", str(entrapment_cut),
                                   "--other-lift", "--speed", "1"),
                         stderr=subprocess.PIPE, text=True)
    try:
        assert obs.wait_for(lambda g: any(x.topic.endswith("/online") and x.payload == b"1"
                                          for x in g), 15)
        cfg.write_text(cfg.read_text().replace("[uplink]", "[uplink]\nheartbeat_s = -3"))
        p.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert p.poll() is None  # still running
        obs.publish(f"lift/{LIFT}/cmd", b'{"id":"g","op":"config_get"}')
        assert obs.wait_for(lambda g: any(x.topic.endswith("/cmd/reply") for x in g), 10)
        reply = [x.json() for x in obs.got if x.topic.endswith("/cmd/reply")][0]
        assert reply["result"]["uplink"]["heartbeat_s"] == 60.0  # the old config runs on
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
        err = p.stderr.read() if p.stderr else ""
        assert "SIGHUP" in err and "keeping the running config" in err
        assert "uplink.heartbeat_s" in err
    finally:
        if p.poll() is None:
            p.kill()
    obs.close()


@pytest.mark.timeout(60)
def test_malformed_trace_lines_are_reported_and_skipped(tmp_path: Path) -> None:
    """Bad lines in a trace never stop the agent: each is logged with its line number."""
    cfg = write_config(tmp_path, 1)  # no broker there: the messages stay in the outbox
    trace = tmp_path / "bad.jsonl"
    trace.write_text(
        json.dumps({"trace": 1, "start": CUT_START,
                    "lift": {"landings": ["1", "2"], "landing_heights_m": [0.0, 3.0]},
                    "controller": {"present": False}}) + "\n"
        '{"t": 0.0, "di": {"door_closed": 1, "zone_up": 1, "zone_down": 1}}\n'
        "this is not json\n"
        '{"t": 0.5, "di": {"door_closed": 7}}\n'
        '{"t": 0.6, "acc": "x"}\n'
        '{"t": 1.0, "di": {"presence": 1}}\n')
    r = subprocess.run(liftwatch("run", "--config", str(cfg), "--trace", str(trace),
                                 "--speed", "0", "--drain-s", "0.3"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    for n in (3, 4, 5):
        assert f"line {n}:" in r.stderr
    assert "Traceback" not in r.stderr
