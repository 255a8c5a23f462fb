"""The live inputs as one async iterator of trace records.

:class:`LiveSource` builds the drivers from a :class:`~liftwatch.agent.config.TerminalConfig`
and yields :class:`~liftwatch.drivers.trace.Record` ``(t, kind, data)`` with ``t`` =
monotonic seconds since :meth:`LiveSource.start`, the same records a trace holds, so the
pipeline runs the same live and replayed (architecture.md principle 5).

- digital inputs (``di``): :class:`~liftwatch.drivers.inputs.DigitalInputs`, sampled in a
  worker thread;
- accelerometer (``acc``): :class:`~liftwatch.drivers.accel.AccelReader` draining the FIFO
  in a worker thread (blocking I2C never runs on the event loop); a chip that cannot be
  opened is retried every ``accel_retry_s`` and reported in :meth:`health` meanwhile;
- controller (``ctl``): ``await link.poll()`` every ``poll_interval_s`` on the loop
  (pymodbus is async), at multiples of the interval on the loop's clock; ``None`` for a
  failed poll.

**Backends.** By default (``backend=None``) each device follows its config: ``[inputs]
backend`` and ``[accel] backend`` (``blinka`` or ``simulated``, the simulated ones
listening on the feed directory ``sim_feed``), and the controller is the real Modbus
link (the HIL rig plays the controller over real Modbus). ``backend="real"`` forces
Blinka pins and I2C and the Modbus controller; ``backend="simulated"`` forces
:class:`~liftwatch.drivers.pins.SimulatedPins`, a simulated chip on a
:class:`~liftwatch.drivers.simchips.SimI2C` and
:class:`~liftwatch.drivers.controller.SimulatedController` (``liftwatch record
--backend simulated``, tests). Simulated devices are driven from another process
through :mod:`liftwatch.drivers.simfeed` (one socket per feed directory; ``sim_dir``
overrides the config's). The
simulated chip adds ``sim_noise_lsb`` counts rms of noise, as a real one does (a
noiseless output would rightly be reported stuck).

**Beside a running agent.** A technician tool (``monitor``, ``check``, ``calibrate``)
builds its own LiveSource from the terminal's config: a second reader of the agent's
inputs. ``attached_to`` (the running agent's PID, :func:`~liftwatch.agent.tools.common.
running_agent`) makes it one that does no harm. Simulated devices listen on a tap of
the feed (:mod:`liftwatch.drivers.simfeed`: the agent keeps its socket and its
messages). Real devices that one process at a time may use are not opened, and
:attr:`LiveSource.skipped` says why: the I2C accelerometer (opening it re-programs the
chip and empties the FIFO the agent reads), the GPIO inputs (opening and releasing a
line resets its pull), and a Modbus RTU link (a second master on one RS-485 bus garbles
both). Modbus TCP serves several clients and is polled as usual.
``accel_retry_s = None`` opens the accelerometer once (a tool must say at once that
there is none, not retry).

**Order.** Debounced inputs are stamped when the contact moved and FIFO blocks with their
first sample's time, both in the past when they arrive; records are therefore held for
``reorder_s`` (by default the longest debounce plus two FIFO reads plus 0.1 s) and
yielded in time order. A record that still arrives later than that is yielded at the
last yielded time and counted in ``health()["late_records"]``.

**Hand-off.** The worker threads append to a bounded deque and never wake the event
loop; the loop collects what has arrived every ``hand_off_s`` (0.2 s, on the same grid
as the runtime's live tick and the controller's usual poll, so one wake-up serves all).
Records wait ``reorder_s`` anyway, so waking the loop for each FIFO block would only
cost CPU (on a Pi-class core every wake-up counts). A record that does not fit the deque
is counted (``dropped_records``), never blocking acquisition.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import heapq
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from liftwatch.agent.timebase import sleep_on_grid
from liftwatch.drivers.accel import (
    AccelBlock,
    AccelError,
    AccelReader,
    make_accelerometer,
    open_blinka_i2c,
)
from liftwatch.drivers.inputs import DigitalInputs
from liftwatch.drivers.pins import BlinkaPins, PinBackend, SimulatedPins
from liftwatch.drivers.simchips import QueueSource, SimChip, SimI2C, make_sim_chip
from liftwatch.drivers.simfeed import SimFeedReceiver
from liftwatch.drivers.threadname import name_native_thread
from liftwatch.drivers.trace import Record

log = logging.getLogger(__name__)

BACKENDS = ("real", "simulated")


class LiveSource:
    """Live records from the terminal's inputs (see the module docstring)."""

    def __init__(self, config: Any, *, backend: str | None = None,
                 sim_dir: str | Path | None = None,
                 controller: Any | None = None, pins: PinBackend | None = None,
                 i2c: Any | None = None, clock: Callable[[], float] = time.monotonic,
                 reorder_s: float | None = None, queue_max: int = 20_000,
                 accel_retry_s: float | None = 5.0, sim_noise_lsb: float = 1.0,
                 hand_off_s: float = 0.2, attached_to: int | None = None) -> None:
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, found {backend!r}")
        self.config = config
        self.backend = backend
        self.sim_dir = Path(sim_dir) if sim_dir is not None else None
        self.clock = clock
        self.queue_max = queue_max
        self.hand_off_s = hand_off_s
        self.accel_retry_s = accel_retry_s
        self.sim_noise_lsb = sim_noise_lsb
        self._reorder_s = reorder_s
        self.attached_to = attached_to
        #: device ("inputs", "accel", "controller") -> why it is not read (beside an agent)
        self.skipped: dict[str, str] = {}
        self._controller = controller
        self._pins = pins
        self._i2c = i2c
        self.inputs: DigitalInputs | None = None
        self.accel: AccelReader | None = None
        self.sim_chip: SimChip | None = None
        self.sim_source: QueueSource | None = None
        self.feeds: list[SimFeedReceiver] = []
        self.t_start = 0.0
        self.late_records = 0
        self.dropped_records = 0
        self.poll_errors = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._inbox: collections.deque[Record] = collections.deque()
        self._drop_lock = threading.Lock()
        self._ctl_task: asyncio.Task[None] | None = None
        self._started = False

    # -- set-up --------------------------------------------------------------------------
    @property
    def controller(self) -> Any | None:
        return self._controller

    @property
    def controller_present(self) -> bool:
        return bool(self.config.controller.enabled) and "controller" not in self.skipped

    def accel_header(self) -> dict[str, Any] | None:
        """The trace header's ``accel`` object, or None for a terminal without one."""
        return self.accel.header() if self.accel is not None else None

    @property
    def reorder_s(self) -> float:
        if self._reorder_s is not None:
            return self._reorder_s
        hold = 0.1
        if self.inputs is not None:
            hold += self.inputs.max_debounce_s
        if self.accel is not None:
            hold += 2 * self.accel.read_interval_s
        return hold

    def _device_backend(self, settings: Any) -> tuple[bool, Path | None]:
        """(simulated?, feed directory) of the inputs or the accelerometer."""
        if self.backend is not None:
            sim = self.backend == "simulated"
        else:
            sim = getattr(settings, "backend", "blinka") == "simulated"
        feed = self.sim_dir
        if feed is None and sim and getattr(settings, "sim_feed", ""):
            feed = Path(settings.sim_feed)
        return sim, feed if sim else None

    def _agents(self, device: str, real: bool, what: str) -> bool:
        """True (noted in ``skipped``) when ``device`` is a real one the running agent
        holds and only one process may use (module docstring)."""
        if self.attached_to is None or not real:
            return False
        self.skipped[device] = (f"not read: the running agent (PID {self.attached_to}) uses "
                                f"{what}; stop it (systemctl stop liftwatch) to read it here")
        return True

    def _build(self) -> None:
        cfg = self.config
        feeds: dict[Path, dict[str, Any]] = {}
        if cfg.inputs and not self._agents(
                "inputs", self._pins is None and not self._device_backend(cfg.inputs_settings)[0],
                "the GPIO inputs (a line released here loses its pull)"):
            sim, feed = self._device_backend(cfg.inputs_settings)
            if self._pins is None:
                self._pins = SimulatedPins() if sim else BlinkaPins()
            self.inputs = DigitalInputs(cfg.inputs, cfg.inputs_settings, self._pins, self.clock)
            self.inputs.open()
            if feed is not None and isinstance(self._pins, SimulatedPins):
                feeds.setdefault(feed, {})["pins"] = self._pins
        if cfg.accel.chip != "none" and not self._agents(
                "accel", self._i2c is None and not self._device_backend(cfg.accel)[0],
                f"the {cfg.accel.chip} accelerometer (opening it here re-programs the chip "
                "and empties the FIFO the agent reads)"):
            sim, feed = self._device_backend(cfg.accel)
            if self._i2c is None and sim:
                self.sim_source = QueueSource()
                self.sim_chip = make_sim_chip(cfg.accel.chip, self.sim_source, self.clock,
                                              cfg.accel.address, self.sim_noise_lsb)
                self._i2c = SimI2C(self.sim_chip)
                if feed is not None:
                    feeds.setdefault(feed, {}).update(accel=self.sim_source, chip=self.sim_chip)
            self.accel = AccelReader(make_accelerometer(self._i2c, cfg.accel), self.clock)
        c = cfg.controller
        if c.enabled and self._controller is None and not self._agents(
                "controller", self.backend != "simulated" and c.transport == "rtu",
                f"the Modbus RTU link on {c.port} (a second master on one bus garbles both)"):
            self._controller = self._make_controller(self.backend == "simulated")
        if self.backend == "simulated":
            feed = self.sim_dir or next(iter(feeds), None)
            if feed is not None:
                feeds.setdefault(feed, {})["controller"] = self._controller
        self.feeds = [SimFeedReceiver(d, **parts) for d, parts in feeds.items()]

    def _make_controller(self, sim: bool) -> Any:
        cfg = self.config
        from liftwatch.drivers import controller as ctl
        link_lost_s = cfg.detection.link_lost_s
        if sim:
            return ctl.SimulatedController(link_lost_s=link_lost_s, clock=self.clock)
        from liftwatch.drivers.registermap import load_register_map
        if cfg.register_map_path is None:
            raise ValueError("controller.enabled = true needs a register map")
        regmap = load_register_map(cfg.register_map_path)
        return ctl.ModbusController(cfg.controller, regmap, cfg.lift.landings,
                                    link_lost_s=link_lost_s, clock=self.clock)

    async def start(self) -> None:
        """Build the drivers and start acquiring; ``t`` = 0 is now."""
        if self._started:
            return
        self._started = True
        self._build()
        # A full collection holds the GIL for tens of milliseconds in a small process and
        # far longer in a large one: longer than the accelerometer's FIFO lasts. Collect
        # now, before the reader thread starts, and freeze what is alive, so that later
        # full collections only walk what came after (``liftwatch record``, ``monitor``
        # and the tests get this too, not only ``run``).
        gc.collect()
        gc.freeze()
        self.t_start = self.clock()
        for feed in self.feeds:
            feed.start()
        if self.inputs is not None:
            self._spawn("inputs", self.inputs.run, self._emit_di, self._stop)
        if self.accel is not None:
            self._spawn("accel", self._accel_loop)
        if self._controller is not None:
            self._ctl_task = asyncio.create_task(self._poll_controller())

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        th = threading.Thread(target=self._guard, args=(name, target, *args),
                              name=f"live-{name}", daemon=True)
        self._threads.append(th)
        th.start()

    def _guard(self, name: str, target: Callable[..., None], *args: Any) -> None:
        name_native_thread()
        try:
            target(*args)
        except Exception:  # a dead acquisition thread must be visible, never silent
            log.exception("live source: %s thread failed", name)

    # -- acquisition (worker threads) ------------------------------------------------------
    def _put(self, rec: Record) -> None:
        """Hand a record to the loop (any thread; ``deque.append`` is atomic)."""
        if len(self._inbox) >= self.queue_max:
            with self._drop_lock:
                self.dropped_records += 1
            return
        self._inbox.append(rec)

    def _emit_di(self, t: float, levels: dict[str, int]) -> None:
        self._put(Record(t - self.t_start, "di", levels))

    def _emit_acc(self, block: AccelBlock) -> None:
        self._put(Record(block.t - self.t_start, "acc", block.samples))

    def _accel_loop(self) -> None:
        assert self.accel is not None
        while not self._stop.is_set():
            try:
                if self.accel.chip.bus.i2c is None:  # real backend: the bus opens here
                    self.accel.chip.bus.i2c = open_blinka_i2c(self.config.accel.i2c_bus)
                self.accel.open()
            except AccelError as exc:
                if self.accel_retry_s is None:  # once: the caller reports open_error
                    self.accel.open_error = str(exc)
                    return
                if str(exc) != self.accel.open_error:  # log each new reason once
                    log.error("accelerometer: %s (retrying every %g s)", exc,
                              self.accel_retry_s)
                self.accel.open_error = str(exc)
                self._stop.wait(self.accel_retry_s)
                continue
            self.accel.run(self._emit_acc, self._stop)

    async def _poll_controller(self) -> None:
        assert self._controller is not None
        interval = self.config.controller.poll_interval_s
        while not self._stop.is_set():
            try:
                data = await self._controller.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a driver bug must not stop the other inputs
                self.poll_errors += 1
                log.warning("controller poll failed: %s", exc)
                data = None
            self._put(Record(self.clock() - self.t_start, "ctl", data))
            # on the tick's grid: with the usual 0.2 s the poll starts in a wake-up
            # the loop has anyway; a poll that overran waits for the next grid point
            await sleep_on_grid(interval)

    # -- consumption -------------------------------------------------------------------
    def __aiter__(self) -> AsyncIterator[Record]:
        return self._records()

    async def _records(self) -> AsyncIterator[Record]:
        await self.start()
        heap: list[tuple[float, int, Record]] = []
        seq = itertools.count()
        last_t = 0.0
        while True:
            stopping = self._stop.is_set()
            if stopping:  # what the threads send while they finish their turn
                await self._join_threads()
            inbox = self._inbox
            while inbox:
                rec = inbox.popleft()
                heapq.heappush(heap, (rec.t, next(seq), rec))
            horizon = float("inf") if stopping else self.clock() - self.t_start - self.reorder_s
            while heap and heap[0][0] <= horizon:
                _, _, out = heapq.heappop(heap)
                if out.t < last_t:
                    self.late_records += 1
                    out = out._replace(t=last_t)
                last_t = out.t
                yield out
            if stopping:
                return
            await sleep_on_grid(self.hand_off_s)

    async def _join_threads(self, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        while any(th.is_alive() for th in self._threads) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    def stop(self) -> None:
        """End acquisition; the iterator yields what it holds, then ends."""
        self._stop.set()
        if self.inputs is not None:
            self.inputs.wake()

    async def close(self) -> None:
        """Stop, join the worker threads, release the hardware."""
        self.stop()
        if self._ctl_task is not None:
            self._ctl_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # closing anyway
                await self._ctl_task
        await self._join_threads()
        for feed in self.feeds:
            feed.stop()
        if self.inputs is not None:
            self.inputs.close()
        if self.accel is not None:
            self.accel.close()
        if self._controller is not None:
            try:
                await self._controller.close()
            except Exception as exc:  # closing a broken link must not hide the recording
                log.warning("controller close failed: %s", exc)

    def health(self) -> dict[str, Any]:
        """Every input's health, plus what the source itself dropped or reordered."""
        out: dict[str, Any] = {"backend": self.backend or "config",
                               "late_records": self.late_records,
                               "dropped_records": self.dropped_records,
                               "poll_errors": self.poll_errors}
        if self.inputs is not None:
            out["inputs"] = self.inputs.health()
        if self.accel is not None:
            out["accel"] = self.accel.health()
        if self._controller is not None:
            out["controller"] = self._controller.health()
        if self.feeds:
            out["feed"] = {str(f.path): f.stats() for f in self.feeds}
        if self.skipped:
            out["skipped"] = dict(self.skipped)
        return out
