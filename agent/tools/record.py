"""``liftwatch record``: record the live inputs into a trace, to replay a callout later.

    liftwatch record --config FILE --out TRACE [--duration S]
                     [--backend real|simulated] [--sim-dir DIR] [--force]

The trace (trace-format.md; ``.gz`` compresses) starts with a header taken from the
config's ``[lift]`` and ``[accel]`` and whether a controller is linked, then holds every
``di``, ``ctl`` and ``acc`` record the terminal's inputs gave, in time order
(``liftwatch.agent.live_source`` for the backends and the ordering). Recording
ends after ``--duration`` seconds, or on Ctrl-C / SIGTERM; the file is flushed every
second, so a power cut loses at most the last second (a cut gzip file is still read by
the trace reader up to the cut). ``--backend simulated`` records simulated inputs,
accelerometer and controller that a rig or test drives through the feed socket in
``--sim-dir`` (``liftwatch.drivers.simfeed``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from liftwatch.agent.live_source import LiveSource
from liftwatch.agent.tools.common import add_source_arguments, make_source
from liftwatch.agent.tools.outfile import OutputRefused, output_file
from liftwatch.drivers.trace import TraceHeader, TraceWriter

log = logging.getLogger(__name__)

FLUSH_S = 1.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_source_arguments(p)
    p.add_argument("--out", required=True, help="trace file to write (.jsonl or .jsonl.gz)")
    p.add_argument("--duration", type=float, default=None, metavar="S",
                   help="stop after S seconds (default: until Ctrl-C or SIGTERM)")
    p.add_argument("--force", action="store_true", help="overwrite an existing trace file")


def lift_header(cfg: Any) -> dict[str, Any]:
    """The header's ``lift`` object from the config's [terminal] and [lift]."""
    lift = cfg.lift
    return {"id": cfg.terminal.lift_id, "landings": list(lift.landings),
            "landing_heights_m": list(lift.landing_heights_m),
            "rated_speed": lift.rated_speed, "door_zone_m": lift.door_zone_m}


@dataclass
class RecordResult:
    """What a recording wrote."""

    path: Path
    counts: Counter[str] = field(default_factory=Counter)
    acc_samples: int = 0
    seconds: float = 0.0
    health: dict[str, Any] = field(default_factory=dict)


async def record(cfg: Any, out: str | Path, *, duration: float | None = None,
                 backend: str | None = None, sim_dir: str | Path | None = None,
                 stop: asyncio.Event | None = None, source: LiveSource | None = None,
                 ) -> RecordResult:
    """Record ``cfg``'s live inputs into ``out`` until ``duration`` or ``stop``."""
    # beside a running agent its real devices are not opened (tools/common.make_source):
    # the trace then lacks them, and run() says which
    src = source or make_source(cfg, backend=backend, sim_dir=sim_dir)
    await src.start()
    header = TraceHeader(start=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                         lift=lift_header(cfg), accel=src.accel_header(),
                         controller_present=src.controller_present)
    result = RecordResult(Path(out))
    stop = stop or asyncio.Event()
    t0 = time.monotonic()

    async def stopper() -> None:
        if duration is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), duration)
        else:
            await stop.wait()
        src.stop()

    stop_task = asyncio.create_task(stopper())
    try:
        with TraceWriter(out, header) as writer:
            last_flush = time.monotonic()
            async for rec in src:
                writer.write_record(rec)
                result.counts[rec.kind] += 1
                if rec.kind == "acc":
                    result.acc_samples += len(rec.data)
                if time.monotonic() - last_flush >= FLUSH_S:
                    writer.flush()
                    last_flush = time.monotonic()
    finally:
        stop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stop_task
        result.health = src.health()
        await src.close()
    result.seconds = time.monotonic() - t0
    return result


def _problems(health: dict[str, Any]) -> list[str]:
    out = []
    inputs = health.get("inputs")
    if inputs and inputs["faulty"]:
        for name in inputs["faulty"]:
            h = inputs["inputs"][name]
            out.append(f"input {name} (pin {h['pin']}) {h['state']}: {h['error']}")
    accel = health.get("accel")
    if accel and accel["state"] != "ok":
        out.append(f"accelerometer {accel['chip']} {accel['state']}"
                   + (f": {accel['error']}" if accel["error"] else ""))
    ctl = health.get("controller")
    if ctl and ctl.get("state") != "ok":
        out.append(f"controller link {ctl.get('state')}")
    for key in ("late_records", "dropped_records"):
        if health.get(key):
            out.append(f"{health[key]} {key.replace('_', ' ')}")
    return out


def run(args: argparse.Namespace) -> int:
    from liftwatch.agent.config import ConfigError, load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"liftwatch record: the config has {len(exc.issues)} problem(s):", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"liftwatch record: cannot read the config: {exc}", file=sys.stderr)
        return 2
    if args.duration is not None and not args.duration > 0:
        print(f"liftwatch record: --duration must be > 0 s, found {args.duration}",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    try:  # created now (O_EXCL, O_NOFOLLOW): never over a file without --force, never a link
        with output_file(out, args.force):
            pass
    except OutputRefused as exc:
        print(f"liftwatch record: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"liftwatch record: cannot write {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if args.sim_dir and args.backend == "real":
        print("liftwatch record: --sim-dir needs simulated backends", file=sys.stderr)
        return 2

    async def main() -> RecordResult:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await record(cfg, out, duration=args.duration, backend=args.backend,
                            sim_dir=args.sim_dir, stop=stop)

    try:
        result = asyncio.run(main())
    except (OSError, ValueError) as exc:  # a port, socket or file that cannot be used
        with contextlib.suppress(OSError):
            if out.lstat().st_size == 0:
                out.unlink()  # the empty file made above: a retry needs no --force
        print(f"liftwatch record: cannot record: {exc}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{result.counts[k]} {k}" for k in ("di", "ctl", "acc") if result.counts[k])
    print(f"liftwatch record: {out}: {result.seconds:.1f} s, {counts or 'no records'}"
          f" ({result.acc_samples} accelerometer samples)", file=sys.stderr)
    for device, why in (result.health.get("skipped") or {}).items():
        print(f"  not recorded: {device}: {why}", file=sys.stderr)
    for p in _problems(result.health):
        print(f"  warning: {p}", file=sys.stderr)
    log.debug("health at the end: %s", json.dumps(result.health, default=str))
    return 0
