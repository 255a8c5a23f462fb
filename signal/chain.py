"""The accelerometer conditioning chain: raw counts -> car frame -> analysis rate outputs.

``AccelChain`` (numpy path, what the agent runs) and ``AccelChainScalar`` (the same integers
from the pure kernels of ``fixedpoint``) take blocks of raw 3-axis counts of any length and
stream their state across calls::

    counts --rotate (Q14, sensor -> car frame)--> Q14 counts
           --FIR decimator (gain folded in)-----> Q24 g at fs_out          (3 axes)
              z --10 Hz 4th-order Butterworth --> a_z  (gravity included)
              z --ISO 2631-1 Wk ---------------> w_z
              x, y --ISO 2631-1 Wd ------------> w_x, w_y

Outputs are int64 arrays in Q24 g (``G_ONE = 2**24`` is 1 g; ``to_ms2`` converts). Output
sample i of a ``ChainOut`` is the one for input sample ``(out.first + i) * factor`` counted
from the first input sample ever fed, i.e. at ``t_first_input + out.t_offset + i / fs``
(``out.times(t0)``); each output lags that instant by its filters' group delay,
``chain.delay_s[name]`` (see ``DELAY_REF_HZ``): subtract it to align events in time.

At the first sample every filter starts settled on it (as if the car had been at rest
forever), so a_z starts at the gravity value instead of ringing up from zero.

Formats and ranges: a_z is computed in Q24 g all the way (range +-32 g; the low-pass's
internal values reach 1.7x its input, so a constant input is exact up to ~19 g, beyond the
16 g of any supported chip; a shock beyond that saturates, never wraps). Wk/Wd run 5 bits
finer (Q29 g, +-1 g after the band limit, ample for vibration) and are rounded back to
Q24 g at the end: rounding noise at Q24 g, amplified ~6000x by the 0.4 Hz band limit's
poles, would cost ~30 dB (see ``filter_design.with_gain_bits``).

Cost: a numpy run costs ~0.5 ms of per-call overhead whatever its length: callers feeding short
blocks should let the chain batch them (``min_block``, e.g. ``fs_in`` for 1 s) and call
``flush()`` at the end of input.

Gravity and bias removal (``dsp.RestTracker``) and integration (``dsp.Integrator``) are
kernels the motion module applies to a_z itself (it knows when the car rests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import chain as _chain_it

import numpy as np
from liftwatch.signal import dsp
from liftwatch.signal import filter_design as fd
from liftwatch.signal import fixedpoint as fp

G_ONE = fp.G_ONE
STANDARD_GRAVITY = 9.80665
RAW_LIMIT = 1 << 15  # raw counts come from 16-bit registers: anything beyond is not a sample
W_GAIN_BITS = 5  # Wk/Wd run in Q29 g (range +-1 g after the band limit): see with_gain_bits
LOG2M = 8  # look-ahead depth of the IIR sections (M = 256 outputs per numpy step)
# A numpy run costs ~0.5 ms of per-call overhead whatever its length (four filter levels of
# ~80 small numpy operations each): per-record calls (0.08 s blocks) cost ~25 CPU s per hour
# of signal, 2 s batches ~1.3 s (measured 2026-11, 400 Hz in). ``min_block`` (input samples
# held back until that many are pending) batches inside the chain; the default 0 keeps "each
# call returns what its block completes". Replay wants ``min_block=fs_in`` or more (or a
# caller that batches itself, as MotionTracker does); output times stay exact (``first``).
# Frequency at which each output's group delay is quoted: a_z carries trip acceleration
# (content below ~1 Hz); w_z peaks around 4..8 Hz (Wk); w_x, w_y around 1..2 Hz (Wd).
DELAY_REF_HZ = {"a_z": 0.5, "w_z": 5.0, "w_x": 1.0, "w_y": 1.0}


def to_ms2(arr: np.ndarray | int | float) -> np.ndarray | float:
    """Q24 g chain values to m/s^2 (float)."""
    return np.asarray(arr, dtype=np.float64) * (STANDARD_GRAVITY / G_ONE)


def from_ms2(value: float) -> int:
    """m/s^2 to Q24 g (rounded), for thresholds compared with chain outputs."""
    return int(round(value * G_ONE / STANDARD_GRAVITY))


@dataclass
class ChainOut:
    """One block of chain output; all arrays have the same length, Q24 g int64."""

    a_z: np.ndarray
    w_z: np.ndarray
    w_x: np.ndarray
    w_y: np.ndarray
    first: int  # output index (at fs) of element 0, counted from the first input sample
    fs: int

    @property
    def t_offset(self) -> float:
        """Seconds from the first input sample ever fed to element 0 (before filter delays)."""
        return self.first / self.fs

    def times(self, t_first_input: float) -> np.ndarray:
        """Sample instants of the outputs given the time of the first input sample ever fed."""
        return t_first_input + (self.first + np.arange(len(self.a_z))) / self.fs

    def __len__(self) -> int:
        return len(self.a_z)

    to_ms2 = staticmethod(to_ms2)


def rotation_q14(matrix: list[list[float]] | None) -> list[list[int]]:
    """Validate a sensor -> car rotation (rows: car x, y, z in sensor axes) and quantise it."""
    if matrix is None:
        return [[fp.Q14_ONE if i == j else 0 for j in range(3)] for i in range(3)]
    try:
        rows = [[float(v) for v in row] for row in matrix]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"rotation must be 3 rows of 3 numbers: {exc}") from None
    if len(rows) != 3 or any(len(r) != 3 for r in rows):
        raise ValueError(f"rotation must be 3 rows of 3 numbers, got {matrix!r}")
    for r in rows:
        for v in r:
            if not math.isfinite(v) or abs(v) > 1.0 + 1e-6:
                raise ValueError(f"rotation entries must be finite and within [-1, 1], got {v!r}")
    return [[int(round(max(-1.0, min(1.0, v)) * fp.Q14_ONE)) for v in r] for r in rows]


@dataclass
class ChainDesign:
    """The quantised coefficients of a chain for one sensor rate and scale."""

    fs_in: int
    fs_out: int
    lsb_per_g: float
    log2m: int = LOG2M
    factor: int = field(init=False)
    taps: list[int] = field(init=False)
    taps_frac: int = field(init=False)
    taps_float: list[float] = field(init=False)
    lp_sos: list[list[float]] = field(init=False)
    wk_sos: list[list[float]] = field(init=False)
    wd_sos: list[list[float]] = field(init=False)
    lp: list = field(init=False)
    wk: list = field(init=False)
    wd: list = field(init=False)
    delay_s: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        if isinstance(self.fs_in, bool) or not isinstance(self.fs_in, int) or self.fs_in <= 0:
            raise ValueError(f"fs_in must be a positive integer in Hz, got {self.fs_in!r}")
        if isinstance(self.fs_out, bool) or not isinstance(self.fs_out, int):
            raise ValueError(f"fs_out must be an integer in Hz, got {self.fs_out!r}")
        if self.fs_out < 200 or self.fs_in % self.fs_out:
            raise ValueError(f"fs_in ({self.fs_in!r} Hz) must be a multiple of fs_out "
                             f"({self.fs_out!r} Hz, >= 200)")
        lsb = self.lsb_per_g
        if isinstance(lsb, bool) or not isinstance(lsb, int | float) or not math.isfinite(lsb) \
                or not 1.0 <= lsb <= 1e6:
            raise ValueError(f"lsb_per_g must be a number in [1, 1e6], got {lsb!r}")
        self.factor = self.fs_in // self.fs_out
        self.taps_float = fd.decimator_taps(self.fs_in, self.fs_out)
        # Q14 counts in, Q24 g out: the unit change rides on the decimator's taps.
        gain = G_ONE / (lsb * fp.Q14_ONE)
        self.taps, self.taps_frac = fd.quantize_taps(self.taps_float, gain)
        fs = float(self.fs_out)
        self.lp_sos = fd.lowpass_accel_sos(fs)
        self.wk_sos = fd.iso2631_sos("Wk", fs)
        self.wd_sos = fd.iso2631_sos("Wd", fs)
        self.lp = fd.lookahead_sos(self.lp_sos, self.log2m)
        self.wk = fd.lookahead_sos(fd.with_gain_bits(self.wk_sos, W_GAIN_BITS), self.log2m)
        self.wd = fd.lookahead_sos(fd.with_gain_bits(self.wd_sos, W_GAIN_BITS), self.log2m)
        fir_delay = (len(self.taps) - 1) / 2.0 / self.fs_in
        self.delay_s = {
            "a_z": fir_delay + fd.sos_group_delay(self.lp_sos, DELAY_REF_HZ["a_z"], fs),
            "w_z": fir_delay + fd.sos_group_delay(self.wk_sos, DELAY_REF_HZ["w_z"], fs),
            "w_x": fir_delay + fd.sos_group_delay(self.wd_sos, DELAY_REF_HZ["w_x"], fs),
            "w_y": fir_delay + fd.sos_group_delay(self.wd_sos, DELAY_REF_HZ["w_y"], fs),
        }

    def settle_value(self, v: int) -> int:
        """The decimator's constant output for a constant Q14-count input v."""
        return fp.sat(fp.rshift_round(sum(self.taps) * v, self.taps_frac))


