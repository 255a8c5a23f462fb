"""The durable outbox: every message is on disk before it may be published.

Design (architecture.md principle 2, platform-protocol.md "Delivery guarantees")
-------------------------------------------------------------------------------
TinyDB's JSONStorage rewrites its whole file on every insert, so its append cost
grows with the backlog and a crash mid-write breaks the file. Messages therefore
live in **append-only segment files** (``segments.py``): length-prefixed, CRC-32
checked records, bounded files, one directory per queue. An append writes the
record(s) and ``fdatasync``s the file (and fsyncs the directory when it created a
segment) before returning, so its cost does not depend on how much is queued, and
a torn write can only damage the record being written. ``append_many`` is a group
commit: one write and one fdatasync per touched queue for the whole batch.

Queues: lanes ``alarm`` and ``event`` have one each; lane ``record`` is split on
disk into ``record`` (trips, health, anything else) and ``stats`` (topic ending in
``/stats``) so that each can drop its oldest first. Sequence numbers are per lane,
so the record lane is still delivered in append order (the two queues are merged
by sequence number).

Acks and drops only **release** records in memory: a queue's durable state is a
watermark (every record below it is released) plus the few released records above
it (out-of-order PUBACKs), and two counters (records ever appended, records in deleted
segments). Once ``ACK_BATCH`` (4) acks or drops wait, that state is made durable within
``cursor_flush_s`` (1 s) by a flusher thread that **appends** it to ``acks.log`` (one
small framed, CRC-32 checked record and one fdatasync for every ack of that second: a
SIGKILL re-sends the acknowledged traffic of about the last second, or at most 3 older
messages when traffic is slow, and a message costs one write for its append plus at
most a quarter of an ack write, whatever the rate). The log is compacted into
``cursors.json`` (a TinyDB document on :class:`~liftwatch.buffer.atomic.AtomicJSONStorage`:
temp file, fsync, rename, directory fsync) on ``flush()``/``close()``, when it passes
64 KB and at an opening that changed something; records carry the generation of the
snapshot they follow, so a crash between the two writes replays nothing stale. The
state is also persisted before a fully released segment is deleted. Losing recent acks
only re-sends those messages (the at-least-once contract: duplicates carry the same
``id``), never a loss.

Bound: the live bytes (framed records not yet released) stay within ``max_bytes``.
After each write, while over the bound, the oldest record-lane message (trips,
health) is dropped, then the oldest stats, then the oldest non-alarm event. Alarms
are never dropped: an alarm appended when the outbox holds nothing but alarms is
still stored and the outbox goes over its bound (``stats()["over_bound_bytes"]``).
An incoming trip when only events and alarms are queued is thus itself the victim.
Every drop is counted by lane (and by kind for the record lane). On disk the
footprint is the live bytes plus at most the released head of one segment per queue.

Damage found when opening. The counters say how many records each queue should hold (as
of the last persisted state, so never more than were confirmed; with no ack to save,
appends persist it within ``count_flush_s`` = 10 s, or within ``cursor_flush_s`` once
``COUNT_BATCH`` (16) are uncounted: one small write for all of them, so only the appends
of the last seconds before a crash may not be counted); fewer found is a **lost
stretch**: logged once as an error with the count, counted in
``stats()["lost_records"]`` (kept across restarts, shown in ``health`` as
``outbox.lost``). A partial record at the end of a queue's last segment with nothing
missing is a crash's **torn tail** (the append under way, never confirmed) if it looks
like one: the file ends on a 512-byte boundary (a write interrupted by a crash stops
between pages) or the tail is zeros. It is cut off with a warning. Any other partial
last record means the segment was cut short (truncated after the counters were saved): a
lost stretch of at least that record, counted. Any other damaged segment (garbage in the
middle, a bad name) is quarantined — hard-linked into ``quarantine/`` as it was — and
replaced by its valid records, so everything else is still delivered. Segments opened
from their sidecar index (``segments.py``) are not scanned: a damaged record there is
found when it is read, released and counted (``corrupt_records``), and the segment is
copied to ``quarantine/`` the first time. An unreadable ``cursors.json`` is quarantined
and the ack log, else redelivery of every stored message (duplicates, not losses), takes
its place.

I/O errors on append (ENOSPC, EIO, ...) cut the partial write off again and raise
:class:`OutboxWriteError`; the message is then NOT stored, the error is counted and
kept in ``stats()``, and the outbox keeps working for the next append.

Locking: one ``threading.Lock`` guards all state, so paho's network thread may call
``ack`` while the asyncio thread calls ``append``/``pending``. It is held during an
append's write + fdatasync (well under a millisecond to a few ms on an SD card), and
by the flusher thread during its ack-log write + fdatasync once a second at most, so
an ack can wait that long; nothing else blocks under it. The flusher sleeps on a
condition while nothing is to be saved: an idle outbox wakes nobody. Another process is kept out
of the directory with an ``flock`` on ``.lock``.
"""

from __future__ import annotations

import bisect
import contextlib
import errno as errno_mod
import fcntl
import heapq
import json
import logging
import os
import struct
import tempfile
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from liftwatch.buffer.atomic import (
    AtomicJSONStorage,
    CorruptFileError,
    SymlinkRefused,
    fsync_dir,
    is_symlink,
    open_nofollow,
    own_dir,
    quarantine_file,
    read_nofollow,
)
from liftwatch.buffer.segments import (
    FRAMING,
    INDEX_NAME,
    SEGMENT_NAME,
    RecordCorrupt,
    ScanResult,
    Segment,
    encode,
    index_path,
    scan,
    segment_name,
)
from tinydb import TinyDB
from tinydb.table import Document

log = logging.getLogger(__name__)

