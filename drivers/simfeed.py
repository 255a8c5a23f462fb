"""How another process drives the simulated inputs and accelerometer: the simulation feed.

The agent (``backend="simulated"``) listens on a Unix datagram socket
``<directory>/simfeed.sock``; the HIL rig or a test sends it JSON objects, one per
datagram (at most 64 KiB). Datagrams keep their boundaries and order, need no framing
and no connection, and a full receive queue blocks the sender instead of losing data.
Keys, all optional, applied in this order:

```
{"pins":     {"D17": 1, "D27": 0}}              electrical pin levels (1 = high)
{"acc":      [[gx, gy, gz], ...]}               samples in g, queued; the chip takes one
                                                per sample period, and when the queue runs
                                                dry it holds the last value
{"acc_hold": [gx, gy, gz]}                      drop the queue, hold this value
{"chip":     {"frozen": true, "io_error": "…"}}  chip faults (io_error null: heal)
{"ctl":      {"floor": "2", "door": 2, ...}}     the simulated controller's fields
                                                (trace-format.md ctl); null: it stops
                                                answering, an object: it answers again
```

A file ``<directory>/initial.json`` holding one such message, when present, is applied
as the receiver starts, before the terminal samples anything: the simulated inputs
then start at the lift's real levels, as wired inputs do, instead of their pull level.

Pin levels are electrical, as a rig's relay board drives them; :meth:`SimFeed.set_inputs`
turns input levels of trace-format.md into pin levels with the terminal's wiring.
A message that is not valid JSON or breaks these rules is counted in
``SimFeedReceiver.bad_messages`` with the reason in ``last_error``, logged once, and
ignored whole: the feed never crashes the agent.

**Several listeners.** A technician tool (``monitor``, ``check``, ``calibrate``) attached
to a running simulated terminal builds simulated devices of its own from the same
config: a second reader of the same inputs. It must neither take the terminal's socket
over nor remove it. So the first receiver of a directory owns ``simfeed.sock``; a
receiver that finds it owned by a live process listens on a socket of its own,
``simfeed.<pid>[-n].sock`` (a *tap*), and removes only its own socket when it stops (a
stale ``simfeed.sock``, whose owner died, is taken over). :class:`SimFeed` sends every
message to all of them: to the owner as before (a full queue blocks the sender, nothing
is lost), to a tap without waiting (a tool that does not keep up misses messages,
counted in ``SimFeed.tap_missed``, and never slows the terminal). A tap that appears
while the sender runs first gets the state so far (pins, pin faults, the last
accelerometer value, chip faults, controller), so it starts where the terminal is.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from liftwatch.drivers.pins import SimulatedPins
from liftwatch.drivers.settings import InputWiring
from liftwatch.drivers.simchips import QueueSource, SimChip
from liftwatch.drivers.threadname import name_native_thread

log = logging.getLogger(__name__)

SOCKET_NAME = "simfeed.sock"
INITIAL_NAME = "initial.json"
MAX_DATAGRAM = 65536
CHUNK_SAMPLES = 1000
#: How long the receiver may sleep in recv before it looks at its stop flag anyway.
STOP_BACKSTOP_S = 5.0


class SimFeedError(ValueError):
    """A feed message that breaks the rules, or a feed that cannot be reached."""


#: A tap's socket: ``simfeed.<pid>.sock``, ``simfeed.<pid>-2.sock``, ...
TAP_GLOB = "simfeed.*.sock"
#: How often a sender looks for new or gone listeners even when the directory's time
#: did not change (a directory's mtime moves in kernel ticks: two changes in one tick
#: leave one mark).
RESCAN_S = 0.5


def socket_path(directory: str | Path, name: str = SOCKET_NAME) -> Path:
    path = Path(directory) / name
    if len(os.fsencode(path)) > 107:
        raise SimFeedError(f"socket path {path} is too long for a Unix socket (max 107 bytes)")
    return path


def listening(path: Path) -> bool:
    """Whether a process has ``path`` bound now (a stale socket file refuses a connect)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            return False
        except OSError:  # not a socket, no permission: someone else's, keep away
            return True
    return True


_NUMBERS = (int, float)  # as JSON decodes them; a bool is not a number here


