"""Every uplink message of platform-protocol.md: topics, the envelope, the bodies.

One place builds them all so that the envelope rules hold everywhere:

- ``v`` = 1; ``id`` = ``{terminal_id}-{boot}-{seq}``: ``boot`` is a counter kept in
  the data directory and raised at every start (:func:`next_boot`), ``seq`` counts
  messages within the boot, so ids never repeat across restarts even when the clock
  does. A message re-sent from the outbox is the stored bytes: same id.
- ``ts`` (UTC ms) and ``tq`` from :class:`~liftwatch.agent.timebase.Timebase`.
- Compact JSON, UTF-8, no NaN (a NaN is not JSON and the platform would reject the
  whole message; such a value is sent as null instead).

A run from a recorded trace (``liftwatch run --trace``) marks every message
``"replay": true`` and stamps ``ts`` on the trace's own clock (its header ``start`` plus
trace seconds, ``tq`` 0), so a platform can never take a re-run entrapment for a real
one (:meth:`MessageFactory.replay_from`). A live run's messages carry no such key.

``cmd/reply`` is the one exception to ``id``: the spec makes its ``id`` the command's
id, which is what the platform correlates and de-duplicates replies on; it carries
``v``, ``ts`` and ``tq`` like the others. ``online`` is the bare ``1``/``0``.

The JSON Schema of each message type is in ``schemas/{kind}.json`` (:func:`schema`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from liftwatch.buffer.atomic import SymlinkRefused, read_nofollow

log = logging.getLogger(__name__)

VERSION = 1
#: message kinds that have a JSON body and a schema file
KINDS = ("status", "event", "trip", "stats", "condition", "health", "cmd_reply")
#: topic suffix of each kind
TOPICS = {"online": "online", "status": "status", "event": "event", "trip": "trip",
          "stats": "stats", "condition": "condition", "health": "health", "cmd": "cmd",
          "cmd_reply": "cmd/reply",
          "replay_online": "replay/online"}
STATUS_FIELDS = ("mode", "run", "dir", "floor", "door", "zone", "person", "speed", "safety",
                 "lock", "overload", "src")
#: status fields that are never null (mode: 7 = unknown, door: 0 = unknown, dir: 0 = none)
STATUS_NEVER_NULL = ("mode", "run", "dir", "door", "src")
TRIP_FIELDS = ("from", "to", "t_start", "t_end", "duration_s", "dir", "level", "complete",
               "from_between", "to_between", "emergency_stop", "distance_m", "v_max", "a_max",
               "d_max", "a95", "d95", "jerk_max", "vib_pp_max", "vib_pp_a95")
STATS_FIELDS = ("period", "from", "to", "runs", "run_s", "distance_m", "door_cycles",
                "reopens", "starts_by_floor", "events")
SEVERITIES = ("alarm", "fault", "warning", "info")
#: the service mode code "unknown" of trace-format.md
MODE_UNKNOWN = 7


def topic(prefix: str, lift_id: str, kind: str) -> str:
    """``{prefix}/{lift_id}/{suffix}`` for a kind of :data:`TOPICS`."""
    return f"{prefix}/{lift_id}/{TOPICS[kind]}"


def _clean(v: Any) -> Any:
    """Replace non-finite floats by None, recursively (JSON has no NaN)."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    return v


