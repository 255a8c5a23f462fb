"""``liftwatch monitor``: the lift as the agent sees it, live, in a terminal.

    liftwatch monitor --config FILE [--once] [--duration S] [--interval S]
                      [--backend real|simulated] [--sim-dir DIR]

Runs the terminal's live inputs (:mod:`liftwatch.agent.live_source`) into a local
:class:`~liftwatch.signal.pipeline.Pipeline`, exactly as the agent does, and redraws
one screen: the fused state (mode, run, direction, floor, door, zone, person, speed),
every input's level, the controller's last answer, the accelerometer, the events open
now and the last results (events, trips, door cycles). Read only: nothing is stored or
published, so it can run beside the agent to compare. Beside a running agent it never
disturbs it (live_source.py): simulated devices listen on a tap of the feed, and a
real device only one process may use (GPIO, I2C accelerometer, Modbus RTU) is shown as
not read, naming the agent's PID.

On a terminal the screen is redrawn in place with plain ANSI codes (no curses
needed); when the output is not a terminal (a pipe, a test, a log) each frame is
printed in full, separated by a blank line. ``--once`` prints one frame after
``--settle`` seconds; ``--duration`` stops after that long; Ctrl-C stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
import sys
import time
from collections import deque
from typing import IO, Any

from liftwatch.agent.tools.common import (
    add_source_arguments,
    fmt_ctl,
    load_config_reported,
    make_source,
)

TICK_S = 0.1  # timers of the pipeline, as in the runtime
MODES = {0: "out of service", 1: "normal", 2: "inspection", 3: "fire return", 4: "firefighter",
         5: "emergency power", 6: "earthquake", 7: "unknown"}
DOORS = {0: "unknown", 1: "closing", 2: "closed", 3: "opening", 4: "open", 5: "locked",
         6: "held not fully closed"}
DIRS = {0: "-", 1: "up", 2: "down"}
CLEAR = "\x1b[H\x1b[2J"


#: Link counters the monitor shows when they are not zero.
LINK_COUNTERS = (("timeouts", "timeouts"), ("crc_errors", "CRC"), ("framing_errors", "framing"),
                 ("exceptions", "exceptions"), ("busy_retries", "busy retries"),
                 ("late_answers", "late"), ("mismatched", "discarded"),
                 ("duplicates", "duplicates"), ("idle_bytes", "idle bytes"),
                 ("resyncs", "resyncs"), ("reconnects", "reconnects"))


def ctl_link_lines(h: dict[str, Any]) -> list[str]:
    """The Modbus link's counters and failing blocks, when there is something to show."""
    out = []
    counts = [f"{label} {h[key]}" for key, label in LINK_COUNTERS if h.get(key)]
    if counts:
        out.append("link     " + ", ".join(counts))
    for b in h.get("blocks_failing") or []:
        what = (f"exception {b['exception']:02d}" if b.get("error") == "exception"
                else b.get("error", "?"))
        out.append(f"         FAILING {b['block']} ({', '.join(b.get('fields', []))}): "
                   f"{what} for {b.get('since_s', 0):.0f} s")
    for unit, u in (h.get("units") or {}).items():
        if u.get("backoff_s"):
            out.append(f"         unit {unit} silent, next try in {u['backoff_s']:.1f} s")
    return out


