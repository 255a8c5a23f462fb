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

Writing before sending, the alarm ledger and a failing disk (one reported fault; what
cannot be written waits in memory, bounded, alarms never dropped) are
:mod:`liftwatch.agent.storing`.

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

Commands: see :mod:`liftwatch.agent.commands`; this module is their host.
``config_set``, SIGHUP reloads, their rollback and the ``detection_changed`` report
are :mod:`liftwatch.agent.remote_config`.

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
import gc
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
from liftwatch.agent.commands import CommandHandler, CommandInbox, Downlink
from liftwatch.agent.config import (
    ConfigError,
    TerminalConfig,
    load_config,
    load_credentials,
)
from liftwatch.agent.diskfault import DiskFault, errno_name
from liftwatch.agent.messages import MessageFactory, dumps, next_boot
from liftwatch.agent.override import OverrideFiles, Recovery
from liftwatch.agent.remote_config import RemoteConfig
from liftwatch.agent.sdnotify import Notifier, watchdog_interval_s
from liftwatch.agent.storing import Storing
from liftwatch.agent.timebase import Timebase, sleep_on_grid
from liftwatch.agent.tls import UplinkError
from liftwatch.agent.uplink import Uplink
from liftwatch.buffer.alarms import AlarmLedger
from liftwatch.buffer.baselines import BaselineStore, take_maintenance_mark
from liftwatch.buffer.cmdids import CommandIdStore
from liftwatch.buffer.outbox import (
    Outbox,
    OutboxError,
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
HEALTH_CHANGE_MIN_S = 10.0
#: the health state (faults, stalled loops) is assessed this often between health
#: messages, each time with a hop to the outbox thread for its figures; a change is
#: sent at once (at most every HEALTH_CHANGE_MIN_S)
HEALTH_CHECK_S = 5.0
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


class Agent(Storing, RemoteConfig):
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
            if take_maintenance_mark(self.data_dir):   # liftwatch maintenance --done
                log.warning("maintenance visit noted by the technician: wear references "
                            "restart")
                await self.maintenance_done()
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
                if period == "day":
                    self._close_day(start, boundary)
                self._period_start[period] = boundary

    def _close_day(self, start_ms: int, end_ms: int) -> None:
        """With the day's stats: the ``condition`` message (wear figures against their
        references), and the learned state saved, so a power cut loses at most a day."""
        assert self.pipeline is not None
        self._queue("condition", self.factory.condition(self.pipeline.trends.condition(),
                                                        start_ms, end_ms))
        self._save_baselines()

    def _save_baselines(self) -> None:
        assert self.pipeline is not None
        try:
            self.baselines.save(self.pipeline.baselines_state())
        except OSError as exc:
            self.disk.failed("learned baselines", exc, self.baselines.path)
        except (TypeError, ValueError) as exc:
            log.warning("learned baselines not saved: %s", exc)

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

    async def maintenance_done(self) -> dict[str, Any]:
        """A maintenance visit restored the lift: the wear references (signal/trends.py)
        are learned again, open trend warnings cleared; saved at once, so a restart does
        not bring the old references back."""
        assert self.pipeline is not None
        n = len(self.pipeline.trends.tracks)
        outs = self.pipeline.maintenance_done(self.source_now())
        self.emit(outs)
        await self._write()
        self._save_baselines()
        return {"figures_restarted": n,
                "cleared": [r["code"] for r in outs if r.get("type") == "event"]}

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
            self._save_baselines()
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
