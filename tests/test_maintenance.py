"""maintenance_done: the downlink command and the technician's ``liftwatch maintenance
--done`` restart the wear references (signal/trends.py), clear open trend warnings and
save the new state at once; the ``condition`` message carries the figures."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from liftwatch.agent.cli import main
from liftwatch.agent.config import load_config
from liftwatch.agent.messages import MessageFactory
from liftwatch.agent.runtime import Agent, status_change_key
from liftwatch.agent.timebase import Timebase
from liftwatch.buffer.baselines import (
    MAINTENANCE_MARKER,
    BaselineStore,
    mark_maintenance,
    take_maintenance_mark,
)
from liftwatch.drivers.trace import TraceHeader, TraceWriter
from liftwatch.signal.trends import DAY_S, Trends
from uplink_helpers import validate, write_config


def _worn_trends() -> Trends:
    """A week of ordinary door cycles, then a door 30 % slower: door_close_trend open."""
    rng, trends = random.Random(5), Trends()
    trends.tick(0.0)
    for d in range(11):
        for _ in range(50):
            close = (3.0 if d < 7 else 3.9) + rng.gauss(0, 0.1)
            trends.on_door({"floor": "1", "open_s": 2.5, "close_s": close, "reopens": 0})
        trends.tick((d + 1) * DAY_S)
    assert trends.open_codes() == {"door_close_trend"}
    return trends


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    trace = tmp_path / "t.jsonl"
    with TraceWriter(trace, TraceHeader(start="2026-11-23T08:00:00Z",
                                        lift={"landings": ["1", "2"],
                                              "landing_heights_m": [0.0, 3.0]},
                                        controller_present=False)) as w:
        w.write(0.0, "di", {"door_closed": 1, "zone_up": 1, "zone_down": 1, "presence": 0})
    a = Agent(load_config(write_config(tmp_path, 1883)), trace=trace)
    a.source = a._make_source()
    a.pipeline = a._make_pipeline(a.cfg, {"trends": _worn_trends().state()})
    a.pipeline.book.raise_(0.0, "door_close_trend", None, {"figure": "door_close_s"})
    a.uplink = a._make_uplink()  # not started: nothing here needs the broker
    a.factory = MessageFactory(a.lift_id, a.boot, Timebase(), a.cfg.platform)
    yield a
    a._close()


def _saved(a: Agent) -> dict:
    store = BaselineStore(a.data_dir, a.lift_id)
    try:
        return store.load() or {}
    finally:
        store.close()


def test_the_command_restarts_the_references_clears_the_warning_and_saves(agent: Agent) -> None:
    cmd_id, ok, result = asyncio.run(agent.commands.handle(
        b'{"id":"m1","op":"maintenance_done","args":{}}'))
    assert (cmd_id, ok) == ("m1", True)
    assert result["cleared"] == ["door_close_trend"] and result["figures_restarted"] >= 3
    validate("cmd_reply", agent.factory.cmd_reply(cmd_id, ok, result))
    assert not agent.pipeline.book.is_open("door_close_trend")
    # the cleared event went into the outbox (written before the reply)
    assert not agent._unwritten and agent.outbox.stats()["lanes"]["event"]["depth"] == 1
    saved = _saved(agent)["trends"]
    assert saved["tracks"] == {} and saved["restarts"] == 1


def test_the_command_takes_no_arguments(agent: Agent) -> None:
    _id, ok, reason = asyncio.run(agent.commands.handle(
        b'{"id":"m2","op":"maintenance_done","args":{"path":"/etc"}}'))
    assert ok is False and "takes no arguments" in reason
    assert agent.pipeline.trends.open_codes() == {"door_close_trend"}


def test_the_agent_takes_the_technicians_marker_at_its_tick(agent: Agent) -> None:
    mark_maintenance(agent.data_dir, b"2026-12-04T20:00:00Z")
    agent._last_status_key = status_change_key(agent.pipeline.status())   # no status due
    agent._last_status_sent = time.monotonic()
    asyncio.run(agent._tick_once())
    assert not (agent.data_dir / MAINTENANCE_MARKER).exists()
    assert agent.pipeline.trends.tracks == {} and agent.pipeline.trends.restarts == 1
    assert not agent.pipeline.book.is_open("door_close_trend")
    assert _saved(agent)["trends"]["restarts"] == 1


def test_a_symlink_in_place_of_the_marker_is_removed_not_taken(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    (tmp_path / MAINTENANCE_MARKER).symlink_to(target)
    assert take_maintenance_mark(tmp_path) is False
    assert target.read_text() == "keep" and not (tmp_path / MAINTENANCE_MARKER).exists()
    mark_maintenance(tmp_path)
    assert take_maintenance_mark(tmp_path) is True and take_maintenance_mark(tmp_path) is False


def test_the_cli_shows_the_figures_and_leaves_the_marker_when_no_agent_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = write_config(tmp_path, 1883)
    cfg = load_config(cfg_path)
    store = BaselineStore(cfg.storage.data_dir, cfg.terminal.lift_id)
    store.save({"trends": _worn_trends().state()})
    store.close()
    assert main(["maintenance", "--config", str(cfg_path)]) == 0
    out = capsys.readouterr().out
    assert "door_close_s" in out and "trend" in out and "normal" in out
    assert main(["maintenance", "--config", str(cfg_path), "--done"]) == 0
    out = capsys.readouterr().out
    assert "no agent is running" in out and "next start" in out
    assert take_maintenance_mark(cfg.storage.data_dir) is True


def test_the_daily_condition_message_validates(agent: Agent) -> None:
    msg = agent.factory.condition(agent.pipeline.trends.condition(), 1795478340000,
                                  1795564740000)
    validate("condition", msg)
    assert msg["figures"]["door_close_s"]["state"] == "trend"
    agent._close_day(1795478340000, 1795564740000)
    kinds = [topic.rsplit("/", 1)[1] for _lane, topic, _p in agent._unwritten]
    assert "condition" in kinds
