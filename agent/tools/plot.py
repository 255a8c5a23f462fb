"""``liftwatch plot``: one trip's ride quality as ride-quality analysers draw it.

    liftwatch plot TRACE --trip N --out FILE.png|FILE.jpg [--config FILE] [--size 1600x1200]

Stacked panels on one time axis (seconds from the trip's start): the car's position
against the landings with the stop and its leveling error, vertical acceleration
(low-passed at 10 Hz), speed, jerk, vertical vibration (ISO 2631-1 Wk) and horizontal
vibration (Wd, x and y), with the ISO 18738-1 figures of the trip annotated. The title
names the lift and when the trip started (local time with its zone).

The trip (its start, end and figures) is what the agent's own pipeline finds in the
trace, replayed up to trip ``N`` (1 = the first, numbered as ``liftwatch replay TRACE
--format text`` lists them with the same ``--config``); the curves come from the same
fixed-point conditioning chain (:class:`~liftwatch.signal.chain.AccelChain`) over the
accelerometer samples of the trip plus a few seconds of rest either side, shifted by
each filter's group delay so they line up with the trip's times. Speed is the
integral of the acceleration with the integration drift removed (the car is at rest
before and after); jerk the derivative of the acceleration smoothed over 0.2 s.

matplotlib is an optional extra (``pip install 'liftwatch[plot]'``): without it the
command says so and exits 2.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from liftwatch.agent.tools.outfile import OutputRefused, check_output, output_file
from liftwatch.drivers.trace import Record, TraceError, TraceReader

PRE_S = 3.0  # rest before the trip: gravity, orientation and the filters settle
POST_S = 2.0
SETTLE_S = 0.5  # the first half second of the window is the filters settling: not drawn
KEEP_S = 240.0  # accelerometer history kept while looking for the trip
JERK_SMOOTH_S = 0.2
G = 9.80665
MISSING = ("liftwatch plot needs matplotlib, an optional extra: "
           "pip install 'liftwatch[plot]'  (or: pip install 'matplotlib>=3.8,<4')")


class PlotError(RuntimeError):
    """The trace cannot give the plot asked for (no such trip, no accelerometer)."""


@dataclass
class TripSeries:
    """The curves of one trip, times in seconds from the trip's start."""

    trip: dict[str, Any]
    number: int
    t: np.ndarray  # for acc / speed / jerk / w_z
    acc: np.ndarray  # m/s², up positive, gravity removed
    speed: np.ndarray  # m/s, up positive
    jerk: np.ndarray  # m/s³
    t_wz: np.ndarray
    w_z: np.ndarray  # m/s², Wk
    t_wxy: np.ndarray
    w_x: np.ndarray  # m/s², Wd
    w_y: np.ndarray


@dataclass
class TripPlace:
    """Where and when a trip was: the lift, its landings, the trace's start on the wall
    clock, and the leveling error the pipeline measured at the stop."""

    lift_id: str = ""
    landings: list[str] = field(default_factory=list)
    heights: list[float] = field(default_factory=list)
    start_ms: int | None = None
    stop_error_mm: float | None = None
    stop_uncertainty_mm: float | None = None

    def height_of(self, label: Any) -> float | None:
        with contextlib.suppress(ValueError):
            return self.heights[self.landings.index(str(label))]
        return None


class _Tee:
    """Iterates a trace, keeping the recent accelerometer records on the side."""

    def __init__(self, reader: TraceReader) -> None:
        self._it = iter(reader)
        self.acc: deque[Record] = deque()
        self.last_t = 0.0

    def __iter__(self) -> Iterator[Record]:
        return self

    def __next__(self) -> Record:
        rec = next(self._it)
        self.last_t = rec.t
        if rec.kind == "acc":
            self.acc.append(rec)
            while self.acc and self.acc[0].t < rec.t - KEEP_S:
                self.acc.popleft()
        return rec


def find_trip(trace: str | Path, number: int, cfg: Any | None = None
              ) -> tuple[dict[str, Any], list[Record], dict[str, Any]]:
    """Trip ``number`` (1-based) of the trace as the pipeline reports it, the accelerometer
    records around it, and the trace header's accel object."""
    trip, window, accel, _ = locate_trip(trace, number, cfg)
    return trip, window, accel


