"""Downlink commands on ``{prefix}/{lift_id}/cmd`` (platform-protocol.md).

A command is ``{"id": str, "op": str, "args": {...}}``. Everything that arrives is
parsed and checked here before anything is done, so that a malformed payload, an
unknown ``op`` or bad arguments are answered ``ok: false`` with a reason and change
nothing (the hypothesis test sends hundreds of them). Only then the op runs through
the :class:`CommandHost` (the runtime), which owns the state the ops touch.

No op takes a program or a path: the argument shapes below leave no room for one,
and ``config_set`` changes only the remote override in the agent's data directory
(``remote.toml``), never the technician's config file; it gets the command id, which
the change's ``detection_changed`` event names.

Hardening (platform-protocol.md, Commands):

- **At most once.** A command id that already ran (within 24 h, 4096 ids:
  :mod:`liftwatch.buffer.cmdids`) is not run again; the reply says so, with the first
  run's result when it was short.
- **Never retained.** A message the broker kept with the retain flag reaches every new
  subscription, so a retained ``config_set`` ran at every connect and undid a
  technician's fix. Retained commands are refused with a reply and never run.
- **Bounded.** Payloads over ``MAX_PAYLOAD`` are refused; the uplink never holds more
  than ``MAX_PACKET`` of one in memory (uplink.py).
- **Acks first.** The :class:`CommandInbox` has a lane of its own for ``ack`` (the
  EN 81-28 alarm acknowledgement): a flood of other commands fills and overflows only
  the other lane, and an ack for an alarm that is waiting for it is never dropped.
  Drops are counted (health ``link.commands_dropped``) and logged once a minute.
- **Escaped in logs.** Downlink strings (ids, reasons quoting them) are logged through
  ``repr``/:func:`printable`: a ``\n`` in an id cannot forge a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from liftwatch.buffer.cmdids import CommandIdStore

log = logging.getLogger(__name__)

MAX_PAYLOAD = 16 * 1024
#: The largest MQTT packet the agent takes in (advertised as the MQTT 5 Maximum Packet
#: Size in CONNECT; over MQTT 3.1.1 only this much of a larger packet is kept in memory,
#: the rest is read and discarded: uplink.py). Payloads between MAX_PAYLOAD and this
#: are read whole and refused with a reply naming the command.
MAX_PACKET = 64 * 1024
MAX_ID = 128
#: commands other than ack waiting to run; more are dropped (counted, logged once a minute)
OTHER_LANE_MAX = 64
#: acks waiting to run; beyond this, only acks for an alarm still waiting are taken
ACK_LANE_MAX = 1024
DROP_LOG_S = 60.0
#: how much of an oversized payload is read for its id: the longest id JSON-escaped
#: (6 characters a \uXXXX escape), its key, and a few short keys before it
ID_SCAN = 8 * MAX_ID + 256
OPS = ("ack", "snapshot", "self_test", "config_get", "config_set", "maintenance_done")


class CommandError(ValueError):
    """A command refused before it ran; ``str()`` is the reason sent to the platform."""


@dataclass(frozen=True)
class Command:
    id: str
    op: str
    args: dict[str, Any] = field(default_factory=dict)


class CommandHost(Protocol):
    """What the runtime provides to the ops. Each may be sync or async.

    ``ack_alarm`` returns False when no unacknowledged alarm has that eid;
    ``config_set`` raises :class:`CommandError` for a patch it refuses.
    """

    def ack_alarm(self, eid: str) -> bool | Awaitable[bool]: ...

    def snapshot(self) -> Any: ...

    def self_test(self) -> Any: ...

    def config_get(self) -> Any: ...

    def config_set(self, patch: dict[str, Any], cmd_id: str | None = None) -> Any: ...

    def maintenance_done(self) -> Any: ...


def printable(text: str, limit: int = 300) -> str:
    """A downlink string made safe for one log line: control characters (a newline
    would start a forged line) and non-ASCII escaped, the length cut."""
    return text[:limit].encode("unicode_escape").decode("ascii")


def _no_args(args: dict[str, Any]) -> dict[str, Any]:
    if args:
        raise CommandError(f"takes no arguments, got {sorted(args)[:5]}")
    return {}


def _ack_args(args: dict[str, Any]) -> dict[str, Any]:
    extra = set(args) - {"eid"}
    if extra:
        raise CommandError(f"unknown argument(s) {sorted(extra)[:5]}")
    eid = args.get("eid")
    if not isinstance(eid, str) or not eid or len(eid) > MAX_ID:
        raise CommandError('ack needs "eid": a non-empty string')
    return {"eid": eid}


def _json_depth(v: Any, depth: int = 0) -> int:
    if depth > 8:
        return depth
    if isinstance(v, dict):
        return max((_json_depth(x, depth + 1) for x in v.values()), default=depth + 1)
    if isinstance(v, list):
        return max((_json_depth(x, depth + 1) for x in v), default=depth + 1)
    return depth


def _set_args(args: dict[str, Any]) -> dict[str, Any]:
    extra = set(args) - {"patch"}
    if extra:
        raise CommandError(f"unknown argument(s) {sorted(extra)[:5]}")
    patch = args.get("patch")
    if not isinstance(patch, dict) or not patch:
        raise CommandError('config_set needs "patch": a non-empty object of sections')
    for section, values in patch.items():
        if not isinstance(values, dict) or not values:
            raise CommandError(f"patch.{section} must be a non-empty object of keys")
    if _json_depth(patch) > 3:
        raise CommandError("patch nests too deep (section.key = value expected)")
    return {"patch": patch}


_ARGS = {"ack": _ack_args, "snapshot": _no_args, "self_test": _no_args,
         "config_get": _no_args, "config_set": _set_args, "maintenance_done": _no_args}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _peek_id(head: bytes) -> str | None:
    """The top-level ``"id"`` of a JSON object read from its first bytes only, or None.

    For a payload too large to parse: the reply should still name the command. Keys
    are walked from the opening brace while their values are scalars (a short ``op``
    before the id); at the first object or array value, or a cut, the search stops, so
    an ``"id"`` nested in ``args`` is never taken for the command's.
    """
    text = head.decode("utf-8", errors="replace")
    dec = json.JSONDecoder()
    ws = " \t\n\r"
    i = len(text) - len(text.lstrip(ws))
    if not text.startswith("{", i):
        return None
    i += 1
    try:
        while True:
            while i < len(text) and text[i] in ws:
                i += 1
            key, i = dec.raw_decode(text, i)
            while i < len(text) and text[i] in ws:
                i += 1
            if not isinstance(key, str) or not text.startswith(":", i):
                return None
            i += 1
            while i < len(text) and text[i] in ws:
                i += 1
            if i >= len(text) or text[i] in "{[":
                return None
            value, i = dec.raw_decode(text, i)
            if key == "id":
                ok = isinstance(value, str) and value and len(value) <= MAX_ID
                return value if ok else None
            while i < len(text) and text[i] in ws:
                i += 1
            if not text.startswith(",", i):
                return None
            i += 1
    except ValueError:  # cut inside a key or value, or not JSON
        return None


def parse(payload: bytes, size: int | None = None) -> Command:
    """Parse and check one payload; raise :class:`CommandError` with the reason.

    The error carries ``cmd_id`` when the payload had a usable id, so the reply can
    name the command it answers; a payload over ``MAX_PAYLOAD`` is not parsed, but
    its id is still read from its first bytes when it is there (:func:`_peek_id`).
    ``size`` is the payload's real size when ``payload`` is only its head (the uplink
    keeps no more than ``MAX_PACKET`` of a packet).
    """
    cmd_id: str | None = None
    total = len(payload) if size is None else size
    try:
        if total > MAX_PAYLOAD:
            cmd_id = _peek_id(payload[:ID_SCAN])
            raise CommandError(f"payload too large: {total} bytes, the limit is "
                               f"{MAX_PAYLOAD}")
        try:
            obj = json.loads(payload.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise CommandError(f"not valid JSON: {str(exc)[:80]}") from None
        if not isinstance(obj, dict):
            raise CommandError("a command must be a JSON object")
        raw_id = obj.get("id")
        if isinstance(raw_id, str) and raw_id and len(raw_id) <= MAX_ID:
            cmd_id = raw_id
        else:
            raise CommandError(f'"id" must be a non-empty string of at most {MAX_ID} chars')
        extra = set(obj) - {"id", "op", "args"}
        if extra:
            raise CommandError(f"unknown key(s) {sorted(str(k) for k in extra)[:5]}")
        op = obj.get("op")
        if not isinstance(op, str) or op not in _ARGS:
            raise CommandError(f"unknown op {str(op)[:40]!r} (known: {', '.join(OPS)})")
        args = obj.get("args", {})
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise CommandError('"args" must be an object')
        return Command(cmd_id, op, _ARGS[op](args))
    except CommandError as exc:
        exc.cmd_id = cmd_id  # type: ignore[attr-defined]
        raise


async def _call(fn: Any, *a: Any) -> Any:
    out = fn(*a)
    if inspect.isawaitable(out):
        out = await out
    return out


class CommandHandler:
    """Parses a payload, runs the op on the host, returns the reply body.

    The reply is ``{"id", "ok", "result"|"error"}`` (the envelope's ``v``/``ts``/``tq``
    are added by :meth:`MessageFactory.cmd_reply`). ``refused``, ``done`` and
    ``repeated`` (ids that had run already, not run again) count. With ``ids`` (the
    persisted store) every id runs at most once; without it, as often as it comes.
    """

    def __init__(self, host: CommandHost, ids: CommandIdStore | None = None) -> None:
        self.host = host
        self.ids = ids
        self.done = 0
        self.refused = 0
        self.repeated = 0

    async def handle(self, payload: bytes, *, size: int | None = None,
                     retained: bool = False) -> tuple[str | None, bool, Any]:
        """(command id, ok, result or error reason). ``size``: the real size of a payload
        cut to its head; ``retained``: the message came with the MQTT retain flag."""
        try:
            cmd = parse(payload, size)
        except CommandError as exc:
            self.refused += 1
            log.info("command refused: %s", printable(str(exc)))
            return getattr(exc, "cmd_id", None), False, str(exc)
        if retained:
            self.refused += 1
            log.warning("command %r (%s) refused: it was a retained message (a retained "
                        "command would run again at every connect)", cmd.id, cmd.op)
            return cmd.id, False, ("retained command refused: commands are never taken from "
                                   "a retained message; publish it with retain off")
        if self.ids is not None:
            before = await asyncio.to_thread(self.ids.get, cmd.id)
            if before is not None:
                return self._repeat(cmd, before)
            await asyncio.to_thread(self.ids.claim, cmd.id)
        try:
            result = await self._run(cmd)
        except CommandError as exc:
            self.refused += 1
            log.info("command %r (%s) refused: %s", cmd.id, cmd.op, printable(str(exc)))
            await self._record(cmd.id, None)
            return cmd.id, False, str(exc)
        except Exception as exc:  # an op that fails must not take the agent down
            self.refused += 1
            log.exception("command %r (%s) failed", cmd.id, cmd.op)
            reason = f"{cmd.op} failed: {type(exc).__name__}: {exc}"[:300]
            await self._record(cmd.id, False, error=reason)
            return cmd.id, False, reason
        self.done += 1
        log.info("command %r (%s) done", cmd.id, cmd.op)
        await self._record(cmd.id, True, result)
        return cmd.id, True, result

    async def _record(self, cmd_id: str, ok: bool | None, result: Any = None,
                      error: str | None = None) -> None:
        """The outcome in the id store; None: refused, nothing applied, not remembered."""
        if self.ids is None:
            return
        if ok is None:
            await asyncio.to_thread(self.ids.forget, cmd_id)
        else:
            await asyncio.to_thread(self.ids.finish, cmd_id, ok, result, error)

    def _repeat(self, cmd: Command, before: Any) -> tuple[str, bool, Any]:
        self.repeated += 1
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(before.t_wall))
        log.info("command %r (%s) already handled at %s: not run again", cmd.id, cmd.op, when)
        if before.state == "ok":
            return cmd.id, True, {"already_applied": True, "at": when,
                                  "result": before.result}
        if before.state == "err":
            return cmd.id, False, f"already handled at {when} (not run again): {before.error}"
        return cmd.id, False, (f"already started at {when} and interrupted by a restart; "
                               "not run again (send it with a new id to run it)")

    async def _run(self, cmd: Command) -> Any:
        h = self.host
        if cmd.op == "ack":
            if not await _call(h.ack_alarm, cmd.args["eid"]):
                raise CommandError(f"no unacknowledged alarm with eid {cmd.args['eid']!r}")
            return {"eid": cmd.args["eid"]}
        if cmd.op == "snapshot":
            return await _call(h.snapshot)
        if cmd.op == "self_test":
            return await _call(h.self_test)
        if cmd.op == "config_get":
            return await _call(h.config_get)
        if cmd.op == "maintenance_done":
            return await _call(h.maintenance_done)
        return await _call(h.config_set, cmd.args["patch"], cmd.id)


class Downlink(bytes):
    """A command as it arrived: its payload (at most ``MAX_PACKET`` of it) as bytes, with
    the packet's real ``size`` and its MQTT ``retained`` flag."""

    size: int
    retained: bool

    def __new__(cls, payload: bytes, size: int | None = None,
                retained: bool = False) -> Downlink:
        self = super().__new__(cls, payload)
        self.size = len(payload) if size is None else size
        self.retained = retained
        return self


