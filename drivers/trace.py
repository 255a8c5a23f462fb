"""Reader and writer for the trace format of trace-format.md (JSON Lines, optional gzip).

Both stream: a day-long trace is read and written in constant memory. A malformed
line never stops a replay: the reader reports it with its line number through
``on_error`` (default: a log warning), counts it in ``bad_lines`` and goes on, the
python-can reader/logger model of "a recorded bus replays exactly".
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import math
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import IO, Any, NamedTuple

log = logging.getLogger(__name__)

KINDS = ("di", "ctl", "acc", "pwr")
INPUT_LEVELS = (0, 1)
CTL_FIELDS = ("mode", "run", "dir", "floor", "door", "zone", "speed", "safety", "lock",
              "overload", "fault")


class Record(NamedTuple):
    """One sample line: ``kind`` is di, ctl, acc or pwr; ``data`` its value."""

    t: float
    kind: str
    data: Any


@dataclass
class TraceHeader:
    """Line 1 of a trace. ``lift`` and ``accel`` may be absent (the config holds them)."""

    start: str = ""
    lift: dict[str, Any] | None = None
    accel: dict[str, Any] | None = None
    controller_present: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"trace": 1, "start": self.start}
        if self.lift is not None:
            out["lift"] = self.lift
        if self.accel is not None:
            out["accel"] = self.accel
        out["controller"] = {"present": self.controller_present}
        return out


class TraceError(ValueError):
    """A trace line that does not follow trace-format.md."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


def _open_text(path: str | Path, mode: str,
               compress: bool | None = None) -> tuple[IO[str], IO[bytes]]:
    """The text stream and the raw file under it (whose position gives progress).

    Reading sniffs the gzip magic, so a compressed trace under another name still
    reads; writing compresses when the name ends in .gz unless ``compress`` says.
    """
    raw = open(path, mode + "b")  # noqa: SIM115 - closed with the text stream
    if mode == "r":
        compress = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
    elif compress is None:
        compress = str(path).endswith(".gz")
    if compress:
        return io.TextIOWrapper(gzip.GzipFile(fileobj=raw, mode=mode + "b"), encoding="utf-8",
                                newline="\n"), raw
    return io.TextIOWrapper(raw, encoding="utf-8", newline="\n"), raw


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _check_di(d: Any) -> dict[str, int]:
    if not isinstance(d, dict) or not d:
        raise ValueError("di must be a non-empty object of input: 0|1")
    for k, v in d.items():
        if isinstance(v, bool) or v not in INPUT_LEVELS:
            raise ValueError(f"di input {k!r} must be 0 or 1, found {v!r}")
    return {k: int(v) for k, v in d.items()}


_CTL_SET = frozenset(CTL_FIELDS)


def _check_ctl(d: Any) -> dict[str, Any] | None:
    if d is None:
        return None
    if not isinstance(d, dict):
        raise ValueError("ctl must be an object or null")
    isfinite = math.isfinite
    for k, v in d.items():
        if k == "floor":
            if v is not None and not isinstance(v, str | int):
                raise ValueError(f"ctl floor must be a label, found {v!r}")
        elif k in _CTL_SET:
            tv = type(v)  # plain int / finite float first: a poll a tenth of a second
            if tv is int or (tv is float and isfinite(v)):
                continue
            if not _is_num(v):
                raise ValueError(f"ctl {k} must be a number, found {v!r}")
    if "floor" in d and isinstance(d["floor"], int):
        d = dict(d, floor=str(d["floor"]))
    return d


_LIST = {list}
_INT = {int}
_THREE = {3}


class AccBlock(list):
    """An ``acc`` block the reader has checked: a list of ``[x, y, z]`` lists of ints.

    It is the block itself (a list, equal to the parsed JSON) and also carries what the
    check worked out on the way: ``flat``, the counts flattened (x, y, z, x, ...), and
    ``peak``, the largest |count|, or None when every count fits a 16-bit register
    (|count| <= 32767, found in one C pass; the exact peak is then only worked out if
    someone asks). The accelerometer chain takes those instead of walking the block
    again (``liftwatch.signal.chain.flat_rows``): each sample of a replay is checked
    once. ``flat`` is never modified by its users.
    """

    __slots__ = ("flat", "peak")