LANES = ("alarm", "event", "record")
QUEUES = ("alarm", "event", "record", "stats")  # on-disk queues; stats belong to lane record
LANE_OF = {"alarm": "alarm", "event": "event", "record": "record", "stats": "record"}
DROP_ORDER = ("record", "stats", "event")  # alarms never
MAX_TOPIC_BYTES = 0xFFFF
CURSORS_FILE = "cursors.json"
ACK_LOG = "acks.log"
ACK_LOG_COMPACT = 64 << 10  # the ack log is folded into cursors.json beyond this
#: Acks are saved once this many wait (then within cursor_flush_s): one ack-log write
#: for at least 4 messages keeps a message's disk writes at 1.25 or fewer at any rate.
#: A SIGKILL thus re-sends the acks of the last second, or at most 3 older ones.
ACK_BATCH = 4
#: With no acks (the broker away), the appended counters are saved once this many
#: appends are uncounted (then within count_flush_s): 1/16 of a write a message.
COUNT_BATCH = 16
LOG_HEAD = struct.Struct("<II")  # body length, CRC-32 of the body (JSON state)
QUARANTINE_DIR = "quarantine"
QUARANTINE_KEEP = 32  # newest quarantined files kept; older ones are deleted


def encode_log_record(doc: dict) -> bytes:
    """One ack-log record: the whole persisted state, framed and CRC-checked."""
    body = json.dumps(doc, separators=(",", ":")).encode()
    return LOG_HEAD.pack(len(body), zlib.crc32(body)) + body


def read_ack_log(data: bytes) -> tuple[list[dict], int]:
    """The valid records of an ack log and where they end (a torn last one is left out)."""
    out: list[dict] = []
    pos = 0
    while pos + LOG_HEAD.size <= len(data):
        length, crc = LOG_HEAD.unpack_from(data, pos)
        end = pos + LOG_HEAD.size + length
        body = data[pos + LOG_HEAD.size:end]
        if end > len(data) or zlib.crc32(body) != crc:
            break
        try:
            doc = json.loads(body)
        except ValueError:
            break
        if not isinstance(doc, dict):
            break
        out.append(doc)
        pos = end
    return out, pos



#: A write interrupted by a crash ends on a page boundary: the kernel copies it into the
#: page cache a page at a time, extending the file as it goes, and a SIGKILL stops it
#: between two pages; after a power cut the journal holds a size of such a step (or the
#: write's end, a record boundary). Pages are 4 KB or a multiple of it; 512 (a sector)
#: is the finest a file system would tear at.
TEAR_BOUNDARY = 512


def torn_by_a_crash(size: int, tail: bytes) -> bool:
    """Whether a partial last record (``tail``, ending the file at ``size``) is what a
    crash mid-append leaves: the file ends on a ``TEAR_BOUNDARY``, or the tail is zeros
    (blocks allocated, never written). Anything else was cut (a file truncated, a lost
    stretch), not torn."""
    return size % TEAR_BOUNDARY == 0 or not tail.strip(b"\0")


def queue_of(lane: str, topic: str) -> str:
    """The on-disk queue of a message: its lane's, but ``stats`` for a record-lane
    message whose topic ends in ``/stats`` (so each can drop its oldest first)."""
    if lane not in LANES:
        raise OutboxError(f"unknown lane {lane!r}: expected one of {', '.join(LANES)}")
    if lane == "record" and topic.endswith("/stats"):
        return "stats"
    return lane

class Key(NamedTuple):
    """Handle of one stored message: its lane and its sequence number in that lane."""

    lane: str
    seq: int


class Item(NamedTuple):
    """A message to publish. ``created`` is the wall time of the append. (A named tuple:
    ``pending`` makes one per message, and it is the cheapest immutable record.)"""

    key: Key
    lane: str
    topic: str
    payload: bytes
    created: float


def lock_holder(path: str | os.PathLike[str]) -> int | None:
    """The PID holding an ``flock`` on ``path`` (the kernel lists it in /proc/locks), or
    None when nobody does or it cannot be told. Read only: taking the lock to test it
    could make an agent starting at that moment fail."""
    try:
        st = os.stat(path)
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:02:5678 0 EOF" ("->" marks a waiter)
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == where:
            with contextlib.suppress(ValueError):
                return int(parts[4])
    return None


class OutboxError(Exception):
    """The outbox cannot be used as asked (bad argument, closed, directory in use)."""


class OutboxWriteError(OutboxError):
    """A message could not be made durable (disk full, I/O error); it was not stored."""

    def __init__(self, message: str, errno: int | None) -> None:
        super().__init__(message)
        self.errno = errno