def locate_trip(trace: str | Path, number: int, cfg: Any | None = None
                ) -> tuple[dict[str, Any], list[Record], dict[str, Any], TripPlace]:
    """:func:`find_trip` and the trip's :class:`TripPlace`."""
    from liftwatch.agent.replay import build_pipeline, lift_from, replay_records, trace_start_ms

    if number < 1:
        raise PlotError(f"--trip counts from 1, found {number}")
    with TraceReader(trace) as reader:
        if not reader.header.accel:
            raise PlotError(f"{trace}: the trace has no accelerometer (header without accel)")
        pipeline = build_pipeline(reader.header, cfg)
        tee = _Tee(reader)
        found = 0
        trip = None
        stop: tuple[float | None, float | None] = (None, None)
        for out in replay_records(tee, pipeline):
            if out.get("type") == "trip":
                found += 1
                if found == number:
                    trip = out
                    stop = pipeline.stop_error_mm  # this stop's: settled with the record
                    break
        if trip is None:
            raise PlotError(f"{trace}: trip {number} asked for, the trace has {found}")
        lift = lift_from(reader.header, cfg)
        lift_id = cfg.terminal.lift_id if cfg is not None else \
            str((reader.header.lift or {}).get("id", ""))
        place = TripPlace(lift_id, [str(x) for x in lift.landings],
                          [float(h) for h in lift.landing_heights_m],
                          trace_start_ms(reader.header.start), *stop)
        t0, t1 = float(trip["t_start"]) - PRE_S, float(trip["t_end"]) + POST_S
        if tee.last_t < t1:
            for _rec in tee:
                if tee.last_t > t1:
                    break
        window = [r for r in tee.acc if t0 <= r.t <= t1]
        return trip, window, dict(reader.header.accel), place


def trip_series(trip: dict[str, Any], records: list[Record], accel: dict[str, Any],
                rotation: list[list[float]] | None = None, number: int = 0) -> TripSeries:
    """Run the conditioning chain over the trip's samples (see the module docstring)."""
    from liftwatch.signal.chain import AccelChain, to_ms2
    from liftwatch.signal.orientation import rotation_from_gravity

    fs = float(accel["fs"])
    lsb = float(accel.get("lsb_per_g", 256))
    samples = [s for r in records for s in r.data]
    if not records or len(samples) < int(fs * (PRE_S + 1)):
        raise PlotError("too few accelerometer samples around the trip")
    raw = np.asarray(samples, dtype=np.int64)
    t_first = records[0].t
    t_start = float(trip["t_start"])
    n_rest = max(1, int((t_start - t_first - 0.5) * fs))
    if rotation is None:  # the mounting as the car at rest before the trip shows it
        rotation = rotation_from_gravity(raw[:n_rest].mean(axis=0).tolist())
    if not float(fs).is_integer():
        raise PlotError(f"the chain needs an integer sample rate, the trace has {fs} Hz")
    chain = AccelChain(int(fs), lsb, rotation)
    out = chain.process(raw)
    out = _join(out, chain.flush())
    times = out.times(t_first) - t_start

    def shifted(name: str) -> np.ndarray:
        return times - chain.delay_s[name]

    t_a = shifted("a_z")
    a = np.asarray(to_ms2(out.a_z))
    rest = a[t_a < -0.5]
    a = a - (float(np.median(rest)) if rest.size else G)
    dt = 1.0 / out.fs
    v = np.concatenate([[0.0], np.cumsum((a[1:] + a[:-1]) / 2 * dt)])
    # integration drift: the car is at rest before and after, so v goes back to 0
    after = t_a > float(trip["t_end"]) - t_start + 0.5
    if after.any():
        v_end = float(np.mean(v[after]))
        span = float(np.mean(t_a[after]) - t_a[0])
        v = v - v_end * (t_a - t_a[0]) / span
    k = max(1, int(JERK_SMOOTH_S * out.fs))
    smooth = np.convolve(a, np.ones(k) / k, mode="same")
    jerk = np.gradient(smooth, dt)
    t_wz, t_wxy = shifted("w_z"), shifted("w_x")
    keep, keep_z, keep_xy = (x > x[0] + SETTLE_S for x in (t_a, t_wz, t_wxy))
    return TripSeries(trip, number, t_a[keep], a[keep], v[keep], jerk[keep], t_wz[keep_z],
                      np.asarray(to_ms2(out.w_z))[keep_z], t_wxy[keep_xy],
                      np.asarray(to_ms2(out.w_x))[keep_xy], np.asarray(to_ms2(out.w_y))[keep_xy])


def _join(a: Any, b: Any) -> Any:
    if not len(b):
        return a
    from liftwatch.signal.chain import ChainOut
    return ChainOut(*(np.concatenate([getattr(a, k), getattr(b, k)])
                      for k in ("a_z", "w_z", "w_x", "w_y")), a.first, a.fs)