def _check_acc(d: Any, no_bools: bool = False) -> AccBlock:
    """Rows of three ints. ``no_bools``: the line's text holds no ``true``/``false``, so
    a count that is an int is one that ``array('h')`` takes (one C pass, which also
    proves 16 bits): the hot path of a replay."""
    if not isinstance(d, list) or not d:
        raise ValueError("acc must be a non-empty list of [x, y, z] counts")
    # A few passes in C over the block (bool is not int here).
    if set(map(type, d)) == _LIST and set(map(len, d)) == _THREE:
        flat = list(chain.from_iterable(d))
        if no_bools:
            try:
                array("h", flat)    # ints only (floats, None, strings, lists raise)
            except (TypeError, OverflowError):
                pass                # the full check below names it, or takes it
            else:
                return _acc_block(d, flat, None)
        if set(map(type, flat)) == _INT:
            return _acc_block(d, flat, _wide_peak(flat))
    for s in d:  # find the sample to name in the error
        if type(s) is not list or len(s) != 3:
            raise ValueError(f"acc sample must be three integers, found {s!r}")
        x, y, z = s
        if type(x) is not int or type(y) is not int or type(z) is not int:
            raise ValueError(f"acc sample must be three integers, found {s!r}")
    flat = list(chain.from_iterable(d))
    return _acc_block(d, flat, _wide_peak(flat))


def _wide_peak(flat: list[int]) -> int | None:
    """None when every count (ints, checked already) fits 16 bits, else the largest."""
    try:
        array("h", flat)
    except OverflowError:
        return max(max(flat), -min(flat))
    return None


def _acc_block(d: list[list[int]], flat: list[int], peak: int | None) -> AccBlock:
    block = AccBlock(d)
    block.flat = flat
    block.peak = peak
    return block


def _check_pwr(d: Any) -> dict[str, Any]:
    if not isinstance(d, dict) or d.get("src") not in (0, 1):
        raise ValueError("pwr must be an object with src 0 or 1")
    batt = d.get("batt")
    if batt is not None and (not _is_num(batt) or not 0 <= batt <= 100):
        raise ValueError(f"pwr batt must be 0..100, found {batt!r}")
    return d


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "di": _check_di, "ctl": _check_ctl, "acc": _check_acc, "pwr": _check_pwr,
}


def parse_header(obj: Any) -> TraceHeader:
    """Validate line 1; raise ValueError naming what is wrong."""
    if not isinstance(obj, dict) or obj.get("trace") != 1:
        raise ValueError('the first line must be a header object with "trace": 1')
    lift, accel = obj.get("lift"), obj.get("accel")
    if lift is not None and not isinstance(lift, dict):
        raise ValueError("header lift must be an object")
    if accel is not None:
        if not isinstance(accel, dict) or not _is_num(accel.get("fs")) or accel["fs"] <= 0:
            raise ValueError("header accel.fs must be a positive number")
        if not _is_num(accel.get("lsb_per_g", 256)) or accel.get("lsb_per_g", 256) <= 0:
            raise ValueError("header accel.lsb_per_g must be a positive number")
    ctl = obj.get("controller") or {}
    present = ctl.get("present", True) if isinstance(ctl, dict) else True
    known = {"trace", "start", "lift", "accel", "controller"}
    return TraceHeader(start=str(obj.get("start", "")), lift=lift, accel=accel,
                       controller_present=bool(present),
                       extra={k: v for k, v in obj.items() if k not in known})


def parse_record(obj: Any, last_t: float, line: str | None = None) -> Record:
    """Validate one sample line; raise ValueError naming what is wrong. ``line``: the
    text it was parsed from, if at hand (a cheaper check of acc blocks)."""
    if type(obj) is dict and len(obj) == 2:
        # The common line {"t": number, kind: data}, checked with plain type tests; any
        # doubt goes through the full checks below, which name the problem.
        t = obj.get("t")
        tt = type(t)
        if (tt is float or tt is int) and t >= 0 and t >= last_t and math.isfinite(t):
            kind = ""
            for kind in obj:
                if kind != "t":
                    break
            if kind == "acc" and line is not None:
                return Record(float(t), kind, _check_acc(
                    obj[kind], "true" not in line and "false" not in line))
            check = _CHECKS.get(kind)
            if check is not None:
                return Record(float(t), kind, check(obj[kind]))
    if not isinstance(obj, dict):
        raise ValueError("a sample line must be a JSON object")
    t = obj.get("t")
    if not _is_num(t) or t < 0:
        raise ValueError(f"t must be a non-negative number, found {t!r}")
    if t < last_t:
        raise ValueError(f"t goes backwards ({t} after {last_t})")
    kinds = [k for k in KINDS if k in obj]
    if len(kinds) != 1:
        raise ValueError(f"exactly one of di, ctl, acc, pwr expected, found {kinds or 'none'}")
    kind = kinds[0]
    return Record(float(t), kind, _CHECKS[kind](obj[kind]))