def check_block(block: object) -> np.ndarray:
    """Raw counts as an (N, 3) int64 array, or ValueError saying what is wrong."""
    if isinstance(block, np.ndarray) and block.dtype.kind in "iu":
        arr = block.astype(np.int64, copy=False)
    else:
        try:
            arr = np.asarray(block, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"accelerometer block must be rows of 3 integers: {exc}") \
                from None
        if arr.size and (not np.isfinite(arr).all() or (arr != np.round(arr)).any()):
            raise ValueError("accelerometer counts must be finite integers")
        if arr.size and np.abs(arr).max() > RAW_LIMIT:
            raise ValueError(f"accelerometer counts beyond +-{RAW_LIMIT} are not raw samples")
        arr = arr.astype(np.int64)
    if arr.size == 0:
        return np.zeros((0, 3), dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"accelerometer block must have shape (N, 3), got {arr.shape}")
    if np.abs(arr).max() > RAW_LIMIT:
        raise ValueError(f"accelerometer counts beyond +-{RAW_LIMIT} are not raw samples")
    return arr


_LIST = {list}
_INT = {int}
_THREE = {3}


def flat_rows(block: object) -> tuple[list[int], int | None] | None:
    """A block given as a list of ``[x, y, z]`` lists of ints, flattened, and its largest
    |count|; None when it is anything else (then :func:`check_block` judges it).

    The cheap check of a FIFO read or a trace line (C-level passes over ~100 values, no
    numpy on a tiny array): a caller validates each small block at once and converts only
    a batch of them to numpy (a flat list converts several times faster than rows).
    ``bool`` is not taken for an int here.

    A block the trace reader has already checked (``drivers.trace.AccBlock``: a list
    subclass carrying ``flat`` and ``peak``) is not walked again: only its range is
    checked here, so each sample of a replay is checked once. Its peak may be None: every
    count fits 16 bits (within ``RAW_LIMIT``), the exact peak not worked out.
    """
    if type(block) is not list:
        flat = getattr(block, "flat", None)
        peak = getattr(block, "peak", -1)
        if type(flat) is not list or not isinstance(block, list) or not flat \
                or len(flat) != 3 * len(block):
            return None
        if peak is None:
            return flat, None
        if type(peak) is not int:
            return None
    else:
        if not block or set(map(type, block)) != _LIST or set(map(len, block)) != _THREE:
            return None
        flat = list(_chain_it.from_iterable(block))
        if set(map(type, flat)) != _INT:
            return None
        peak = max(max(flat), -min(flat))
    if peak > RAW_LIMIT:
        raise ValueError(f"accelerometer counts beyond +-{RAW_LIMIT} are not raw samples")
    return flat, peak