@dataclass
class _Queue:
    """One on-disk queue: its segments, the release watermark and the sparse acks above it."""

    name: str
    directory: Path
    segments: list[Segment] = field(default_factory=list)
    head_seg: int = 0  # position of the first record not below the watermark
    head_idx: int = 0
    head: int = 0  # watermark: every record with seq < head is released
    released: set[int] = field(default_factory=set)  # released records with seq >= head
    live_count: int = 0
    live_bytes: int = 0
    appended: int = 0  # records ever committed to this queue (persisted with the cursors)
    deleted: int = 0  # records in segments deleted once wholly released
    firsts: list[int] = field(default_factory=list)  # first_seq of each segment, for bisect

    def add_segment(self, seg: Segment) -> None:
        self.segments.append(seg)
        self.firsts.append(seg.first_seq)

    def normalize(self) -> None:
        """Move the head position off the end of a segment that has a successor."""
        segs, hs = self.segments, self.head_seg
        last = len(segs) - 1
        while hs < last and self.head_idx >= len(segs[hs].seqs):
            hs += 1
            self.head_idx = 0
        self.head_seg = hs

    def locate(self, seq: int) -> tuple[Segment, int] | None:
        i = bisect.bisect_right(self.firsts, seq) - 1
        if i < 0:
            return None
        seg = self.segments[i]
        j = bisect.bisect_left(seg.seqs, seq)
        if j < len(seg) and seg.seqs[j] == seq:
            return seg, j
        return None

    def live(self) -> Iterator[tuple[int, Segment, int]]:
        """Unreleased records from the head, oldest first: (seq, segment, index)."""
        self.normalize()
        si, ii = self.head_seg, self.head_idx
        while si < len(self.segments):
            seg = self.segments[si]
            while ii < len(seg):
                seq = seg.seqs[ii]
                if seq not in self.released:
                    yield seq, seg, ii
                ii += 1
            si += 1
            ii = 0

    def release(self, seq: int) -> bool:
        """Mark one record released (acked or dropped). False if it was not live."""
        if seq < self.head or seq in self.released:
            return False
        if seq == self.head:  # the usual case, PUBACKs in order: no search, no set
            self.normalize()
            if self.head_seg < len(self.segments):
                seg = self.segments[self.head_seg]
                seqs, i = seg.seqs, self.head_idx
                n = len(seqs)
                if i < n and seqs[i] == seq:
                    offs = seg.offsets
                    self.live_count -= 1
                    self.live_bytes -= (offs[i + 1] if i + 1 < n else seg.end) - offs[i]
                    self.head_idx = i = i + 1
                    if i < n and seqs[i] not in self.released:
                        self.head = seqs[i]
                    else:
                        self.head = seq + 1
                        self._advance()
                    return True
        found = self.locate(seq)
        if found is None:
            return False
        seg, idx = found
        self.live_count -= 1
        self.live_bytes -= seg.size(idx)
        self.released.add(seq)
        self._advance()
        return True

    def _advance(self) -> None:
        self.normalize()
        while self.head_seg < len(self.segments):
            seg = self.segments[self.head_seg]
            if self.head_idx >= len(seg):
                if self.head_seg == len(self.segments) - 1:
                    break
                self.head_seg += 1
                self.head_idx = 0
                continue
            seq = seg.seqs[self.head_idx]
            if seq not in self.released:
                self.head = seq
                return
            self.released.discard(seq)
            self.head = seq + 1
            self.head_idx += 1

    def has_dead(self) -> bool:
        """Cheap test for :meth:`dead_segments` (called on every ack)."""
        self.normalize()
        return self.head_seg > 0

    def dead_segments(self) -> list[Segment]:
        """Segments wholly below the head, except the one appends go to."""
        self.normalize()
        return [s for s in self.segments[:self.head_seg] if s is not self.segments[-1]]

    def drop_segments(self, dead: list[Segment]) -> None:
        for seg in dead:
            self.segments.remove(seg)
            self.head_seg -= 1
        self.firsts = [s.first_seq for s in self.segments]

    def oldest_created(self) -> float | None:
        for _seq, seg, idx in self.live():
            return seg.created[idx]
        return None