def _fmt(v: Any, unit: str) -> str:
    return "-" if v is None else f"{v:.3f} {unit}"


def title_of(trip: dict[str, Any], number: int, place: TripPlace | None = None) -> str:
    """The figure's title: the lift and when (with ``place``), where the trip went (a stop
    between floors said so) and whether its figures are ride quality or an emergency
    stop's."""
    from liftwatch.agent.replay import trip_route
    from liftwatch.agent.timebase import clock_time

    dur = float(trip["t_end"]) - float(trip["t_start"])
    what = ("EMERGENCY STOP: the figures are the fault stop's, not ride quality"
            if trip.get("emergency_stop") else "ISO 18738-1 figures")
    text = f"trip {number}: {trip_route(trip, '→')} ({trip.get('dir') or ''}), {dur:.1f} s — {what}"
    if place is None:
        return text
    head = [f"lift {place.lift_id}" if place.lift_id else "lift (no id in the trace)"]
    if place.start_ms is not None:
        head.append(clock_time(place.start_ms + round(float(trip["t_start"]) * 1000)))
    return "  ·  ".join(head) + "\n" + text


def position(series: TripSeries, place: TripPlace) -> tuple[np.ndarray, str]:
    """The car's height (m above the lowest landing) over the trip, from the speed, and
    what it is anchored to: the landing it stopped at (plus the measured leveling error),
    else the landing it left; "m from the start" when neither is known."""
    t, v = series.t, series.speed
    p = np.concatenate([[0.0], np.cumsum((v[1:] + v[:-1]) / 2 * np.diff(t))])
    trip = series.trip
    dur = float(trip["t_end"]) - float(trip["t_start"])
    end = place.height_of(trip.get("to")) if trip.get("level") is not False \
        and not trip.get("to_between") and trip.get("complete") is not False else None
    start = place.height_of(trip.get("from")) if not trip.get("from_between") else None
    if end is not None:
        end += (place.stop_error_mm or 0.0) / 1000
        return p - float(np.interp(dur, t, p)) + end, "stop"
    if start is not None:
        return p - float(np.interp(0.0, t, p)) + start, "start"
    return p - float(np.interp(0.0, t, p)), ""


def stop_note(trip: dict[str, Any], place: TripPlace) -> str:
    """The stop, as the panel's note says it."""
    from liftwatch.agent.replay import trip_route

    where = trip_route(trip).split(" -> ", 1)[1]
    if trip.get("emergency_stop") or trip.get("to_between"):
        return f"stop: {where}\nleveling error: none (not at a landing)"
    if place.stop_error_mm is None:
        return (f"stop at {where}\nleveling error: not measured (no leveling-sensor edge on "
                "the way in)")
    unc = f" ± {place.stop_uncertainty_mm:.0f}" if place.stop_uncertainty_mm is not None else ""
    return f"stop at {where}\nleveling error {place.stop_error_mm:+.1f}{unc} mm"


