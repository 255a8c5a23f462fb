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

from liftwatch.buffer.atomic import fsync_dir

HEADER = struct.Struct("<II")  # body length, CRC-32 of the body
BODY_HEAD = struct.Struct("<QdH")  # seq, created (wall time), topic length
FRAMING = HEADER.size + BODY_HEAD.size
SEGMENT_NAME = re.compile(r"^(\d{16})\.seg$")


class RecordCorrupt(ValueError):
    """A record read back from a segment no longer matches its CRC."""


def segment_name(first_seq: int) -> str:
    return f"{first_seq:016d}.seg"


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

    @classmethod
    def create(cls, directory: Path, first_seq: int) -> Segment:
        """A new empty segment, its directory entry made durable."""
        path = directory / segment_name(first_seq)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o640)
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
        fd = os.open(path, os.O_RDWR)
        seg = cls(path, first_seq, fd, res.clean_end)
        seg.seqs.extend(res.seqs)
        seg.offsets.extend(res.offsets)
        seg.created.extend(res.created)
        return seg

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

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def delete(self) -> None:
        """Remove the file (every record in it released)."""
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
