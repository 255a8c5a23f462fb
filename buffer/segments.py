"""Append-only segment files: the outbox's message store.

A segment is a file ``{first_seq:016d}.seg`` holding records back to back::

    u32 body length | u32 CRC-32 of body | body = u64 seq | f64 created | u16 topic length
                                                 | topic (UTF-8) | payload

26 bytes of framing per message (plus the topic), little-endian. Records are only
ever appended, so a crash can damage at most the record being written: on opening,
:func:`scan` walks the file, checks length and CRC of every record and, past a
damaged stretch, re-synchronises on the next record whose length, CRC and sequence
number are all plausible. The caller decides what to do with the damage (trim a
torn tail of the segment being written, quarantine anything else). Each segment keeps
a compact in-memory index (sequence numbers, offsets, creation times in ``array``s,
24 bytes a message) so the payloads stay on disk until ``pending`` reads them.

When a segment is full (sealed), and for the segment being appended when the outbox
is closed, its index is also written beside it as ``{first_seq:016d}.idx`` (the size
it covers, the three arrays, a CRC-32 of it all), so that reopening a large backlog
loads arrays instead of walking every record; only bytes appended after the index was
written (after a crash: those of the segment being appended) are scanned. The index
is written without fsync: it is only a cache. A missing or torn one, or one longer
than its segment, means a full scan, as before. Records loaded this way are checked
(length and CRC) when they are read.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import zlib
from array import array
from dataclasses import dataclass, field
from pathlib import Path

from liftwatch.buffer.atomic import fsync_dir, open_nofollow, read_nofollow

HEADER = struct.Struct("<II")  # body length, CRC-32 of the body
BODY_HEAD = struct.Struct("<QdH")  # seq, created (wall time), topic length
FRAMING = HEADER.size + BODY_HEAD.size
SEGMENT_NAME = re.compile(r"^(\d{16})\.seg$")
INDEX_NAME = re.compile(r"^(\d{16})\.idx$")
INDEX_HEAD = struct.Struct("<4sIQQ")  # magic, CRC-32 of the rest, segment size, records
INDEX_MAGIC = b"LWX1"


class RecordCorrupt(ValueError):
    """A record read back from a segment no longer matches its CRC."""


def segment_name(first_seq: int) -> str:
    return f"{first_seq:016d}.seg"


def index_path(segment: Path) -> Path:
    return segment.with_suffix(".idx")


def encode(seq: int, created: float, topic: bytes, payload: bytes) -> bytes:
    """One framed record."""
    body = BODY_HEAD.pack(seq, created, len(topic)) + topic + payload
    return HEADER.pack(len(body), zlib.crc32(body)) + body


@dataclass
class ScanResult:
    """What :func:`scan` found in a segment's bytes."""

    seqs: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    created: list[float] = field(default_factory=list)
    first_bad: int | None = None  # offset of the first damaged byte, None when clean
    good_after_bad: bool = False  # a valid record follows the damage: not a torn tail

    @property
    def clean_end(self) -> int:
        """End of the last valid record (where a torn tail is cut)."""
        return self.offsets[-1] + self.sizes[-1] if self.offsets else 0


def scan(data: bytes, first_seq: int) -> ScanResult:
    """Index the valid records of one segment's bytes, noting where damage starts."""
    res = ScanResult()
    view = memoryview(data)
    n = len(data)
    pos = 0
    prev = first_seq - 1
    while pos + FRAMING <= n:
        length, crc = HEADER.unpack_from(view, pos)
        end = pos + HEADER.size + length
        if BODY_HEAD.size <= length and end <= n:
            seq, created, tlen = BODY_HEAD.unpack_from(view, pos + HEADER.size)
            if (prev < seq < prev + (1 << 40) and tlen <= length - BODY_HEAD.size
                    and zlib.crc32(view[pos + HEADER.size:end]) == crc):
                if res.first_bad is not None:
                    res.good_after_bad = True
                res.seqs.append(seq)
                res.offsets.append(pos)
                res.sizes.append(end - pos)
                res.created.append(created)
                prev = seq
                pos = end
                continue
        if res.first_bad is None:
            res.first_bad = pos
        pos += 1
    if res.first_bad is None and pos < n:
        res.first_bad = pos  # a few trailing bytes, shorter than any header
    return res


