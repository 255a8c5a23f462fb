"""A read-only view of the outbox files, for the technician tools.

:class:`~liftwatch.buffer.outbox.Outbox` is the agent's: opening it takes the directory
lock (refused while the agent runs, which is exactly when a technician looks) and may
repair files (trim a torn tail, quarantine, drop over the bound). This view only reads:
it indexes the segment files with the outbox's own :func:`~liftwatch.buffer.segments.scan`
and applies the cursors of ``cursors.json`` and of the ack log after it, so it shows what
the agent would send as of its last cursor save (acks of the last second may not show
yet: those messages are counted as waiting, never the other way round). Damaged
stretches are skipped and counted, never fatal.
"""

from __future__ import annotations

import base64
import heapq
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from liftwatch.buffer.outbox import (
    ACK_LOG,
    CURSORS_FILE,
    LANE_OF,
    LANES,
    QUARANTINE_DIR,
    QUEUES,
    read_ack_log,
)
from liftwatch.buffer.segments import BODY_HEAD, FRAMING, HEADER, SEGMENT_NAME, scan

SOURCE = "read-only snapshot of the files"


class OutboxViewError(RuntimeError):
    """The outbox directory cannot be read at all."""


@dataclass(frozen=True)
class Waiting:
    """One message not yet acknowledged by the broker."""

    lane: str
    seq: int
    created: float
    size: int
    topic: str
    payload: bytes


@dataclass
class _QueueFiles:
    name: str
    directory: Path
    files: list[tuple[int, Path]]
    head: int
    released: set[int]


@dataclass
class OutboxSnapshot:
    """The outbox's files and cursors; figures and messages are read from the files on
    demand, one segment at a time (a full outbox never sits in memory)."""

    directory: Path
    queues: list[_QueueFiles]
    cursors: dict[str, Any]
    cursor_problem: str
    quarantined: list[str]

    def _live(self, q: _QueueFiles) -> Iterator[Waiting]:
        for first_seq, path in q.files:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue  # released and deleted by the agent since the listing
            except OSError as exc:
                raise OutboxViewError(f"{path}: {exc.strerror or exc}") from exc
            res = scan(data, first_seq)
            for seq, off, size, created in zip(res.seqs, res.offsets, res.sizes, res.created,
                                               strict=True):
                if seq < q.head or seq in q.released:
                    continue
                tlen = BODY_HEAD.unpack_from(data, off + HEADER.size)[2]
                start = off + FRAMING
                topic = data[start:start + tlen].decode("utf-8", "replace")
                yield Waiting(LANE_OF[q.name], seq, created, size, topic,
                              data[start + tlen:off + size])

    def stats(self, now: float | None = None) -> dict[str, Any]:
        """The figures of ``Outbox.stats()`` that files can tell."""
        now = time.time() if now is None else now
        lanes = {lane: {"depth": 0, "bytes": 0, "oldest": None} for lane in LANES}
        damaged = segments = 0
        for q in self.queues:
            lane = lanes[LANE_OF[q.name]]
            for first_seq, path in q.files:
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise OutboxViewError(f"{path}: {exc.strerror or exc}") from exc
                segments += 1
                res = scan(data, first_seq)
                damaged += len(data) - sum(res.sizes)
                for seq, size, created in zip(res.seqs, res.sizes, res.created, strict=True):
                    if seq >= q.head and seq not in q.released:
                        lane["depth"] += 1
                        lane["bytes"] += size
                        if lane["oldest"] is None or created < lane["oldest"]:
                            lane["oldest"] = created
        out_lanes = {name: {"depth": v["depth"], "bytes": v["bytes"],
                            "oldest_age_s": None if v["oldest"] is None
                            else round(max(0.0, now - v["oldest"]), 3)}
                     for name, v in lanes.items()}
        dropped = {lane: int(self.cursors.get("dropped", {}).get(lane, 0)) for lane in LANES}
        kinds = self.cursors.get("dropped_kind", {})
        return {"lanes": out_lanes, "dropped": dropped,
                "dropped_kind": {k: int(kinds.get(k, 0)) for k in ("record", "stats")},
                "bytes": sum(v["bytes"] for v in out_lanes.values()),
                "segments": segments, "quarantined": self.quarantined,
                "lost_records": int(self.cursors.get("lost", 0) or 0),
                "damaged_bytes": damaged, "cursor_problem": self.cursor_problem}

    def pending(self) -> Iterator[Waiting]:
        """Every waiting message in the order the agent sends them: alarm, event, record
        (the record lane's two queues merged by sequence number)."""
        for lane in LANES:
            streams = [self._live(q) for q in self.queues if LANE_OF[q.name] == lane]
            yield from heapq.merge(*streams, key=lambda w: w.seq)