def dumps(obj: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON of a message."""
    return json.dumps(_clean(obj), separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of a message kind (shipped as package data)."""
    if kind not in KINDS:
        raise KeyError(f"no schema for message kind {kind!r}")
    text = resources.files("liftwatch.agent").joinpath("schemas", f"{kind}.json").read_text(
        encoding="utf-8")
    return json.loads(text)


def next_boot(data_dir: str | Path) -> int:
    """Raise and return the boot counter in ``data_dir/boot``.

    Written atomically (temp file, fsync, rename, directory fsync): a power cut leaves
    either the old or the new number, never an empty file. An unreadable file is
    taken as 0 and replaced (ids stay unique as long as the counter only goes up: the
    terminal id and a larger boot number still differ from everything sent before,
    unless the file was lost, which the ``ts`` then disambiguates for a human).
    """
    d = Path(data_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / "boot"
    try:
        boot = int(read_nofollow(path).decode("ascii").strip())
        if boot < 0:
            raise ValueError(boot)
    except SymlinkRefused as exc:  # replaced below: the rename replaces the link itself
        log.error("boot counter: %s", exc)
        boot = 0
    except (OSError, ValueError):
        boot = 0
    boot += 1
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".boot.")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(f"{boot}\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return boot


class Stamper(Protocol):
    def stamp(self, mono: float | None = None) -> tuple[int, int]: ...


class TraceStamper:
    """Stamps on a recorded trace's clock: ``ts`` = the trace's start (UTC ms, 0 when the
    header has none) + trace seconds; ``tq`` 0, since the trace's start is the recording
    terminal's clock, not known here to have been synchronised. ``stamp(t)`` takes a
    trace time (a decision's ``t``), ``stamp()`` the trace's now."""

    def __init__(self, start_ms: int, now: Callable[[], float]) -> None:
        self.start_ms = int(start_ms)
        self.now = now

    def stamp(self, mono: float | None = None) -> tuple[int, int]:
        t = self.now() if mono is None else mono
        return max(0, self.start_ms + int(round(float(t) * 1000.0))), 0


class CodeProfile(Protocol):
    """The part of the platform profile that numbers event codes."""

    def pcode(self, code: str) -> int | None: ...

    def mode_pcode(self, mode: int) -> int | None: ...


class MessageFactory:
    """Builds the messages of one terminal in one boot; each call takes the next ``seq``."""

    def __init__(self, terminal_id: str, boot: int, timebase: Stamper,
                 profile: CodeProfile | None = None) -> None:
        if not terminal_id or "/" in terminal_id or "+" in terminal_id or "#" in terminal_id:
            raise ValueError(f"terminal id {terminal_id!r} cannot be used in topics and ids")
        self.terminal_id = terminal_id
        self.boot = int(boot)
        self.timebase = timebase
        self.profile = profile
        self.seq = 0
        #: True in a run from a recorded trace: every message is marked (replay_from)
        self.replay = False
        #: clock steps of this boot: (first seq stamped after the step, step in ms)
        self.steps: list[tuple[int, int]] = []
        self._steps_seen = 0

    def replay_from(self, start_ms: int | None, now: Callable[[], float]) -> None:
        """From now on mark every message ``"replay": true`` and stamp it on the trace's
        clock (:class:`TraceStamper`; ``now`` gives the trace's current time). Events and
        trips are stamped with their record's ``t``, the trace time of the decision."""
        self.timebase = TraceStamper(start_ms or 0, now)
        self.replay = True

    def mark_replayed(self, rec: dict[str, Any]) -> dict[str, Any]:
        """A pipeline record of a replay, marked for what keeps it beyond this run (the
        event journal, the alarm ledger whose repeats may be sent by a later run): a
        copy with ``replay`` true and ``ts`` on the trace's clock."""
        t = rec.get("t")
        ts = self.timebase.stamp(float(t) if isinstance(t, int | float) else None)[0]
        return {**rec, "replay": True, "ts": ts}

    def _note_steps(self) -> None:
        """Book the clock steps the timebase saw since the last look: they apply from the
        next message on. Called by ``correct`` too, so a stored message published after
        a step, before any new message was made, is corrected all the same."""
        self.timebase.stamp()  # lets the timebase notice a step since its last stamp
        steps = getattr(self.timebase, "steps", [])
        for _, step_ms in steps[self._steps_seen:]:
            self.steps.append((self.seq + 1, step_ms))
        self._steps_seen = len(steps)

    def envelope(self, mono: float | None = None) -> dict[str, Any]:
        self._note_steps()
        self.seq += 1
        ts, tq = self.timebase.stamp(mono)
        steps = getattr(self.timebase, "steps", [])
        for _, step_ms in steps[self._steps_seen:]:
            self.steps.append((self.seq, step_ms))  # a step seen by this stamp: this message
        self._steps_seen = len(steps)               # already has the new clock
        msg: dict[str, Any] = {"v": VERSION, "id": f"{self.terminal_id}-{self.boot}-{self.seq}",
                               "ts": ts, "tq": tq}
        if self.replay:
            msg["replay"] = True
        return msg

    def correct(self, payload: bytes) -> bytes:
        """The stored message with its ``ts`` corrected for the clock steps since it was
        made (issue: messages made before the first NTP sync, on a terminal without
        RTC, carry a wrong time). Applied by the uplink when it publishes, so what is
        still in the outbox when the clock is set goes out with the right time; ``tq``
        becomes 1 when the clock is synchronised now (the time is then exact up to the
        monotonic clock's drift). Messages of another boot, already right, or not
        ``tq`` 0 are returned as they are. Same ``id``: the platform keeps one copy.
        """
        self._note_steps()
        if not self.steps or b'"tq":0' not in payload:
            return payload
        try:
            msg = json.loads(payload)
            _, boot, seq = str(msg["id"]).rsplit("-", 2)
            if int(boot) != self.boot:
                return payload
            delta = sum(step for first, step in self.steps if first > int(seq))
        except (ValueError, KeyError, TypeError):
            return payload
        if not delta:
            return payload
        msg["ts"] = int(msg["ts"]) + delta
        if self.timebase.stamp()[1]:
            msg["tq"] = 1
        return dumps(msg)

    def status(self, fields: dict[str, Any], mono: float | None = None) -> dict[str, Any]:
        """``status`` from ``Pipeline.status()``: every field of platform-protocol.md,
        always. A field the terminal does not know (no such input, e.g. ``lock``
        without a lock contact; ``floor`` before a sensors-only terminal has counted a
        landing) is null: a platform reads one shape, and null says "unknown" where a
        missing key could be taken for an old agent or a lost field (a few bytes more
        on the most frequent message, which QoS 0 and latest-value keep small anyway)."""
        msg = self.envelope(mono)
        for k in STATUS_FIELDS:
            msg[k] = fields.get(k)
        if msg["mode"] is None:
            msg["mode"] = MODE_UNKNOWN  # no controller to say (a sensors-only terminal)
        return msg

    def _pcode(self, code: str, detail: dict[str, Any] | None) -> int | None:
        if self.profile is None:
            return None
        if code == "mode_change" and detail:
            mode = detail.get("mode", detail.get("to"))
            if isinstance(mode, int) and not isinstance(mode, bool):
                pc = self.profile.mode_pcode(mode)
                if pc is not None:
                    return pc
        return self.profile.pcode(code)

    def event(self, rec: dict[str, Any], repeat: int = 0,
              mono: float | None = None) -> dict[str, Any]:
        """``event`` from a pipeline event record (``id`` becomes ``eid``). A record
        marked by :meth:`mark_replayed` is sent marked, also by a live run (a repeat of
        a replayed alarm left in the ledger)."""
        if self.replay and not repeat and mono is None:
            mono = _trace_t(rec)
        msg = self.envelope(mono)
        if rec.get("replay") is True:
            msg["replay"] = True
        detail = rec.get("detail")
        msg["eid"] = str(rec["id"])
        msg["code"] = str(rec["code"])
        pc = self._pcode(msg["code"], detail if isinstance(detail, dict) else None)
        if pc is not None:
            msg["pcode"] = pc
        msg["state"] = rec["state"]
        msg["sev"] = rec["sev"]
        msg["floor"] = rec.get("floor")
        if isinstance(rec.get("between"), list):
            msg["between"] = rec["between"]
        if rec["state"] == "cleared" and rec.get("duration_s") is not None:
            msg["duration_s"] = rec["duration_s"]
        msg["repeat"] = int(repeat)
        msg["detail"] = detail if isinstance(detail, dict) else {}
        return msg

    def trip(self, rec: dict[str, Any], mono: float | None = None) -> dict[str, Any]:
        """``trip`` from a pipeline trip record: its fields, ``t_start``/``t_end`` as
        the agent's clock gave them (seconds; ``ts`` dates the trip's end)."""
        msg = self.envelope(_trace_t(rec) if self.replay and mono is None else mono)
        for k in TRIP_FIELDS:
            if k in rec:
                msg[k] = rec[k]
        return msg

    def stats(self, body: dict[str, Any], mono: float | None = None) -> dict[str, Any]:
        """``stats`` from ``Stats.close_period()``."""
        msg = self.envelope(mono)
        for k in STATS_FIELDS:
            if k in body:
                msg[k] = body[k]
        return msg

    def condition(self, body: dict[str, Any], start_ms: int, end_ms: int,
                  mono: float | None = None) -> dict[str, Any]:
        """``condition`` (daily, with the day's stats) from ``Trends.condition()``: each
        wear figure's level against its reference."""
        msg = self.envelope(mono)
        msg.update({"from": int(start_ms), "to": int(end_ms),
                    "restarts": body.get("restarts", 0), "figures": body.get("figures", {})})
        return msg

    def health(self, body: dict[str, Any], mono: float | None = None) -> dict[str, Any]:
        """``health``: the body is assembled by :mod:`liftwatch.agent.health`."""
        msg = self.envelope(mono)
        msg.update({k: v for k, v in body.items() if k not in msg})
        return msg

    def cmd_reply(self, cmd_id: str | None, ok: bool, result: Any = None,
                  error: str | None = None) -> dict[str, Any]:
        """Reply to a command: ``id`` is the command's (None when it had none)."""
        ts, tq = self.timebase.stamp()
        msg: dict[str, Any] = {"v": VERSION, "id": cmd_id, "ts": ts, "tq": tq, "ok": bool(ok)}
        if self.replay:
            msg["replay"] = True
        if ok:
            msg["result"] = result
        else:
            msg["error"] = error or "failed"
        return msg


def _trace_t(rec: dict[str, Any]) -> float | None:
    t = rec.get("t")
    return float(t) if isinstance(t, int | float) and not isinstance(t, bool) else None


def lane_of(kind: str, msg: dict[str, Any]) -> str:
    """Outbox lane (alarm, event, record) of a message: alarm-severity events overtake."""
    if kind == "event":
        return "alarm" if msg.get("sev") == "alarm" else "event"
    if kind in ("trip", "stats", "condition", "health"):
        return "record"
    raise ValueError(f"{kind} messages do not go through the outbox")
