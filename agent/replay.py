"""``liftwatch replay``: run the agent's pipeline over a recorded trace on the trace's clock.

The same Pipeline as a live run (architecture.md principle 5), fed from the trace;
timers are advanced on a 0.1 s grid of trace time, as the live runtime's tick does,
so an event's ``t`` is the trace time at which the live agent would have decided.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from liftwatch.drivers.trace import TraceError, TraceHeader, TraceReader
from liftwatch.signal.pipeline import Pipeline
from liftwatch.signal.settings import DetectionParams, LiftParams

#: Timer resolution of the live runtime; replay advances timers on the same grid.
TICK_S = 0.1


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("trace", type=Path, help="trace file (.jsonl or .jsonl.gz)")
    p.add_argument("--config", type=Path, help="terminal config (lift, accelerometer, timers)")
    p.add_argument("--out", type=Path, help="write the results here instead of stdout")
    p.add_argument("--format", choices=["jsonl", "text"], default="jsonl",
                   help="jsonl (trace-format.md, default) or text for people")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.add_argument("--utc", action="store_true",
                   help="with --format text: times in UTC (default: local time, zone shown)")


def lift_from(header: TraceHeader, cfg: Any | None) -> LiftParams:
    """The trace header's lift, else the config's; one of them must describe it."""
    if header.lift:
        h = header.lift
        return LiftParams(landings=[str(x) for x in h["landings"]],
                          landing_heights_m=[float(x) for x in h["landing_heights_m"]],
                          rated_speed=float(h.get("rated_speed", 1.0)),
                          door_zone_m=float(h.get("door_zone_m", 0.2)))
    if cfg is not None:
        return cfg.lift
    raise SystemExit("replay: the trace has no lift in its header; give --config")


def build_pipeline(header: TraceHeader, cfg: Any | None, id_prefix: str = "e",
                   baselines: dict[str, Any] | None = None) -> Pipeline:
    """A pipeline for this trace: lift and accelerometer from the header or the config;
    ``baselines`` is a saved ``baselines_state()`` (a terminal's learned state)."""
    lift = lift_from(header, cfg)
    detection = cfg.detection if cfg is not None else DetectionParams()
    fs = lsb = None
    if header.accel:
        fs, lsb = float(header.accel["fs"]), float(header.accel.get("lsb_per_g", 256))
    rotation = None
    if cfg is not None and cfg.accel.orientation == "fixed":
        rotation = cfg.accel.rotation
    return Pipeline(lift, detection, accel_fs=fs, lsb_per_g=lsb,
                    controller_present=header.controller_present, rotation=rotation,
                    event_id_prefix=id_prefix, baselines=baselines)


def replay_records(reader: TraceReader, pipeline: Pipeline,
                   on_tick: Callable[[float], None] | None = None) -> Iterator[dict[str, Any]]:
    """Feed every record, advancing timers on the tick grid; yield the pipeline's outputs."""
    next_tick = TICK_S
    t = 0.0
    for rec in reader:
        while next_tick <= rec.t:
            yield from pipeline.advance(next_tick)
            next_tick = round(next_tick + TICK_S, 6)
            if on_tick is not None:
                on_tick(next_tick)
        t = rec.t
        yield from pipeline.feed(rec.t, rec.kind, rec.data)
    yield from pipeline.advance(t)
    yield from pipeline.finish(t)


def _mmss(t: float) -> str:
    return f"{int(t // 60):3d}:{t % 60:05.2f}"


def trip_route(rec: dict[str, Any], arrow: str = "->") -> str:
    """Where a trip went, for people: "3 -> 5", but "3 -> stopped between 4 and 5" for a
    trip that ended outside a door zone and "between 4 and 5 -> 5" for the relevel that
    follows (``from_between``/``to_between``, not the last landing passed)."""
    def pair(p: Any) -> str | None:
        return f"between {p[0]} and {p[1]}" if isinstance(p, list) and len(p) == 2 else None

    start = pair(rec.get("from_between")) or str(rec.get("from") or "?")
    end = pair(rec.get("to_between"))
    if rec.get("complete") is False:
        end = f"{end or rec.get('to') or '?'} (cut short: the input ended)"
    elif end is not None:
        end = f"stopped {end}"
    elif rec.get("level") is False:
        end = f"stopped outside a door zone past {rec.get('to') or '?'}"
    else:
        end = str(rec.get("to") or "?")
    return f"{start} {arrow} {end}"


def trip_figures(rec: dict[str, Any]) -> str:
    """The ride-quality figures of a trip; those of an emergency stop said to be that."""
    def f(key: str) -> float:
        v = rec.get(key)
        return float(v) if isinstance(v, int | float) else 0.0

    if rec.get("emergency_stop"):
        figs = (f"EMERGENCY STOP: d_max {f('d_max'):.2f} m/s², jerk {f('jerk_max'):.2f} m/s³ "
                "(a fault stop, not ride quality)")
        if rec.get("v_max") is not None:
            figs = f"{f('distance_m'):.1f} m, v_max {f('v_max'):.2f} m/s, " + figs
        return figs
    if rec.get("v_max") is None:
        return ""
    return (f"{f('distance_m'):.1f} m, v_max {f('v_max'):.2f} m/s, "
            f"a_max {f('a_max'):.2f} m/s², jerk {f('jerk_max'):.2f} m/s³")


def describe(rec: dict[str, Any], number: int | None = None, when: str = "") -> str:
    """One line for a person reading the replay: ``number`` is a trip's number as
    ``liftwatch plot --trip`` takes it, ``when`` the wall-clock time (else trace time)."""
    t = when or _mmss(float(rec.get("t", 0.0)))
    if rec["type"] == "event":
        what = f"{rec['code']} {rec['state'].upper()}"
        between = rec.get("between")
        where = (f" between {between[0]} and {between[1]}" if isinstance(between, list)
                 and len(between) == 2 else
                 f" at floor {rec['floor']}" if rec.get("floor") is not None else "")
        dur = f" after {rec['duration_s']:.1f} s" if "duration_s" in rec else ""
        return f"{t}  EVENT {what}{where}{dur} [{rec.get('sev', '')}]"
    if rec["type"] == "trip":
        figs = trip_figures(rec)
        n = f"{number}: " if number is not None else ""
        return f"{t}  trip {n}{trip_route(rec)}{': ' + figs if figs else ''}"
    if rec["type"] == "door":
        return f"{t}  {door_text(rec)}"
    return f"{t}  {json.dumps(rec)}"


def door_text(rec: dict[str, Any]) -> str:
    """A door cycle, saying what is known: with only a door contact (sensors only) there
    are no opening and closing times, only how long the door stood open; the floor is
    unknown until the car has passed a landing it can count from."""
    def s(v: Any) -> str | None:
        return f"{v:.1f} s" if isinstance(v, int | float) and not isinstance(v, bool) else None

    where = f"at floor {rec['floor']}" if rec.get("floor") is not None \
        else "at a floor not known yet"
    parts = []
    timed = s(rec.get("open_s")) or s(rec.get("close_s"))
    if timed:
        parts.append(f"opening {s(rec.get('open_s')) or 'not seen'}, closing "
                     f"{s(rec.get('close_s')) or 'not seen'}")
    if s(rec.get("dwell_s")):
        parts.append(f"open {s(rec.get('dwell_s'))}"
                     + ("" if timed else " (a door contact alone gives no opening or closing "
                        "times)"))
    parts.append(f"reopens {rec.get('reopens', 0)}")
    if rec.get("complete") is False:
        parts.append("cut short: the input ended")
    return f"door cycle {where}: " + ", ".join(parts)


class TextLines:
    """``--format text``: trips numbered as ``liftwatch plot --trip N`` takes them (the
    same pipeline over the same trace and config finds them in the same order), times on
    the wall clock when the header says when the trace started: local time as ``TZ``
    sets it with its zone, or UTC; else minutes:seconds from the trace's start."""

    def __init__(self, header: TraceHeader, utc: bool = False) -> None:
        from liftwatch.agent.timebase import clock_time

        self.clock_time = clock_time
        self.utc = utc
        self.start_ms = trace_start_ms(header.start)
        self.trips = 0

    def heading(self, trace: Path) -> str:
        if self.start_ms is None:
            return (f"# {trace}: times are minutes:seconds from the trace's start (its header "
                    "gives no start time); trip numbers are those `liftwatch plot --trip N` "
                    "takes (give it the same --config)")
        return (f"# {trace}: started {self.clock_time(self.start_ms, self.utc)}; times "
                f"{'in UTC' if self.utc else 'in local time'}, then from the trace's start; "
                "trip numbers are those `liftwatch plot --trip N` takes (give it the same "
                "--config)")

    def line(self, rec: dict[str, Any]) -> str:
        number = None
        if rec.get("type") == "trip":
            self.trips += 1
            number = self.trips
        t = float(rec.get("t", 0.0))
        when = ""
        if self.start_ms is not None:
            when = f"{self.clock_time(self.start_ms + round(t * 1000), self.utc)} {_mmss(t)}"
        return describe(rec, number, when)


def trace_start_ms(text: str) -> int | None:
    """The trace header's ``start`` as UTC milliseconds, or None when it has none."""
    from datetime import UTC, datetime

    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


class Progress:
    """A one-line progress bar on stderr, only when it is a terminal."""

    def __init__(self, reader: TraceReader, enabled: bool) -> None:
        self.reader = reader
        self.enabled = enabled and sys.stderr.isatty()
        self._last = 0.0

    def __call__(self, _t: float) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < 0.2:
            return
        self._last = now
        frac = self.reader.progress()
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\rreplay [{bar:<30}] {frac * 100:5.1f} %")
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 50 + "\r")