def _g3(v: Any, what: str) -> tuple[float, float, float]:
    """One [gx, gy, gz] of finite numbers (checked without a generator: the HIL rig sends
    400 samples a second into the simulated terminal's own process)."""
    if type(v) is list and len(v) == 3:
        x, y, z = v
        if type(x) in _NUMBERS and type(y) in _NUMBERS and type(z) in _NUMBERS:
            try:
                g = (float(x), float(y), float(z))
            except OverflowError:  # an integer beyond a float's range: refused below
                pass
            else:
                if math.isfinite(g[0]) and math.isfinite(g[1]) and math.isfinite(g[2]):
                    return g
    raise SimFeedError(f"{what} must be [gx, gy, gz] finite numbers, found {v!r}")


def parse_message(data: bytes) -> dict[str, Any]:
    """Decode and validate one datagram; raise SimFeedError naming the problem."""
    try:
        msg = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SimFeedError(f"not a JSON object: {exc}") from exc
    if not isinstance(msg, dict):
        raise SimFeedError("a feed message must be a JSON object")
    unknown = set(msg) - {"pins", "acc", "acc_hold", "chip", "ctl", "pins_fault"}
    if unknown:
        raise SimFeedError(f"unknown keys {sorted(unknown)}: pins, acc, acc_hold, chip, ctl, "
                           "pins_fault")
    out: dict[str, Any] = {}
    if "pins" in msg:
        pins = msg["pins"]
        if not isinstance(pins, dict) or not all(
                isinstance(k, str) and v in (0, 1) and not isinstance(v, float)
                for k, v in pins.items()):
            raise SimFeedError(f"pins must be an object of pin: 0|1, found {pins!r}")
        out["pins"] = {k: bool(v) for k, v in pins.items()}
    if "acc" in msg:
        acc = msg["acc"]
        if not isinstance(acc, list):
            raise SimFeedError("acc must be a list of [gx, gy, gz]")
        out["acc"] = [_g3(s, "an acc sample") for s in acc]
    if "acc_hold" in msg:
        out["acc_hold"] = _g3(msg["acc_hold"], "acc_hold")
    if "chip" in msg:
        chip = msg["chip"]
        if not isinstance(chip, dict) or set(chip) - {"frozen", "io_error"}:
            raise SimFeedError('chip must be an object with "frozen" and/or "io_error"')
        if "frozen" in chip and not isinstance(chip["frozen"], bool):
            raise SimFeedError("chip.frozen must be true or false")
        if chip.get("io_error") is not None and not isinstance(chip["io_error"], str):
            raise SimFeedError("chip.io_error must be a text or null")
        out["chip"] = chip
    if "pins_fault" in msg:
        faults = msg["pins_fault"]
        if not isinstance(faults, dict) or not all(
                isinstance(k, str) and (v is None or isinstance(v, str))
                for k, v in faults.items()):
            raise SimFeedError(f"pins_fault must be an object of pin: text|null, found {faults!r}")
        out["pins_fault"] = faults
    if "ctl" in msg:
        if msg["ctl"] is not None and not isinstance(msg["ctl"], dict):
            raise SimFeedError("ctl must be an object of controller fields or null")
        out["ctl"] = msg["ctl"]
    return out


