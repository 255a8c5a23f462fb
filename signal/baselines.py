"""Learned baselines (median and MAD) and the "3 of the last 5" anomaly windows.

A baseline is kept per key (``trip:up:1>5:vib_z``, ``door:3:open_s``, ...) as the
last ``WINDOW`` accepted values; its centre is their median and its spread the
scaled median absolute deviation (1.4826·MAD, the robust standard deviation).

It must follow slow wear without learning a fault as normal, so:

- a value only enters the window *winsorised* to ``median ± CAP_K`` robust
  deviations, so one fault day moves the median by a bounded step, not to the fault;
- nothing is learned while the matching warning is open (the caller passes
  ``learn=False``);
- a baseline is used only after ``MIN_N`` values (a handful of trips: a new lift's
  own baseline must be usable on its first day), and its spread has a floor
  (``MIN_REL_SPREAD`` of the median), so a perfectly regular lift does not call
  every tiny change an anomaly. A caller may ask for a larger margin (``min_rise``:
  the smallest rise over the median it calls abnormal, e.g. the sensor's resolution
  or a fraction of the median), because a freshly learned baseline of a few very
  regular values has a MAD far below the quantity's real trip-to-trip spread.

The state is plain JSON (lists and numbers) so ``buffer/baselines.py`` can store it.
"""

from __future__ import annotations

import math
from collections import deque
from statistics import median
from typing import Any

WINDOW = 60
MIN_N = 5
CAP_K = 3.0
MIN_REL_SPREAD = 0.05
MAD_SCALE = 1.4826


class RobustBaseline:
    """Median and robust deviation of the last WINDOW accepted values of one quantity."""

    def __init__(self, values: list[float] | None = None) -> None:
        self.values: deque[float] = deque((float(v) for v in values or []), maxlen=WINDOW)
        self._cache: tuple[float, float] | None = None

    def ready(self) -> bool:
        return len(self.values) >= MIN_N

    def centre_spread(self) -> tuple[float, float]:
        """(median, robust deviation) of the window; the deviation has a floor."""
        if self._cache is None:
            vals = list(self.values)
            med = median(vals)
            mad = median(abs(v - med) for v in vals) * MAD_SCALE
            self._cache = (med, max(mad, abs(med) * MIN_REL_SPREAD, 1e-9))
        return self._cache

    def is_anomalous(self, value: float, k: float, min_rise: float = 0.0) -> bool:
        """Above the median by more than ``k`` robust deviations and by more than
        ``min_rise`` (only once ready)."""
        if not self.ready():
            return False
        med, sd = self.centre_spread()
        return value > med + max(k * sd, min_rise)

    def learn(self, value: float) -> None:
        if self.ready():
            med, sd = self.centre_spread()
            value = min(max(value, med - CAP_K * sd), med + CAP_K * sd)
        self.values.append(float(value))
        self._cache = None

    def to_json(self) -> list[float]:
        return [round(v, 6) for v in self.values]


class Baselines:
    """All baselines of one lift, by key; JSON-able."""

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        self.by_key: dict[str, RobustBaseline] = {}
        stored = state.get("baselines") if isinstance(state, dict) else None
        for k, v in (stored if isinstance(stored, dict) else {}).items():
            if isinstance(v, list) and all(isinstance(x, int | float) and not isinstance(x, bool)
                                           and math.isfinite(x) for x in v):
                self.by_key[str(k)] = RobustBaseline(v)

    def get(self, key: str) -> RobustBaseline:
        b = self.by_key.get(key)
        if b is None:
            b = self.by_key[key] = RobustBaseline()
        return b

    def state(self) -> dict[str, Any]:
        return {"version": 1, "baselines": {k: b.to_json() for k, b in self.by_key.items()}}


class AnomalyWindow:
    """``hits`` abnormal among the last ``window`` raise; ``clear_n`` normal in a row clear."""

    def __init__(self, window: int, hits: int, clear_n: int) -> None:
        self.last: deque[bool] = deque(maxlen=window)
        self.hits = hits
        self.clear_n = clear_n
        self.normal_run = 0

    def add(self, abnormal: bool) -> None:
        self.last.append(abnormal)
        self.normal_run = 0 if abnormal else self.normal_run + 1

    def should_raise(self) -> bool:
        return sum(self.last) >= self.hits

    def should_clear(self) -> bool:
        return self.normal_run >= self.clear_n