def render(series: TripSeries, out: str | Path, size: tuple[int, int] = (1600, 1200),
           dpi: int = 100, title: str = "", place: TripPlace | None = None,
           into: IO[bytes] | None = None) -> None:
    """Draw the panels into a PNG or JPEG (by ``out``'s extension) of exactly ``size``
    pixels; with ``place`` the first panel is the car's position against the landings;
    written to ``into`` when given (an open file), else to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # small images (a thumbnail, a chat message) get small type, or the six panels'
    # labels leave the curves no room
    scale = min(1.0, size[1] / 900, size[0] / 1200)
    with plt.rc_context({"font.size": max(4.0, 10 * scale)}):
        _draw(plt, series, out, size, dpi, title, place, scale, into)


def _draw(plt: Any, series: TripSeries, out: str | Path, size: tuple[int, int], dpi: int,
          title: str, place: TripPlace | None, scale: float,
          into: IO[bytes] | None) -> None:
    s, trip = series, series.trip
    dur = float(trip["t_end"]) - float(trip["t_start"])
    n = 6 if place is not None else 5
    fig, all_axes = plt.subplots(n, 1, sharex=True, figsize=(size[0] / dpi, size[1] / dpi),
                                 dpi=dpi, layout="constrained",
                                 height_ratios=[1.6] + [1] * 5 if place is not None else None)
    if place is not None:
        _position_panel(all_axes[0], s, place, dur, scale)
    axes = all_axes[n - 5:]
    vib_max = trip.get("vib_pp_max") or {}
    vib_a95 = trip.get("vib_pp_a95") or {}
    panels = [
        (axes[0], s.t, [(s.acc, "a (10 Hz)", "C0")], "acceleration\nm/s²",
         [f"a_max {_fmt(trip.get('a_max'), 'm/s²')}", f"a95 {_fmt(trip.get('a95'), 'm/s²')}",
          f"d_max {_fmt(trip.get('d_max'), 'm/s²')}", f"d95 {_fmt(trip.get('d95'), 'm/s²')}"]),
        (axes[1], s.t, [(s.speed, "v", "C1")], "speed\nm/s",
         [f"v_max {_fmt(trip.get('v_max'), 'm/s')}",
          f"distance {_fmt(trip.get('distance_m'), 'm')}"]),
        (axes[2], s.t, [(s.jerk, "jerk", "C2")], "jerk\nm/s³",
         [f"jerk_max {_fmt(trip.get('jerk_max'), 'm/s³')}"]),
        (axes[3], s.t_wz, [(s.w_z, "z (Wk)", "C3")], "vibration z\nWk m/s²",
         [f"pk-pk max {_fmt(vib_max.get('z'), 'm/s²')}",
          f"pk-pk A95 {_fmt(vib_a95.get('z'), 'm/s²')}"]),
        (axes[4], s.t_wxy, [(s.w_x, "x (Wd)", "C4"), (s.w_y, "y (Wd)", "C5")],
         "vibration x, y\nWd m/s²",
         [f"x pk-pk max {_fmt(vib_max.get('x'), 'm/s²')}, A95 {_fmt(vib_a95.get('x'), 'm/s²')}",
          f"y pk-pk max {_fmt(vib_max.get('y'), 'm/s²')}, A95 {_fmt(vib_a95.get('y'), 'm/s²')}"]),
    ]
    for ax, t, curves, label, notes in panels:
        for y, name, color in curves:
            ax.plot(t, y, color=color, linewidth=0.8, label=name)
        ax.axvspan(0.0, dur, color="0.92", zorder=0)
        ax.axhline(0.0, color="0.5", linewidth=0.5)
        ax.set_ylabel(label)
        ax.grid(True, linewidth=0.3)
        ax.text(0.005, 0.95, "\n".join(notes), transform=ax.transAxes, va="top", ha="left",
                fontsize=max(3.5, 8 * scale), family="monospace",
                bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})
        if len(curves) > 1:
            ax.legend(loc="upper right", fontsize=max(3.5, 8 * scale))
    axes[-1].set_xlabel("time from the trip's start (s); shaded: the trip as detected")
    fig.suptitle(title or title_of(trip, series.number, place))
    fig.savefig(into if into is not None else out, dpi=dpi, format=image_format(out))
    plt.close(fig)


def _position_panel(ax: Any, s: TripSeries, place: TripPlace, dur: float,
                    scale: float = 1.0) -> None:
    """Height against the landings, the stop marked and its leveling error noted."""
    p, anchor = position(s, place)
    ax.plot(s.t, p, color="C9", linewidth=1.2)
    ax.axvspan(0.0, dur, color="0.92", zorder=0)
    lo, hi = float(p.min()), float(p.max())
    if anchor:  # the two landings a stop between floors was between are both drawn
        pair = [place.height_of(x) for key in ("from_between", "to_between")
                for x in (s.trip.get(key) or [])]
        lo = min([lo] + [h for h in pair if h is not None])
        hi = max([hi] + [h for h in pair if h is not None])
    margin = max(0.5, 0.08 * (hi - lo))
    shown = [(lab, h) for lab, h in zip(place.landings, place.heights, strict=False)
             if lo - margin <= h <= hi + margin] if anchor else []
    for label, h in shown:
        ax.axhline(h, color="0.55", linewidth=0.6, linestyle="--")
        ax.annotate(label, (1.0, h), xycoords=("axes fraction", "data"), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=max(3.5, 9 * scale),
                    color="0.3")
    p_end = float(np.interp(dur, s.t, p))
    ax.plot([dur], [p_end], marker="o", color="C3", markersize=6 * scale, zorder=3)
    ax.set_ylim(lo - margin, hi + margin)
    ax.set_ylabel("position\nm" + ("" if anchor else " from start"))
    ax.grid(True, linewidth=0.3)
    landing = place.height_of(s.trip.get("to"))
    if anchor == "stop" and place.stop_error_mm is not None and landing is not None \
            and scale >= 0.6:  # a thumbnail has no room for it: the note says the figure
        # the leveling error is millimetres on a panel of metres: the last second and a
        # half into the stop, drawn against the landing's sill
        near = (s.t >= dur - 1.5) & (s.t <= dur + 1.0)
        # in the corner the car's curve leaves free: below it after a trip up
        low = p_end > (lo + hi) / 2
        inset = ax.inset_axes((0.74, 0.08 if low else 0.38, 0.25, 0.45))
        inset.plot(s.t[near], (p[near] - landing) * 1000, color="C9", linewidth=1.0)
        inset.axhline(0.0, color="0.55", linewidth=0.6, linestyle="--")
        inset.plot([dur], [place.stop_error_mm], marker="o", color="C3", markersize=5)
        if place.stop_uncertainty_mm is not None:
            inset.errorbar([dur], [place.stop_error_mm], yerr=[place.stop_uncertainty_mm],
                           color="C3", capsize=3, linewidth=0.8)
        inset.set_ylim(-60, 60)
        inset.set_title(f"into the stop: mm from the sill of {s.trip.get('to')}",
                        fontsize=8 * scale)
        inset.tick_params(labelsize=7 * scale)
        inset.grid(True, linewidth=0.3)
    basis = {"stop": "integrated, anchored at the landing stopped at",
             "start": "integrated, anchored at the landing left"}.get(anchor, "integrated")
    ax.text(0.005, 0.95, f"{stop_note(s.trip, place)}\nposition: {basis}",
            transform=ax.transAxes, va="top", ha="left", fontsize=max(3.5, 8 * scale),
            family="monospace",
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})


#: image formats by file extension: matplotlib writes PNG itself and JPEG through Pillow
#: (a dependency of matplotlib); a vector format would ignore --size
FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}


def image_format(out: str | Path) -> str:
    """The format ``out``'s extension asks for; PlotError for any other extension (rather
    than a PNG under a .jpg name, or matplotlib's own error after the replay)."""
    ext = Path(out).suffix.lower()
    if ext not in FORMATS:
        raise PlotError(f"--out {out}: the extension must be {', '.join(FORMATS)} "
                        f"(PNG or JPEG), found {ext or 'none'}")
    return FORMATS[ext]