class SimFeedReceiver:
    """Applies feed messages to the simulated pins, sample queue and chip (a thread)."""

    def __init__(self, directory: str | Path, pins: SimulatedPins | None = None,
                 accel: QueueSource | None = None, chip: SimChip | None = None,
                 controller: Any | None = None) -> None:
        """``controller``: a SimulatedController (``set(**fields)``, ``answering``)."""
        self.directory = Path(directory)
        self.path = socket_path(directory)  # where it listens once started (a tap: its own)
        self.pins, self.accel, self.chip = pins, accel, chip
        self.controller = controller
        self.messages = 0
        self.bad_messages = 0
        self.last_error = ""
        self.tap = False  #: another live receiver owns simfeed.sock: this one is a tap
        self._sock: socket.socket | None = None
        self._ino: int | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def _bind(self, sock: socket.socket) -> None:
        """Own ``simfeed.sock`` if nobody live does (a stale one is replaced), else bind a
        tap of this process; bind() is atomic, so two starting at once never share."""
        owner = socket_path(self.directory)
        for _ in range(3):
            try:
                sock.bind(str(owner))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                if listening(owner):
                    break
                with contextlib.suppress(FileNotFoundError):
                    owner.unlink()  # a stale socket of an earlier run
                continue
            self.path = owner
            return
        else:
            raise SimFeedError(f"cannot listen on {owner}: it keeps changing")
        self.tap = True
        for n in range(1, 1000):
            name = f"simfeed.{os.getpid()}.sock" if n == 1 else f"simfeed.{os.getpid()}-{n}.sock"
            path = socket_path(self.directory, name)
            try:
                sock.bind(str(path))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                if not listening(path):  # a stale tap of an earlier process with our pid
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                    sock.bind(str(path))
                else:
                    continue
            self.path = path
            return
        raise SimFeedError(f"no free tap socket name in {self.directory}")

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._bind(sock)
        except BaseException:
            sock.close()
            raise
        self._ino = os.stat(self.path).st_ino
        if self.tap:
            log.info("simulation feed %s is another process's: listening beside it on %s",
                     socket_path(self.directory), self.path.name)
        # recv blocks until a datagram comes: stop() wakes it with an empty one. The
        # timeout is only a backstop, so an idle feed does not wake the agent 10 times
        # a second (it used to poll with 0.1 s: 10 wake-ups/s on the rig, for nothing).
        sock.settimeout(STOP_BACKSTOP_S)
        self._sock = sock
        initial = self.path.parent / INITIAL_NAME
        if initial.exists():
            self.handle(initial.read_bytes())
        self._thread = threading.Thread(target=self._serve, name="simfeed", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        assert self._sock is not None
        name_native_thread()
        while not self._stop.is_set():
            try:
                data = self._sock.recv(MAX_DATAGRAM)
            except TimeoutError:
                continue
            except OSError:
                break
            if self._stop.is_set() or not data:  # stop()'s wake-up
                break
            self.handle(data)

    def handle(self, data: bytes) -> bool:
        """Apply one datagram; False (counted, logged) when it is refused."""
        try:
            msg = parse_message(data)
            if msg.get("ctl") and self.controller is not None:
                self.controller.set(**msg["ctl"])  # validates every field first
        except (SimFeedError, ValueError, TypeError) as exc:
            self.bad_messages += 1
            self.last_error = str(exc)
            if self.bad_messages == 1 or self.bad_messages % 100 == 0:
                log.warning("simulation feed: message refused (%d so far): %s",
                            self.bad_messages, exc)
            return False
        self.messages += 1
        if "pins" in msg and self.pins is not None:
            self.pins.set_levels(msg["pins"])
        if "pins_fault" in msg and self.pins is not None:
            for pin, reason in msg["pins_fault"].items():
                self.pins.fail(pin, reason)
        if self.accel is not None:
            if "acc" in msg:
                self.accel.push(msg["acc"])
            if "acc_hold" in msg:
                self.accel.hold(msg["acc_hold"])
        if "chip" in msg and self.chip is not None:
            if "frozen" in msg["chip"]:
                self.chip.freeze(msg["chip"]["frozen"])
            if "io_error" in msg["chip"]:
                self.chip.fail_io(msg["chip"]["io_error"])
        if "ctl" in msg and self.controller is not None:
            self.controller.answering = msg["ctl"] is not None
        return True

    def stats(self) -> dict[str, Any]:
        return {"messages": self.messages, "bad_messages": self.bad_messages,
                "last_error": self.last_error}

    def stop(self) -> None:
        """Stop listening and remove this receiver's own socket, never another's: the
        path is unlinked only while it is still the socket this receiver bound."""
        self._stop.set()
        if self._thread is not None and self._thread.is_alive() and self._own_path():
            with contextlib.suppress(OSError), \
                    socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as poke:
                poke.sendto(b"", str(self.path))  # wakes the blocked recv
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._sock is not None:
            self._sock.close()
        if self._own_path():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self._ino = None

    def _own_path(self) -> bool:
        """Whether ``path`` is still the socket this receiver bound."""
        try:
            return self._ino is not None and os.stat(self.path).st_ino == self._ino
        except FileNotFoundError:
            return False


def write_initial(directory: str | Path, msg: Mapping[str, Any]) -> Path:
    """Write the state a simulated terminal starts in (before it is started)."""
    path = Path(directory) / INITIAL_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(msg, separators=(",", ":")))
    return path


def input_pins(levels: Mapping[str, int], wiring: Mapping[str, InputWiring]) -> dict[str, int]:
    """Input levels (1 = active, trace-format.md) to pin levels through the wiring."""
    pins = {}
    for name, level in levels.items():
        if name not in wiring:
            raise SimFeedError(f"input {name!r} is not wired on this terminal")
        w = wiring[name]
        pins[w.pin] = int(bool(level)) ^ int(w.active_low)
    return pins


