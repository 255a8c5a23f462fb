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
``config_set`` never writes the technician's file (read-only under the shipped unit):
it is merged into the remote override ``<data_dir>/remote.toml`` that ``load_config``
merges over the file. The whole resulting config is checked by the validator of
``config check`` (safe ranges, the pipeline built once) before anything is written;
then the previous override is kept and a ``config_set.pending`` marker written
(:mod:`liftwatch.agent.override`), the change applied, and within ``confirm_s``
(default 20 s) the uplink must have a broker session with no loop stalled. A change
that fails at apply or is not healthy in time is rolled back at once; one still
pending at the next start (the agent died meanwhile) is rolled back by ``run`` before
the config is even loaded, and an override a start died with is set aside at the
next start: no value can hold the agent in a crash loop. The remotely allowed keys
(``remote`` in the settings) are timers, thresholds and reporting intervals:
detection parameters are applied by rebuilding the pipeline with its learned
baselines (its open events are forgotten, as after a reboot: a condition still
present is raised again under a new id); uplink intervals take effect at once.
SIGHUP reloads the file and the override the same way; a file that does not validate
is refused and the running config kept. Every change of what detection and
reporting run with (config_set, its rollback, SIGHUP, a start with other settings
than the last run's) is reported as a ``detection_changed`` event and in
``health.config``.

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
import errno
import gc
import json
import logging
import os
import secrets
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from liftwatch.agent import health as health_mod
from liftwatch.agent.commands import CommandError, CommandHandler, CommandInbox, Downlink
from liftwatch.agent.config import (
    ConfigError,
    TerminalConfig,
    deep_merge,
    dump_override,
    flatten,
    load_config,
    load_credentials,
    load_with_override,
    nest,
    remote_keys,
    setting_changes,
    tracked_settings,
    weakened_settings,
)
from liftwatch.agent.diskfault import DiskFault, errno_name
from liftwatch.agent.messages import MessageFactory, dumps, lane_of, next_boot, topic
from liftwatch.agent.override import OverrideFiles, Recovery
from liftwatch.agent.sdnotify import Notifier, watchdog_interval_s
from liftwatch.agent.timebase import Timebase, sleep_on_grid
from liftwatch.agent.tls import UplinkError
from liftwatch.agent.uplink import Uplink
from liftwatch.buffer.alarms import AlarmLedger, AlarmLedgerWriteError
from liftwatch.buffer.atomic import atomic_write_bytes
from liftwatch.buffer.baselines import BaselineStore
from liftwatch.buffer.cmdids import CommandIdStore
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
from liftwatch.signal.settings import change_record

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
#: the settings last reported to the platform (detection_changed), in the data directory
REPORTED_SETTINGS = "reported_settings.json"
#: problems named in a refused config_set's reply (every key of one patch, in practice)
MAX_ISSUES = 12
#: a config_set that changes detection restarts its timers (the pipeline is rebuilt): at
#: most one such change this often, so that changes cannot keep an entrapment or
#: alarm-press timer from running out; as long as the longest alarm timer's maximum
DETECTION_CHANGE_MIN_S = 300.0
#: write errors that are the disk's fault (reported as a disk fault), not a refusal
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EIO, errno.EROFS, errno.EDQUOT})
#: set to 1 to let ``run`` start as root without ``--allow-root`` (test rigs, CI)
ALLOW_ROOT_ENV = "LIFTWATCH_ALLOW_ROOT"
ROOT_REFUSED = (
    "liftwatch run: refusing to run as root. The agent writes files in its data "
    "directory and takes commands from the network; as root, one planted link or one "
    "bug could overwrite any file of the system. Run it as the service account (the "
    "shipped unit uses User=liftwatch), or pass --allow-root (or set "
    f"{ALLOW_ROOT_ENV}=1) on a test rig or for the simulated demo.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, type=Path, help="terminal config (TOML)")
    p.add_argument("--trace", type=Path,
                   help="take the inputs from this trace (trace-format.md) instead of hardware")
    p.add_argument("--speed", type=float, default=1.0,
                   help="play the trace N times faster than real time (0: as fast as possible)")
    p.add_argument("--drain-s", type=float, default=30.0,
                   help="with --trace: how long to drain the outbox after the trace ends")
    p.add_argument("--other-lift", action="store_true",
                   help="with --trace: re-run a trace recorded on another lift (its id or "
                   "landings differ from the config's) under this config's lift id")
    p.add_argument("--data-dir", type=Path,
                   help="override storage.data_dir (outbox, journal, boot counter)")
    p.add_argument("--confirm-s", type=float, default=20.0,
                   help="how long a remote config change has to come up healthy")
    p.add_argument("--allow-root", action="store_true",
                   help=f"run even as root (or set {ALLOW_ROOT_ENV}=1): only for a test rig "
                   "or the simulated demo, never a terminal")


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
        # the outbox first: its lock keeps a second agent out, which must be refused
        # before it uses up a boot number
        self.outbox = Outbox(self.data_dir / "outbox",
                             int(cfg.storage.outbox_max_mb * 1024 * 1024))
        self.boot = self._boot_number()
        self.factory = MessageFactory(self.lift_id, self.boot, self.timebase, cfg.platform)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="lw-outbox",
                                           initializer=name_native_thread)
        self.journal: Any = None
        self.source: Any = None
        self._given_source: Any = source
        self.pipeline: Pipeline | None = None
        self.uplink: Uplink | None = None
        self.commands = CommandHandler(self, CommandIdStore(self.data_dir))
        # acks in a lane of their own: never pushed out while their alarm waits
        self.inbox = CommandInbox(lambda eid: self.ledger.get(eid) is not None)
        self._unwritten: list[tuple[str, str, bytes]] = []
        self._new_alarms: list[dict[str, Any]] = []
        self._alarms_storing: list[dict[str, Any]] = []  # on their way into the ledger
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
        self.report: Any = None  # a trace run's RunReport: its progress and summary
        if trace is not None:
            from liftwatch.agent.trace_source import RunReport
            self.report = RunReport()
        self.overrides = OverrideFiles(self.data_dir)
        self._reported = self._load_reported()
        self._change_seq = 0
        self._last_remote_rebuild = -float("inf")
        #: what the start-up rollback did (``run``), reported once the pipeline runs
        self.recovered: list[Recovery] = []

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
            return TraceSource(self.trace, speed=self.speed,
                               progress=self.report.progress if self.report else None)
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
        if self.report is not None:
            self.report.queued(kind, msg)
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
        fault this is tried once a second (``DiskFault.retry_due``) unless ``force`` or
        a new alarm waits: the ledger's memory must hold an alarm before it is
        published (straight away, by ``_keep_unstored``), or the platform's immediate
        ack of it would be refused and the alarm repeated for ever."""
        if self._writing or not (self._unwritten or self._new_alarms or self.disk.active):
            return
        if not (force or self._new_alarms or self.disk.retry_due()):
            return
        self._writing = True
        batch, self._unwritten = self._unwritten, []
        alarms, self._new_alarms = self._new_alarms, []
        self._alarms_storing = alarms
        loop = asyncio.get_running_loop()
        store = loop.run_in_executor(self.executor, self._store, batch, alarms)
        cancelled = False
        try:
            # The batch left memory when the store began: a cancel (the run ending while
            # the outbox thread stores) must not drop it, nor let the final write and the
            # drain run before it is in the outbox. So the store is seen through.
            while not store.done():
                try:
                    await asyncio.shield(store)
                except asyncio.CancelledError:
                    cancelled = True
            stored, failures, caught_up = store.result()
        except (OutboxError, OSError) as exc:  # not a write error: closed, bad argument
            self.write_errors += 1
            self._unwritten = batch + self._unwritten
            self._new_alarms = alarms + self._new_alarms
            log.error("outbox: %d message(s) not stored yet (%s); retrying", len(batch), exc)
            if cancelled:
                raise asyncio.CancelledError from None
            return
        finally:
            self._writing = False
            self._alarms_storing = []
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
        if cancelled:
            raise asyncio.CancelledError

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
        # an alarm goes out only once the ledger's memory holds it (see _write): its ack
        # may come back at once
        lanes = ("event", "record") if self._new_alarms or self._alarms_storing \
            else ("alarm", "event", "record")
        for lane in lanes:
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
            "config": self.config_health(),
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
            item = await self.inbox.get()
            cmd_id, ok, res = await self.commands.handle(item, size=item.size,
                                                         retained=item.retained)
            reply = self.factory.cmd_reply(cmd_id, ok, res if ok else None,
                                           None if ok else str(res))
            if not self.uplink.publish_reply(dumps(reply)):
                log.warning("reply to command %r not sent (offline)", cmd_id)

    def _on_command(self, msg: Downlink) -> None:
        if not self.inbox.offer(msg, msg.size, msg.retained):
            assert self.uplink is not None
            self.uplink.stats.commands_dropped += 1  # logged once a minute by the inbox

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

    async def config_set(self, patch: dict[str, Any], cmd_id: str | None = None
                         ) -> dict[str, Any]:
        """Validate, write the override, apply, confirm healthy or roll back (module doc).

        The technician's file is never written: the patch is merged into the remote
        override (``<data_dir>/remote.toml``), and the whole config the agent would run
        with is checked by the same validator as ``config check`` (ranges, cross-checks,
        the pipeline built once) before anything is written."""
        allowed = remote_keys()
        keys = list(flatten(patch))
        refused = [k for k in keys if k not in allowed]
        if refused:
            raise CommandError(f"not changeable remotely: {', '.join(sorted(refused)[:10])}")
        current = nest({k: new for k, (_old, new) in self.cfg.override.items()})
        wanted = deep_merge(current, patch)
        try:
            candidate = load_with_override(self.cfg.path, wanted, data_dir=self.data_dir)
        except ConfigError as exc:
            issues = exc.issues[:MAX_ISSUES]
            more = len(exc.issues) - len(issues)
            raise CommandError("refused, nothing changed: " + "; ".join(
                f"{i.key}: expected {i.expected}, found {i.found}" for i in issues)
                + (f"; and {more} more" if more > 0 else "")) from None
        rebuilds = candidate.detection != self.cfg.detection or candidate.lift != self.cfg.lift
        wait = self._last_remote_rebuild + DETECTION_CHANGE_MIN_S - time.monotonic()
        if rebuilds and wait > 0:
            raise CommandError(
                f"refused, nothing changed: the detection settings were changed less than "
                f"{DETECTION_CHANGE_MIN_S:.0f} s ago (each change restarts the detection "
                f"timers, so at most one change per {DETECTION_CHANGE_MIN_S:.0f} s); "
                f"send it again in {wait:.0f} s")
        files = self.overrides
        try:
            files.begin(dump_override(wanted), cmd_id)
        except OSError as exc:  # each write is atomic: the running override is as it was
            if exc.errno in DISK_ERRNOS:
                self.disk.failed("remote config file", exc, exc.filename or files.path)
            raise CommandError(f"the remote config file {files.path} cannot be written "
                               f"({errno_name(exc)}); nothing changed") from None
        old_cfg = self.cfg
        try:
            new_cfg = load_config(self.cfg.path, data_dir=self.data_dir)
            if new_cfg.override_issues:  # changed on disk meanwhile, or not what was written
                raise ConfigError(new_cfg.override_issues)
            if rebuilds:
                self._last_remote_rebuild = time.monotonic()
            self._apply(new_cfg, "config_set", cmd_id)
            healthy, why = await self._confirm_healthy(self.confirm_s)
        except Exception as exc:  # whatever fails at apply is rolled back, never kept
            log.exception("config_set %s failed at apply", cmd_id)
            first = (str(exc).splitlines() or [""])[0]
            healthy, why = False, f"{type(exc).__name__}: {first[:200]}"
        if not healthy:
            try:
                files.restore()
            except OSError as exc:  # the marker stays: the next start restores it
                self.disk.failed("remote config file", exc, files.path)
                self._apply_quietly(old_cfg, "rollback", cmd_id)
                raise CommandError(f"not healthy ({why}), and the previous remote config "
                                   f"cannot be written back ({errno_name(exc)}): it is "
                                   "restored at the next start") from None
            self._apply_quietly(old_cfg, "rollback", cmd_id)
            log.error("config_set %s rolled back: %s", cmd_id, why)
            raise CommandError(f"rolled back to the previous config: {why}")
        files.confirm()
        log.info("config_set %s applied: %s", cmd_id, ", ".join(keys))
        return {"applied": sorted(keys), "override": str(files.path)}

    def _apply_quietly(self, cfg: TerminalConfig, source: str, cmd_id: str | None) -> None:
        """Roll back to a config that ran before; a failure here is logged, not raised
        (the caller is already answering a failure)."""
        try:
            self._apply(cfg, source, cmd_id)
        except Exception:
            log.exception("rollback to the previous config failed")

    def _apply(self, new_cfg: TerminalConfig, source: str = "sighup",
               cmd_id: str | None = None) -> None:
        """Take a reloaded config into use (remote keys only can differ) and report what
        changed in detection and reporting (``detection_changed``). The new pipeline is
        built before anything is swapped: a failure leaves the running one in place."""
        old = self.cfg
        pipeline = None
        if self.pipeline is not None and (new_cfg.detection != old.detection
                                          or new_cfg.lift != old.lift):
            pipeline = self._make_pipeline(new_cfg, self.pipeline.baselines_state())
        self.cfg = new_cfg
        if self.uplink is not None:
            self.uplink.settings = new_cfg.uplink
        if pipeline is not None:
            assert self.pipeline is not None
            t = self.source_now()
            old_pipeline, self.pipeline = self.pipeline, pipeline
            self.emit(old_pipeline.finish(t))
            self.emit(self._seed(pipeline, old_pipeline, t))
        self._report_settings(source, cmd_id)

    @staticmethod
    def _seed(new: Pipeline, old: Pipeline, t: float) -> list[dict[str, Any]]:
        """Give a rebuilt pipeline the input levels the old one last saw, as a start
        reads every input: digital inputs are recorded only when they change, so without
        this a car already stopped with a passenger inside would look empty to it."""
        st, outs = old.state, []
        if st.di:
            outs += new.feed(t, "di", dict(st.di))
        if st.ctl is not None:
            outs += new.feed(t, "ctl", dict(st.ctl))
        if st.pwr is not None:
            outs += new.feed(t, "pwr", dict(st.pwr))
        return outs

    def _report_settings(self, source: str, cmd_id: str | None = None,
                         notes: list[str] | None = None) -> None:
        """Compare the settings in use with those last reported (kept across restarts in
        the data directory); a difference is a ``detection_changed`` event and the
        ``config.last_change`` of health."""
        now = tracked_settings(self.cfg)
        before = self._reported.get("settings")
        changes = setting_changes(before, now) if isinstance(before, dict) else []
        if changes or notes:
            weakens = any(c["weakens"] for c in changes)
            detail: dict[str, Any] = {"source": source, "cmd": cmd_id, "changes": changes,
                                      "weakens": weakens}
            if notes:
                detail["notes"] = notes
            self._change_seq += 1
            if self.pipeline is not None:
                self.emit([change_record(self.source_now(), f"{self.boot}-cfg{self._change_seq}",
                                         detail)])
            self._reported["last_change"] = {
                "ts": self.timebase.wall_ms(), "source": source, "cmd": cmd_id,
                "keys": [c["key"] for c in changes], "weakens": weakens}
            (log.warning if weakens else log.info)(
                "detection_changed (%s%s): %s", source, f" {cmd_id}" if cmd_id else "",
                ", ".join(f"{c['key']} {c['old']} -> {c['new']}" for c in changes) or
                "; ".join(notes or []))
        if changes or notes or not isinstance(before, dict):
            self._reported["settings"] = now
            try:
                atomic_write_bytes(self.data_dir / REPORTED_SETTINGS,
                                   json.dumps(self._reported, default=str).encode())
            except OSError as exc:  # reported now; at worst reported again next start
                log.warning("%s not saved: %s", REPORTED_SETTINGS, errno_name(exc))

    def _load_reported(self) -> dict[str, Any]:
        try:
            data = json.loads((self.data_dir / REPORTED_SETTINGS).read_bytes())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _report_start(self) -> None:
        """At start: settings other than the last run's (the file edited meanwhile, a
        rollback or an override set aside) are a ``detection_changed`` of source
        ``start``, with what the rollback did in ``notes``."""
        notes = [f"remote config {r.action.replace('_', ' ')}"
                 + (f" (config_set {r.cmd})" if r.cmd else "") + f": {r.why}"
                 for r in self.recovered]
        notes += self._set_aside_bad_override(self.cfg)
        cmd = next((r.cmd for r in self.recovered if r.cmd), None)
        self._report_settings("start", cmd, notes)

    def config_health(self) -> dict[str, Any]:
        """``health.config``: the remote changes in force, the settings weaker than their
        defaults, and the last change reported."""
        out: dict[str, Any] = {
            "remote": {k: new for k, (_old, new) in sorted(self.cfg.override.items())},
            "weakened": weakened_settings(self.cfg)}
        last = self._reported.get("last_change")
        if isinstance(last, dict):
            out["last_change"] = last
        return out

    def _on_sighup(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        self._reload_task = task  # keep a reference until it is done

    async def reload(self) -> bool:
        """SIGHUP: read the config file and the remote override again; a file that does
        not validate is refused and the running config kept; an override that does not
        is set aside (reported) and the file applies alone. Timers, thresholds and
        intervals apply at once; anything else (broker, TLS, wiring, storage) at the next
        start, said in the log."""
        try:
            new = load_config(self.cfg.path, data_dir=self.data_dir)
        except ConfigError as exc:
            log.error("SIGHUP: %s is not valid, keeping the running config: %s",
                      self.cfg.path, "; ".join(str(i) for i in exc.issues[:5]))
            return False
        notes = self._set_aside_bad_override(new)
        later = [sec for sec in ("terminal", "inputs", "accel", "controller", "storage")
                 if new.raw.get(sec) != self.cfg.raw.get(sec)]
        live_uplink = {k.split(".", 1)[1] for k in remote_keys() if k.startswith("uplink.")}
        later += [f"uplink.{k}" for k, v in new.raw.get("uplink", {}).items()
                  if k not in live_uplink and v != self.cfg.raw.get("uplink", {}).get(k)]
        if later:
            log.warning("SIGHUP: changes to %s take effect at the next start",
                        ", ".join(later))
        try:
            self._apply(new, "sighup")
        except Exception:
            log.exception("SIGHUP: the new config cannot be applied; keeping the running one")
            return False
        if notes:
            self._report_settings("sighup", notes=notes)
        log.info("SIGHUP: config %s reloaded", self.cfg.path)
        return True

    def _set_aside_bad_override(self, cfg: TerminalConfig) -> list[str]:
        """An override the loader refused: moved aside (never blocks a start), logged;
        the notes for the ``detection_changed`` event."""
        if not cfg.override_issues:
            return []
        why = "; ".join(str(i) for i in cfg.override_issues[:3])
        log.error("remote config %s refused and set aside as %s: %s", self.overrides.path,
                  self.overrides.rejected.name, why)
        try:
            self.overrides.set_aside()
        except OSError as exc:
            log.error("remote config %s not set aside: %s", self.overrides.path, exc)
        return [f"remote config set aside: {why}"[:500]]

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
            self._report_start()
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
        stop_wait = asyncio.create_task(self._stop_evt.wait())
        log.info("agent running: lift %s, boot %d, %s", self.lift_id, self.boot,
                 f"trace {self.trace} at x{self.speed:g}" if self.trace else "live inputs")
        self.notifier.ready(f"lift {self.lift_id} running")
        self.overrides.started()
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
        for task in (tick, cmds, stop_wait):
            task.cancel()
        await asyncio.gather(tick, cmds, stop_wait, return_exceptions=True)
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
        if self.report is not None:
            u = self.cfg.uplink
            print(self.report.summary(f"{u.broker}:{u.port} as lift {self.lift_id}",
                                      self.uplink.stats, self.source.records,
                                      self.source.bad_lines, flushed), flush=True)
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
        if self.commands.ids is not None:
            self.commands.ids.close()
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


def _load_at_start(path: Path, data_dir: Path | None) -> tuple[TerminalConfig, list[Recovery]]:
    """The config to start with, the remote override's rollback honoured first.

    The technician's file alone is loaded (and must be valid), which names the data
    directory; there the rollback markers are acted on (:mod:`liftwatch.agent.override`)
    before the override is read, so nothing the override holds can crash this start
    before its rollback has run. ConfigError for an invalid technician's file."""
    base = load_config(path, with_override=False)
    recovered = OverrideFiles(data_dir or base.storage.data_dir).recover_at_start()
    return load_config(path, data_dir=data_dir), recovered


