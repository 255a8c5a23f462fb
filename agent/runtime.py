"""``liftwatch run``: the agent process (architecture.md "Runtime").

One asyncio loop. The source (live drivers, or a trace with ``--trace``) feeds
``Pipeline.feed``; a tick (0.2 s live, 0.1 s from a trace) calls ``Pipeline.advance``
on the source's clock and sends ``status`` (on change, rate limited by the uplink, and
every ``heartbeat_s``),
``health`` (every ``health_s`` and when its state changes), ``stats`` (when an hour or
a UTC day of the source's clock has passed) and alarm repeats. Every ``event``,
``trip``, ``stats`` and ``health`` message is appended to the outbox before the
uplink may publish it; appends run on the outbox worker thread (shared with the
uplink), so acquisition never waits on an fsync.

A failing disk (ENOSPC, EIO, EROFS on the outbox, the alarm ledger or the event
journal) is one fault (:mod:`liftwatch.agent.diskfault`): logged when it starts, summed
up every 5 minutes, logged when it ends, and in ``health`` (``disk``, fault
``disk_fault``) while it lasts. Every other duty of the tick goes on: detection,
status, health, alarm repeats, and the uplink of what the outbox already holds. What
cannot be written stays in memory and is written, in order, when the disk takes it
again (tried every second): messages for the outbox (at most ``MAX_UNSTORED``; over
that the oldest trips/health go first, then stats, then events; alarms are never
dropped, and they are kept beyond the bound), the alarm ledger (its memory is the
truth) and journal events (see :mod:`liftwatch.buffer.journal`). A message that could
not be stored is published once straight away (QoS 1, alarms first) when the link is
up, so an alarm or the health that reports the fault is not held back by the disk;
once stored it goes out again from the outbox (a duplicate, same ``id``). Alarm
repeats during a fault are published the same way and not kept (the ledger repeats
them anyway). What is still in memory when the agent stops is lost, said in the log.

Time: the pipeline runs on the source's clock (monotonic seconds live, trace seconds
with ``--trace``); messages carry wall time and ``tq`` from the kernel's NTP state
(:mod:`liftwatch.agent.timebase`). Messages made before a clock step (the first NTP
sync of a terminal without RTC) and still in the outbox get their ``ts`` corrected
as they are published (``MessageFactory.correct``). With ``--trace`` the stats periods follow the
trace's own clock (header ``start`` + ``t``), so an hour of trace closes an hour of
stats as it would have live.

Stopping: SIGTERM or SIGINT stops acquisition, lets the pipeline decide what is due,
writes what is left, drains the outbox for what remains of 5 s, publishes ``online``
0 and exits. With ``--trace`` the agent also stops when the trace ends, after draining
for up to ``--drain-s`` seconds. Whatever is not drained stays in the outbox for the
next start.

Commands: see :mod:`liftwatch.agent.commands`; this module is their host. A
``config_set`` is applied like this, and "healthy" means: the patched file loads and
validates as a whole (``load_config``), and within ``confirm_s`` (default 20 s) the
uplink has a broker session and no loop (acquisition, tick) has stalled. Before the
new file is written the running one is copied to ``FILE.prev`` and a marker
``config_set.pending`` is put in the data directory; if the agent is not healthy in
time the previous file is restored and re-applied. If the agent dies meanwhile, the
next start finds the marker and does the same check, restoring the previous file and
exiting with status 3 (for systemd to restart it on the old config) if it fails.
The remotely allowed keys (``remote`` in the settings) are timers, thresholds and
reporting intervals: detection parameters are applied by rebuilding the pipeline
with its learned baselines (its open events are forgotten, as after a reboot: a
condition still present is raised again under a new id); uplink intervals take
effect at once. SIGHUP reloads the file the same way; a file that does not
validate is refused and the running config kept.

Alarms (EN 81-28): an alarm-severity raise goes into the alarm ledger
(``liftwatch.buffer.alarms``) and is sent again every ``alarm_repeat_s`` with its
``repeat`` count, until the platform's ``ack`` for its ``eid``, across restarts.

systemd: ``READY=1`` once running, ``WATCHDOG=1`` every half ``WatchdogSec`` while no
loop has stalled (:mod:`liftwatch.agent.sdnotify`), ``STOPPING=1`` on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import gc
import json
import logging
import secrets
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from liftwatch.agent import health as health_mod
from liftwatch.agent.commands import CommandError, CommandHandler
from liftwatch.agent.config import (
    ConfigError,
    TerminalConfig,
    load_config,
    load_credentials,
    remote_keys,
    validate_dict,
)
from liftwatch.agent.diskfault import DiskFault, errno_name
from liftwatch.agent.messages import MessageFactory, dumps, lane_of, next_boot, topic
from liftwatch.agent.sdnotify import Notifier, watchdog_interval_s
from liftwatch.agent.timebase import Timebase, sleep_on_grid
from liftwatch.agent.tomltext import dump_toml
from liftwatch.agent.uplink import Uplink, UplinkError
from liftwatch.buffer.alarms import AlarmLedger, AlarmLedgerWriteError
from liftwatch.buffer.atomic import atomic_write_bytes
from liftwatch.buffer.baselines import BaselineStore
from liftwatch.buffer.journal import JournalWriteError
from liftwatch.buffer.outbox import (
    DROP_ORDER,
    Outbox,
    OutboxError,
    OutboxWriteError,
    queue_of,
)
from liftwatch.drivers.threadname import name_native_thread
from liftwatch.drivers.trace import TraceError
from liftwatch.signal.pipeline import Pipeline

log = logging.getLogger(__name__)

#: the tick from a trace (the replay's grid of timers)
TICK_S = 0.1
#: the live tick: the live source hands records over and polls the controller on the
#: same grid, so the loop wakes once for the three. Timers are driven by the records'
#: own times as they are fed (400 accelerometer samples a second), so the tick only
#: bounds how late a decision is published: 0.2 s, against event timers of 0.5 s and more
LIVE_TICK_S = 0.2
STOP_BUDGET_S = 5.0
#: live timers wait this long for records under way before the clock moves them on
LIVE_SILENCE_S = 0.5
#: a loop whose heartbeat is older than this is stalled (a health fault)
STALL_S = 5.0
#: outputs waiting for the outbox before acquisition is made to wait (and counted)
MAX_UNWRITTEN = 5000
#: messages kept in memory while the disk refuses them (about 300 bytes each)
MAX_UNSTORED = 10_000
HEALTH_CHANGE_MIN_S = 10.0
#: the health state (faults, stalled loops) is assessed this often between health
#: messages, each time with a hop to the outbox thread for its figures; a change is
#: sent at once (at most every HEALTH_CHANGE_MIN_S)
HEALTH_CHECK_S = 5.0
PENDING_MARKER = "config_set.pending"
EXIT_ROLLED_BACK = 3


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, type=Path, help="terminal config (TOML)")
    p.add_argument("--trace", type=Path,
                   help="take the inputs from this trace (trace-format.md) instead of hardware")
    p.add_argument("--speed", type=float, default=1.0,
                   help="play the trace N times faster than real time (0: as fast as possible)")
    p.add_argument("--drain-s", type=float, default=30.0,
                   help="with --trace: how long to drain the outbox after the trace ends")
    p.add_argument("--data-dir", type=Path,
                   help="override storage.data_dir (outbox, journal, boot counter)")
    p.add_argument("--confirm-s", type=float, default=20.0,
                   help="how long a remote config change has to come up healthy")


def status_change_key(st: dict[str, Any]) -> tuple[Any, ...]:
    """What makes a status "changed" (platform-protocol.md: on change, at most 1/s).

    The state a platform acts on: service mode, running and direction, the floor the
    car stands at, door open or closed, person in the car, safety, lock and overload.
    Speed, the door-zone flag and the floor while moving change many times a trip;
    they are carried in every status but do not by themselves cause one. A lift doing
    300 trips a day thus sends about five status messages a trip (start, stop, door
    open, door closed, passenger) instead of one a second while moving, which keeps
    the day's upload under 1 MB (bench/bench_uplink.py). A trip's own figures go in
    its ``trip`` message.
    """
    moving = bool(st.get("run"))
    door = st.get("door")
    return (st.get("mode"), moving, st.get("dir"), None if moving else st.get("floor"),
            door in (2, 5), st.get("person"), st.get("safety"), st.get("lock"),
            st.get("overload"))


def _deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _flatten(patch: dict[str, Any], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for k, v in patch.items():
        dotted = f"{prefix}{k}"
        if isinstance(v, dict):
            keys += _flatten(v, dotted + ".")
        else:
            keys.append(dotted)
    return keys


def _trace_start_ms(start: str) -> int | None:
    try:
        dt = datetime.fromisoformat(start.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


class Agent:
    """The running agent: wires config, source, pipeline, outbox, uplink and commands."""

    def __init__(self, cfg: TerminalConfig, *, trace: Path | None = None, speed: float = 1.0,
                 drain_s: float = 30.0, data_dir: Path | None = None,
                 confirm_s: float = 20.0, source: Any = None,
                 timebase: Timebase | None = None) -> None:
        """``source`` (an async iterator of ``Record`` with the live source's optional
        ``start``/``stop``/``close``/``accel_header``/``controller_present``) replaces the
        configured drivers, and ``timebase`` the system clock: a terminal built around
        other inputs or clocks (and the tests' hung driver, stepped clock) plugs in here."""
        self.cfg = cfg
        self.trace = trace
        self.speed = speed
        self.drain_s = drain_s
        self.confirm_s = confirm_s
        self.data_dir = Path(data_dir or cfg.storage.data_dir)
        self.lift_id = cfg.terminal.lift_id
        self.prefix = cfg.uplink.topic_prefix
        self.started_mono = time.monotonic()
        self.timebase = timebase if timebase is not None else Timebase()
        self.disk = DiskFault()
        self.boot = self._boot_number()
        self.factory = MessageFactory(self.lift_id, self.boot, self.timebase, cfg.platform)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="lw-outbox",
                                           initializer=name_native_thread)
        self.outbox = Outbox(self.data_dir / "outbox",
                             int(cfg.storage.outbox_max_mb * 1024 * 1024))
        self.journal: Any = None
        self.source: Any = None
        self._given_source: Any = source
        self.pipeline: Pipeline | None = None
        self.uplink: Uplink | None = None
        self.commands = CommandHandler(self)
        self._cmd_queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=64)
        self._unwritten: list[tuple[str, str, bytes]] = []
        self._new_alarms: list[dict[str, Any]] = []
        self.ledger = AlarmLedger(self.data_dir / "alarms.json")
        self.baselines = BaselineStore(self.data_dir, self.lift_id)
        self._last_repeat_check = -float("inf")
        self._writing = False
        self.write_errors = 0
        self._published_unstored: set[int] = set()  # id() of payloads sent straight away
        self.unstored_dropped = 0
        self.waited_for_outbox = 0
        self.heartbeats: dict[str, float] = {}
        self.notifier = Notifier()
        self._stop_evt: asyncio.Event | None = None
        self._last_status: dict[str, Any] | None = None
        self._last_status_key: tuple[Any, ...] | None = None
        self._last_status_sent = -float("inf")
        self._last_health_sent = -float("inf")
        self._last_health_check = -float("inf")
        self._health_state: tuple[str, tuple[str, ...]] | None = None
        self._power: dict[str, Any] = {"src": None, "batt": None}
        self._period_start: dict[str, int] = {}
        self._trace_start_ms: int | None = None
        self._t_source0 = 0.0
        self._t_live = 0.0
        self._t_fed = 0.0
        self._pipeline_gen = 0
        self.exit_code = 0

    # ------------------------------------------------------------------ set-up
    def _boot_number(self) -> int:
        """The boot counter (``next_boot``). A disk that refuses to save it must not keep
        the lift unmonitored, nor may the next start reuse the number (message ids are
        ``{terminal}-{boot}-{n}``: a reused id makes the platform drop a message as a
        duplicate). So this run takes a random number far above any counter,
        10^12 + [0, 10^12), unique without being saved."""
        try:
            return next_boot(self.data_dir)
        except OSError as exc:
            boot = 10**12 + secrets.randbelow(10**12)
            self.disk.failed("boot counter", exc, Path(self.data_dir) / "boot")
            log.error("boot counter not saved: this run is boot %d (random, unique)", boot)
            return boot

    def _make_source(self) -> Any:
        if self._given_source is not None:
            return self._given_source
        if self.trace is not None:
            from liftwatch.agent.trace_source import TraceSource
            return TraceSource(self.trace, speed=self.speed)
        from liftwatch.agent.live_source import LiveSource
        return LiveSource(self.cfg)

    def _load_baselines(self) -> dict[str, Any] | None:
        try:
            return self.baselines.load()
        except (OSError, ValueError) as exc:
            log.warning("learned baselines unreadable (%s): learning again", exc)
            return None

    def _make_pipeline(self, cfg: TerminalConfig, baselines: dict[str, Any] | None) -> Pipeline:
        """The pipeline for this lift: with --trace, the lift and accelerometer of the
        trace header win over the config (as in ``liftwatch replay``)."""
        src = self.source
        rotation = cfg.accel.rotation if cfg.accel.orientation == "fixed" else None
        if self.trace is not None:
            from liftwatch.agent.replay import lift_from
            header = src.header
            lift = lift_from(header, cfg)
            acc = header.accel or None
            present = header.controller_present
        else:
            lift = cfg.lift
            acc = src.accel_header() if hasattr(src, "accel_header") else None
            present = bool(getattr(src, "controller_present", True))
        fs = float(acc["fs"]) if acc else None
        lsb = float(acc.get("lsb_per_g", 256)) if acc else None
        return Pipeline(lift, cfg.detection, accel_fs=fs, lsb_per_g=lsb,
                        controller_present=present, rotation=rotation,
                        event_id_prefix=self._eid_prefix(), baselines=baselines)

    def _eid_prefix(self) -> str:
        """Event ids are ``{boot}-{n}``; a pipeline rebuilt by a config change counts
        from 1 again, so its ids are ``{boot}.{generation}-{n}``: never reused."""
        self._pipeline_gen += 1
        return f"{self.boot}-" if self._pipeline_gen == 1 else \
            f"{self.boot}.{self._pipeline_gen - 1}-"

    def _make_uplink(self) -> Uplink:
        u = self.cfg.uplink
        user = password = None
        if u.credentials_file:
            user, password = load_credentials(u.credentials_file)
        return Uplink(u, self.lift_id, self.outbox, username=user, password=password,
                      on_command=self._on_command, executor=self.executor,
                      rewrite=self.factory.correct, replay=self.trace is not None)

    def _open_journal(self) -> None:
        try:
            from liftwatch.buffer.journal import EventJournal
            self.journal = EventJournal(self.data_dir / "journal",
                                        self.cfg.storage.journal_max_events)
        except Exception as exc:  # the journal is for technicians: never fatal
            log.error("event journal unavailable: %s", exc)
            self.journal = None

    # ------------------------------------------------------------------ clocks
    def source_now(self) -> float:
        src = self.source
        if hasattr(src, "now"):
            return float(src.now())
        # live: timers must never run ahead of samples not yet fed (the pipeline would
        # then see the past arrive: a trip's samples after its stop was decided). While
        # records flow, time is that of the latest record fed, as in a replay; when the
        # inputs fall silent (a terminal with contacts only), the clock takes over, held
        # back by the source's reorder time and LIVE_SILENCE_S for records under way.
        t0, clock = getattr(src, "t_start", None), getattr(src, "clock", None)
        if t0 is not None and callable(clock):
            t = float(clock() - t0 - float(getattr(src, "reorder_s", 0.0))) - LIVE_SILENCE_S
        else:
            t = time.monotonic() - self.started_mono - LIVE_SILENCE_S
        t = max(t, self._t_fed)
        self._t_live = max(self._t_live, t)
        return self._t_live

    def agent_wall_ms(self, t: float) -> int:
        """Wall ms on the source's clock (trace header start + t with --trace)."""
        if self._trace_start_ms is not None:
            return self._trace_start_ms + int(round((t - self._t_source0) * 1000))
        return self.timebase.wall_ms()

    # ------------------------------------------------------------------ outputs
    def _queue(self, kind: str, msg: dict[str, Any]) -> None:
        self._unwritten.append((lane_of(kind, msg), topic(self.prefix, self.lift_id, kind),
                                dumps(msg)))

    def emit(self, outs: list[dict[str, Any]]) -> None:
        """Pipeline outputs → messages → the write queue (written by ``_write``)."""
        for rec in outs:
            typ = rec.get("type")
            if self.factory.replay and typ == "event":  # the journal and ledger keep it
                rec = self.factory.mark_replayed(rec)
            if typ == "event":
                self._queue("event", self.factory.event(rec))
                if rec.get("sev") == "alarm" and rec.get("state") == "raised":
                    self._new_alarms.append(rec)
                if self.journal is not None:
                    try:
                        self.journal.add(rec, defer=self.disk.active)
                    except JournalWriteError as exc:  # kept in memory by the journal
                        self.disk.failed("event journal", exc)
                    except Exception as exc:
                        log.warning("event journal: %s", exc)
            elif typ == "trip":
                self._queue("trip", self.factory.trip(rec))
            # door cycles are counted in stats; they are not messages of their own

    async def _write(self, force: bool = False) -> None:
        """Append everything queued in one group commit; keep it for a retry on error.

        New alarms go into the alarm ledger first, then the outbox, then are marked
        sent: a crash in between leaves them in the ledger as never sent, so they go
        out right after the restart (an alarm is never left silent). During a disk
        fault this is tried once a second (``DiskFault.retry_due``) unless ``force``."""
        if self._writing or not (self._unwritten or self._new_alarms or self.disk.active):
            return
        if not (force or self.disk.retry_due()):
            return
        self._writing = True
        batch, self._unwritten = self._unwritten, []
        alarms, self._new_alarms = self._new_alarms, []
        loop = asyncio.get_running_loop()
        try:
            stored, failures, caught_up = await loop.run_in_executor(
                self.executor, self._store, batch, alarms)
        except (OutboxError, OSError) as exc:  # not a write error: closed, bad argument
            self.write_errors += 1
            self._unwritten = batch + self._unwritten
            self._new_alarms = alarms + self._new_alarms
            log.error("outbox: %d message(s) not stored yet (%s); retrying", len(batch), exc)
            return
        finally:
            self._writing = False
        if not stored:
            self._unwritten = batch + self._unwritten
        else:
            for _lane, _topic, payload in batch:
                self._published_unstored.discard(id(payload))
        for part, exc, path in failures:
            self.write_errors += 1
            self.disk.failed(part, exc, path)
        if self.disk.active and not failures:
            self.disk.recovered(caught_up)
        if stored and batch and self.uplink is not None:
            self.uplink.wake()

    def _store(self, batch: list[tuple[str, str, bytes]], alarms: list[dict[str, Any]]
               ) -> tuple[bool, list[tuple[str, Exception, Any]], str]:
        """On the outbox thread: ledger (new alarms), outbox (all), ledger (sent); then
        whatever an earlier disk fault left unwritten (ledger, journal, outbox cursors).

        Returns (batch stored, the writes that failed as (part, error, path), what was
        caught up): write errors are the caller's to report, as one disk fault."""
        failures: list[tuple[str, Exception, Any]] = []
        done: list[str] = []
        ledger_failed = False
        t_event = topic(self.prefix, self.lift_id, "event")
        for rec in alarms:
            try:
                self.ledger.add(str(rec["id"]), t_event, json.dumps(rec).encode(), time.time())
            except AlarmLedgerWriteError as exc:  # kept in memory; saved with a later write
                if not ledger_failed:
                    ledger_failed = True
                    failures.append(("alarm ledger", exc, self.ledger.path))
            except (OSError, ValueError, KeyError) as exc:
                log.error("alarm ledger: alarm %s not kept: %s", rec.get("id"), exc)
        stored = True
        if batch:
            try:
                self.outbox.append_many(batch)
            except OutboxWriteError as exc:
                stored = False
                failures.append(("outbox", exc, self.outbox.directory))
            else:
                if self.disk.active:
                    done.append(f"{len(batch)} message(s) kept in memory stored in the outbox")
        # marked sent also when not stored: the runtime publishes it straight away, and
        # the ledger's repeats must keep their pace
        now = time.time()
        for rec in alarms:
            try:
                self.ledger.mark_sent(str(rec["id"]), now)
            except AlarmLedgerWriteError as exc:
                if not ledger_failed:
                    ledger_failed = True
                    failures.append(("alarm ledger", exc, self.ledger.path))
            except (OSError, ValueError, KeyError) as exc:
                log.error("alarm ledger: %s", exc)
        if self.ledger.unsaved and not ledger_failed:
            try:
                self.ledger.sync()
                done.append("alarm ledger saved")
            except AlarmLedgerWriteError as exc:
                failures.append(("alarm ledger", exc, self.ledger.path))
        journal = self.journal
        if journal is not None and journal.pending:
            try:
                n = journal.sync()
                done.append(f"{n} journal event(s) written")
            except JournalWriteError as exc:
                failures.append(("event journal", exc, exc.filename))
        if self.disk.active and self.outbox.stats().get("cursor_save_failing"):
            self.outbox.flush()
            if self.outbox.stats().get("cursor_save_failing"):
                failures.append(("outbox cursors", OSError(0, "cursor save failed"),
                                 self.outbox.directory / "cursors.json"))
        return stored, failures, "; ".join(done)

    def _keep_unstored(self) -> None:
        """During a disk fault: bound what waits in memory, publish what was not yet
        published (alarms first) when the link is up, and sum up the fault's log."""
        self.disk.summary()
        unwritten = self._unwritten
        if len(unwritten) > MAX_UNSTORED:
            self._drop_unstored(len(unwritten) - MAX_UNSTORED)
        uplink = self.uplink
        if uplink is None or not uplink.connected:
            return
        sent = self._published_unstored
        if len(sent) >= len(self._unwritten):
            return
        for lane in ("alarm", "event", "record"):
            for m_lane, m_topic, payload in self._unwritten:
                if m_lane != lane or id(payload) in sent:
                    continue
                if not uplink.publish_unstored(m_topic, payload):
                    return
                sent.add(id(payload))

    def _drop_unstored(self, n: int) -> None:
        """Drop the ``n`` oldest kept messages, trips/health first, then stats, then
        events; alarms never (they stay beyond the bound). Counted and reported."""
        drop: set[int] = set()
        for queue in DROP_ORDER:  # the outbox's own order and queues
            for i, (lane, t, _p) in enumerate(self._unwritten):
                if len(drop) >= n:
                    break
                if queue_of(lane, t) == queue:
                    drop.add(i)
        if not drop:
            return
        kept: list[tuple[str, str, bytes]] = []
        for i, item in enumerate(self._unwritten):
            if i in drop:
                self._published_unstored.discard(id(item[2]))
            else:
                kept.append(item)
        self._unwritten = kept
        if self.unstored_dropped == 0:
            log.error("disk fault: more than %d messages wait for the disk; the oldest are "
                      "dropped (trips and health first, then stats, then events; alarms "
                      "never), counted in health", MAX_UNSTORED)
        self.unstored_dropped += len(drop)

    async def _repeat_alarms(self) -> None:
        """EN 81-28: every unacknowledged alarm again every ``alarm_repeat_s``, with its
        repeat count, in the alarm lane (ahead of any backlog), also after a restart.
        During a disk fault a repeat is published straight away and not kept."""
        if not self.ledger.pending:  # nothing to repeat: no hop to the outbox thread
            return
        loop = asyncio.get_running_loop()
        due = await loop.run_in_executor(self.executor, self.ledger.due, time.time(),
                                         self.cfg.detection.alarm_repeat_s)
        sent: list[str] = []
        direct = self.disk.active
        for entry in due:
            try:
                rec = json.loads(entry.payload)
                msg = self.factory.event(rec, repeat=max(entry.repeat, 1))
            except (ValueError, KeyError, TypeError) as exc:
                log.error("alarm %s in the ledger unusable (%s): dropped from repeats",
                          entry.eid, exc)
                try:
                    await loop.run_in_executor(self.executor, self.ledger.ack, entry.eid)
                except AlarmLedgerWriteError as werr:  # gone from memory; saved later
                    self.disk.failed("alarm ledger", werr, self.ledger.path)
                continue
            if direct:
                if self.uplink is None or not self.uplink.publish_unstored(
                        topic(self.prefix, self.lift_id, "event"), dumps(msg)):
                    continue  # offline: due again at the next check, once the link is up
            else:
                self._queue("event", msg)
            sent.append(entry.eid)
        if not sent:
            return
        if not direct:
            await self._write()
        now = time.time()
        for eid in sent:
            try:
                await loop.run_in_executor(self.executor, self.ledger.mark_sent, eid, now)
            except AlarmLedgerWriteError as exc:  # the repeat counted in memory
                self.disk.failed("alarm ledger", exc, self.ledger.path)

    # ------------------------------------------------------------------ loops
    async def _acquire(self) -> None:
        assert self.pipeline is not None
        periodic = self._source_is_periodic()
        async for rec in self.source:
            self._t_fed = max(self._t_fed, rec.t)
            if periodic:
                self.heartbeats["acquisition"] = time.monotonic()
            if rec.kind == "pwr" and isinstance(rec.data, dict):
                self._power = {"src": rec.data.get("src"), "batt": rec.data.get("batt")}
            try:
                outs = self.pipeline.feed(rec.t, rec.kind, rec.data)
            except Exception:
                log.exception("pipeline failed on a %s record at t=%.3f; skipped", rec.kind,
                              rec.t)
                continue
            if outs:
                self.emit(outs)
            if len(self._unwritten) > MAX_UNWRITTEN and not self.disk.active:
                self.waited_for_outbox += 1
                await self._write()
        self.heartbeats.pop("acquisition", None)

    def _source_is_periodic(self) -> bool:
        """Only a source with an accelerometer or a polled controller sends records all
        the time; digital inputs alone report changes, and silence is normal there, so
        acquisition counts as stalled only for a periodic source."""
        src = self.source
        if self.trace is not None:
            return bool(src.header.accel) or bool(src.header.controller_present)
        acc = src.accel_header() if hasattr(src, "accel_header") else None
        return bool(acc) or bool(getattr(src, "controller_present", False))

    async def _tick(self) -> None:
        assert self._stop_evt is not None
        wd_every = watchdog_interval_s()
        last_wd = -float("inf")
        tick = TICK_S if self.trace is not None else LIVE_TICK_S
        while not self._stop_evt.is_set():
            self.heartbeats["tick"] = time.monotonic()
            try:
                await self._tick_once()
            except Exception:
                log.exception("tick failed")
            now = time.monotonic()
            # systemd's watchdog is pinged only while no loop has stalled; on the tick
            # that is due (within half a tick: the grid's wake-ups jitter by a little)
            if wd_every and now - last_wd >= wd_every - tick / 2 and not self.stalled():
                self.notifier.watchdog()
                last_wd = now
            await sleep_on_grid(tick)

    async def _tick_once(self) -> None:
        assert self.pipeline is not None and self.uplink is not None
        t = self.source_now()
        outs = self.pipeline.advance(t)
        ctl = getattr(self.source, "controller", None) if self.trace is None else None
        if ctl is not None:
            outs += self.pipeline.controller_blocks(t, ctl.block_faults())
        if outs:
            self.emit(outs)
        self._close_periods(t)
        await self._write()
        now = time.monotonic()
        if now - self._last_repeat_check >= 1.0:
            self._last_repeat_check = now
            await self._repeat_alarms()
        st = self.pipeline.status()
        key = status_change_key(st)
        if key != self._last_status_key or now - self._last_status_sent >= \
                self.cfg.uplink.heartbeat_s:
            self._last_status_key = key
            self._send_status(st)
        await self._maybe_health(now)
        if self.disk.active:
            self._keep_unstored()

    def _send_status(self, st: dict[str, Any]) -> None:
        assert self.uplink is not None
        self._last_status = st
        self._last_status_sent = time.monotonic()
        self.uplink.offer_status(dumps(self.factory.status(st)))

    def _close_periods(self, t: float) -> None:
        assert self.pipeline is not None
        now_ms = self.agent_wall_ms(t)
        for period, size in (("hour", 3_600_000), ("day", 86_400_000)):
            start = self._period_start.setdefault(period, now_ms)
            boundary = (start // size + 1) * size
            if now_ms >= boundary:
                body = self.pipeline.stats.close_period(period, start, boundary)
                self._queue("stats", self.factory.stats(body))
                self._period_start[period] = boundary

    async def health_body(self) -> dict[str, Any]:
        assert self.pipeline is not None and self.uplink is not None
        loop = asyncio.get_running_loop()
        ob = await loop.run_in_executor(self.executor, self.outbox.stats)
        ph = self.pipeline.health()
        sensors = health_mod.sensors_view(ph)
        body = health_mod.machine(self.data_dir, self.started_mono)
        if self.source is not None and hasattr(self.source, "health") and self.trace is None:
            with contextlib.suppress(Exception):
                sensors["drivers"] = health_mod.compact(self.source.health())
        body.update({
            "outbox": health_mod.outbox_view(ob), "link": self.uplink.link_health(),
            "ctl_link": health_mod.ctl_link_view(ph.get("controller"), self._ctl_health()),
            "sensors": sensors,
            "clock": self.timebase.health(), "power": dict(self._power)})
        if ob.get("cursor_save_failing") and "outbox cursors" not in self.disk.what:
            # the outbox saves its cursors on its own (acks): a failure there is the
            # disk's fault too; the retries in _store tell when it is over
            self.disk.failed("outbox cursors", OSError(0, ob.get("last_error") or "failed"),
                             self.outbox.directory / "cursors.json")
        disk = health_mod.disk_view(self.disk.health(), len(self._unwritten),
                                    self.unstored_dropped)
        if disk is not None:
            body["disk"] = disk
        state, faults = health_mod.assess(body, self.stalled(),
                                          self.disk.count if self.disk.active else 0)
        body["state"], body["faults"] = state, faults
        return body

    def _ctl_health(self) -> dict[str, Any] | None:
        ctl = getattr(self.source, "controller", None) if self.trace is None else None
        if ctl is None:
            return None
        try:
            return ctl.health()
        except Exception:  # health must go out whatever a driver does
            log.exception("controller health failed")
            return None

    def stalled(self) -> list[str]:
        now = time.monotonic()
        return [k for k, v in self.heartbeats.items() if now - v > STALL_S]

    async def _maybe_health(self, now: float, force: bool = False) -> None:
        due = now - self._last_health_sent >= self.cfg.uplink.health_s
        if not (due or force) and now - self._last_health_check < HEALTH_CHECK_S:
            return
        self._last_health_check = now
        body = await self.health_body()
        key = (body["state"], tuple(body["faults"]))
        # on change, but a flapping fault sends at most one health per HEALTH_CHANGE_MIN_S
        changed = key != self._health_state and \
            now - self._last_health_sent >= HEALTH_CHANGE_MIN_S
        if due or force or changed:
            self._health_state = key
            self._last_health_sent = now
            self._queue("health", self.factory.health(body))
            await self._write()

    async def _serve_commands(self) -> None:
        assert self.uplink is not None
        while True:
            payload = await self._cmd_queue.get()
            cmd_id, ok, res = await self.commands.handle(payload)
            reply = self.factory.cmd_reply(cmd_id, ok, res if ok else None,
                                           None if ok else str(res))
            if not self.uplink.publish_reply(dumps(reply)):
                log.warning("reply to command %s not sent (offline)", cmd_id)

    def _on_command(self, payload: bytes) -> None:
        try:
            self._cmd_queue.put_nowait(payload)
        except asyncio.QueueFull:
            assert self.uplink is not None
            self.uplink.stats.commands_dropped += 1
            log.warning("command queue full: a command was dropped")

    # ------------------------------------------------------------------ command host
    async def ack_alarm(self, eid: str) -> bool:
        loop = asyncio.get_running_loop()
        try:
            return bool(await loop.run_in_executor(self.executor, self.ledger.ack, eid))
        except OSError as exc:  # not saved: acknowledged in memory, saved with the next change
            self.disk.failed("alarm ledger", exc, self.ledger.path)
            return True

    async def snapshot(self) -> dict[str, Any]:
        assert self.pipeline is not None
        self._send_status(self.pipeline.status())
        await self._maybe_health(time.monotonic(), force=True)
        return {"status": self._last_status, "health": "queued"}

    async def self_test(self) -> dict[str, Any]:
        assert self.pipeline is not None
        outs = self.pipeline.self_test(self.source_now())
        self.emit(outs)
        await self._write()
        return {"events": [r.get("id") for r in outs if r.get("type") == "event"]}

    def config_get(self) -> dict[str, Any]:
        return self.cfg.redacted()

    async def config_set(self, patch: dict[str, Any]) -> dict[str, Any]:
        allowed = remote_keys()
        keys = _flatten(patch)
        refused = [k for k in keys if k not in allowed]
        if refused:
            raise CommandError(f"not changeable remotely: {', '.join(sorted(refused)[:10])}")
        path = self.cfg.path
        try:
            old_bytes = path.read_bytes()
            import tomllib
            current = tomllib.loads(old_bytes.decode("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise CommandError(f"the running config file cannot be read: {exc}") from None
        new = _deep_merge(current, patch)
        issues = validate_dict(new, path)
        if issues:
            raise CommandError("; ".join(f"{i.key}: expected {i.expected}, found {i.found}"
                                         for i in issues[:5]))
        prev = path.with_name(path.name + ".prev")
        marker = self.data_dir / PENDING_MARKER
        try:
            atomic_write_bytes(prev, old_bytes)
            atomic_write_bytes(marker, json.dumps({"config": str(path), "prev": str(prev)})
                               .encode())
            atomic_write_bytes(path, dump_toml(new).encode("utf-8"))
        except OSError as exc:  # each write is atomic: the running file is as it was
            marker.unlink(missing_ok=True)
            self.disk.failed("config file", exc, exc.filename or path)
            raise CommandError(f"the config file cannot be written ({errno_name(exc)}); "
                               "nothing changed") from None
        try:
            new_cfg = load_config(path)
            self._apply(new_cfg)
            healthy, why = await self._confirm_healthy(self.confirm_s)
        except (ConfigError, OSError) as exc:
            healthy, why = False, str(exc).splitlines()[0]
        if not healthy:
            try:
                atomic_write_bytes(path, old_bytes)
            except OSError as exc:  # the marker stays: the next start restores FILE.prev
                self.disk.failed("config file", exc, path)
                raise CommandError(f"not healthy ({why}), and the previous file cannot be "
                                   f"written back ({errno_name(exc)}): it is restored at "
                                   "the next start") from None
            with contextlib.suppress(ConfigError):
                self._apply(load_config(path))
            marker.unlink(missing_ok=True)
            log.error("config_set rolled back: %s", why)
            raise CommandError(f"rolled back to the previous config: {why}")
        marker.unlink(missing_ok=True)
        log.info("config_set applied: %s", ", ".join(keys))
        return {"applied": sorted(keys)}

    def _apply(self, new_cfg: TerminalConfig) -> None:
        """Take a reloaded config into use (remote keys only can differ)."""
        old = self.cfg
        self.cfg = new_cfg
        if self.uplink is not None:
            self.uplink.settings = new_cfg.uplink
        if new_cfg.detection != old.detection or new_cfg.lift != old.lift:
            assert self.pipeline is not None
            baselines = self.pipeline.baselines_state()
            t = self.source_now()
            self.emit(self.pipeline.finish(t))
            self.pipeline = self._make_pipeline(new_cfg, baselines)

    def _on_sighup(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        self._reload_task = task  # keep a reference until it is done

    async def reload(self) -> bool:
        """SIGHUP: read the config file again; a file that does not validate is refused
        and the running config kept. Timers, thresholds and intervals apply at once;
        anything else (broker, TLS, wiring, storage) at the next start, said in the log."""
        try:
            new = load_config(self.cfg.path)
        except ConfigError as exc:
            log.error("SIGHUP: %s is not valid, keeping the running config: %s",
                      self.cfg.path, "; ".join(str(i) for i in exc.issues[:5]))
            return False
        later = [sec for sec in ("terminal", "inputs", "accel", "controller", "storage")
                 if new.raw.get(sec) != self.cfg.raw.get(sec)]
        live_uplink = {k.split(".", 1)[1] for k in remote_keys() if k.startswith("uplink.")}
        later += [f"uplink.{k}" for k, v in new.raw.get("uplink", {}).items()
                  if k not in live_uplink and v != self.cfg.raw.get("uplink", {}).get(k)]
        if later:
            log.warning("SIGHUP: changes to %s take effect at the next start",
                        ", ".join(later))
        self._apply(new)
        log.info("SIGHUP: config %s reloaded", self.cfg.path)
        return True

    async def _confirm_healthy(self, within: float) -> tuple[bool, str]:
        deadline = time.monotonic() + within
        why = "no broker session"
        while True:
            stalled = self.stalled()
            connected = self.uplink is not None and self.uplink.connected
            if connected and not stalled:
                return True, ""
            why = f"loops stalled: {', '.join(stalled)}" if stalled else "no broker session"
            if time.monotonic() >= deadline:
                return False, why
            await asyncio.sleep(0.2)

    async def _check_pending_config(self) -> None:
        """A config_set the previous run did not confirm: confirm it now or roll back."""
        marker = self.data_dir / PENDING_MARKER
        if not marker.exists():
            return
        healthy, why = await self._confirm_healthy(self.confirm_s)
        if healthy:
            marker.unlink(missing_ok=True)
            log.info("the remote config change of the previous run is confirmed healthy")
            return
        prev = self.cfg.path.with_name(self.cfg.path.name + ".prev")
        if prev.exists():
            try:
                atomic_write_bytes(self.cfg.path, prev.read_bytes())
            except OSError as exc:  # restarting would not help: stay, and try next start
                self.disk.failed("config file", exc, self.cfg.path)
                log.error("remote config change not healthy (%s), and the previous config "
                          "cannot be written back (%s): running on, restored at the next "
                          "start", why, errno_name(exc))
                return
        marker.unlink(missing_ok=True)
        log.error("remote config change not healthy (%s): previous config restored; "
                  "exiting to restart on it", why)
        self.exit_code = EXIT_ROLLED_BACK
        assert self._stop_evt is not None
        self._stop_evt.set()

    # ------------------------------------------------------------------ run
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop_evt = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop_evt.set)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        try:
            self.source = self._make_source()
            if self.trace is not None:
                # what start-up built (modules, config, tables) lives as long as the
                # process: out of the collector's sight, every full collection has that
                # much less to walk. A live source does the same in its start(), just
                # before its reader threads, where a collection would hold the GIL
                # longer than the accelerometer's FIFO lasts.
                gc.collect()
                gc.freeze()
                self._trace_start_ms = _trace_start_ms(self.source.header.start)
                # a re-run never looks live: every message marked, on the trace's clock
                self.factory.replay_from(self._trace_start_ms, self.source_now)
            elif hasattr(self.source, "start"):
                # the drivers must be open before the pipeline is built: the accelerometer's
                # real rate and scale (the trace header's ``accel``) come from the chip
                await self.source.start()
            self.pipeline = self._make_pipeline(self.cfg, self._load_baselines())
            self._open_journal()
            self.uplink = self._make_uplink()
        except BaseException:
            self.pipeline = None  # nothing learned yet: keep the saved baselines
            self._close()
            raise
        await self.uplink.start()
        # the first stats periods start now (a partial hour and day)
        start_ms = self._trace_start_ms if self._trace_start_ms is not None \
            else self.timebase.wall_ms()
        self._period_start = {"hour": start_ms, "day": start_ms}
        self.heartbeats["tick"] = time.monotonic()
        if self._source_is_periodic():
            self.heartbeats["acquisition"] = time.monotonic()
        acq = asyncio.create_task(self._acquire(), name="acquisition")
        tick = asyncio.create_task(self._tick(), name="tick")
        cmds = asyncio.create_task(self._serve_commands(), name="commands")
        pending_cfg = asyncio.create_task(self._check_pending_config(), name="config-check")
        stop_wait = asyncio.create_task(self._stop_evt.wait())
        log.info("agent running: lift %s, boot %d, %s", self.lift_id, self.boot,
                 f"trace {self.trace} at x{self.speed:g}" if self.trace else "live inputs")
        self.notifier.ready(f"lift {self.lift_id} running")
        gc.freeze()  # and the pipeline and uplink, without another collection
        await asyncio.wait({acq, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        t_stop = time.monotonic()
        by_signal = self._stop_evt.is_set()
        self.notifier.stopping()
        if by_signal:
            self.source.stop()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(acq, 1.0)
        if acq.done() and not acq.cancelled() and acq.exception() is not None:
            log.error("acquisition failed: %s", acq.exception())
        if hasattr(self.source, "close"):
            with contextlib.suppress(Exception):
                res = self.source.close()
                if asyncio.iscoroutine(res):
                    await asyncio.wait_for(res, 1.0)
        # the end of input: what is due now, and a trip or door cycle left open
        self.emit(self.pipeline.finish(self.source_now()))
        self._stop_evt.set()
        for task in (tick, cmds, pending_cfg, stop_wait):
            task.cancel()
        await asyncio.gather(tick, cmds, pending_cfg, stop_wait, return_exceptions=True)
        await self._write(force=True)
        if self.disk.active:
            self._keep_unstored()  # sent at least once
            if self._unwritten:
                log.error("disk fault: %d message(s) could not be stored and are lost at exit "
                          "(each was published once if the link was up)", len(self._unwritten))
        # SIGTERM: everything within 5 s; uplink.stop needs 1.8 s after its flush
        budget = STOP_BUDGET_S - 2.0 if by_signal else self.drain_s
        remaining = max(0.1, budget - (time.monotonic() - t_stop))
        flushed = await self.uplink.stop(flush_timeout=remaining)
        if not flushed:
            log.warning("outbox not drained at exit: the rest goes out after the next start")
        self._close()
        return self.exit_code

    def _close(self) -> None:
        if self.pipeline is not None:
            try:
                self.baselines.save(self.pipeline.baselines_state())
            except OSError as exc:
                self.disk.failed("learned baselines", exc, self.baselines.path)
            except (TypeError, ValueError) as exc:
                log.warning("learned baselines not saved: %s", exc)
        with contextlib.suppress(Exception):
            self.baselines.close()
        self.executor.shutdown(wait=True)
        self.outbox.close()
        self.notifier.close()
        if self.ledger.unsaved:
            try:
                self.ledger.sync()
            except OSError as exc:
                log.error("alarm ledger not saved at exit (%s): the %d alarm(s) waiting for "
                          "their ack are repeated after the restart as last saved",
                          errno_name(exc), self.ledger.pending)
        with contextlib.suppress(Exception):
            self.ledger.close()
        if self.journal is not None:
            with contextlib.suppress(Exception):
                self.journal.close()


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"liftwatch run: {issue}", file=sys.stderr)
        return 2
    for w in cfg.warnings:
        log.warning("%s", w)
    if args.trace is not None and not args.trace.exists():
        print(f"liftwatch run: trace {args.trace} not found", file=sys.stderr)
        return 2
    if args.speed < 0:
        print("liftwatch run: --speed must be >= 0", file=sys.stderr)
        return 2
    try:
        agent = Agent(cfg, trace=args.trace, speed=args.speed, drain_s=args.drain_s,
                      data_dir=args.data_dir, confirm_s=args.confirm_s)
    except (OutboxError, OSError, UplinkError) as exc:
        print(f"liftwatch run: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(agent.run())
    except (UplinkError, TraceError, ConfigError) as exc:
        print(f"liftwatch run: {exc}", file=sys.stderr)
        return 2