class SimFeed:
    """The sending side, for the HIL rig and the tests: every message goes to the owner
    of ``simfeed.sock`` and to every tap beside it (module docstring)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path = socket_path(directory)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._taps: set[str] = set()
        self._scan_key: tuple[int, float] | None = None
        self._state: dict[str, Any] = {}  # what a tap that comes later is sent first
        self.tap_missed = 0  #: messages a tap's full queue did not take
        self._rescan(greet=False)

    def _rescan(self, greet: bool = True) -> None:
        now = time.monotonic()
        try:
            mtime = os.stat(self.directory).st_mtime_ns
        except FileNotFoundError:
            mtime = -1
        if self._scan_key is not None and self._scan_key[0] == mtime \
                and now - self._scan_key[1] < RESCAN_S:
            return
        self._scan_key = (mtime, now)
        taps = {str(p) for p in self.directory.glob(TAP_GLOB)} if mtime >= 0 else set()
        new = taps - self._taps
        self._taps = taps
        if greet and self._state:
            hello = json.dumps(self._state, separators=(",", ":")).encode()
            for path in new:
                self._to_tap(hello, path)

    def _to_tap(self, data: bytes, path: str) -> bool:
        try:
            self._sock.sendto(data, socket.MSG_DONTWAIT, path)
        except BlockingIOError:
            self.tap_missed += 1
        except OSError:  # gone (its tool ended) or stale: forget it until it comes back
            self._taps.discard(path)
            return False
        return True

    def _remember(self, data: bytes) -> None:
        """Keep the state a message sets (one the receivers will refuse sets nothing)."""
        try:
            msg = parse_message(data)
        except SimFeedError:
            return
        st = self._state
        if "pins" in msg:
            st.setdefault("pins", {}).update({k: int(v) for k, v in msg["pins"].items()})
        if "pins_fault" in msg:
            st.setdefault("pins_fault", {}).update(msg["pins_fault"])
        if msg.get("acc"):
            st["acc_hold"] = list(msg["acc"][-1])
        if "acc_hold" in msg:
            st["acc_hold"] = list(msg["acc_hold"])
        if "chip" in msg:
            st.setdefault("chip", {}).update(msg["chip"])
        if "ctl" in msg:
            ctl = msg["ctl"]
            st["ctl"] = None if ctl is None else {**(st.get("ctl") or {}), **ctl}

    def send(self, msg: Mapping[str, Any]) -> None:
        data = json.dumps(msg, separators=(",", ":")).encode()
        if len(data) > MAX_DATAGRAM:
            raise SimFeedError(f"message of {len(data)} bytes exceeds {MAX_DATAGRAM}")
        self._rescan()
        self._remember(data)
        delivered = 0
        for path in sorted(self._taps):
            delivered += self._to_tap(data, path)
        try:
            self._sock.sendto(data, str(self.path))
            delivered += 1
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            if not delivered:
                raise SimFeedError(f"no simulated terminal listens on {self.path}: "
                                   f"{exc}") from exc

    def set_pins(self, levels: Mapping[str, int | bool]) -> None:
        self.send({"pins": {k: int(bool(v)) for k, v in levels.items()}})

    def set_inputs(self, levels: Mapping[str, int], wiring: Mapping[str, InputWiring]) -> None:
        """Input levels (1 = active, trace-format.md) to pin levels through the wiring."""
        self.set_pins(input_pins(levels, wiring))

    def push_accel(self, samples_g: list[list[float]] | list[tuple[float, float, float]]) -> None:
        """Queue samples (in g) for the simulated chip, in datagrams of 1000."""
        for i in range(0, len(samples_g), CHUNK_SAMPLES):
            self.send({"acc": [list(s) for s in samples_g[i:i + CHUNK_SAMPLES]]})

    def pin_fault(self, pin: str, reason: str | None) -> None:
        """Make reads of ``pin`` fail with ``reason`` (unplugged input), or heal with None."""
        self.send({"pins_fault": {pin: reason}})

    def hold_accel(self, g: tuple[float, float, float]) -> None:
        self.send({"acc_hold": list(g)})

    def chip_fault(self, *, frozen: bool | None = None, io_error: str | None = "") -> None:
        """Freeze/unfreeze the chip, or make its I/O fail (text) or heal (None)."""
        chip: dict[str, Any] = {}
        if frozen is not None:
            chip["frozen"] = frozen
        if io_error != "":
            chip["io_error"] = io_error
        self.send({"chip": chip})

    def set_controller(self, fields: Mapping[str, Any] | None) -> None:
        """Set fields of the simulated controller, or stop its answers (``None``)."""
        self.send({"ctl": None if fields is None else dict(fields)})

    def close(self) -> None:
        self._sock.close()
