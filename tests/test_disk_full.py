"""A full disk is one reported fault (issue 15): the agent keeps detecting, sending
status and health and uplinking what is stored; what it cannot write waits in memory
and is written when space returns; the log says so once, not once per tick.

The disk is really full: the data directory is a small tmpfs (CI runs as root), filled
by a file written until ENOSPC, and freed by deleting that file. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Broker
from liftwatch.agent.commands import CommandError
from liftwatch.agent.config import load_config
from liftwatch.agent.diskfault import DiskFault
from liftwatch.agent.messages import MessageFactory, dumps, lane_of
from liftwatch.agent.runtime import Agent
from liftwatch.agent.storing import MAX_UNSTORED
from liftwatch.agent.timebase import Timebase
from liftwatch.buffer.alarms import AlarmLedger, AlarmLedgerWriteError
from liftwatch.buffer.journal import EventJournal, JournalWriteError
from liftwatch.buffer.outbox import Outbox
from test_runtime_trace import (
    CUT_FROM,
    CUT_START,
    CUT_TO,
    cut_trace,
    entrapment_example,
    replay_oracle,
)
from uplink_helpers import LIFT, Observer, kind_of_topic, validate, write_config


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path/data`` on a tmpfs of 2 MB: a disk the test can fill and free."""
    d = tmp_path / "data"
    d.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(d)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"mount -t tmpfs refused here: {r.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


def fill(d: Path) -> Path:
    """Write (or extend) a file until the disk is full; ENOSPC must be what stops it."""
    path = d / "filler"
    chunk = b"\0" * 4096
    with open(path, "ab", buffering=0) as fh:
        try:
            while True:
                fh.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return path


def test_ledger_and_journal_keep_what_the_full_disk_refuses(small_disk: Path) -> None:
    ledger = AlarmLedger(small_disk / "alarms.json")
    journal = EventJournal(small_disk / "journal", 100, generation_size=10, max_pending=5)
    ledger.add("e1", "lift/x/event", b'{"id":"e1"}', 1000.0)
    journal.add({"code": "a", "ts": 1})
    filler = fill(small_disk)
    # the ledger: memory is the truth, the file lags behind and says so
    with pytest.raises(AlarmLedgerWriteError) as err:
        ledger.mark_sent("e1", 1001.0)
    assert err.value.errno == errno.ENOSPC
    assert ledger.unsaved and ledger.get("e1").repeat == 1
    with pytest.raises(AlarmLedgerWriteError):
        ledger.sync()
    # the journal: the event waits in memory and is answered like the stored ones
    with pytest.raises(JournalWriteError) as jerr:
        journal.add({"code": "b", "ts": 2})
    assert jerr.value.errno == errno.ENOSPC
    for i in range(3, 9):  # deferred: queued behind the waiting one, no write tried
        journal.add({"code": "c", "ts": i}, defer=True)
    assert journal.pending == 5 and journal.dropped == 2  # bounded: the oldest waiting go
    assert [e["ts"] for e in journal.query()] == [1, 4, 5, 6, 7, 8]
    filler.unlink()
    assert ledger.sync() and not ledger.unsaved
    assert journal.sync() == 5 and journal.pending == 0
    ledger.close()
    journal.close()
    # what was kept is on disk now
    again = AlarmLedger(small_disk / "alarms.json")
    assert again.get("e1").repeat == 1 and again.get("e1").last_sent == 1001.0
    assert [e["ts"] for e in EventJournal(small_disk / "journal", 100).query()] == \
        [1, 4, 5, 6, 7, 8]


def test_a_read_only_disk_is_the_same_fault_class(small_disk: Path) -> None:
    """EROFS (a file system remounted read-only after an I/O error): kept, then written.
    (The outbox keeps its files open for writing, so it cannot be on a disk remounted
    read-only under it; its appends fail on any OSError alike, see test_outbox.py.)"""
    ledger = AlarmLedger(small_disk / "alarms.json")
    journal = EventJournal(small_disk / "journal", 100)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        with pytest.raises(AlarmLedgerWriteError) as err:
            ledger.add("e1", "lift/x/event", b"{}", 1.0)
        assert err.value.errno == errno.EROFS and ledger.get("e1") is not None
        with pytest.raises(JournalWriteError) as jerr:
            journal.add({"code": "a", "ts": 1})
        assert jerr.value.errno == errno.EROFS and journal.pending == 1
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    assert ledger.sync() and journal.sync() == 1
    journal.close()
    ledger.close()
    assert AlarmLedger(small_disk / "alarms.json").get("e1") is not None


