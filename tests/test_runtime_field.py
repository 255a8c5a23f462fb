"""The runtime in the field (issue 8, Done when): a stalled loop stops systemd's watchdog
pings, SIGTERM with a backlog loses nothing and exits within 5 s, a clock step of ±1 h
leaves detection alone and ``tq`` right.

Real parts: a Unix datagram socket standing in for systemd's notify socket, a real
Mosquitto (``broker`` fixture), the real outbox files, ``liftwatch run`` as a process
where signals matter. The only things injected are the Agent's public seams: a source
(a driver whose read hangs) and a Timebase (a wall clock that steps, an NTP state that
changes).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from conftest import Broker
from liftwatch.agent.config import TerminalConfig, load_config
from liftwatch.agent.runtime import LIVE_TICK_S, STALL_S, Agent
from liftwatch.agent.timebase import ClockState, Timebase
from liftwatch.agent.tools.outbox_view import snapshot
from liftwatch.agent.trace_source import TraceSource
from liftwatch.drivers.trace import Record, TraceReader, TraceWriter
from test_runtime_trace import (
    CUT_FROM,
    CUT_START,
    CUT_TO,
    cut_trace,
    entrapment_example,
    liftwatch,
    replay_oracle,
)
from uplink_helpers import AUTOSAVE_CONF, LIFT, Observer, Received, wait_saved, write_config

DI = {"door_closed": 1, "door_lock": 1, "zone_up": 1, "zone_down": 1, "presence": 0,
      "alarm_button": 0, "safety_ok": 1, "mains_ok": 1, "inspection": 0, "run": 0}
CTL = {"mode": 1, "run": 0, "dir": 0, "floor": "1", "door": 4, "zone": 1, "speed": 0.0,
       "safety": 0, "lock": 1, "overload": 0, "fault": 0}


@pytest.fixture(scope="module")
def entrapment_cut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """140 s of the entrapment example (a trip, an entrapment, an alarm press)."""
    dst = tmp_path_factory.mktemp("traces") / "entrapment_cut.jsonl"
    cut_trace(entrapment_example(), dst, CUT_FROM, CUT_TO, start=CUT_START)
    return dst


# ---------------------------------------------------------------- 1. watchdog

class NotifySocket:
    """systemd's side of sd_notify: a bound Unix datagram socket, messages time-stamped."""

    def __init__(self) -> None:
        # AF_UNIX paths are limited to 108 bytes: pytest's tmp_path can be longer
        self.dir = tempfile.mkdtemp(prefix="lw-notify-")
        self.path = os.path.join(self.dir, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.got: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.got.append((time.monotonic(), data.decode()))

    def times(self, prefix: str) -> list[float]:
        return [t for t, m in list(self.got) if m.startswith(prefix)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        Path(self.path).unlink(missing_ok=True)
        os.rmdir(self.dir)


class HungDriverSource:
    """A live source of a controller polled every 0.1 s whose read then hangs (a driver
    blocked in a read that never returns): the records stop while the source still
    claims to be periodic. ``release`` lets the read return (end of input)."""

    controller_present = True

    def __init__(self, flow_s: float) -> None:
        self.flow_s = flow_s
        self.released = asyncio.Event()
        self.last_record = 0.0
        self.records = 0

    def accel_header(self) -> None:
        return None

    def __aiter__(self) -> AsyncIterator[Record]:
        return self._records()

    async def _records(self) -> AsyncIterator[Record]:
        t0 = time.monotonic()
        yield Record(0.0, "di", dict(DI))
        while (t := time.monotonic() - t0) < self.flow_s:
            self.last_record = time.monotonic()
            self.records += 1
            yield Record(t, "ctl", dict(CTL))
            await asyncio.sleep(0.1)
        await self.released.wait()  # the hung read


@pytest.fixture
def notify(monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifySocket]:
    ns = NotifySocket()
    monkeypatch.setenv("NOTIFY_SOCKET", ns.path)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # WatchdogSec=0.4 s: a ping every 0.2 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield ns
    ns.close()


@pytest.mark.timeout(40)
def test_a_stalled_loop_stops_the_watchdog_pings(broker: Broker, tmp_path: Path,
                                                 notify: NotifySocket) -> None:
    cfg = load_config(write_config(tmp_path, broker.port))
    src = HungDriverSource(flow_s=1.5)
    agent = Agent(cfg, source=src, drain_s=2.0)
    seen: dict[str, Any] = {}

    async def watch() -> None:
        # records flow, then the read hangs: wait past the stall threshold and look
        while src.records < 8:
            await asyncio.sleep(0.05)
        seen["flowing_stalled"] = agent.stalled()
        while time.monotonic() - src.last_record < STALL_S + 2.0:
            await asyncio.sleep(0.05)
        seen["stalled"] = agent.stalled()
        seen["health"] = await agent.health_body()
        seen["released_at"] = time.monotonic()
        src.released.set()

    async def main() -> int:
        watcher = asyncio.create_task(watch())
        rc = await agent.run()
        await watcher
        return rc

    assert asyncio.run(main()) == 0
    last = src.last_record
    assert src.records >= 10
    ready = notify.times("READY=1")
    pings = notify.times("WATCHDOG=1")
    assert len(ready) == 1 and ready[0] <= min(pings)
    # while records flowed nothing was stalled and the pings came every 0.2 s
    assert seen["flowing_stalled"] == []
    flowing = [t for t in pings if t <= last + STALL_S - 0.3]
    assert len(flowing) >= int((STALL_S - 0.3) / 0.2) - 3
    assert max(flowing) >= last + STALL_S - 0.6  # up to the threshold, still pinged
    # past the threshold: not one ping until the read returned
    assert [t for t in pings if last + STALL_S + 0.3 < t < seen["released_at"]] == []
    # the health state names the stalled loop; the tick loop itself is alive
    assert seen["stalled"] == ["acquisition"]
    assert seen["health"]["state"] == "fault"
    assert "loop_stalled:acquisition" in seen["health"]["faults"]
    assert "loop_stalled:tick" not in seen["health"]["faults"]
    assert notify.times("STOPPING=1") and notify.times("STOPPING=1")[0] >= seen["released_at"]


# ---------------------------------------------------------------- 2. SIGTERM with a backlog

def _stderr_lines(p: subprocess.Popen[str], into: list[tuple[float, str]]) -> threading.Thread:
    """Read the agent's log as it comes, each line time-stamped (monotonic)."""

    def pump() -> None:
        assert p.stderr is not None
        for line in p.stderr:
            into.append((time.monotonic(), line))

    th = threading.Thread(target=pump, daemon=True)
    th.start()
    return th


def _waiting(data_dir: Path) -> list[tuple[str, bytes]]:
    """What the outbox files hold, unacknowledged, read as ``liftwatch outbox`` does."""
    snap = snapshot(data_dir / "outbox")
    return [] if snap is None else [(w.topic, w.payload) for w in snap.pending()]


def _decisions(msgs: list[tuple[str, bytes]]) -> tuple[list[tuple[str, str, str]],
                                                       list[tuple[str, str]]]:
    events, trips = [], []
    for tp, payload in msgs:
        m = json.loads(payload)
        if tp == f"lift/{LIFT}/event":
            events.append((m["code"], m["state"], m["eid"].split("-", 1)[1]))
        elif tp == f"lift/{LIFT}/trip":
            trips.append((m["from"], m["to"]))
    return events, trips


@pytest.mark.timeout(60)
def test_sigterm_with_a_backlog_loses_nothing_and_exits_within_5s(
        broker: Broker, tmp_path: Path, entrapment_cut: Path) -> None:
    speed = 20.0
    oracle = replay_oracle(entrapment_cut)
    cfg = write_config(tmp_path, broker.port)
    broker.stop()  # the platform is away: everything decided piles up in the outbox
    log: list[tuple[float, str]] = []
    t_spawn = time.monotonic()
    p = subprocess.Popen(liftwatch("run", "--config", str(cfg), "--trace", str(entrapment_cut),
                                   "--other-lift", "--speed", f"{speed:g}"),
                         stderr=subprocess.PIPE, text=True)
    try:
        pump = _stderr_lines(p, log)
        deadline = time.monotonic() + 20
        while not any("agent running" in line for _, line in log):
            assert p.poll() is None and time.monotonic() < deadline, "".join(x for _, x in log)
            time.sleep(0.02)
        t_running = next(t for t, line in log if "agent running" in line)
        time.sleep(3.5)  # ~70 s of trace: the trip, the entrapment, midnight's stats
        t_term = time.monotonic()
        p.send_signal(signal.SIGTERM)
        rc = p.wait(10)
        took = time.monotonic() - t_term
        pump.join(2)
    finally:
        if p.poll() is None:
            p.kill()
    text = "".join(line for _, line in log)
    assert took < 5.0, text[-3000:]
    assert rc == 0, text[-3000:]
    assert "Traceback" not in text
    # the trace time played lies between these two (the agent logs "running" as it plays)
    played_lo = (t_term - t_running) * speed - 2.0
    played_hi = (t_term - t_spawn) * speed + 2.0
    backlog = _waiting(tmp_path / "data")
    events, trips = _decisions(backlog)
    due = [x for x in oracle if x["t"] <= played_lo]
    not_yet = [x for x in oracle if x["t"] > played_hi]
    assert due and not_yet, (played_lo, played_hi)  # the SIGTERM fell mid-trace
    want_events = [(x["code"], x["state"], x["id"].lstrip("e")) for x in oracle
                   if x["type"] == "event" and x["t"] <= played_hi]
    assert set(events) <= set(want_events), (events, want_events)  # nothing invented
    for x in due:
        if x["type"] == "event":
            assert (x["code"], x["state"], x["id"].lstrip("e")) in events
        else:
            assert (x["from"], x["to"]) in trips
    for x in not_yet:
        if x["type"] == "event":
            assert (x["code"], x["state"], x["id"].lstrip("e")) not in events
    assert any(tp.endswith("/stats") for tp, _ in backlog)  # midnight passed in the trace
    assert any(tp.endswith("/health") for tp, _ in backlog)

    # the platform is back; the agent starts again on a trace that decides nothing new
    quiet = tmp_path / "quiet.jsonl"
    with TraceReader(entrapment_cut) as r:
        w = TraceWriter(quiet, r.header)
        for rec in r:
            if rec.t > 2.0:
                break
            w.write(rec.t, rec.kind, rec.data)
        w.close()
    broker.start()
    obs = Observer(broker.port)
    try:
        r2 = subprocess.run(liftwatch("run", "--config", str(cfg), "--trace", str(quiet),
                                      "--other-lift", "--speed", "0", "--drain-s", "10"),
                            capture_output=True, text=True, timeout=40)
        assert r2.returncode == 0, r2.stderr[-3000:]
        got = {(m.topic, m.payload) for m in list(obs.got)}
        lost = [(tp, pl[:120]) for tp, pl in backlog if (tp, pl) not in got]
        assert lost == [], lost
        # and it was all acknowledged: nothing waits any more
        assert _waiting(tmp_path / "data") == []
    finally:
        obs.close()


# ---------------------------------------------------------------- 3. clock steps

class TimedObserver(Observer):
    """The platform observer, noting the real wall time each message arrived."""

    def __post_init__(self) -> None:
        self.arrived: list[float] = []
        super().__post_init__()

    def _on_message(self, c: mqtt.Client, u: Any, m: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.got.append(Received(m.topic, bytes(m.payload), bool(m.retain)))
            self.arrived.append(time.time())


class SteppedClock:
    """A terminal without RTC: its clock runs 1 h behind and unsynchronised until NTP
    steps it at ``sync_at`` (+1 h, synchronised); at ``back_at`` someone sets the date
    back by hand (-1 h; the kernel then reports unsynchronised, as settimeofday does).
    Phases are seconds of the monotonic clock since ``start()``."""

    def __init__(self, sync_at: float, back_at: float) -> None:
        self.sync_at, self.back_at = sync_at, back_at
        self.t0 = time.monotonic()

    def start(self) -> None:
        self.t0 = time.monotonic()

    def phase(self) -> str:
        dt = time.monotonic() - self.t0
        return "before" if dt < self.sync_at else "synced" if dt < self.back_at else "back"

    def wall(self) -> float:
        return time.time() + (3600.0 if self.phase() == "synced" else 0.0)

    def probe(self) -> ClockState:
        synced = self.phase() == "synced"
        return ClockState(synced, 1 if synced else 5, 0 if synced else 0x40, 0, 0)


def _decided(obs: Observer) -> dict[str, list[dict[str, Any]]]:
    """Events (first sends) and trips as the platform got them, without the envelope,
    by kind: each lane keeps its order, but after an outage the alarm lane drains before
    the trip lane (platform-protocol, delivery), so the order across kinds may differ."""
    out: dict[str, list[dict[str, Any]]] = {"event": [], "trip": []}
    for m in list(obs.got):
        kind = m.topic.rsplit("/", 1)[1]
        if kind in out:
            body = {k: v for k, v in m.json().items() if k not in ("v", "id", "ts", "tq")}
            if body.get("repeat", 0) == 0:
                out[kind].append(body)
    return out


def _same_decisions(got: dict[str, list[dict[str, Any]]], want: dict[str, list[dict[str, Any]]],
                    tolerance_s: float) -> bool:
    """The same decisions (codes, states, ids, places, everything not a measured time),
    with the times a rule measured at its decision (``stopped_s``, ``held_s``, ...)
    within one live tick of the trace: a live run decides on its tick, so two runs of
    one trace on a loaded machine may decide a tick apart."""
    def split(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
        detail = dict(body.get("detail") or {})
        times = {k: detail.pop(k) for k in list(detail) if k.endswith("_s")
                 and isinstance(detail[k], int | float) and not isinstance(detail[k], bool)}
        return {**body, "detail": detail}, times

    for kind in want:
        if len(got[kind]) != len(want[kind]):
            assert got[kind] == want[kind], kind
        for g, w in zip(got[kind], want[kind], strict=True):
            (g_rest, g_times), (w_rest, w_times) = split(g), split(w)
            assert g_rest == w_rest, (g, w)
            assert g_times.keys() == w_times.keys(), (g, w)
            for k in g_times:
                assert abs(g_times[k] - w_times[k]) <= tolerance_s + 1e-6, (k, g, w)
    return True


class LiveFromTrace(TraceSource):
    """The trace played as a live source (the Agent's ``source`` seam, not ``--trace``):
    a run from a trace is a replay, marked and stamped on the trace's clock (issue 13),
    while this test is about a live terminal whose wall clock steps."""

    @property
    def controller_present(self) -> bool:
        return self.header.controller_present

    def accel_header(self) -> dict[str, Any] | None:
        return self.header.accel or None


def live_config(d: Path, port: int, trace: Path) -> TerminalConfig:
    """write_config's terminal with the lift of ``trace``'s header (a live source has no
    header for the pipeline to take the lift from)."""
    path = write_config(d, port)
    with TraceReader(trace) as r:
        lift = r.header.lift
    assert lift is not None
    text = path.read_text().replace(
        'landings = ["1", "2"]\nlanding_heights_m = [0.0, 3.0]\n',
        f"landings = {json.dumps(lift['landings'])}\n"
        f"landing_heights_m = {json.dumps(lift['landing_heights_m'])}\n"
        f"rated_speed = {lift['rated_speed']}\ndoor_zone_m = {lift['door_zone_m']}\n")
    path.write_text(text)
    return load_config(path)


def _seq(msg: dict[str, Any]) -> int:
    return int(str(msg["id"]).rsplit("-", 1)[1])


@pytest.mark.timeout(90)
def test_a_clock_step_of_an_hour_leaves_detection_alone_and_tq_right(
        broker: Broker, tmp_path: Path, entrapment_cut: Path) -> None:
    speed = 20.0  # 140 s of trace in 7 s
    for d in ("ref", "field"):
        (tmp_path / d).mkdir()
    # the reference: a clock synchronised all along
    ref_cfg = live_config(tmp_path / "ref", broker.port, entrapment_cut)
    ref_obs = TimedObserver(broker.port, client_id="ref-observer")
    steady = Timebase(probe=lambda: ClockState(True, 0, 0, 0, 0), probe_interval_s=0.0)
    ref = Agent(ref_cfg, source=LiveFromTrace(entrapment_cut, speed=speed), drain_s=5.0,
                timebase=steady)
    assert asyncio.run(ref.run()) == 0
    ref_obs.close()
    want = _decided(ref_obs)
    assert [b["code"] for b in want["event"]] == ["entrapment_nonlevel", "alarm_button"]
    assert len(want["trip"]) == 1
    assert {m.json()["tq"] for m in ref_obs.got if m.topic.endswith(("/event", "/trip"))} == {1}
    assert steady.steps == []

    # the stepped run: the broker is away until just after the sync, and keeps the
    # observer's session meanwhile (autosave), so what the agent made before the sync
    # is still in its outbox when the clock is set
    broker.extra_conf = AUTOSAVE_CONF
    broker.stop()
    broker.start()
    obs = TimedObserver(broker.port, client_id="field-observer")
    since = time.time()
    wait_saved(broker.workdir, since)
    broker.stop()
    clock = SteppedClock(sync_at=0.8, back_at=5.5)
    tb = Timebase(probe=clock.probe, probe_interval_s=0.0, wall=clock.wall)
    cfg = live_config(tmp_path / "field", broker.port, entrapment_cut)
    agent = Agent(cfg, source=LiveFromTrace(entrapment_cut, speed=speed), drain_s=5.0,
                  timebase=tb)

    async def main() -> int:
        async def platform_back() -> None:
            # after the trip (1.2 s) was made on the synced clock: the factory learns of
            # a step only when it stamps a message (see the report: a message published
            # between the step and the next stamp goes out uncorrected, with tq 0)
            await asyncio.sleep(2.0)
            await asyncio.to_thread(broker.start)

        clock.start()
        t0_real = time.time()
        back = asyncio.create_task(platform_back())
        rc = await agent.run()
        await back
        main.t0_real = t0_real  # type: ignore[attr-defined]
        return rc

    assert asyncio.run(main()) == 0
    t0_real_ms = main.t0_real * 1000.0  # type: ignore[attr-defined]
    assert obs.wait_for(lambda g: any(x.topic.endswith("/online") and x.payload == b"0"
                                      for x in g), 10)
    obs.close()

    # detection runs on the trace's (monotonic) clock: the same decisions, the same eids,
    # durations and trace times, whatever the wall clock did
    assert _same_decisions(_decided(obs), want, tolerance_s=LIVE_TICK_S * speed)

    # the timebase saw both steps and the factory knows which messages they split
    assert [s for _, s in tb.steps] == [pytest.approx(3_600_000, abs=50),
                                        pytest.approx(-3_600_000, abs=50)]
    (first_synced, _), (first_back, _) = agent.factory.steps
    seen = {"before": 0, "synced": 0, "back": 0}
    for m, arrived in zip(list(obs.got), obs.arrived, strict=True):
        kind = m.topic.rsplit("/", 1)[1]
        if kind not in ("status", "event", "trip", "stats", "health"):
            continue
        msg = m.json()
        seq, ts, tq = _seq(msg), msg["ts"], msg["tq"]
        arrived_ms = arrived * 1000.0
        if seq < first_synced:
            if kind == "status":
                continue  # the latest status only, never stored: sent as it was made
            # made before the sync, sent after it from the outbox: ts corrected by the
            # step, tq 1 (the real time it was made, plus the hour NTP found missing)
            seen["before"] += 1
            assert tq == 1, msg
            assert t0_real_ms + 3_600_000 - 100 <= ts <= t0_real_ms + 800 + 3_600_000 + 300
            assert arrived_ms >= t0_real_ms + 2000  # it did wait in the outbox
        elif seq < first_back:
            seen["synced"] += 1
            assert tq == 1, msg
            # made on the synced clock (an hour ahead of the host's), sent as made
            assert t0_real_ms + 800 + 3_600_000 - 50 <= ts <= arrived_ms + 3_600_000 + 50, msg
        else:
            # set back by hand: unsynchronised, and ts follows the system clock as it is
            seen["back"] += 1
            assert tq == 0, msg
            assert t0_real_ms + 5500 - 50 <= ts <= arrived_ms + 50, msg
    assert seen["before"] >= 1 and seen["synced"] >= 3 and seen["back"] >= 1, seen