class _Chain:
    """What both paths share: validation, rotation, batching and output indexing."""

    def __init__(self, fs_in: int, lsb_per_g: float, rotation: list[list[float]] | None,
                 fs_out: int, log2m: int, min_block: int | None) -> None:
        self.design = ChainDesign(fs_in, fs_out, lsb_per_g, log2m)
        if min_block is None:
            min_block = 0
        if isinstance(min_block, bool) or not isinstance(min_block, int) or min_block < 0:
            raise ValueError(f"min_block must be an integer >= 0, got {min_block!r}")
        self.fs_in = fs_in
        self.fs_out = fs_out
        self.min_block = min_block
        self.delay_s = dict(self.design.delay_s)
        self.rotation = rotation_q14(rotation)
        self._pending: list[np.ndarray] = []
        self._n_pending = 0
        self._carry: ChainOut | None = None
        self._started = False
        self._n_out = 0

    def set_rotation(self, matrix: list[list[float]] | None) -> None:
        """Use a new sensor -> car rotation from the next processed sample on.

        Samples held back by ``min_block`` are processed first with the old one; their
        outputs come with the next ``process`` or ``flush``. Filters keep their state: a
        changed mounting shows as a step they then follow.
        """
        q = rotation_q14(matrix)
        out = self.flush()
        self.rotation = q
        self._carry = out

    def process(self, block: object) -> ChainOut:
        """Raw counts (N, 3) of any length -> the outputs at fs_out they complete.

        With ``min_block`` > 0, samples are held until that many are pending (fewer numpy
        calls: cheaper per sample, ``min_block / fs_in`` s more latency) and the returned
        block may be empty. Invalid blocks raise ValueError and leave the state untouched.
        """
        raw = check_block(block)
        carry = self._carry
        self._carry = None
        if len(raw):
            self._pending.append(raw)
            self._n_pending += len(raw)
        if self._n_pending and self._n_pending >= self.min_block:
            out = self._emit()
        else:
            out = self._empty()
        if carry is not None and len(carry):
            out = _join(carry, out)
        return out

    def flush(self) -> ChainOut:
        """Process whatever ``min_block`` still holds back (end of input, or before a gap)."""
        carry = self._carry
        self._carry = None
        out = self._emit() if self._n_pending else self._empty()
        return _join(carry, out) if carry is not None and len(carry) else out

    def _empty(self) -> ChainOut:
        e = np.zeros(0, dtype=np.int64)
        return ChainOut(e, e, e, e, self._n_out, self.fs_out)

    def _emit(self) -> ChainOut:
        raw = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        self._pending = []
        self._n_pending = 0
        first = self._n_out
        a_z, w_z, w_x, w_y = self._run(raw)
        self._n_out += len(a_z)
        return ChainOut(a_z, w_z, w_x, w_y, first, self.fs_out)

    def _run(self, raw: np.ndarray) -> tuple[np.ndarray, ...]:
        raise NotImplementedError