_scan = json.JSONDecoder().scan_once


def _loads(line: str) -> Any:
    """``json.loads`` of one line without its per-call wrapper (regex passes for the
    surrounding whitespace); anything unusual goes to ``json.loads`` for its error."""
    try:
        obj, end = _scan(line, 0)
    except StopIteration:
        return json.loads(line)
    if end == len(line) or line[end:].isspace():
        return obj
    return json.loads(line)


class TraceReader:
    """Iterate the records of a trace file; the header is read on open.

    ``bad_lines`` counts malformed lines (reported and skipped); ``errors`` keeps the
    first ``max_kept_errors`` of them as :class:`TraceError`.
    """

    def __init__(self, path: str | Path, on_error: Callable[[TraceError], None] | None = None,
                 max_kept_errors: int = 1000) -> None:
        self.path = Path(path)
        self.bad_lines = 0
        self.errors: list[TraceError] = []
        self.lines_read = 0
        self._max_kept = max_kept_errors
        self._on_error = on_error or (lambda e: log.warning("%s: %s", self.path, e))
        self._fh, self._raw = _open_text(self.path, "r")
        self.size = self.path.stat().st_size
        first = self._fh.readline()
        self.lines_read = 1
        try:
            self.header = parse_header(json.loads(first))
        except (ValueError, TypeError) as exc:
            self.close()
            raise TraceError(1, f"bad header: {exc}") from exc

    def _bad(self, line: int, reason: str) -> None:
        err = TraceError(line, reason)
        self.bad_lines += 1
        if len(self.errors) < self._max_kept:
            self.errors.append(err)
        self._on_error(err)

    def __iter__(self) -> Iterator[Record]:
        last_t = 0.0
        lineno = 1
        loads = _loads
        try:
            while True:
                try:
                    raw = self._fh.readline()
                except (OSError, EOFError, UnicodeDecodeError) as exc:
                    # A gzip file cut short (power loss while recording) ends the trace here.
                    self._bad(lineno + 1, f"unreadable: {exc}")
                    break
                if not raw:
                    break
                lineno += 1
                self.lines_read = lineno
                try:
                    rec = parse_record(loads(raw), last_t, raw)
                except (ValueError, TypeError, RecursionError) as exc:
                    if raw.strip():          # a blank line is no error
                        self._bad(lineno, str(exc))
                    continue
                last_t = rec.t
                yield rec
        finally:
            self.close()

    def progress(self) -> float:
        """Fraction of the file read so far (of the compressed bytes for .gz)."""
        try:
            return min(1.0, self._raw.tell() / self.size) if self.size else 1.0
        except (OSError, ValueError):
            return 1.0

    def close(self) -> None:
        self._fh.close()
        self._raw.close()

    def __enter__(self) -> TraceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TraceWriter:
    """Write a trace: header first, then one compact line per record."""

    def __init__(self, path: str | Path, header: TraceHeader,
                 compress: bool | None = None) -> None:
        self.path = Path(path)
        self._fh, self._raw = _open_text(self.path, "w", compress)
        self._write(header.to_json())

    def _write(self, obj: dict[str, Any]) -> None:
        self._fh.write(json.dumps(obj, separators=(",", ":")) + "\n")

    def write(self, t: float, kind: str, data: Any) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown record kind {kind!r}")
        self._write({"t": round(t, 6), kind: data})

    def write_record(self, rec: Record) -> None:
        self.write(rec.t, rec.kind, rec.data)

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()
        self._raw.close()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
