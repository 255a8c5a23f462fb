"""Downlink commands: parsing, and the agent as their host. Malformed payloads (200 of
them, made by hypothesis) are answered ok:false with a reason and change nothing: not
the config file, not the data directory, not the outbox, not the alarm ledger."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from liftwatch.agent.commands import MAX_PAYLOAD, OPS, CommandError, parse
from liftwatch.agent.config import load_config
from liftwatch.agent.messages import MessageFactory
from liftwatch.agent.runtime import Agent
from liftwatch.agent.timebase import Timebase
from liftwatch.drivers.trace import TraceHeader, TraceWriter
from uplink_helpers import validate, write_config


def test_parse_accepts_the_spec_shapes() -> None:
    c = parse(b'{"id":"1","op":"ack","args":{"eid":"3-7"}}')
    assert (c.id, c.op, c.args) == ("1", "ack", {"eid": "3-7"})
    assert parse(b'{"id":"2","op":"snapshot"}').args == {}
    assert parse(b'{"id":"2","op":"self_test","args":{}}').op == "self_test"
    assert parse(b'{"id":"3","op":"config_set","args":{"patch":{"uplink":{"heartbeat_s":30}}}}'
                 ).args == {"patch": {"uplink": {"heartbeat_s": 30}}}


@pytest.mark.parametrize("payload, reason", [
    (b"", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[1,2]", "JSON object"),
    (b'{"op":"snapshot"}', '"id"'),
    (b'{"id":5,"op":"snapshot"}', '"id"'),
    (b'{"id":"x","op":"reboot"}', "unknown op"),
    (b'{"id":"x","op":"snapshot","args":{"now":1}}', "no arguments"),
    (b'{"id":"x","op":"ack","args":{}}', "eid"),
    (b'{"id":"x","op":"ack","args":{"eid":"a","path":"/etc"}}', "unknown argument"),
    (b'{"id":"x","op":"config_set","args":{"patch":{}}}', "patch"),
    (b'{"id":"x","op":"config_set","args":{"patch":{"uplink":5}}}', "patch.uplink"),
    (b'{"id":"x","op":"snapshot","cmd":"rm -rf /"}', "unknown key"),
    (b'{"id":"x","op":"snapshot","args":[]}', "args"),
    (b'{"id":"x","op":"ack","args":{"eid":NaN}}', "not valid JSON"),
    (b"[" * 5000 + b"]" * 5000, "not valid JSON"),
])
def test_parse_refuses_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(CommandError) as ei:
        parse(payload)
    assert reason in str(ei.value)


def test_refusal_keeps_the_command_id_when_there_is_one() -> None:
    with pytest.raises(CommandError) as ei:
        parse(b'{"id":"c7","op":"nope"}')
    assert getattr(ei.value, "cmd_id", None) == "c7"


def _oversized(head: bytes) -> bytes:
    """``head`` then an args object that takes the payload over the limit."""
    filler = b'{"patch":{"uplink":{"x":"' + b"a" * (MAX_PAYLOAD + 10) + b'"}}}}'
    return head + filler


@pytest.mark.parametrize("head, cmd_id", [
    (b'{"id":"big-1","op":"config_set","args":', "big-1"),
    (b' { "op" : "config_set" , "id" : "big-\\u00e9" , "args":', "big-\u00e9"),
    (b'{"op":"config_set","args":{"id":"nested"},"id":"late","x":', None),
    (b'{"op":"config_set","args":', None),
    (b'{"id":' + json.dumps("z" * 200).encode() + b',"op":"config_set","args":', None),
])
def test_an_oversized_command_is_refused_naming_its_id_when_the_first_bytes_hold_it(
        head: bytes, cmd_id: str | None) -> None:
    payload = _oversized(head)
    assert len(payload) > MAX_PAYLOAD
    with pytest.raises(CommandError) as ei:
        parse(payload)
    assert "too large" in str(ei.value) and str(len(payload)) in str(ei.value)
    assert getattr(ei.value, "cmd_id", None) == cmd_id


# ---------------------------------------------------------------- the agent as host


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    d = tmp_path_factory.mktemp("host")
    trace = d / "t.jsonl"
    with TraceWriter(trace, TraceHeader(start="2026-11-23T08:00:00Z",
                                        lift={"landings": ["1", "2"],
                                              "landing_heights_m": [0.0, 3.0]},
                                        controller_present=False)) as w:
        w.write(0.0, "di", {"door_closed": 1, "zone_up": 1, "zone_down": 1, "presence": 0})
    cfg = write_config(d, 1883)
    agent = Agent(load_config(cfg), trace=trace)
    agent.source = agent._make_source()
    agent.pipeline = agent._make_pipeline(agent.cfg, None)
    agent.uplink = agent._make_uplink()  # not started: nothing here needs the broker
    agent.factory = MessageFactory(agent.lift_id, agent.boot, Timebase(), agent.cfg.platform)
    yield agent
    agent._close()


def state_of(agent: Agent) -> dict[str, Any]:
    d = agent.cfg.path.parent
    return {"config": agent.cfg.path.read_bytes(), "cfg": agent.cfg,
            "files": sorted(str(p.relative_to(d)) for p in d.rglob("*")
                            if "outbox" not in p.parts and "journal" not in p.parts),
            "unwritten": list(agent._unwritten),
            "outbox": agent.outbox.stats()["lanes"],
            "ledger": agent.ledger.entries(),
            "status": agent.uplink._status if agent.uplink else None,
            "pipeline": agent.pipeline}


def handle(agent: Agent, payload: bytes) -> tuple[str | None, bool, Any]:
    return asyncio.run(agent.commands.handle(payload))


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                      st.text(max_size=20))
json_any = st.recursive(json_leaf, lambda c: st.lists(c, max_size=4)
                        | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12)
cmd_id = st.text(min_size=1, max_size=20)
bad_id = st.one_of(st.none(), st.integers(), st.just(""), st.text(min_size=129, max_size=140),
                   st.lists(st.integers(), max_size=2))
not_remote = st.sampled_from([("uplink", "broker", "evil.example"), ("uplink", "tls", False),
                              ("uplink", "ca_file", "/tmp/x"), ("terminal", "lift_id", "X"),
                              ("storage", "data_dir", "/"), ("uplink", "topic_prefix", "x"),
                              ("controller", "host", "10.0.0.1"),
                              ("uplink", "credentials_file", "/etc/shadow")])
bad_value = st.sampled_from([("uplink", "heartbeat_s", -1), ("uplink", "heartbeat_s", "often"),
                             ("detection", "entrap_level_s", 0),
                             ("detection", "reopen_count", 0.5),
                             ("uplink", "health_s", None), ("detection", "nope_s", 1.0),
                             ("detection", "anomaly_k", [1])])


def _obj(**kw: Any) -> bytes:
    return json.dumps(kw).encode()


def _is_json(b: bytes) -> bool:
    try:
        json.loads(b)
    except (ValueError, UnicodeDecodeError):
        return False
    return True


malformed = st.one_of(
    st.binary(max_size=64).filter(lambda b: not _is_json(b)),
    json_any.filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode()),
    st.builds(lambda i, op: _obj(id=i, op=op), bad_id, st.sampled_from(OPS)),
    st.builds(lambda i, op: _obj(id=i, op=op), cmd_id, st.text(max_size=12)
              .filter(lambda o: o not in OPS)),
    st.builds(lambda i, e: _obj(id=i, op="ack", args={"eid": e}), cmd_id,
              st.one_of(st.none(), st.integers(), st.just(""), json_any
                        .filter(lambda v: not isinstance(v, str)))),
    st.builds(lambda i, e: _obj(id=i, op="ack", args={"eid": e}), cmd_id,
              st.text(min_size=1, max_size=30)),  # no such alarm
    st.builds(lambda i, op, a: _obj(id=i, op=op, args=a), cmd_id,
              st.sampled_from(["snapshot", "self_test", "config_get", "maintenance_done"]),
              st.dictionaries(st.text(min_size=1, max_size=8), json_any, min_size=1,
                              max_size=3)),
    st.builds(lambda i, p: _obj(id=i, op="config_set", args={"patch": p}), cmd_id,
              json_any.filter(lambda v: not isinstance(v, dict) or not v
                              or not all(isinstance(x, dict) and x for x in v.values()))),
    st.builds(lambda i, k: _obj(id=i, op="config_set",
                                args={"patch": {k[0]: {k[1]: k[2]}}}), cmd_id, not_remote),
    st.builds(lambda i, k: _obj(id=i, op="config_set",
                                args={"patch": {k[0]: {k[1]: k[2]}}}), cmd_id, bad_value),
    st.builds(lambda i, k, extra: _obj(id=i, op="snapshot", **{k: extra}), cmd_id,
              st.text(min_size=1, max_size=8).filter(lambda k: k not in ("id", "op", "args")),
              json_any),
)


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(payload=malformed)
def test_200_malformed_commands_get_ok_false_and_change_nothing(host: Agent,
                                                                payload: bytes) -> None:
    before = state_of(host)
    cmd_id, ok, reason = handle(host, payload)
    assert ok is False
    assert isinstance(reason, str) and reason
    reply = host.factory.cmd_reply(cmd_id, ok, error=reason)
    validate("cmd_reply", reply)
    after = state_of(host)
    assert after == before
    assert after["cfg"] is before["cfg"] and after["pipeline"] is before["pipeline"]


def test_the_reply_to_an_oversized_command_names_it_and_says_too_large(host: Agent) -> None:
    before = state_of(host)
    cmd_id, ok, reason = handle(host, _oversized(b'{"id":"big-7","op":"config_set","args":'))
    reply = host.factory.cmd_reply(cmd_id, ok, error=reason)
    validate("cmd_reply", reply)
    assert (reply["id"], reply["ok"]) == ("big-7", False) and "too large" in reply["error"]
    assert state_of(host) == before


def test_config_get_hides_secrets(host: Agent, tmp_path: Path) -> None:
    _, ok, res = handle(host, b'{"id":"g","op":"config_get"}')
    assert ok and res["terminal"]["lift_id"] == host.lift_id
    assert res == host.cfg.redacted()


def test_config_set_refuses_a_patch_that_fails_validation_without_writing(host: Agent) -> None:
    before = host.cfg.path.read_bytes()
    _, ok, reason = handle(host, b'{"id":"s","op":"config_set","args":{"patch":'
                                 b'{"uplink":{"heartbeat_s":-5}}}}')
    assert not ok and "uplink.heartbeat_s" in reason and "between 1 and 3600" in reason
    assert host.cfg.path.read_bytes() == before
    assert not host.overrides.path.exists() and not host.overrides.pending.exists()


def test_config_set_rolls_back_when_the_agent_is_not_healthy(host: Agent) -> None:
    """The uplink is not connected here: not healthy within confirm_s, so the previous
    override (none) comes back and the running config stays the old one; the technician's
    file is never written."""
    host.confirm_s = 0.3
    before = host.cfg.path.read_bytes()
    old_cfg = host.cfg
    _, ok, reason = handle(host, b'{"id":"s","op":"config_set","args":{"patch":'
                                 b'{"uplink":{"heartbeat_s":15}}}}')
    assert not ok and "rolled back" in reason and "broker" in reason
    assert host.cfg.path.read_bytes() == before
    assert host.cfg is old_cfg and host.cfg.uplink.heartbeat_s == 60.0
    assert not host.overrides.path.exists()
    assert not host.overrides.pending.exists()