def _ack_eid(payload: bytes, size: int) -> str | None:
    """The eid of a well-formed ``ack`` command, else None (the other lane's)."""
    if size > MAX_PAYLOAD:
        return None
    try:
        cmd = parse(payload)
    except CommandError:
        return None
    return cmd.args["eid"] if cmd.op == "ack" else None


class CommandInbox:
    """The commands waiting to run, in two lanes: acks, then everything else.

    A burst of commands (a broken or hostile platform, a retained flood) must not push
    out the platform's ``ack``: while an alarm waits for it, the alarm is repeated. Acks
    have their own lane, served first; it holds ``ACK_LANE_MAX`` acks and beyond that
    still takes every ack whose alarm is waiting (``is_pending``), so a real ack is
    never dropped. The other lane holds ``OTHER_LANE_MAX``; a command that finds it full
    is dropped: counted in ``dropped``, and logged once per ``DROP_LOG_S`` with the count
    (one line per dropped command once filled a log with 9,648 lines).
    """

    def __init__(self, is_pending: Callable[[str], bool] = lambda _eid: False, *,
                 other_max: int = OTHER_LANE_MAX, ack_max: int = ACK_LANE_MAX) -> None:
        self.is_pending = is_pending
        self.other_max = other_max
        self.ack_max = ack_max
        self._acks: deque[Downlink] = deque()
        self._other: deque[Downlink] = deque()
        self._ready = asyncio.Event()
        self.dropped = 0
        self._unlogged = 0
        self._last_log = -float("inf")
        self._log_handle: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._acks) + len(self._other)

    def offer(self, payload: bytes, size: int | None = None, retained: bool = False) -> bool:
        """Queue one command (from the loop thread); False when it was dropped."""
        item = Downlink(payload, size, retained)
        eid = None if retained else _ack_eid(payload, item.size)
        if eid is not None and (len(self._acks) < self.ack_max or self.is_pending(eid)):
            self._acks.append(item)
        elif eid is None and len(self._other) < self.other_max:
            self._other.append(item)
        else:
            self._dropped()
            return False
        self._ready.set()
        return True

    async def get(self) -> Downlink:
        """The next command: the oldest ack, else the oldest other command."""
        while not self._acks and not self._other:
            self._ready.clear()
            await self._ready.wait()
        return self._acks.popleft() if self._acks else self._other.popleft()

    def _dropped(self) -> None:
        self.dropped += 1
        self._unlogged += 1
        now = time.monotonic()
        if now - self._last_log >= DROP_LOG_S:
            self._report()
        elif self._log_handle is None:
            with contextlib.suppress(RuntimeError):  # no running loop: the next drop logs
                self._log_handle = asyncio.get_running_loop().call_later(
                    self._last_log + DROP_LOG_S - now, self._report)

    def _report(self) -> None:
        self._log_handle = None
        if self._unlogged:
            log.warning("command queue full: %d command(s) dropped in the last %.0f s (%d "
                        "since the start); acks for waiting alarms are never dropped",
                        self._unlogged, DROP_LOG_S, self.dropped)
            self._unlogged = 0
            self._last_log = time.monotonic()