def _join(a: ChainOut, b: ChainOut) -> ChainOut:
    return ChainOut(*(np.concatenate([getattr(a, k), getattr(b, k)])
                      for k in ("a_z", "w_z", "w_x", "w_y")), a.first, a.fs)


class AccelChain(_Chain):
    """Fixed-point accelerometer chain, numpy path (see the module doc for the outputs).

    The four outputs run as four channels of one look-ahead cascade (z through the 10 Hz
    low-pass, z through Wk, x and y through Wd), so a call costs four filter passes.

    ``defer_w=True`` splits them for a caller that needs a_z at once but the weighted
    vibration only now and then (the motion tracker: trip figures): ``process`` then
    returns empty ``w_*`` arrays and queues the decimated samples, and
    :meth:`take_weighted` runs Wk/Wd over everything queued in one pass (a numpy run
    costs per call, so a long run is far cheaper per sample). The integers are the same
    either way: each filter channel has its own state and sees the same samples.
    """

    def __init__(self, fs_in: int, lsb_per_g: float, rotation: list[list[float]] | None = None,
                 fs_out: int = 200, log2m: int = LOG2M,
                 min_block: int | None = None, defer_w: bool = False) -> None:
        super().__init__(fs_in, lsb_per_g, rotation, fs_out, log2m, min_block)
        d = self.design
        self._dec = dsp.FirDecimator(d.taps, d.taps_frac, d.factor, channels=3)
        self.defer_w = defer_w
        if defer_w:
            self._lp = dsp.LookaheadCascade([d.lp], per_channel=True)
            self._bank = dsp.LookaheadCascade([d.wk, d.wd, d.wd], per_channel=True)
        else:
            self._bank = dsp.LookaheadCascade([d.lp, d.wk, d.wd, d.wd], per_channel=True)
        self._w_in: list[np.ndarray] = []   # decimated z, x, y queued for Wk/Wd (defer_w)
        self.w_queued = 0                    # samples in _w_in

    def _run(self, raw: np.ndarray) -> tuple[np.ndarray, ...]:
        rot = dsp.rotate_q14(raw, self.rotation, 0)
        if not self._started:
            self._dec.reset([int(v) for v in rot[0]])
            dec0 = [self.design.settle_value(int(v)) for v in rot[0]]
            if self.defer_w:
                self._lp.reset([dec0[2]])
                self._bank.reset([dec0[2], dec0[0], dec0[1]])
            else:
                self._bank.reset([dec0[2], dec0[2], dec0[0], dec0[1]])
            self._started = True
        dec = self._dec.process(rot)
        if self.defer_w:
            a_z = self._lp.process(dec[:, 2:3])[:, 0].copy()
            self._w_in.append(dec[:, W_AXES])
            self.w_queued += dec.shape[0]
            e = np.zeros(0, dtype=np.int64)
            return a_z, e, e, e
        out = self._bank.process(dec[:, CHANNEL_AXES])
        w = dsp.shift_round(out[:, 1:], W_GAIN_BITS)
        return out[:, 0].copy(), w[:, 0], w[:, 1], w[:, 2]

    def take_weighted(self) -> np.ndarray:
        """``defer_w``: Wk/Wd outputs of every sample queued so far, as an (N, 3) int64
        array of columns w_z, w_x, w_y (Q24 g), in output order: row i belongs to the
        output that follows the last row of the previous call."""
        if not self._w_in:
            return np.zeros((0, 3), dtype=np.int64)
        x = self._w_in[0] if len(self._w_in) == 1 else np.concatenate(self._w_in)
        self._w_in = []
        self.w_queued = 0
        return dsp.shift_round(self._bank.process(x), W_GAIN_BITS)