def _read_cursors(directory: Path) -> tuple[dict[str, Any], str]:
    """The agent's persisted state: cursors.json, then the newest ack-log record of its
    generation (the agent appends one a second while acks come in)."""
    doc, problem = _read_snapshot(directory)
    try:
        records, _end = read_ack_log((directory / ACK_LOG).read_bytes())
    except OSError:
        records = []
    gen = doc.get("gen", 0) if not problem else None
    newest = [r for r in records if gen is None or r.get("gen") == gen]
    if newest and isinstance(newest[-1].get("queues"), dict):
        doc = newest[-1]
    return doc, problem


def _read_snapshot(directory: Path) -> tuple[dict[str, Any], str]:
    path = directory / CURSORS_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}, ""
    except OSError as exc:
        return {}, f"{path}: {exc.strerror or exc}"
    if not raw.strip():
        return {}, ""
    try:
        doc = json.loads(raw)["_default"]["1"]
        if not isinstance(doc, dict):
            raise TypeError("cursor document is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        return {}, f"{path} unreadable ({exc}): every stored message counts as waiting"
    return doc, ""


def snapshot(directory: str | Path) -> OutboxSnapshot | None:
    """The outbox in ``directory`` (files listed, cursors read); None when there is none."""
    directory = Path(directory)
    if not directory.exists():
        return None
    if not directory.is_dir():
        raise OutboxViewError(f"outbox {directory} is not a directory")
    cursors, problem = _read_cursors(directory)
    queues = cursors.get("queues", {}) if isinstance(cursors.get("queues"), dict) else {}
    found: list[_QueueFiles] = []
    for qname in QUEUES:
        qdir = directory / qname
        if not qdir.is_dir():
            continue
        cur = queues.get(qname, {}) if isinstance(queues.get(qname), dict) else {}
        try:
            head = int(cur.get("head", 0))
            released = {int(s) for s in cur.get("released", ())}
        except (TypeError, ValueError):
            head, released = 0, set()
            problem = problem or f"cursor of queue {qname} unreadable: counted from 0"
        try:
            files = sorted((int(m.group(1)), p) for p in qdir.iterdir()
                           if (m := SEGMENT_NAME.match(p.name)))
        except OSError as exc:
            raise OutboxViewError(f"outbox queue {qdir}: {exc.strerror or exc}") from exc
        found.append(_QueueFiles(qname, qdir, files, head, released))
    qdir = directory / QUARANTINE_DIR
    quarantined = sorted(p.name for p in qdir.iterdir()) if qdir.is_dir() else []
    return OutboxSnapshot(directory, found, cursors, problem, quarantined)


def outbox_stats(directory: str | Path) -> tuple[dict[str, Any] | None, str]:
    snap = snapshot(directory)
    return (None, SOURCE) if snap is None else (snap.stats(), SOURCE)


def payload_json(payload: bytes) -> dict[str, Any]:
    """A payload for a JSON Lines export: the JSON itself when it is JSON, else base64."""
    try:
        return {"payload": json.loads(payload.decode("utf-8"))}
    except (UnicodeDecodeError, ValueError):
        return {"payload_b64": base64.b64encode(payload).decode("ascii")}


def export_jsonl(snap: OutboxSnapshot, fh: IO[str]) -> int:
    """Write every waiting message (send order) as one JSON object a line."""
    n = 0
    for w in snap.pending():
        obj = {"lane": w.lane, "seq": w.seq, "created": w.created, "topic": w.topic}
        obj.update(payload_json(w.payload))
        fh.write(json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n")
        n += 1
    return n
