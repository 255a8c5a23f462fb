"""Pin backends for the digital inputs: one small interface, a real and a simulated backend.

The gpiozero pin-factory model: :class:`~liftwatch.drivers.inputs.DigitalInputs` reads
electrical levels through a backend and never knows which one it has, so the tests and
the HIL rig run the same input code as the terminal.

- :class:`BlinkaPins` drives the terminal's GPIO through Adafruit Blinka (``board`` and
  ``digitalio``). Those modules are imported only here and only when a pin is set up,
  so the agent starts on a machine with no GPIO at all (the pin is then reported
  absent, never guessed).
- :class:`SimulatedPins` holds levels in memory; a test sets them directly, another
  process through :mod:`liftwatch.drivers.simfeed`.

Levels are electrical (``True`` = pin high). Polarity is applied by the inputs, not here.

**Edges.** A backend that can tell when a pin changes (``edges = True``) lets the inputs
sleep while every contact is steady instead of waking at the sample rate: waking 200
times a second costs a Pi-class core more than everything else the inputs do. Such a
backend has ``wait_change(timeout)`` (True when a pin may have changed since the last
call) and ``interrupt()`` (wakes a waiter, used to stop). :class:`SimulatedPins` has
edges; :class:`BlinkaPins` has none (``digitalio`` offers no edge events), so the
inputs poll it at the sample rate.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Protocol

PULLS = ("up", "down", "none")


class PinError(RuntimeError):
    """A pin that cannot be set up or read: absent on this board, or failing."""


class PinBackend(Protocol):
    """What the digital inputs need from a pin backend."""

    name: str
    #: True when the backend has ``wait_change`` and ``interrupt`` (module docstring)
    edges: bool

    def setup_input(self, pin: str, pull: str) -> None:
        """Make ``pin`` an input with the given pull (up, down, none); raise PinError."""

    def read(self, pin: str) -> bool:
        """Electrical level of a set-up pin; raise PinError when it cannot be read."""

    def close(self) -> None:
        """Release every pin."""


def _check_pull(pull: str) -> None:
    if pull not in PULLS:
        raise PinError(f"pull must be one of {', '.join(PULLS)}, found {pull!r}")


class SimulatedPins:
    """Pins in memory, set by a test or by the simulation feed; thread-safe.

    A pin nobody has set reads as its pull makes it (up: high, down/none: low), as an
    open contact would. ``remove(pin)`` makes a pin absent (set-up fails) and
    ``fail(pin)`` makes its reads raise, so the failure paths are testable.
    """

    name = "simulated"
    edges = True

    def __init__(self, levels: dict[str, bool | int] | None = None) -> None:
        self._lock = threading.Lock()
        self._levels: dict[str, bool] = {k: bool(v) for k, v in (levels or {}).items()}
        self._pulls: dict[str, str] = {}
        self._absent: set[str] = set()
        self._failing: dict[str, str] = {}
        self._changed = threading.Event()
        self.reads = 0

    # -- driven by tests and the simulation feed --------------------------------------
    def set_level(self, pin: str, level: bool | int) -> None:
        self.set_levels({pin: level})

    def set_levels(self, levels: dict[str, bool | int]) -> None:
        with self._lock:
            changed = False
            for pin, level in levels.items():
                changed |= self._levels.get(pin) != bool(level)
                self._levels[pin] = bool(level)
        if changed:
            self._changed.set()

    def remove(self, pin: str) -> None:
        """Make ``pin`` absent from the board: set-up fails."""
        with self._lock:
            self._absent.add(pin)

    def fail(self, pin: str, reason: str | None = "read error") -> None:
        """Make reads of ``pin`` raise (``reason``), or work again with ``None``."""
        with self._lock:
            if reason is None:
                self._failing.pop(pin, None)
            else:
                self._failing[pin] = reason
        self._changed.set()

    # -- edges -------------------------------------------------------------------------
    def wait_change(self, timeout: float) -> bool:
        """Sleep until a level changes or ``timeout`` passes; True on a change.

        The flag is cleared before the caller reads the pins, so a change that lands
        after the clear is either seen by that read or wakes the next call."""
        if self._changed.wait(timeout):
            self._changed.clear()
            return True
        return False

    def interrupt(self) -> None:
        """Wake a ``wait_change`` (stopping)."""
        self._changed.set()

    # -- PinBackend --------------------------------------------------------------------
    def setup_input(self, pin: str, pull: str) -> None:
        _check_pull(pull)
        with self._lock:
            if pin in self._absent:
                raise PinError(f"pin {pin} does not exist on the simulated board")
            self._pulls[pin] = pull

    def read(self, pin: str) -> bool:
        with self._lock:
            self.reads += 1
            if pin not in self._pulls:
                raise PinError(f"pin {pin} is not set up")
            if pin in self._failing:
                raise PinError(f"pin {pin}: {self._failing[pin]}")
            if pin in self._levels:
                return self._levels[pin]
            return self._pulls[pin] == "up"

    def close(self) -> None:
        with self._lock:
            self._pulls.clear()


class BlinkaPins:
    """The terminal's GPIO through Adafruit Blinka (``board`` + ``digitalio``).

    On a machine whose board Blinka does not know, or that lacks the named pin, set-up
    raises :class:`PinError` saying so; the inputs report that pin absent.
    """

    name = "blinka"
    edges = False  # digitalio has no edge events: the inputs poll at the sample rate

    def __init__(self) -> None:
        self._pins: dict[str, Any] = {}

    @staticmethod
    def _modules() -> tuple[Any, Any]:
        try:
            import board
            import digitalio
        except (ImportError, RuntimeError, NotImplementedError, OSError) as exc:
            raise PinError(f"no GPIO through Blinka on this machine: {exc}") from exc
        return board, digitalio

    def setup_input(self, pin: str, pull: str) -> None:
        _check_pull(pull)
        board, digitalio = self._modules()
        board_pin = getattr(board, pin, None)
        if board_pin is None:
            raise PinError(f"pin {pin} does not exist on this board "
                           f"({getattr(board, 'board_id', 'unknown board')})")
        try:
            dio = digitalio.DigitalInOut(board_pin)
            dio.switch_to_input(pull={"up": digitalio.Pull.UP, "down": digitalio.Pull.DOWN,
                                      "none": None}[pull])
        except Exception as exc:  # Blinka raises many kinds for a busy or missing line
            raise PinError(f"pin {pin} cannot be set up as an input: {exc}") from exc
        self._pins[pin] = dio

    def read(self, pin: str) -> bool:
        dio = self._pins.get(pin)
        if dio is None:
            raise PinError(f"pin {pin} is not set up")
        try:
            return bool(dio.value)
        except Exception as exc:  # a read error of any kind is a failing input
            raise PinError(f"pin {pin}: {exc}") from exc

    def close(self) -> None:
        for dio in self._pins.values():
            with contextlib.suppress(Exception):  # releasing is best effort at shutdown
                dio.deinit()
        self._pins.clear()