def run(args: argparse.Namespace) -> int:
    cfg = None
    if args.config is not None:
        from liftwatch.agent.config import ConfigError, load_config

        try:
            cfg = load_config(args.config)
        except ConfigError as exc:
            for issue in exc.issues:
                print(f"replay: {issue}", file=sys.stderr)
            return 2

    def report(err: TraceError) -> None:
        print(f"replay: {args.trace}: {err}", file=sys.stderr)

    try:
        reader = TraceReader(args.trace, on_error=report)
    except (OSError, TraceError) as exc:
        print(f"replay: {args.trace}: {exc}", file=sys.stderr)
        return 2
    pipeline = build_pipeline(reader.header, cfg)
    progress = Progress(reader, not args.quiet)
    out: IO[str] = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115
    counts: Counter[str] = Counter()
    t0 = time.monotonic()
    last_t = 0.0
    text = TextLines(reader.header, args.utc) if args.format == "text" else None
    try:
        if text is not None:
            out.write(text.heading(args.trace) + "\n")
        for rec in replay_records(reader, pipeline, progress):
            counts[rec["type"]] += 1
            last_t = max(last_t, float(rec.get("t", 0.0)))
            if text is not None:
                out.write(text.line(rec) + "\n")
            else:
                out.write(json.dumps(rec, separators=(",", ":")) + "\n")
    finally:
        progress.done()
        if out is not sys.stdout:
            out.close()
    elapsed = time.monotonic() - t0
    if not args.quiet:
        parts = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "nothing found"
        print(f"replay: {reader.lines_read} lines, {reader.bad_lines} malformed (skipped); "
              f"{parts}; {elapsed:.1f} s", file=sys.stderr)
    return 0