CHANNEL_AXES = [2, 2, 0, 1]  # a_z, w_z, w_x, w_y take z, z, x, y of the decimated signal
W_AXES = [2, 0, 1]           # w_z, w_x, w_y (defer_w)


class AccelChainScalar(_Chain):
    """The same chain on the pure kernels of ``fixedpoint`` (lists of ints), same output.

    The MicroPython reference of ``AccelChain``: slow in CPython, used by tests and bench.
    """

    def __init__(self, fs_in: int, lsb_per_g: float, rotation: list[list[float]] | None = None,
                 fs_out: int = 200, log2m: int = LOG2M,
                 min_block: int | None = None) -> None:
        super().__init__(fs_in, lsb_per_g, rotation, fs_out, log2m, min_block)
        d = self.design
        self._dec = [fp.FirDecimator(d.taps, d.taps_frac, d.factor) for _ in range(3)]
        self._casc = [fp.LookaheadCascade(specs) for specs in (d.lp, d.wk, d.wd, d.wd)]

    def _run(self, raw: np.ndarray) -> tuple[np.ndarray, ...]:
        rot = fp.rotate_q14(raw.tolist(), self.rotation, 0)
        if not self._started:
            for i in range(3):
                self._dec[i].reset(rot[0][i])
            dec0 = [self.design.settle_value(v) for v in rot[0]]
            for c, axis in zip(self._casc, CHANNEL_AXES, strict=True):
                c.reset(dec0[axis])
            self._started = True
        cols = [self._dec[i].process([r[i] for r in rot]) for i in range(3)]
        outs = [c.process(cols[axis]) for c, axis in zip(self._casc, CHANNEL_AXES, strict=True)]
        outs[1:] = [fp.shift_round(o, W_GAIN_BITS) for o in outs[1:]]
        return tuple(np.asarray(o, dtype=np.int64) for o in outs)