def run(args: argparse.Namespace) -> int:
    if os.geteuid() == 0 and not (getattr(args, "allow_root", False)
                                  or os.environ.get(ALLOW_ROOT_ENV) == "1"):
        print(ROOT_REFUSED, file=sys.stderr)
        return 2
    try:
        cfg, recovered = _load_at_start(args.config, args.data_dir)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"liftwatch run: {issue}", file=sys.stderr)
        return 2
    status = _run_agent(args, cfg, recovered)
    if status == 2:  # refused for a reason it gave (arguments, files, broker), not a crash:
        # the remote override is not to blame at the next start
        OverrideFiles(args.data_dir or cfg.storage.data_dir).started()
    return status


def _run_agent(args: argparse.Namespace, cfg: TerminalConfig, recovered: list[Recovery]
               ) -> int:
    for w in cfg.warnings:
        log.warning("%s", w)
    if args.trace is not None and not args.trace.exists():
        print(f"liftwatch run: trace {args.trace} not found", file=sys.stderr)
        return 2
    if args.trace is not None:
        from liftwatch.agent.trace_source import lift_mismatch
        from liftwatch.drivers.trace import TraceReader
        try:
            reader = TraceReader(args.trace)
            header = reader.header
            reader.close()
        except (TraceError, OSError) as exc:
            print(f"liftwatch run: trace {args.trace}: {exc}", file=sys.stderr)
            return 2
        other = lift_mismatch(header, cfg)
        if other and not args.other_lift:
            print(f"liftwatch run: trace {args.trace} was recorded on another lift: "
                  f"{'; '.join(other)}. Its events would be published as lift "
                  f"{cfg.terminal.lift_id}'s, with its floors. Give --other-lift to re-run "
                  "it anyway, or use the config of the lift it was recorded on.",
                  file=sys.stderr)
            return 2
        if other:
            log.warning("re-running a trace of another lift (--other-lift): %s",
                        "; ".join(other))
    if args.speed < 0:
        print("liftwatch run: --speed must be >= 0", file=sys.stderr)
        return 2
    try:
        agent = Agent(cfg, trace=args.trace, speed=args.speed, drain_s=args.drain_s,
                      data_dir=args.data_dir, confirm_s=args.confirm_s)
    except (OutboxError, OSError, UplinkError) as exc:
        print(f"liftwatch run: {exc}", file=sys.stderr)
        return 2
    agent.recovered = recovered
    try:
        return asyncio.run(agent.run())
    except (UplinkError, TraceError, ConfigError) as exc:
        print(f"liftwatch run: {exc}", file=sys.stderr)
        return 2
