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
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

MAX_PAYLOAD = 16 * 1024
MAX_ID = 128
#: how much of an oversized payload is read for its id: the longest id JSON-escaped
#: (6 characters a \uXXXX escape), its key, and a few short keys before it
ID_SCAN = 8 * MAX_ID + 256
OPS = ("ack", "snapshot", "self_test", "config_get", "config_set")


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
         "config_get": _no_args, "config_set": _set_args}


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


def parse(payload: bytes) -> Command:
    """Parse and check one payload; raise :class:`CommandError` with the reason.

    The error carries ``cmd_id`` when the payload had a usable id, so the reply can
    name the command it answers; a payload over ``MAX_PAYLOAD`` is not parsed, but
    its id is still read from its first bytes when it is there (:func:`_peek_id`).
    """
    cmd_id: str | None = None
    try:
        if len(payload) > MAX_PAYLOAD:
            cmd_id = _peek_id(payload[:ID_SCAN])
            raise CommandError(f"payload too large: {len(payload)} bytes, the limit is "
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
    are added by :meth:`MessageFactory.cmd_reply`). ``refused`` and ``done`` count.
    """

    def __init__(self, host: CommandHost) -> None:
        self.host = host
        self.done = 0
        self.refused = 0

    async def handle(self, payload: bytes) -> tuple[str | None, bool, Any]:
        """(command id, ok, result or error reason)."""
        try:
            cmd = parse(payload)
        except CommandError as exc:
            self.refused += 1
            log.info("command refused: %s", exc)
            return getattr(exc, "cmd_id", None), False, str(exc)
        try:
            result = await self._run(cmd)
        except CommandError as exc:
            self.refused += 1
            log.info("command %s (%s) refused: %s", cmd.id, cmd.op, exc)
            return cmd.id, False, str(exc)
        except Exception as exc:  # an op that fails must not take the agent down
            self.refused += 1
            log.exception("command %s (%s) failed", cmd.id, cmd.op)
            return cmd.id, False, f"{cmd.op} failed: {type(exc).__name__}: {exc}"[:300]
        self.done += 1
        log.info("command %s (%s) done", cmd.id, cmd.op)
        return cmd.id, True, result

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
        return await _call(h.config_set, cmd.args["patch"], cmd.id)