def test_disk_fault_is_logged_once_summed_up_and_its_end_said(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    fault = DiskFault(retry_s=1.0, summary_s=300.0, clock=lambda: now[0], wall=lambda: 1e9)
    full = OSError(errno.ENOSPC, "No space left on device")
    caplog.set_level(logging.INFO, logger="liftwatch.agent.diskfault")
    fault.failed("outbox", full, "/data/outbox")
    assert not fault.retry_due()
    for _ in range(600):  # ten minutes of one failed retry a second
        now[0] += 1.0
        assert fault.retry_due()
        fault.failed("outbox", full, "/data/outbox")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert "outbox not written (ENOSPC" in lines[0] and "/data/outbox" in lines[0]
    assert "continues" in lines[1] and "300 failed write(s)" in lines[1]
    assert fault.health() == {"error": "ENOSPC", "since": 1_000_000_000_000, "count": 601,
                              "parts": ["outbox"]}
    fault.recovered("3 message(s) stored")
    assert "over after 600 s" in caplog.records[-1].getMessage()
    assert fault.health() is None and fault.retry_due()
    # a nearly full disk lets a write through now and then: a relapse is not a new line
    n = len(caplog.records)
    now[0] += 5.0
    fault.failed("outbox", full)
    fault.recovered()
    assert len(caplog.records) == n and fault.relapses == 1


@pytest.mark.parametrize("relapse", [False, True])
def test_the_summary_comes_every_5_minutes_from_the_faults_start(
        caplog: pytest.LogCaptureFixture, relapse: bool) -> None:
    """Issue 19: in a 330 s fault no summary appeared: it was due 5 minutes after the
    last line, and each part hit later (journal, ledger, cursors) had a line of its
    own. It is due every 5 minutes from the fault's start; a relapse (the fault ends
    for a moment and comes back) keeps the schedule. On the agent's timebase, driven
    by the test: no real time passes."""
    now = [1000.0]
    tb = Timebase(mono=lambda: now[0], wall=lambda: 1.7e9 + now[0])
    fault = DiskFault(clock=tb.monotonic, wall=tb._wall)
    full = OSError(errno.ENOSPC, "No space left on device")
    caplog.set_level(logging.INFO, logger="liftwatch.agent.diskfault")
    parts = {0: "outbox", 60: "event journal", 120: "alarm ledger", 240: "outbox cursors"}
    for s in range(331):  # a failed retry every second, another part hit now and then
        now[0] = 1000.0 + s
        if relapse and s == 100:
            fault.recovered()  # the slack of a file's last block let one write through
            continue
        fault.failed(parts.get(s, "outbox"), full, "/data")
        fault.summary()  # and the tick's call
    lines = [r.getMessage() for r in caplog.records]
    summaries = [x for x in lines if "continues" in x]
    assert len(summaries) == 1, lines
    assert summaries[0].startswith("disk fault continues for 300 s"), summaries
    at = [r.created for r in caplog.records]  # the order of lines: start, parts, summary
    assert len(at) == len(lines) and "not written (" in lines[0]
    if relapse:
        assert "ended and came back 1 time(s)" in summaries[0]


def test_messages_kept_in_memory_are_bounded_but_alarms_never_dropped(tmp_path: Path) -> None:
    agent = Agent(load_config(write_config(tmp_path, 1883)))
    try:
        t = f"lift/{LIFT}/"
        alarms = [("alarm", t + "event", b"a%d" % i) for i in range(10)]
        agent._unwritten = alarms[:5] + [("record", t + "trip", b"t%d" % i) for i in range(5)] \
            + [("event", t + "event", b"e%d" % i) for i in range(MAX_UNSTORED)] \
            + [("record", t + "stats", b"s%d" % i) for i in range(5)] + alarms[5:]
        agent._drop_unstored(len(agent._unwritten) - MAX_UNSTORED)
        kept = agent._unwritten
        assert len(kept) == MAX_UNSTORED and agent.unstored_dropped == 20
        assert [m for m in kept if m[0] == "alarm"] == alarms  # all of them, in order
        assert not [m for m in kept if m[0] == "record"]  # trips, then stats went first
        assert kept[5][2] == b"e10"  # then the oldest events
        # even beyond the bound: alarms stay
        agent._unwritten = alarms * 2000
        agent._drop_unstored(len(agent._unwritten) - MAX_UNSTORED)
        assert len(agent._unwritten) == 20_000
    finally:
        agent._close()


def test_a_full_disk_at_start_gives_a_unique_boot_not_an_exit(tmp_path: Path,
                                                               small_disk: Path) -> None:
    cfg = load_config(write_config(tmp_path, 1883))
    first = Agent(cfg, data_dir=small_disk)
    first._close()
    assert first.boot == 1
    fill(small_disk)
    boots = []
    for _ in range(2):
        agent = Agent(cfg, data_dir=small_disk)
        try:
            assert agent.disk.active and agent.disk.what == {"boot counter":
                                                             str(small_disk / "boot")}
            assert agent.disk.error == "ENOSPC"
            boots.append(agent.boot)
        finally:
            agent._close()
    # never a number the counter gave or will give, nor the same twice
    assert all(b >= 10**12 for b in boots) and boots[0] != boots[1]
    assert (small_disk / "boot").read_text() == "1\n"


def test_config_set_on_a_full_disk_changes_nothing_and_says_why(small_disk: Path) -> None:
    cfg_path = write_config(small_disk, 1883)  # the config file on the full disk too
    before = cfg_path.read_bytes()
    agent = Agent(load_config(cfg_path))
    try:
        fill(small_disk)
        with pytest.raises(CommandError, match=r"cannot be written \(ENOSPC\); nothing changed"):
            asyncio.run(agent.config_set({"uplink": {"heartbeat_s": 30.0}}))
        assert cfg_path.read_bytes() == before and agent.cfg.uplink.heartbeat_s == 60.0
        assert not (agent.data_dir / "config_set.pending").exists()
        assert "remote config file" in agent.disk.what
    finally:
        agent._close()


def liftwatch(*args: str) -> list[str]:
    """The command line; ``run`` says --allow-root on purpose: CI runs the tests as root,
    and the agent here plays a trace (no real lift, a throw-away data directory)."""
    if args[:1] == ("run",):
        args = ("run", "--allow-root", *args[1:])
    return [sys.executable, "-m", "liftwatch.agent.cli", "-v", *args]


@pytest.mark.timeout(90)
def test_run_on_a_full_disk_keeps_its_duties_and_writes_what_it_kept(
        broker: Broker, tmp_path: Path, small_disk: Path) -> None:
    """The runtime on a full disk: the events already stored go out, status and health
    keep coming (health names the disk fault), the alarm of the trace reaches the
    platform at once; the fault is logged once; when space returns, what was kept is
    written (outbox, journal) and sent, and the log says so."""
    trace = tmp_path / "cut.jsonl"
    cut_trace(entrapment_example(), trace, CUT_FROM, CUT_TO,
              start=CUT_START)
    cfg = write_config(tmp_path, broker.port)
    cfg.write_text(cfg.read_text() + "outbox_max_mb = 1.0\n"
                   "\n[detection]\nalarm_repeat_s = 1.0\n")
    # stored by an earlier run (boot 0), not yet sent: the events of the same trace
    factory = MessageFactory(LIFT, 0, Timebase(), load_config(cfg).platform)
    earlier = [factory.event(x) for x in replay_oracle(trace) if x["type"] == "event"]
    ob = Outbox(small_disk / "outbox", 1 << 20)
    for msg in earlier:
        ob.append(lane_of("event", msg), f"lift/{LIFT}/event", dumps(msg))
    ob.close()
    obs = Observer(broker.port)
    # the broker is away until the disk is full, so what is stored is still there then;
    # stopped cleanly, it saves the observer's session, which queues what comes meanwhile
    assert broker.proc is not None
    broker.proc.terminate()
    broker.proc.wait(10)
    broker.proc = None

    proc = subprocess.Popen(liftwatch("run", "--config", str(cfg), "--trace", str(trace),
                                      "--other-lift", "--speed", "8", "--drain-s", "10"),
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    running = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if "agent running" in line:
                running.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert running.wait(20), "\n".join(lines)
        filler = fill(small_disk)
        broker.start()

        def events() -> list[dict[str, Any]]:
            return [m.json() for m in obs.on("event")]

        def health_with_fault() -> list[dict[str, Any]]:
            return [h for h in (m.json() for m in obs.on("health"))
                    if "disk_fault" in h.get("faults", [])]

        # what was stored before the fault goes out during it
        earlier_ids = {m["id"] for m in earlier}
        assert obs.wait_for(lambda g: earlier_ids <= {e["id"] for e in events()}, 10), \
            "\n".join(lines)
        fill(small_disk)  # what their acks freed (a deleted segment) is taken too
        # health names the fault (asked for by snapshot: the disk is full at once, but
        # the first write to fail may wait for the slack of a file's last page to fill)
        for i in range(8):
            obs.publish(f"lift/{LIFT}/cmd",
                        json.dumps({"id": f"s{i}", "op": "snapshot"}).encode())
            if obs.wait_for(lambda g: bool(health_with_fault()), 2):
                break
        assert health_with_fault(), "\n".join(lines)
        h = health_with_fault()[0]
        validate("health", h)
        assert h["state"] == "fault" and h["disk"]["error"] == "ENOSPC"
        assert h["disk"]["count"] >= 1 and h["disk"]["unstored"] >= 1
        assert "outbox" in h["disk"]["parts"]
        # the alarm reaches the platform; status keeps coming (QoS 0: the snapshots')
        assert obs.wait_for(lambda g: any(e.get("code") == "entrapment_nonlevel"
                                          for e in events()), 20), "\n".join(lines)
        assert obs.wait_for(lambda g: len(obs.on("status")) >= 1, 5)
        before = {m.json()["id"] for m in obs.got if kind_of_topic(m.topic)
                  in ("event", "trip", "stats", "health")}
        n_during = len(obs.on("event"))
        filler.unlink()  # space returns
        assert obs.wait_for(lambda g: any("disk fault over" in x for x in lines), 10), \
            "\n".join(lines)
        assert proc.wait(40) == 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
    reader.join(5)
    log = "\n".join(lines)
    assert "tick failed" not in log and "Traceback" not in log, log
    fault_lines = [x for x in lines if "disk fault" in x]
    assert len([x for x in fault_lines if "not written (" in x]) == 1, log
    assert len(fault_lines) <= 6, log  # its start, other parts hit, its end
    assert len(lines) < 60, log
    got = list(obs.got)
    for m in got:
        kind = kind_of_topic(m.topic)
        if kind is not None:
            validate(kind, m.json())
    # what was kept was stored when space returned and went out again from the outbox:
    # the trip, the stats of the hour and day that end at midnight, the events
    assert obs.wait_for(lambda g: len(obs.on("event")) > n_during, 5)
    assert {m.json()["period"] for m in obs.on("stats")} == {"hour", "day"}
    assert len(obs.on("trip")) >= 1
    by_id: dict[str, list[bytes]] = {}
    for m in got:
        if kind_of_topic(m.topic) in ("event", "trip", "stats", "health"):
            by_id.setdefault(m.json()["id"], []).append(m.payload)
    assert all(len(set(v)) == 1 for v in by_id.values())  # a duplicate is the same message
    # published while not stored, then stored and sent again from the outbox
    assert [i for i in before if len(by_id[i]) == 2 and "-1-" in i], (before, by_id)
    codes = {(e["code"], e["state"]) for e in (m.json() for m in obs.on("event"))
             if "code" in e}
    assert {("entrapment_nonlevel", "raised"), ("alarm_button", "raised")} <= codes
    # and the journal holds the events the full disk refused at first
    journal = EventJournal(small_disk / "journal", 100)
    assert {"entrapment_nonlevel", "alarm_button"} <= {e["code"] for e in journal.query()}
    journal.close()
    obs.close()


class AckingObserver(Observer):
    """The emergency centre: acknowledges every alarm the moment its raise arrives."""

    acked: dict[str, float]

    def _on_message(self, c: Any, u: Any, m: Any) -> None:
        super()._on_message(c, u, m)
        if not m.topic.endswith("/event"):
            return
        e = json.loads(m.payload)
        if e.get("sev") == "alarm" and e.get("state") == "raised" and \
                e["eid"] not in self.acked:
            self.acked[e["eid"]] = time.monotonic()
            c.publish(f"lift/{LIFT}/cmd", json.dumps(
                {"id": f"ack-{e['eid']}", "op": "ack", "args": {"eid": e["eid"]}}), qos=1)


@pytest.mark.timeout(90)
def test_an_alarm_acked_the_moment_it_arrives_during_a_disk_fault_stops_repeating(
        broker: Broker, tmp_path: Path, small_disk: Path) -> None:
    """Issue 19: on a full disk an alarm went out before the alarm ledger held it, so
    the emergency centre's immediate ack was refused ("no unacknowledged alarm") and
    the alarm repeated every alarm_repeat_s for ever. The ledger's memory now holds
    it before it is published: the ack is accepted and the repeats stop."""
    trace = tmp_path / "cut.jsonl"
    cut_trace(entrapment_example(), trace, CUT_FROM, CUT_TO, start=CUT_START)
    cfg = write_config(tmp_path, broker.port)
    cfg.write_text(cfg.read_text() + "\n[detection]\nalarm_repeat_s = 1.0\n")
    AckingObserver.acked = {}
    obs = AckingObserver(broker.port)
    proc = subprocess.Popen(liftwatch("run", "--config", str(cfg), "--trace", str(trace),
                                      "--other-lift", "--speed", "8", "--drain-s", "3"),
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    running = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if "agent running" in line:
                running.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert running.wait(20), "\n".join(lines)
        fill(small_disk)
        assert obs.wait_for(lambda g: len(AckingObserver.acked) >= 2, 40), "\n".join(lines)
        assert obs.wait_for(lambda g: all(
            any(r.json().get("id") == f"ack-{eid}" for r in obs.on("cmd/reply"))
            for eid in AckingObserver.acked), 10), "\n".join(lines)
        time.sleep(3.5)  # three repeat periods
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
    reader.join(5)
    obs.close()
    log = "\n".join(lines)
    assert any("disk fault: " in x for x in lines), log  # it did happen during the fault
    replies = {r.json()["id"]: r.json() for r in obs.on("cmd/reply")}
    for eid in AckingObserver.acked:
        assert replies[f"ack-{eid}"]["ok"] is True, (replies, log)
        repeats = [e for e in (m.json() for m in obs.on("event"))
                   if e.get("eid") == eid and e.get("repeat", 0) >= 1]
        assert len(repeats) <= 1, repeats  # at most one already under way at the ack


def test_a_store_cancelled_by_the_end_of_the_run_is_seen_through(tmp_path: Path) -> None:
    """The run ends (the tick is cancelled) while the outbox thread stores a batch: the
    batch left memory when the store began, so the cancelled write waits for the store
    and the messages are in the outbox for the final drain (a --speed 0 re-run once
    ended with its last events journaled but never published)."""
    agent = Agent(load_config(write_config(tmp_path, 1883)))
    gate = threading.Event()
    real_store = agent._store

    def slow_store(*args: Any) -> Any:
        gate.wait(5)          # the store is under way when the cancel comes
        return real_store(*args)

    agent._store = slow_store  # type: ignore[method-assign]
    t = f"lift/{LIFT}/"
    agent._unwritten = [("event", t + "event", b"e1"), ("record", t + "trip", b"t1")]

    async def scenario() -> list[bytes]:
        task = asyncio.create_task(agent._write(force=True))
        await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.sleep(0.2)
        assert not task.done(), "the cancelled write left the store running on its own"
        gate.set()
        with pytest.raises(asyncio.CancelledError):  # the cancel still reaches the caller
            await task
        # what the final write and the drain then see: the batch, in the outbox
        return [i.payload for i in agent.outbox.pending(10)]

    try:
        assert asyncio.run(scenario()) == [b"e1", b"t1"]
        assert agent._unwritten == [] and not agent._writing
    finally:
        agent._close()