SIZE = re.compile(r"^(\d{2,5})x(\d{2,5})$")


def parse_size(text: str) -> tuple[int, int]:
    m = SIZE.match(text)
    if not m or not (200 <= int(m.group(1)) <= 10000 and 200 <= int(m.group(2)) <= 10000):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels (200..10000), "
                                         f"found {text!r}")
    return int(m.group(1)), int(m.group(2))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("trace", type=Path, help="trace file (.jsonl or .jsonl.gz)")
    p.add_argument("--trip", type=int, required=True, metavar="N",
                   help="which trip of the trace (1 = the first; `liftwatch replay TRACE "
                   "--format text` lists them numbered)")
    p.add_argument("--out", type=Path, required=True,
                   help="image to write: PNG (.png) or JPEG (.jpg, .jpeg)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.add_argument("--config", type=Path,
                   help="terminal config (lift, detection timers, fixed mounting rotation)")
    p.add_argument("--size", type=parse_size, default=(1600, 1200), metavar="WxH",
                   help="image size in pixels (default 1600x1200)")


def run(args: argparse.Namespace) -> int:
    prog = "liftwatch plot"
    try:
        import matplotlib  # noqa: F401 - only to say clearly that it is missing
    except ImportError:
        print(f"{prog}: {MISSING}", file=sys.stderr)
        return 2
    try:
        image_format(args.out)
        check_output(args.out, args.force)
    except (PlotError, OutputRefused) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    cfg = None
    if args.config is not None:
        from liftwatch.agent.tools.common import load_config_reported
        cfg = load_config_reported(args.config, prog)
        if cfg is None:
            return 2
    rotation = cfg.accel.rotation if cfg is not None and cfg.accel.orientation == "fixed" \
        else None
    try:
        trip, records, accel, place = locate_trip(args.trace, args.trip, cfg)
        series = trip_series(trip, records, accel, rotation, args.trip)
    except (PlotError, TraceError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{prog}: {args.trace}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        with output_file(args.out, args.force, binary=True) as fh:
            render(series, args.out, args.size, place=place, into=fh)
    except OutputRefused as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{prog}: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    from liftwatch.agent.replay import trip_route

    print(f"{prog}: trip {args.trip} ({trip_route(trip)}, "
          f"{float(trip['t_end']) - float(trip['t_start']):.1f} s"
          f"{', an emergency stop' if trip.get('emergency_stop') else ''}) drawn to {args.out}")
    return 0