class Outbox:
    """Durable, bounded, prioritised message store between the agent and MQTT."""

    def __init__(self, directory: str | Path, max_bytes: int, *,
                 segment_bytes: int | None = None, cursor_flush_s: float = 1.0,
                 count_flush_s: float = 10.0, ack_batch: int = ACK_BATCH,
                 count_batch: int = COUNT_BATCH) -> None:
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes <= 0:
            raise OutboxError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or min(4 << 20, max(64 << 10, max_bytes // 64))
        self.cursor_flush_s = cursor_flush_s
        self.count_flush_s = count_flush_s
        self.ack_batch = max(1, ack_batch)
        self.count_batch = max(1, count_batch)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._closed = False
        self._dropped = dict.fromkeys(LANES, 0)
        self._dropped_kind = {"record": 0, "stats": 0}
        self._next_seq = dict.fromkeys(LANES, 0)
        self._trimmed_bytes = 0
        self._corrupt_records = 0
        self._lost_records = 0
        self._write_errors = 0
        self._save_failing = False
        self._last_error: str | None = None
        self._dirty = False
        self._flush_due: float | None = None
        self._unsaved_acks = 0  # acks and drops not yet in the ack log
        self._uncounted = 0  # appends not yet in the saved counters
        self._gen = 0  # generation of cursors.json; ack-log records carry it
        self._logfd = -1
        self._log_end = 0
        self._db: TinyDB | None = None
        self._flusher: threading.Thread | None = None
        self._qdir = self.directory / QUARANTINE_DIR
        own_dir(self.directory)
        if is_symlink(self._qdir):  # pruned by deleting: never through a link
            own_dir(self._qdir)
        self._lockfd = self._take_dir_lock()
        try:
            self._queues = {name: _Queue(name, self.directory / name) for name in QUEUES}
            self._lane_queues = {lane: [q for q in self._queues.values() if LANE_OF[q.name] == lane]
                                 for lane in LANES}
            self._db = self._open_cursors()
            for q in self._queues.values():
                self._load_queue(q)
            for lane in LANES:
                for q in self._lane_queues[lane]:
                    last = max((s.seqs[-1] + 1 for s in q.segments if len(s)), default=0)
                    first = max((s.first_seq for s in q.segments), default=0)
                    self._next_seq[lane] = max(self._next_seq[lane], q.head, last, first)
            self._enforce_bound()
            self._delete_dead(snapshot=self._dirty or self._log_end >= ACK_LOG_COMPACT)
        except BaseException:
            self._close_files()
            raise
        self._flusher = threading.Thread(target=self._flush_loop, name="lw-outbox-flush",
                                         daemon=True)
        self._flusher.start()

    # -- opening -----------------------------------------------------------------------

    def _take_dir_lock(self) -> int:
        fd = self._open_own(self.directory / ".lock", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            pid = lock_holder(self.directory / ".lock")
            who = f"another process (PID {pid})" if pid else "another process"
            raise OutboxError(f"outbox {self.directory} is in use by {who}: is the agent "
                              "already running?") from None
        return fd

    def _open_own(self, path: Path, flags: int) -> int:
        """Open one of the outbox's own files, never through a symbolic link: a planted
        link is moved to quarantine/ (the link itself, its target untouched), logged as an
        error naming it, and the file is created afresh."""
        try:
            return open_nofollow(path, flags)
        except SymlinkRefused as exc:
            dest = quarantine_file(path, self._qdir)
            log.error("outbox: %s; quarantined as %s", exc, dest.name)
            return open_nofollow(path, flags)

    def _open_cursors(self) -> TinyDB:
        """The persisted state: the snapshot in cursors.json, then the newer records of the
        ack log (each a whole state; the last one of the snapshot's generation wins)."""
        path = self.directory / CURSORS_FILE
        db = TinyDB(path, storage=AtomicJSONStorage)
        snapshot_ok = True
        try:
            doc = db.get(doc_id=1) or {}
            self._apply_cursor_doc(doc)
        except (CorruptFileError, ValueError, TypeError, KeyError, AttributeError) as exc:
            snapshot_ok = False
            db.close()
            dest = quarantine_file(path, self._qdir)
            self._reset_state()
            log.error("outbox cursors unreadable (%s): quarantined as %s; the ack log is used, "
                      "else every stored message will be delivered again", exc, dest.name)
            db = TinyDB(path, storage=AtomicJSONStorage)
        log_path = self.directory / ACK_LOG
        self._logfd = self._open_own(log_path, os.O_RDWR | os.O_CREAT)
        data = b""
        with contextlib.suppress(OSError):
            data = os.pread(self._logfd, os.fstat(self._logfd).st_size, 0)
        records, end = read_ack_log(data)
        newest = [r for r in records if snapshot_ok and r.get("gen") == self._gen
                  or not snapshot_ok]
        if newest:
            try:
                self._apply_cursor_doc(newest[-1])
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                log.error("outbox: last ack-log record unusable (%s); acks since the last "
                          "snapshot will be delivered again", exc)
        self._log_end = len(data)
        if end < len(data):  # a torn last record: the flush under way when the process died
            os.ftruncate(self._logfd, end)
            self._log_end = end
        return db

    def _reset_state(self) -> None:
        for q in self._queues.values():
            q.head, q.released, q.appended, q.deleted = 0, set(), 0, 0

    def _apply_cursor_doc(self, doc: dict) -> None:
        if not isinstance(doc, dict):
            raise ValueError("cursor document is not an object")
        self._gen = int(doc.get("gen", 0))
        for name, cur in (doc.get("queues") or {}).items():
            if name in self._queues:
                q = self._queues[name]
                q.head = int(cur["head"])
                q.released = {int(s) for s in cur.get("released", ()) if int(s) >= q.head}
                q.appended = int(cur.get("appended", 0))
                q.deleted = int(cur.get("deleted", 0))
        for lane, n in (doc.get("next_seq") or {}).items():
            if lane in self._next_seq:
                self._next_seq[lane] = int(n)
        for lane, n in (doc.get("dropped") or {}).items():
            if lane in self._dropped:
                self._dropped[lane] = int(n)
        for kind, n in (doc.get("dropped_kind") or {}).items():
            if kind in self._dropped_kind:
                self._dropped_kind[kind] = int(n)
        self._lost_records = int(doc.get("lost", 0))

    def _load_queue(self, q: _Queue) -> None:
        own_dir(q.directory)
        files: list[tuple[int, Path]] = []
        indexes: list[Path] = []
        for path in q.directory.iterdir():
            m = SEGMENT_NAME.match(path.name)
            if is_symlink(path):  # never followed: moved aside, the target untouched
                self._quarantine(path, q.name, str(SymlinkRefused(path)))
            elif m:
                files.append((int(m.group(1)), path))
            elif INDEX_NAME.match(path.name):
                indexes.append(path)
            elif path.name.startswith(".") and path.name.endswith(".tmp"):
                path.unlink()  # an interrupted salvage: the original is still in place
            else:
                self._quarantine(path, q.name, "not a segment file")
        names = {p.name for _f, p in files}
        for idx in indexes:  # the index of a segment deleted before it (a crash between)
            if idx.with_suffix(".seg").name not in names:
                with contextlib.suppress(OSError):
                    idx.unlink()
        files.sort()
        torn: tuple[Path, int, int] | None = None  # (segment, valid end, size) of a cut tail
        torn_tail = b""  # its bytes
        changed = False
        for n, (first_seq, path) in enumerate(files):
            is_last = n == len(files) - 1
            loaded = self._from_index(path, first_seq, is_last)
            if loaded is not None:  # indexed: no scan of what the index covers
                seg, cut, tail = loaded
                if cut is not None:
                    torn, torn_tail, changed = cut, tail, True
                q.add_segment(seg)
                continue
            try:
                data = read_nofollow(path)
            except OSError as exc:  # unreadable (EIO, permissions): set it aside, go on
                self._quarantine(path, q.name, f"unreadable: {exc.strerror}")
                changed = True
                continue
            res = scan(data, first_seq)
            if res.first_bad is not None:
                changed = True
                if is_last and not res.good_after_bad:
                    torn_tail = data[res.clean_end:]
                    self._trim(path, res.clean_end)
                    torn = path, res.clean_end, len(data)
                else:
                    self._salvage(path, data, res, q.name)
                    res = scan(read_nofollow(path), first_seq)
            if not res.seqs and not is_last:
                path.unlink()
                changed = True
                continue
            seg = Segment.from_scan(path, first_seq, res)
            if not is_last:
                seg.sealed = True
                seg.write_index()  # the next opening loads it instead of scanning
            q.add_segment(seg)
        if changed:
            fsync_dir(q.directory)
        self._account(q, torn, torn_tail)
        # position the head, count what is live (per segment, not per record)
        q.head_seg, q.head_idx = max(len(q.segments) - 1, 0), 0
        q.head_idx = len(q.segments[-1]) if q.segments else 0
        q.live_count, q.live_bytes = 0, 0
        found_head = False
        for si, seg in enumerate(q.segments):
            if not len(seg) or seg.seqs[-1] < q.head:
                continue
            ii = bisect.bisect_left(seg.seqs, q.head)
            if not found_head:
                q.head_seg, q.head_idx, found_head = si, ii, True
            q.live_count += len(seg) - ii
            q.live_bytes += seg.end - seg.offsets[ii]
        kept = set()
        for seq in q.released:
            found = q.locate(seq) if seq >= q.head else None
            if found is not None:
                kept.add(seq)
                q.live_count -= 1
                q.live_bytes -= found[0].size(found[1])
        q.released = kept
        q._advance()

    def _from_index(self, path: Path, first_seq: int, is_last: bool
                    ) -> tuple[Segment, tuple[Path, int, int] | None, bytes] | None:
        """A segment loaded from its sidecar index, the bytes appended after the index was
        written scanned. None (a full scan follows) without a usable index, or when that
        remainder is damaged other than by a torn tail of the last segment."""
        seg = Segment.from_index(path, first_seq)
        if seg is None:
            return None
        cut = None
        tail = b""
        try:
            size = os.fstat(seg.fd).st_size
            indexed_end = seg.end
            if size > indexed_end:
                rest = os.pread(seg.fd, size - indexed_end, indexed_end)
                res = scan(rest, seg.seqs[-1] + 1 if len(seg) else first_seq)
                if res.first_bad is not None and (res.good_after_bad or not is_last):
                    seg.close()
                    return None
                seg.extend_scan(res, indexed_end)
                if res.first_bad is not None:
                    tail = rest[seg.end - indexed_end:]
                    self._trim(path, seg.end)
                    cut = path, seg.end, size
        except OSError:
            seg.close()
            return None
        if not is_last:
            seg.sealed = True
            if seg.end > indexed_end:
                seg.write_index()
        return seg, cut, tail

    def _account(self, q: _Queue, torn: tuple[Path, int, int] | None,
                 torn_tail: bytes = b"") -> None:
        """Compare the records found with the records the persisted counters confirm.

        Fewer found is a lost stretch (truncation, a deleted or emptied segment, damage):
        an error with the count. A cut tail with nothing missing is a crash's torn append
        if it looks like one (:func:`torn_by_a_crash`); otherwise the segment was cut
        short after the counters were saved: a lost stretch of at least one record.
        """
        found = sum(len(seg) for seg in q.segments)
        missing = q.appended - q.deleted - found
        cut = False  # the last segment cut short, not torn by a crash mid-append
        if torn is not None:
            path, end, size = torn
            self._trimmed_bytes += size - end
            cut = missing <= 0 and not torn_by_a_crash(size, torn_tail)
            if missing <= 0 and not cut:
                log.warning("outbox: cut a torn tail of %d bytes off %s (a partial record: the "
                            "append under way when the process stopped, never confirmed)",
                            size - end, path)
        if cut and torn is not None:
            # the saved counters lag the appends of the last count_flush_s before a crash,
            # so they cannot say how many went: the partial record at least was whole once
            missing = 1
            self._lost_records += missing
            log.error("outbox: the last segment %s of queue %s was cut short: it ends %d bytes "
                      "into a record, %d bytes past a %d-byte boundary (a crash tears an "
                      "append only at such a boundary, or leaves zeros): at least 1 stored "
                      "message lost, with any appended after it in the last %g s before the "
                      "stop (not yet counted on disk); %d lost in all", torn[0].name, q.name,
                      torn[2] - torn[1], torn[2] % TEAR_BOUNDARY, TEAR_BOUNDARY,
                      self.count_flush_s, self._lost_records)
            self._dirty = True
        elif missing > 0:
            self._lost_records += missing
            where = (f"{torn[0].name} ends {torn[2] - torn[1]} bytes into a record"
                     if torn is not None else "segment(s) short or missing")
            log.error("outbox: %d stored message(s) of queue %s are missing from disk (%d "
                      "confirmed, %d found; %s): a lost stretch of records, not a torn "
                      "append; %d lost in all", missing, q.name, q.appended - q.deleted,
                      found, where, self._lost_records)
            self._dirty = True
        q.appended = q.deleted + found  # from now on, count from what is really there

    def _trim(self, path: Path, clean_end: int) -> None:
        """Cut a damaged tail off the segment that was being appended."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(index_path(path))
        fd = open_nofollow(path, os.O_RDWR)
        try:
            os.ftruncate(fd, clean_end)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _salvage(self, path: Path, data: bytes, res: ScanResult, queue: str) -> None:
        """Quarantine a damaged segment and put back its valid records."""
        good = b"".join(data[o:o + s] for o, s in zip(res.offsets, res.sizes, strict=True))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(index_path(path))  # stale from now on
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o640)
            os.write(fd, good)
            os.fsync(fd)
        finally:
            os.close(fd)
        dest = self._quarantine_dest(path, queue)
        os.link(path, dest)  # the damaged file as it was, for the technician
        fsync_dir(self._qdir)
        os.replace(tmp, path)
        fsync_dir(path.parent)
        log.error("outbox: segment %s/%s is damaged (%d valid records kept); quarantined as %s",
                  queue, path.name, len(res.seqs), dest.name)
        self._prune_quarantine()

    def _quarantine_dest(self, path: Path, queue: str) -> Path:
        own_dir(self._qdir)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        dest = self._qdir / f"{queue}-{path.name}.{stamp}"
        n = 1
        while dest.exists():
            dest = self._qdir / f"{queue}-{path.name}.{stamp}.{n}"
            n += 1
        return dest

    def _quarantine(self, path: Path, queue: str, why: str) -> None:
        dest = quarantine_file(path, self._qdir, f"{queue}-")
        log.error("outbox: %s in %s (%s): quarantined as %s", path.name, queue, why, dest.name)
        self._prune_quarantine()

    def _prune_quarantine(self) -> None:
        files = sorted(self._qdir.iterdir(), key=lambda p: p.stat().st_mtime)
        for p in files[:-QUARANTINE_KEEP]:
            with contextlib.suppress(OSError):
                p.unlink()

    # -- appending ---------------------------------------------------------------------

    @staticmethod
    def _check(lane: object, topic: object, payload: object) -> tuple[str, bytes, bytes]:
        if not isinstance(lane, str):
            raise OutboxError(f"lane must be a string, got {type(lane).__name__}")
        if not isinstance(topic, str) or not topic or "\x00" in topic:
            raise OutboxError(f"topic must be a non-empty string without NUL, got {topic!r}")
        topic_b = topic.encode("utf-8")
        if len(topic_b) > MAX_TOPIC_BYTES:
            raise OutboxError(f"topic is {len(topic_b)} bytes, at most {MAX_TOPIC_BYTES}")
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise OutboxError(f"payload must be bytes, got {type(payload).__name__}")
        return lane, topic_b, bytes(payload)

    def append(self, lane: str, topic: str, payload: bytes) -> Key:
        """Store one message durably; it is on disk when this returns."""
        return self.append_many([(lane, topic, payload)])[0]

    def append_many(self, items: Iterable[tuple[str, str, bytes]]) -> list[Key]:
        """Store a batch durably with one write and one fdatasync per touched queue.

        All or nothing: on an I/O error none of the batch is stored and
        :class:`OutboxWriteError` is raised.
        """
        checked = []
        for item in items:
            try:
                lane, topic, payload = item
            except (TypeError, ValueError):
                raise OutboxError(f"an item must be (lane, topic, payload), got {item!r}") from None
            lane, topic_b, payload_b = self._check(lane, topic, payload)
            checked.append((lane, queue_of(lane, topic), topic_b, payload_b))
        if not checked:
            return []
        with self._lock:
            self._check_open()
            created = time.time()
            keys: list[Key] = []
            batches: dict[str, tuple[list[bytes], list[int], list[int]]] = {}
            next_seq = dict(self._next_seq)
            for lane, qname, topic_b, payload_b in checked:
                seq = next_seq[lane]
                next_seq[lane] = seq + 1
                rec = encode(seq, created, topic_b, payload_b)
                blobs, seqs, sizes = batches.setdefault(qname, ([], [], []))
                blobs.append(rec)
                seqs.append(seq)
                sizes.append(len(rec))
                keys.append(Key(lane, seq))
            self._next_seq = next_seq  # never reused, even if the write fails
            self._write(batches, created)
            self._enforce_bound()
            self._uncounted += len(keys)
            # no ack to save soon (the broker away): the counters, within count_flush_s,
            # sooner once count_batch wait, so that a segment cut after a crash is counted
            # (skipped by the flusher when acks already cover these appends)
            due = time.monotonic() + (self.cursor_flush_s if self._uncounted >= self.count_batch
                                      else self.count_flush_s)
            if self._flush_due is None or due < self._flush_due:
                self._dirty = True
                self._flush_due = due
                self._cond.notify()
            return keys

    def _active_segment(self, q: _Queue, first_seq: int) -> Segment:
        seg = q.segments[-1] if q.segments else None
        if seg is None or seg.sealed or seg.end >= self.segment_bytes:
            if seg is not None and not seg.sealed:
                seg.sealed = True
                seg.write_index()
            seg = Segment.create(q.directory, first_seq)
            q.add_segment(seg)
        return seg

    def _write(self, batches: dict[str, tuple[list[bytes], list[int], list[int]]],
               created: float) -> None:
        touched: list[tuple[_Queue, Segment, list[int], list[int]]] = []
        try:
            for qname, (blobs, seqs, sizes) in batches.items():
                q = self._queues[qname]
                i = 0
                while i < len(blobs):  # a large batch is split at segment boundaries
                    seg = self._active_segment(q, seqs[i])
                    room = self.segment_bytes - seg.end
                    j, used = i + 1, sizes[i]
                    while j < len(blobs) and used + sizes[j] <= room:
                        used += sizes[j]
                        j += 1
                    touched.append((q, seg, seqs[i:j], sizes[i:j]))
                    seg.write(b"".join(blobs[i:j]))
                    if j < len(blobs):
                        seg.sealed = True
                    i = j
            for _q, seg, _seqs, _sizes in touched:
                os.fdatasync(seg.fd)
        except OSError as exc:
            for _q, seg, _seqs, _sizes in touched:
                seg.rollback()
            self._write_errors += 1
            name = errno_mod.errorcode.get(exc.errno or 0, "EIO")
            self._last_error = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {name}: " \
                               f"{exc.strerror or exc}"
            # the caller reports it (the agent: one disk fault, not a line per append)
            log.debug("outbox: append failed, message(s) not stored: %s", self._last_error)
            raise OutboxWriteError(f"outbox append failed ({name}: {exc.strerror or exc}); "
                                   "the message was not stored", exc.errno) from exc
        for q, seg, seqs, sizes in touched:
            seg.commit(seqs, sizes, created)
            q.appended += len(seqs)
            q.live_count += len(seqs)
            q.live_bytes += sum(sizes)
            if seg.sealed:  # filled by this batch, which went on in a new segment
                seg.write_index()

    def _enforce_bound(self) -> None:
        """Drop oldest messages in the spec's order until the live bytes fit again."""
        total = sum(q.live_bytes for q in self._queues.values())
        for qname in DROP_ORDER:
            q = self._queues[qname]
            while total > self.max_bytes and q.live_count:
                seq, seg, idx = next(q.live())
                size = seg.size(idx)
                q.release(seq)
                total -= size
                lane = LANE_OF[qname]
                self._dropped[lane] += 1
                if lane == "record":
                    self._dropped_kind[qname] += 1
                self._mark_dirty()
            if total <= self.max_bytes:
                return

    # -- reading and acknowledging -----------------------------------------------------

    def pending(self, limit: int, skip: Iterable[Key] = ()) -> list[Item]:
        """Up to ``limit`` unacknowledged messages: alarm lane, then event, then record;
        oldest first within a lane. Keys in ``skip`` (already in flight) are left out."""
        if not isinstance(limit, int) or limit < 0:
            raise OutboxError(f"limit must be a non-negative integer, got {limit!r}")
        skipped: dict[str, set[int]] = {}
        for k in skip:
            skipped.setdefault(k[0], set()).add(k[1])
        out: list[Item] = []
        with self._lock:
            self._check_open()
            for lane in LANES:
                if len(out) >= limit:
                    break
                queues = [q for q in self._lane_queues[lane] if q.live_count]
                if len(queues) == 1:
                    self._collect(queues[0], lane, limit, skipped.get(lane, set()), out)
                elif queues:
                    self._collect_merged(queues, lane, limit, skipped.get(lane, set()), out)
        return out

    def _collect(self, q: _Queue, lane: str, limit: int, skip: set[int],
                 out: list[Item]) -> None:
        """``pending`` for one queue: the wanted records of a segment in one read."""
        q.normalize()
        released, segs = q.released, q.segments
        si, ii = q.head_seg, q.head_idx
        while si < len(segs) and len(out) < limit:
            seg = segs[si]
            seqs = seg.seqs
            n, want = len(seqs), limit - len(out)
            idxs: list[int] = []
            while ii < n and len(idxs) < want:
                seq = seqs[ii]
                if seq not in released and seq not in skip:
                    idxs.append(ii)
                ii += 1
            if idxs:
                created = seg.created
                for idx, rec in zip(idxs, seg.read_many(idxs), strict=True):
                    if isinstance(rec, Exception):
                        self._unreadable(q, seqs[idx], rec, seg)
                    else:
                        out.append(Item(Key(lane, seqs[idx]), lane, rec[0], rec[1], created[idx]))
            if ii >= n:
                si, ii = si + 1, 0

    def _collect_merged(self, queues: list[_Queue], lane: str, limit: int, skip: set[int],
                        out: list[Item]) -> None:
        """``pending`` for the record lane: its two queues merged by sequence number."""
        streams = [self._tagged(q) for q in queues]
        for seq, q, seg, idx in heapq.merge(*streams, key=lambda r: r[0]):
            if len(out) >= limit:
                break
            if seq in skip:
                continue
            try:
                topic, payload = seg.read(idx)
            except (RecordCorrupt, OSError) as exc:
                self._unreadable(q, seq, exc, seg)
                continue
            out.append(Item(Key(lane, seq), lane, topic, payload, seg.created[idx]))

    def _unreadable(self, q: _Queue, seq: int, exc: Exception, seg: Segment) -> None:
        """A record that fails its check when read: released (it cannot be sent), counted;
        a segment that was indexed, not scanned, at opening is set aside for the technician
        (a hard link in quarantine/, as with damage found by a scan) the first time."""
        self._corrupt_records += 1
        self._last_error = str(exc)
        log.error("outbox: unreadable record released: %s", exc)
        q.release(seq)
        self._mark_dirty()
        if seg.unverified:
            seg.unverified = False
            try:
                dest = self._quarantine_dest(seg.path, q.name)
                os.link(seg.path, dest)
                fsync_dir(self._qdir)
            except OSError as err:
                log.error("outbox: damaged segment %s not copied to quarantine: %s",
                          seg.path.name, err)
            else:
                log.error("outbox: segment %s/%s is damaged; a copy is kept as quarantine/%s",
                          q.name, seg.path.name, dest.name)
                self._prune_quarantine()

    @staticmethod
    def _tagged(q: _Queue) -> Iterator[tuple[int, _Queue, Segment, int]]:
        for seq, seg, idx in q.live():
            yield seq, q, seg, idx

    def ack(self, key: Key) -> bool:
        """Release a published message (on PUBACK). True if it was still pending.

        Durable within ``cursor_flush_s`` once ``ack_batch`` acks wait (the flusher
        thread appends to the ack log)."""
        return self.ack_many([key]) == 1

    def ack_many(self, keys: Iterable[Key]) -> int:
        """Release a batch of published messages (PUBACKs) under one lock; how many were
        still pending. After close, nothing: a late PUBACK's message is re-sent by the
        next run, never lost."""
        keys = list(keys)
        for key in keys:
            if (not isinstance(key, tuple) or len(key) != 2 or key[0] not in LANES
                    or not isinstance(key[1], int)):
                raise OutboxError(f"not an outbox key: {key!r}")
        done = 0
        with self._lock:
            if self._closed:
                return 0
            for lane, seq in keys:
                for q in self._lane_queues[lane]:
                    if q.release(seq):
                        done += 1
                        break
            if done:
                self._mark_dirty(done)
                # a segment wholly released: persist, then delete it (while saves fail,
                # the flusher's retry does it)
                if not self._save_failing and any(q.has_dead() for q in self._queues.values()):
                    self._delete_dead(snapshot=False)
        return done

    # -- persistence of cursors, deletion of released segments ---------------------------

    def flush(self) -> None:
        """Persist acks now (a cursors.json snapshot, the ack log emptied) and delete wholly
        released segments. Acks are made durable on their own within cursor_flush_s."""
        with self._lock:
            self._check_open()
            self._delete_dead(snapshot=True)

    def _mark_dirty(self, released: int = 1) -> None:
        """Called under the lock after ``released`` acks or drops: once ``ack_batch`` wait, have
        the flusher persist the state within cursor_flush_s."""
        self._dirty = True
        self._unsaved_acks += released
        if self._unsaved_acks < self.ack_batch:
            return
        due = time.monotonic() + self.cursor_flush_s
        if self._flush_due is None or due < self._flush_due:  # sooner than the counters'
            self._flush_due = due
            self._cond.notify()

    def _flush_loop(self) -> None:
        """The flusher thread: one ack-log append for all acks of a cursor_flush_s."""
        with self._lock:
            while not self._closed:
                due = self._flush_due
                if due is None:
                    self._cond.wait()
                    continue
                wait = due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                self._flush_due = None
                if 0 < self._uncounted <= self._unsaved_acks < self.ack_batch:
                    # the appends' timer, but they are acked already (the broker is up):
                    # nothing to count that matters; the acks wait for their batch
                    continue
                try:
                    self._delete_dead(snapshot=False)  # saves, then deletes released segments
                    ok = not self._save_failing
                except Exception:  # never let the thread die: acks would stay in memory
                    log.exception("outbox: saving the acks failed")
                    ok = False
                if not ok:
                    self._flush_due = time.monotonic() + max(self.cursor_flush_s, 1.0)

    def _delete_dead(self, snapshot: bool) -> None:
        """Persist the state, then delete the segments it shows wholly released."""
        dead = [(q, s) for q in self._queues.values() for s in q.dead_segments()]
        for q, seg in dead:
            q.deleted += len(seg)
        if not (snapshot or dead or self._dirty):
            return
        if not self._persist(snapshot):
            for q, seg in dead:  # keep the segments: without the saved state they come back
                q.deleted -= len(seg)
            return
        for _q, seg in dead:
            try:
                seg.delete()
            except OSError as exc:  # left on disk: its records are below the saved cursor,
                self._last_error = f"segment delete failed: {exc}"  # so the next open skips
                log.error("outbox: %s", self._last_error)  # them and deletes it again
        for q in {q.name: q for q, _s in dead}.values():
            q.drop_segments([seg for qq, seg in dead if qq is q])
            with contextlib.suppress(OSError):
                fsync_dir(q.directory)

    def _state_doc(self) -> dict:
        return {
            "v": 1,
            "gen": self._gen,
            "queues": {q.name: {"head": q.head, "released": sorted(q.released),
                                "appended": q.appended, "deleted": q.deleted}
                       for q in self._queues.values()},
            "next_seq": dict(self._next_seq),
            "dropped": dict(self._dropped),
            "dropped_kind": dict(self._dropped_kind),
            "lost": self._lost_records,
        }

    def _persist(self, snapshot: bool) -> bool:
        """Make the state durable: an ack-log append, or a snapshot when asked or when the
        log has grown. False (counted, logged, kept in memory) on an I/O error."""
        try:
            if snapshot or self._log_end >= ACK_LOG_COMPACT:
                self._snapshot()
            else:
                rec = encode_log_record(self._state_doc())
                view = memoryview(rec)
                off = self._log_end
                while view:
                    n = os.pwrite(self._logfd, view, off)
                    view, off = view[n:], off + n
                os.fdatasync(self._logfd)
                self._log_end = off
        except OSError as exc:
            self._write_errors += 1
            self._last_error = f"cursor save failed: {exc}"
            # counted in stats() (cursor_save_failing); the agent reports a failing disk
            # once; the flusher tries again a cursor_flush_s later, not on every ack
            log.debug("outbox: %s", self._last_error)
            self._save_failing = True
            with contextlib.suppress(OSError):
                os.ftruncate(self._logfd, self._log_end)
            return False
        self._save_failing = False
        self._dirty = False
        self._flush_due = None
        self._unsaved_acks = self._uncounted = 0
        return True

    def _snapshot(self) -> None:
        """cursors.json rewritten atomically under a new generation, then the log emptied
        (a crash in between leaves log records of the old generation: ignored)."""
        assert self._db is not None
        self._gen += 1
        try:
            self._db.upsert(Document(self._state_doc(), doc_id=1))
        except BaseException:
            self._gen -= 1
            raise
        if self._log_end:
            os.ftruncate(self._logfd, 0)
            os.fdatasync(self._logfd)
            self._log_end = 0

    # -- reporting and closing ---------------------------------------------------------

    def stats(self) -> dict:
        """Figures for the health message: per lane depth, bytes and oldest age; drops;
        quarantined files; write errors and the last one."""
        with self._lock:
            now = time.time()
            lanes = {}
            for lane in LANES:
                qs = [q for q in self._queues.values() if LANE_OF[q.name] == lane]
                oldest = [c for q in qs if (c := q.oldest_created()) is not None]
                lanes[lane] = {
                    "depth": sum(q.live_count for q in qs),
                    "bytes": sum(q.live_bytes for q in qs),
                    "oldest_age_s": round(max(0.0, now - min(oldest)), 3) if oldest else None,
                }
            live = sum(q.live_bytes for q in self._queues.values())
            quarantined = sorted(p.name for p in self._qdir.iterdir()) \
                if self._qdir.is_dir() else []
            return {
                "lanes": lanes,
                "dropped": dict(self._dropped),
                "dropped_kind": dict(self._dropped_kind),
                "bytes": live,
                "max_bytes": self.max_bytes,
                "over_bound_bytes": max(0, live - self.max_bytes),
                "segments": sum(len(q.segments) for q in self._queues.values()),
                "quarantined": quarantined,
                "trimmed_bytes": self._trimmed_bytes,
                "lost_records": self._lost_records,
                "corrupt_records": self._corrupt_records,
                "write_errors": self._write_errors,
                "cursor_save_failing": self._save_failing,
                "last_error": self._last_error,
            }

    def _check_open(self) -> None:
        if self._closed:
            raise OutboxError("outbox is closed")

    def close(self) -> None:
        """Persist the state (a snapshot) and release the files. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            try:
                self._delete_dead(snapshot=True)
                for q in self._queues.values():  # the next opening need not scan them
                    if q.segments and len(q.segments[-1]) and not q.segments[-1].sealed:
                        q.segments[-1].write_index()
            finally:
                self._closed = True
                self._cond.notify_all()
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join()
        with self._lock:
            self._close_files()

    def _close_files(self) -> None:
        for q in getattr(self, "_queues", {}).values():
            for seg in q.segments:
                seg.close()
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._logfd >= 0:
            os.close(self._logfd)
            self._logfd = -1
        if self._lockfd >= 0:
            os.close(self._lockfd)  # releases the flock
            self._lockfd = -1

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["FRAMING", "LANES", "Item", "Key", "Outbox", "OutboxError", "OutboxWriteError",
           "segment_name"]
