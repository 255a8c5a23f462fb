"""The terminal's digital inputs: sampled, debounced, timestamped on the monotonic clock.

:class:`DigitalInputs` samples every configured input through a pin backend
(:mod:`liftwatch.drivers.pins`) at ``InputsSettings.sample_hz`` and emits
``(t, {name: level})`` for each debounced change, ``level`` in the sense of
trace-format.md (1 = the input's active state; ``active_low`` wiring is inverted here).

Debounce is counted in samples: a new level counts once it has been read on
``ceil(debounce_ms * sample_hz / 1000)`` consecutive samples. So a pulse at least
``debounce_ms`` wide always passes, one shorter than ``debounce_ms - 1/sample_hz``
never does (between the two it depends on where the samples fall: the sampling
period is the resolution). The change is timestamped with the time of the FIRST
sample that saw the new level — the moment the contact moved, to one sample period —
not the later moment debounce confirmed it; consumers that need records in time
order (the live source) hold them back by at least the longest debounce.

The first emission gives every readable input's level (trace-format.md: the first
``di`` line names every input). Inputs that are configured but absent or failing are
left out of the emissions and reported by :meth:`DigitalInputs.health`: a missing
contact is never guessed as open or closed. A failing input that recovers is emitted
again with its level at the time it came back.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from liftwatch.drivers.pins import BlinkaPins, PinBackend, PinError, SimulatedPins
from liftwatch.drivers.settings import InputsSettings, InputWiring

__all__ = ["BlinkaPins", "Debouncer", "DigitalInputs", "PinBackend", "PinError",
           "SimulatedPins", "debounce_samples"]

log = logging.getLogger(__name__)

Change = tuple[float, dict[str, int]]


def debounce_samples(debounce_ms: float, sample_hz: float) -> int:
    """Consecutive samples a level must be read on to count (at least 1)."""
    return max(1, math.ceil(debounce_ms * sample_hz / 1000.0 - 1e-9))


class Debouncer:
    """Debounce of one input, counted in samples (see the module docstring).

    ``update(level, t)`` returns ``(t_first_seen, level)`` when a new level is
    confirmed, else ``None``. The first confirmed level (from unknown) is returned too.
    """

    def __init__(self, samples: int) -> None:
        if samples < 1:
            raise ValueError(f"debounce needs at least 1 sample, found {samples}")
        self.samples = samples
        self.level: int | None = None
        self._candidate: int | None = None
        self._since = 0.0
        self._count = 0

    @property
    def pending(self) -> int:
        """Samples the level now being confirmed has been read on (0: none pending)."""
        return self._count

    def reset(self) -> None:
        """Forget the level (the input failed): its next level is reported afresh."""
        self.level = None
        self._candidate = None
        self._count = 0

    def update(self, level: int, t: float) -> tuple[float, int] | None:
        if level == self.level:
            self._candidate = None
            self._count = 0
            return None
        if level != self._candidate:
            self._candidate, self._since, self._count = level, t, 0
        self._count += 1
        if self._count >= self.samples:
            self.level = level
            self._candidate = None
            self._count = 0
            return self._since, level
        return None


@dataclass
class _Input:
    name: str
    wiring: InputWiring
    debouncer: Debouncer
    state: str = "unset"  # unset | ok | absent | failing
    error: str = ""
    errors: int = 0
    changes: int = 0


class DigitalInputs:
    """Digital inputs over a pin backend; see the module docstring for the rules.

    Call :meth:`open` once, then either :meth:`poll` at the sample rate yourself
    (tests with a simulated clock) or :meth:`run` in a worker thread.
    """

    def __init__(self, wiring: Mapping[str, InputWiring], settings: InputsSettings,
                 pins: PinBackend, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.pins = pins
        self.clock = clock
        self._inputs = {
            name: _Input(name, w, Debouncer(debounce_samples(w.debounce_ms, settings.sample_hz)))
            for name, w in wiring.items()
        }
        self._initial_sent = False
        self._lock = threading.Lock()
        self.samples = 0
        self.late_samples = 0
        #: with an edge backend, how long a settled thread sleeps at most between samples
        self.idle_check_s = 1.0
        self.last_sample_t: float | None = None

    @property
    def names(self) -> list[str]:
        return list(self._inputs)

    @property
    def max_debounce_s(self) -> float:
        """Longest time a change can be held back by debounce (plus one sample)."""
        if not self._inputs:
            return 0.0
        n = max(i.debouncer.samples for i in self._inputs.values())
        return (n + 1) / self.settings.sample_hz

    def open(self) -> None:
        """Set up every pin; one that cannot be set up is reported absent, not raised."""
        for inp in self._inputs.values():
            try:
                self.pins.setup_input(inp.wiring.pin, inp.wiring.pull)
            except PinError as exc:
                inp.state, inp.error = "absent", str(exc)
                log.warning("input %s (pin %s) absent: %s", inp.name, inp.wiring.pin, exc)
            else:
                inp.state = "ok"

    def _read(self, inp: _Input) -> int | None:
        try:
            high = self.pins.read(inp.wiring.pin)
        except Exception as exc:  # any read failure is a failing input, never a dead loop
            if inp.state != "failing":
                log.warning("input %s (pin %s) failing: %s", inp.name, inp.wiring.pin, exc)
            inp.state, inp.error = "failing", str(exc)
            inp.errors += 1
            inp.debouncer.reset()
            return None
        if inp.state == "failing":
            log.warning("input %s (pin %s) reads again", inp.name, inp.wiring.pin)
        inp.state, inp.error = "ok", ""
        return int(high) ^ int(inp.wiring.active_low)

    def poll(self, now: float | None = None) -> list[Change]:
        """Sample every input once at ``now``; return the debounced changes, oldest first."""
        t = self.clock() if now is None else now
        confirmed: list[tuple[float, str, int]] = []
        with self._lock:
            self.samples += 1
            self.last_sample_t = t
            for inp in self._inputs.values():
                if inp.state == "absent":
                    continue
                level = self._read(inp)
                if level is None:
                    continue
                got = inp.debouncer.update(level, t)
                if got is not None:
                    confirmed.append((got[0], inp.name, got[1]))
            return self._emissions(confirmed)

    def _emissions(self, confirmed: list[tuple[float, str, int]]) -> list[Change]:
        if not self._initial_sent:
            readable = [i for i in self._inputs.values() if i.state == "ok"]
            if not readable or any(i.debouncer.level is None for i in readable):
                return []  # the first line must name every readable input: wait for all
            self._initial_sent = True
            t0 = max(t for t, _, _ in confirmed) if confirmed else self.last_sample_t or 0.0
            return [(t0, {i.name: int(i.debouncer.level or 0) for i in readable})]
        out: dict[float, dict[str, int]] = {}
        for t, name, level in sorted(confirmed):
            out.setdefault(t, {})[name] = level
            self._inputs[name].changes += 1
        return sorted(out.items())

    def levels(self) -> dict[str, int]:
        """Current debounced level of every readable input."""
        with self._lock:
            return {i.name: i.debouncer.level for i in self._inputs.values()
                    if i.state == "ok" and i.debouncer.level is not None}

    def settled(self) -> bool:
        """True when every readable input has a level and none is changing: nothing
        needs the next sample until a pin moves. A failing input does not hold the
        thread awake; it is retried at every idle check."""
        with self._lock:
            return self._initial_sent and all(
                i.debouncer.level is not None and i.debouncer.pending == 0
                for i in self._inputs.values() if i.state == "ok")

    def run(self, emit: Callable[[float, dict[str, int]], None], stop: threading.Event) -> None:
        """Sample at ``sample_hz`` until ``stop`` is set; call ``emit`` for each change.

        The schedule is absolute (no drift); when the thread falls behind by more than
        a few periods it skips ahead and counts the lost samples in ``late_samples``.
        With a backend that has edges, the thread sleeps while :meth:`settled` until a
        pin changes (the first sample is then taken at once, so the change is stamped
        when it happened) or ``idle_check_s`` passes (a failing input is still retried,
        a missed edge still seen). Between samples it sleeps with ``time.sleep``, which
        wakes a core for less than ``Event.wait``; ``stop`` is seen within one period.
        """
        period = 1.0 / self.settings.sample_hz
        edges = bool(getattr(self.pins, "edges", False))
        next_t = self.clock()
        while not stop.is_set():
            for t, levels in self.poll():
                emit(t, levels)
            if edges and self.settled():
                self.pins.wait_change(self.idle_check_s)  # type: ignore[attr-defined]
                next_t = self.clock()
                continue
            next_t += period
            now = self.clock()
            if now - next_t > 4 * period:
                skipped = int((now - next_t) / period)
                self.late_samples += skipped
                next_t += skipped * period
            delay = next_t - now
            if delay > 0:
                time.sleep(delay)

    def wake(self) -> None:
        """Wake :meth:`run` from an edge wait (stopping)."""
        interrupt = getattr(self.pins, "interrupt", None)
        if interrupt is not None:
            interrupt()

    def health(self) -> dict[str, Any]:
        """Per input: ok / absent / failing (with the error), read errors, changes."""
        with self._lock:
            inputs = {
                i.name: {"state": i.state, "pin": i.wiring.pin, "error": i.error,
                         "read_errors": i.errors, "changes": i.changes}
                for i in self._inputs.values()
            }
            last = self.last_sample_t
        bad = sorted(n for n, h in inputs.items() if h["state"] in ("absent", "failing"))
        age = None if last is None else round(max(0.0, self.clock() - last), 3)
        return {"backend": getattr(self.pins, "name", "?"), "sample_hz": self.settings.sample_hz,
                "samples": self.samples, "late_samples": self.late_samples,
                "last_sample_age_s": age, "ok": not bad, "faulty": bad, "inputs": inputs}

    def close(self) -> None:
        self.pins.close()