class View:
    """What the screen shows, updated from the source's records and the pipeline."""

    def __init__(self, cfg: Any, source: Any, pipeline: Any) -> None:
        self.cfg = cfg
        self.source = source
        self.pipeline = pipeline
        self.levels: dict[str, int] = {}
        self.ctl: dict[str, Any] | None = None
        self.ctl_polls = 0
        self.ctl_failed = 0
        self.acc_samples = 0
        self.open_events: dict[str, dict[str, Any]] = {}
        self.recent: deque[str] = deque(maxlen=6)
        self.t = 0.0
        self.started = False  # the pipeline's clock starts at its first record

    def feed(self, rec: Any) -> None:
        # never behind the timers already run (the pipeline refuses time going back)
        t = max(self.t, rec.t)
        self.t = t
        self.started = True
        if rec.kind == "di":
            self.levels.update(rec.data)
        elif rec.kind == "ctl":
            self.ctl_polls += 1
            if rec.data is None:
                self.ctl_failed += 1
            else:
                self.ctl = rec.data
        elif rec.kind == "acc":
            self.acc_samples += len(rec.data)
        self.results(self.pipeline.feed(t, rec.kind, rec.data))

    def advance(self, t: float) -> None:
        if t > self.t and self.started:
            self.t = t
            self.results(self.pipeline.advance(t))

    def results(self, outs: list[dict[str, Any]]) -> None:
        from liftwatch.agent.replay import describe

        for out in outs:
            if out.get("type") == "event":
                key = str(out.get("id", out.get("code")))
                if out.get("state") == "raised":
                    self.open_events[key] = out
                else:
                    self.open_events.pop(key, None)
            with contextlib.suppress(KeyError, TypeError, ValueError):  # odd record: skip line
                self.recent.append(describe(out))

    def frame(self) -> str:
        cfg, st = self.cfg, self.pipeline.status()
        speed = "-" if st.get("speed") is None else f"{st['speed']:.2f} m/s"
        lines = [
            f"liftwatch monitor  {cfg.terminal.lift_id} {cfg.terminal.name}".rstrip()
            + f"   t = {self.t:.1f} s   (read only: nothing is published)",
            "",
            f"state    mode {MODES.get(st.get('mode'), _opt(st.get('mode')))}  "
            f"run {st.get('run')}  dir {DIRS.get(st.get('dir'), st.get('dir'))}  "
            f"floor {st.get('floor') or '?'}  door {DOORS.get(st.get('door'), st.get('door'))}  "
            f"zone {_opt(st.get('zone'))}  person {_opt(st.get('person'))}  speed {speed}  "
            f"[{st.get('src', '')}]",
        ]
        health = self.source.health()
        faulty = health.get("inputs", {}).get("faulty", [])
        skipped = health.get("skipped", {})
        if "inputs" in skipped:
            lines.append(f"inputs   {skipped['inputs']}")
        elif cfg.inputs:
            shown = [f"{n}={self.levels[n]}" if n in self.levels else f"{n}=?"
                     for n in cfg.inputs]
            lines.append("inputs   " + "  ".join(shown))
            if faulty:
                lines.append("         FAULTY: " + ", ".join(
                    f"{n} (pin {cfg.inputs[n].pin})" for n in faulty))
        else:
            lines.append("inputs   none wired")
        if "controller" in skipped:
            lines.append(f"ctl      {skipped['controller']}")
        elif cfg.controller.enabled:
            lines.append(f"ctl      {fmt_ctl(self.ctl)}  ({self.ctl_polls - self.ctl_failed}/"
                         f"{self.ctl_polls} polls answered)")
            lines += ctl_link_lines(health.get("controller") or {})
        else:
            lines.append("ctl      not linked (sensors-only terminal)")
        acc = health.get("accel")
        if "accel" in skipped:
            lines.append(f"accel    {skipped['accel']}")
        elif acc:
            lines.append(f"accel    {acc['chip']} {acc['state']}  {acc['fs']:g} Hz  "
                         f"{self.acc_samples} samples" + (f"  {acc['error']}" if acc.get(
                             "error") and acc["state"] != "ok" else ""))
        lines.append("")
        if self.open_events:
            lines.append(f"open events ({len(self.open_events)}):")
            from liftwatch.agent.tools.events import where as where_of

            for e in self.open_events.values():
                where = f" {where_of(e)}" if where_of(e) else ""  # "between 6 and 7" too
                lines.append(f"  {e.get('code')} [{e.get('sev', '')}]{where} since "
                             f"t = {float(e.get('t', 0.0)):.1f} s  id {e.get('id')}")
        else:
            lines.append("open events: none")
        if self.recent:
            lines.append("recent:")
            lines += [f"  {r}" for r in self.recent]
        return "\n".join(lines)


def _opt(v: Any) -> str:
    return "?" if v is None else str(v)


def make_pipeline(cfg: Any, source: Any) -> Any:
    from liftwatch.signal.pipeline import Pipeline

    acc = source.accel_header()
    rotation = cfg.accel.rotation if cfg.accel.orientation == "fixed" else None
    return Pipeline(cfg.lift, cfg.detection, accel_fs=float(acc["fs"]) if acc else None,
                    lsb_per_g=float(acc.get("lsb_per_g", 256)) if acc else None,
                    controller_present=source.controller_present, rotation=rotation,
                    event_id_prefix="mon-")


async def monitor(cfg: Any, out: IO[str], *, duration: float | None = None, once: bool = False,
                  settle_s: float = 2.0, interval: float = 0.5, ansi: bool = False,
                  stop: asyncio.Event | None = None, **source_kw: Any) -> View:
    """Run the live view until ``duration``, ``stop``, or one frame with ``once``."""
    source = make_source(cfg, **source_kw)
    await source.start()
    view = View(cfg, source, make_pipeline(cfg, source))
    stop = stop or asyncio.Event()
    end = settle_s if once else duration
    t0 = time.monotonic()

    async def consume() -> None:
        async for rec in source:
            view.feed(rec)

    def draw() -> None:
        out.write((CLEAR if ansi else "") + view.frame() + ("\n" if ansi else "\n\n"))
        out.flush()

    task = asyncio.create_task(consume())
    try:
        next_draw = 0.0
        while not stop.is_set() and not task.done():
            now = time.monotonic() - t0
            if end is not None and now >= end:
                break
            # timers run on the source's clock, held back like the records themselves
            view.advance(source.clock() - source.t_start - source.reorder_s - TICK_S)
            if not once and now >= next_draw:
                draw()
                next_draw = now + interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK_S)
        source.stop()
        await task
        draw()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await source.close()
    return view


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_source_arguments(p)
    p.add_argument("--once", action="store_true",
                   help="print one frame after --settle seconds and exit")
    p.add_argument("--settle", type=float, default=2.0, metavar="S",
                   help="with --once: seconds of input before the frame (default 2)")
    p.add_argument("--duration", type=float, default=None, metavar="S",
                   help="stop after S seconds (default: until Ctrl-C)")
    p.add_argument("--interval", type=float, default=0.5, metavar="S",
                   help="seconds between redraws (default 0.5)")


def run(args: argparse.Namespace) -> int:
    prog = "liftwatch monitor"
    for name in ("settle", "interval") + (("duration",) if args.duration is not None else ()):
        v = getattr(args, name)
        if not (math.isfinite(v) and v > 0):
            print(f"{prog}: --{name} must be > 0 s, found {v}", file=sys.stderr)
            return 2
    cfg = load_config_reported(args.config, prog)
    if cfg is None:
        return 2

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await monitor(cfg, sys.stdout, duration=args.duration, once=args.once,
                      settle_s=args.settle, interval=args.interval, ansi=sys.stdout.isatty(),
                      stop=stop, backend=args.backend, sim_dir=args.sim_dir)

    try:
        asyncio.run(main())
    except (OSError, ValueError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    return 0