class Segment:
    """One open segment file and its index. Not thread-safe: the outbox's lock guards it."""

    def __init__(self, path: Path, first_seq: int, fd: int, end: int) -> None:
        self.path = path
        self.first_seq = first_seq
        self.fd = fd
        self.end = end  # bytes known to be committed; appends go here
        self.seqs = array("Q")
        self.offsets = array("Q")
        self.created = array("d")
        self.sealed = False  # no more appends (rotated, or an I/O error left it unsure)
        self.unverified = False  # indexed from its sidecar: records not scanned at opening

    @classmethod
    def create(cls, directory: Path, first_seq: int) -> Segment:
        """A new empty segment, its directory entry made durable."""
        path = directory / segment_name(first_seq)
        fd = open_nofollow(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
        try:
            fsync_dir(directory)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        return cls(path, first_seq, fd, 0)

    @classmethod
    def from_scan(cls, path: Path, first_seq: int, res: ScanResult) -> Segment:
        fd = open_nofollow(path, os.O_RDWR)
        seg = cls(path, first_seq, fd, res.clean_end)
        seg.seqs.extend(res.seqs)
        seg.offsets.extend(res.offsets)
        seg.created.extend(res.created)
        return seg

    @classmethod
    def from_index(cls, path: Path, first_seq: int) -> Segment | None:
        """The segment at ``path`` indexed from its sidecar, up to where the sidecar ends
        (``end``: the file may have grown since); None when there is no usable sidecar
        (missing, torn, or longer than the segment)."""
        try:
            raw = read_nofollow(index_path(path))
            size = path.lstat().st_size
        except OSError:
            return None
        if len(raw) < INDEX_HEAD.size:
            return None
        magic, crc, end, count = INDEX_HEAD.unpack_from(raw, 0)
        body = memoryview(raw)[INDEX_HEAD.size:]
        if (magic != INDEX_MAGIC or end > size or len(body) != 24 * count
                or zlib.crc32(body, zlib.crc32(raw[8:INDEX_HEAD.size])) != crc):
            return None
        try:
            fd = open_nofollow(path, os.O_RDWR)
        except OSError:
            return None
        seg = cls(path, first_seq, fd, end)
        seg.seqs.frombytes(body[:8 * count])
        seg.offsets.frombytes(body[8 * count:16 * count])
        seg.created.frombytes(body[16 * count:])
        if count and (seg.seqs[0] < first_seq or seg.offsets[0] != 0):
            seg.close()
            return None
        seg.unverified = True
        return seg

    def extend_scan(self, res: ScanResult, base: int) -> None:
        """Add the records a :func:`scan` of the bytes from ``base`` on found."""
        self.seqs.extend(res.seqs)
        self.offsets.extend(o + base for o in res.offsets)
        self.created.extend(res.created)
        self.end = base + res.clean_end if res.offsets else base

    def write_index(self) -> None:
        """Write the sidecar index of this segment as it is (a cache: no fsync, errors
        ignored, since a missing one only means a scan at the next opening)."""
        body = self.seqs.tobytes() + self.offsets.tobytes() + self.created.tobytes()
        head_rest = struct.pack("<QQ", self.end, len(self.seqs))
        crc = zlib.crc32(body, zlib.crc32(head_rest))
        data = INDEX_HEAD.pack(INDEX_MAGIC, crc, self.end, len(self.seqs)) + body
        try:
            fd = open_nofollow(index_path(self.path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        except OSError:
            return
        with contextlib.suppress(OSError):
            os.write(fd, data)
        os.close(fd)

    def drop_index(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(index_path(self.path))

    def __len__(self) -> int:
        return len(self.seqs)

    def size(self, i: int) -> int:
        nxt = self.offsets[i + 1] if i + 1 < len(self.offsets) else self.end
        return nxt - self.offsets[i]

    def write(self, blob: bytes) -> None:
        """Write ``blob`` at the end (not yet durable, index not yet updated)."""
        view = memoryview(blob)
        off = self.end
        while view:
            done = os.pwrite(self.fd, view, off)
            view = view[done:]
            off += done

    def commit(self, seqs: list[int], sizes: list[int], created: float) -> None:
        """Index records just written and made durable."""
        off = self.end
        for seq, size in zip(seqs, sizes, strict=True):
            self.seqs.append(seq)
            self.offsets.append(off)
            self.created.append(created)
            off += size
        self.end = off

    def rollback(self) -> None:
        """Cut off a failed write; if even that fails, stop appending to this file."""
        try:
            os.ftruncate(self.fd, self.end)
        except OSError:
            self.sealed = True

    def read(self, i: int) -> tuple[str, bytes]:
        """Topic and payload of record ``i``, CRC-checked."""
        size = self.size(i)
        raw = os.pread(self.fd, size, self.offsets[i])
        if len(raw) != size:
            raise RecordCorrupt(f"{self.path}: record {self.seqs[i]} is cut short")
        length, crc = HEADER.unpack_from(raw, 0)
        body = memoryview(raw)[HEADER.size:]
        if length != len(body) or zlib.crc32(body) != crc:
            raise RecordCorrupt(f"{self.path}: record {self.seqs[i]} fails its CRC")
        _seq, _created, tlen = BODY_HEAD.unpack_from(body, 0)
        start = BODY_HEAD.size
        return (bytes(body[start:start + tlen]).decode("utf-8", "replace"),
                bytes(body[start + tlen:]))

    def read_many(self, idxs: list[int]) -> list[tuple[str, bytes] | RecordCorrupt]:
        """:meth:`read` for ascending record indices, with one ``pread`` for their span.
        A record that fails its check comes back as its :class:`RecordCorrupt`."""
        offs = self.offsets
        base = offs[idxs[0]]
        last = idxs[-1]
        stop = offs[last + 1] if last + 1 < len(offs) else self.end
        buf = os.pread(self.fd, stop - base, base)
        view = memoryview(buf)
        have = len(buf)
        out: list[tuple[str, bytes] | RecordCorrupt] = []
        hsize, bsize, crc32 = HEADER.size, BODY_HEAD.size, zlib.crc32
        for i in idxs:
            pos = offs[i] - base
            end = (offs[i + 1] if i + 1 < len(offs) else self.end) - base
            if end > have:
                out.append(RecordCorrupt(f"{self.path}: record {self.seqs[i]} is cut short"))
                continue
            length, crc = HEADER.unpack_from(view, pos)
            if length != end - pos - hsize or crc32(view[pos + hsize:end]) != crc:
                out.append(RecordCorrupt(f"{self.path}: record {self.seqs[i]} fails its CRC"))
                continue
            tlen = BODY_HEAD.unpack_from(view, pos + hsize)[2]
            start = pos + hsize + bsize
            out.append((str(view[start:start + tlen], "utf-8", "replace"),
                        bytes(view[start + tlen:end])))
        return out

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def delete(self) -> None:
        """Remove the file (every record in it released) and its index."""
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.drop_index()
