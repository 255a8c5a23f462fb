"""Wear trends: each figure's level against a reference learned from the lift's service.

The anomaly rules (``door_slow``, ``vibration_abnormal``, ``leveling_drift``) see jumps:
their baselines follow the lift, so a door slowing 3.0 → 3.6 s over three weeks is
learned as normal. This module keeps, per wear figure, a *fixed* reference and an
EWMA of the daily level against it, so slow wear is seen while it builds up.

- **Figures** (keys): ``door_open_s``/``door_close_s`` of the car and of each landing
  (``door_close_s@3``), ``reopen_rate`` (reopens per door cycle), ``vib_z``/``vib_xy``
  (trip A95 peak-to-peak), ``a_max``/``d_max``, ``level_mm`` (the signed leveling
  error of the stops, and ``level_mm@up``/``level_mm@down`` by the direction the car
  arrived in: rope stretch moves every stop, brake wear overshoots in the direction of
  travel, which the car's figure alone averages away), ``run_s@1>5`` (run time of a
  landing pair: normalising by distance would mix the acceleration phases of short and
  long runs, so each pair is its own figure).
- **Day**: ``DAY_S`` of the pipeline's clock from the first sample (or from the restart
  after a power cut: a partial day is not persisted). A day counts for a figure only
  with at least ``MIN_DAY_N`` values; its level is their median (the mean for
  ``reopen_rate``, a count mostly 0). A landing or pair with fewer cycles a day is never
  judged on its own (the car's figure still is).
- **Reference**: the median of the first ``REF_DAYS`` counted days of a figure (days of
  service, not calendar days), restarted by :meth:`Trends.restart` (a maintenance
  visit). Abnormal values never enter it: a value beyond ``GATE_K`` robust deviations
  of the figure's running baseline, or given while the matching anomaly warning is
  open (``learn=False``), is left out of the reference days.
- **Detector**: one-sided EWMA (λ = ``LAMBDA``) of the daily levels, started at the
  reference. In trend when the EWMA exceeds the reference by the figure's rise
  (``REL_RISE`` of the reference, at least its absolute floor) and by ``K_SIGMA``
  standard deviations of the EWMA (from the reference days' scatter) at ``HOLD_DAYS``
  day closes in a row; back to normal when below half that rise for ``HOLD_DAYS`` days.
  A *signed* figure (the leveling error, whose reference sits near zero) is judged both
  ways, by its absolute floor and ``K_SIGMA`` only: the median of a day's signed stop
  errors is precise to about half a millimetre, while the median of their sizes hardly
  moves with a bias of the stops as large as their scatter (about 9 mm at 256 counts/g:
  found by ``bench/bench_wear.py``).

The state is plain JSON, stored with the baselines (``buffer/baselines.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import mean, median
from typing import Any

from liftwatch.signal.baselines import MAD_SCALE, RobustBaseline

DAY_S = 86400.0
MIN_DAY_N = 10
REF_DAYS = 7
LAMBDA = 0.6
REL_RISE = 0.15
K_SIGMA = 4.0
HOLD_DAYS = 2
GATE_K = 4.0
#: the day-to-day scatter of a reference is at least this fraction of it (7 days are few)
REL_SCATTER_FLOOR = 0.02
#: days of levels kept per figure for the condition message (and a look at the ramp)
KEEP_DAYS = 14


@dataclass(frozen=True)
class Figure:
    """How one family of figures is judged: its event code, the smallest rise that
    counts as wear (absolute, in the figure's unit), and how a day is summarised."""

    code: str
    abs_rise: float
    daily: str = "median"
    signed: bool = False    # judged both ways; the rise is absolute only


#: key prefix -> family (the key is the prefix, or prefix@landing / prefix@from>to)
FAMILIES: dict[str, Figure] = {
    "door_open_s": Figure("door_open_trend", 0.2),
    "door_close_s": Figure("door_close_trend", 0.2),
    "reopen_rate": Figure("reopen_trend", 0.1, "mean"),
    "vib_z": Figure("vibration_trend", 0.02),
    "vib_xy": Figure("vibration_trend", 0.02),
    "a_max": Figure("acceleration_trend", 0.05),
    "d_max": Figure("acceleration_trend", 0.05),
    "level_mm": Figure("leveling_trend", 3.0, signed=True),
    "run_s": Figure("run_time_trend", 0.5),
}
CODES = tuple(sorted({f.code for f in FAMILIES.values()}))
#: the version of the saved state, and the version each family last changed meaning in:
#: a track saved before that is learned again (``level_mm`` was |error| in version 1;
#: judged signed against a reference of sizes, every upgraded lift would be in trend)
VERSION = 2
CHANGED_IN = {"level_mm": 2}


def family(key: str) -> Figure:
    return FAMILIES[key.split("@", 1)[0]]


class Track:
    """One figure: today's values, the reference, the EWMA and the trend state."""

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        s = state if isinstance(state, dict) else {}
        self.today: list[float] = []
        self.ref_days: list[float] = _floats(s.get("ref_days"))[:REF_DAYS]
        self.gate = RobustBaseline(_floats(s.get("gate")))
        self.ewma: float | None = _num(s.get("ewma"))
        self.days: list[float] = _floats(s.get("days"))[-KEEP_DAYS:]
        self.n_last = int(_num(s.get("n_last")) or 0)
        self.above = int(_num(s.get("above")) or 0)
        self.below = int(_num(s.get("below")) or 0)
        self.trend = bool(s.get("trend", False))

    # -- reference
    def ready(self) -> bool:
        return len(self.ref_days) >= REF_DAYS

    def reference(self) -> tuple[float, float]:
        """(reference level, day-to-day standard deviation) of the reference days."""
        ref = median(self.ref_days)
        mad = median(abs(v - ref) for v in self.ref_days) * MAD_SCALE
        return ref, max(mad, abs(ref) * REL_SCATTER_FLOOR, 1e-9)

    def threshold(self, fig: Figure) -> float:
        """The rise over the reference that is wear (see the module doc)."""
        ref, sd = self.reference()
        sd_ewma = sd * math.sqrt(LAMBDA / (2.0 - LAMBDA))
        rel = 0.0 if fig.signed else REL_RISE * abs(ref)
        return max(rel, fig.abs_rise, K_SIGMA * sd_ewma)

    def add(self, value: float, learn: bool, gated: bool = True) -> None:
        """A value of today; ``learn=False`` (an anomaly warning open) keeps it out of the
        reference days, and so does the gate (an outlier of the running baseline; not
        for counts such as reopens, mostly 0, where every 1 would be an "outlier")."""
        if not self.ready():
            if not learn:
                return
            b = self.gate
            if gated and b.ready():
                med, sd = b.centre_spread()
                if abs(value - med) > GATE_K * sd:
                    return
            b.learn(value)
        self.today.append(float(value))

    def close_day(self, fig: Figure) -> str | None:
        """End of a day: None, "raise" or "clear" (the trend state changed)."""
        vals, self.today = self.today, []
        if len(vals) < MIN_DAY_N:
            return None
        level = mean(vals) if fig.daily == "mean" else median(vals)
        self.n_last = len(vals)
        self.days = (self.days + [round(level, 6)])[-KEEP_DAYS:]
        if not self.ready():
            self.ref_days.append(level)
            if self.ready():
                self.ewma = self.reference()[0]
            return None
        ref, _sd = self.reference()
        self.ewma = LAMBDA * level + (1.0 - LAMBDA) * (ref if self.ewma is None else self.ewma)
        excess, h = self.ewma - ref, self.threshold(fig)
        if fig.signed:
            excess = abs(excess)
        self.above = self.above + 1 if excess >= h else 0
        self.below = self.below + 1 if excess < h / 2.0 else 0
        if not self.trend and self.above >= HOLD_DAYS:
            self.trend = True
            return "raise"
        if self.trend and self.below >= HOLD_DAYS:
            self.trend = False
            return "clear"
        return None

    def condition(self, fig: Figure) -> dict[str, Any]:
        """This figure's entry of the ``condition`` message."""
        out: dict[str, Any] = {"state": "learning" if not self.ready() else
                               "trend" if self.trend else "normal",
                               "ref_days": len(self.ref_days), "n": self.n_last}
        if self.days:
            out["day"] = self.days[-1]
        if self.ready() and self.ewma is not None:
            ref, _ = self.reference()
            h = self.threshold(fig)
            out.update(ref=round(ref, 4), level=round(self.ewma, 4),
                       ratio=round(self.ewma / ref, 3) if ref and not fig.signed else None,
                       limit=round(ref + h, 4))
            if fig.signed:
                out["limit_low"] = round(ref - h, 4)
        return out

    def state(self) -> dict[str, Any]:
        return {"ref_days": [round(v, 6) for v in self.ref_days], "gate": self.gate.to_json(),
                "ewma": None if self.ewma is None else round(self.ewma, 6), "days": self.days,
                "n_last": self.n_last, "above": self.above, "below": self.below,
                "trend": self.trend}


class Trends:
    """All wear figures of one lift; fed with trip and door records, closed by day.

    Returns event *requests* ``(action, code, detail)`` for the pipeline's EventBook: a
    family's code is raised when its first figure enters a trend and cleared when none
    of its figures is in one.
    """

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        s = state if isinstance(state, dict) else {}
        saved = _num(s.get("version")) or 1
        self.tracks: dict[str, Track] = {}
        for k, v in (s.get("tracks") if isinstance(s.get("tracks"), dict) else {}).items():
            fam = k.split("@", 1)[0] if isinstance(k, str) else None
            if fam in FAMILIES and saved >= CHANGED_IN.get(fam, 1):
                self.tracks[k] = Track(v)
        self.restarts = int(_num(s.get("restarts")) or 0)
        self.day_start: float | None = None

    def _add(self, key: str, value: Any, learn: bool) -> None:
        if isinstance(value, int | float) and not isinstance(value, bool) \
                and math.isfinite(value):
            self.tracks.setdefault(key, Track()).add(float(value), learn,
                                                     family(key).daily == "median")

    def on_door(self, rec: dict[str, Any], learn: bool = True) -> None:
        floor = rec.get("floor")
        for k in ("open_s", "close_s"):
            self._add(f"door_{k}", rec.get(k), learn)
            if floor is not None:
                self._add(f"door_{k}@{floor}", rec.get(k), learn)
        self._add("reopen_rate", rec.get("reopens"), learn)

    def on_trip(self, rec: dict[str, Any], level_mm: float | None, *, learn_vib: bool = True,
                learn_level: bool = True) -> None:
        if rec.get("complete") is False:
            return
        vib = rec.get("vib_pp_a95") if isinstance(rec.get("vib_pp_a95"), dict) else {}
        self._add("vib_z", vib.get("z"), learn_vib)
        xy = [v for v in (vib.get("x"), vib.get("y")) if isinstance(v, int | float)]
        if xy:
            self._add("vib_xy", max(xy), learn_vib)
        for k in ("a_max", "d_max"):
            v = rec.get(k)
            self._add(k, abs(v) if isinstance(v, int | float) else None, True)
        if level_mm is not None:
            self._add("level_mm", level_mm, learn_level)
            if rec.get("dir") in ("up", "down"):
                self._add(f"level_mm@{rec['dir']}", level_mm, learn_level)
        if rec.get("from") is not None and rec.get("to") is not None \
                and rec.get("from") != rec.get("to"):
            self._add(f"run_s@{rec['from']}>{rec['to']}", rec.get("duration_s"), True)

    def tick(self, t: float) -> list[tuple[str, str, dict[str, Any]]]:
        """Close the days that ended by ``t``; the event requests they give."""
        if self.day_start is None:
            self.day_start = t
            return []
        out: list[tuple[str, str, dict[str, Any]]] = []
        while t - self.day_start >= DAY_S:
            self.day_start += DAY_S
            out += self.close_day()
        return out

    def close_day(self) -> list[tuple[str, str, dict[str, Any]]]:
        was = self.open_codes()
        raised: dict[str, str] = {}
        for key, tr in sorted(self.tracks.items()):
            if tr.close_day(family(key)) == "raise":
                raised.setdefault(family(key).code, key)
        now = self.open_codes()
        out: list[tuple[str, str, dict[str, Any]]] = []
        for code in sorted(now - was):
            key = raised[code]
            out.append(("raise", code, {"figure": key, **self.tracks[key].condition(family(key)),
                                        "in_trend": self.in_trend(code)}))
        for code in sorted(was - now):
            out.append(("clear", code, {}))
        return out

    def in_trend(self, code: str) -> list[str]:
        return sorted(k for k, tr in self.tracks.items() if tr.trend and family(k).code == code)

    def open_codes(self) -> set[str]:
        return {family(k).code for k, tr in self.tracks.items() if tr.trend}

    def restart(self) -> list[tuple[str, str, dict[str, Any]]]:
        """A maintenance visit restored the lift: every reference is learned again."""
        out = [("clear", c, {"maintenance": True}) for c in sorted(self.open_codes())]
        self.tracks = {}
        self.restarts += 1
        return out

    def condition(self) -> dict[str, Any]:
        """Each figure's level against its reference (the ``condition`` message body);
        figures that never had a counted day (a landing pair seldom run) are left out."""
        return {"figures": {k: tr.condition(family(k)) for k, tr in sorted(self.tracks.items())
                            if tr.days},
                "restarts": self.restarts}

    def state(self) -> dict[str, Any]:
        return {"version": VERSION, "restarts": self.restarts,
                "tracks": {k: tr.state() for k, tr in self.tracks.items()}}


def _num(v: Any) -> float | None:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else None


def _floats(v: Any) -> list[float]:
    return [float(x) for x in v if _num(x) is not None] if isinstance(v, list) else []
