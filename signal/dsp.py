"""numpy paths of the kernels of ``fixedpoint``: the same integers, vectorised.

Every class here mirrors the one of the same name in ``fixedpoint`` and gives identical
output (tests assert it bit for bit). All arithmetic is int64; the formats of ``fixedpoint``
keep every product below 2**60 and every sum below 2**63, so nothing overflows. Where that
bound cannot be guaranteed (long integrations near the accumulator limit, long least-squares
sums) the code splits the work or falls back to Python ints.

How the recursive filters are vectorised exactly: the look-ahead form (``filter_design``)
makes an output depend on outputs M samples back at the earliest, so one numpy step computes
M outputs; the non-recursive parts (b-stage, sparse look-ahead stages, FIR) are plain
shifted-slice sums over the whole block. Blocks may have any length and any number of
channels (shape (N,) or (N, C)); look-ahead sections may also give each channel its own
coefficients, so that unrelated filters share one numpy pass.

Cost model (why the chain batches): a numpy call on a small array costs a few microseconds
whatever its size, and one look-ahead section takes ~8 calls per stage (log2m stages) plus
~7 per M outputs, so short blocks are dominated by per-call overhead.
"""

from __future__ import annotations

import numpy as np
from liftwatch.signal import fixedpoint as fp

SIG_MAX = fp.SIG_MAX
SIG_MIN = fp.SIG_MIN
LA_FRAC = fp.LA_FRAC
LA_HALF = fp.LA_HALF
_LO = np.int64(SIG_MIN)
_HI = np.int64(SIG_MAX)
_HALF = np.int64(LA_HALF)
_FRAC = np.int64(LA_FRAC)
# The clip ufunc itself: np.clip() wraps it in ~10 us of Python per call.
_clip = getattr(getattr(np, "_core", None), "umath", None)
_clip = getattr(_clip, "clip", None) or (lambda a, lo, hi, out: np.clip(a, lo, hi, out=out))
CHUNK = 4096  # samples per numpy step of the filters: temporaries stay in the CPU cache


def as_i64(x: object) -> np.ndarray:
    """An int64 array of the samples (a copy only when needed)."""
    return np.asarray(x, dtype=np.int64)


def _sat_(a: np.ndarray) -> np.ndarray:
    np.maximum(a, SIG_MIN, out=a)  # two ufuncs: np.clip costs ~10 us of Python per call
    np.minimum(a, SIG_MAX, out=a)
    return a


def _round_shift_(acc: np.ndarray, shift: int) -> np.ndarray:
    """In place: round half up and drop ``shift`` bits (arithmetic shift, as Python's >>)."""
    if shift > 0:
        acc += 1 << (shift - 1)
        acc >>= shift
    elif shift < 0:
        acc <<= -shift
    return acc


def rotate_q14(samples: object, m: list[list[int]], shift: int) -> np.ndarray:
    """(N, 3) samples times a Q14 matrix, rounded by ``shift`` and saturated (as fixedpoint)."""
    v = as_i64(samples).reshape(-1, 3)
    mq = np.asarray(m, dtype=np.int64)
    out = v @ mq.T  # |m| < 2**15, |v| < 2**31: sums below 2**48, exact in int64
    return _sat_(_round_shift_(out, shift))


def shift_round(x: object, shift: int) -> np.ndarray:
    """Vectorised ``fixedpoint.shift_round``."""
    return _sat_(_round_shift_(as_i64(x).copy(), shift))


class BiquadDF1:
    """DF1 biquad cascade: per-sample (no exact vectorisation exists), over Python ints.

    Kept for completeness and for checking the look-ahead form; the chain does not use it.
    """

    def __init__(self, sections: list[list[int]]) -> None:
        self._k = fp.BiquadDF1(sections)

    def process(self, x: object) -> np.ndarray:
        return as_i64(self._k.process(as_i64(x).tolist()))


class LookaheadSection:
    """Vectorised ``fixedpoint.LookaheadSection`` over one or several channels.

    ``spec`` is one look-ahead spec shared by every channel, or a list of specs, one per
    channel (same M, different coefficients): then unrelated filters of a chain run side by
    side in one numpy pass, which divides the per-call cost. Channel c of the output equals
    ``fixedpoint.LookaheadSection(spec_c)`` run on channel c of the input.
    """

    def __init__(self, spec: list, channels: int | None = None) -> None:
        per_col = isinstance(spec[0], list) and isinstance(spec[0][0], list)
        specs = list(spec) if per_col else [spec]
        if per_col:
            channels = len(specs)
        self.specs = specs
        self.channels = channels
        ks = [[st[0] for st in sp[2]] for sp in specs]
        if any(k != ks[0] for k in ks) or any(sp[5] != specs[0][5] for sp in specs):
            raise ValueError("channels of one look-ahead section need the same M")
        self.ks = ks[0]
        self.m = specs[0][5]

        def coef(values: list[int]) -> np.int64 | np.ndarray:
            # numpy scalars, not Python ints: numpy converts a Python int on every call.
            if len(values) == 1 or all(v == values[0] for v in values):
                return np.int64(values[0])
            return np.asarray(values, dtype=np.int64)

        self.b0 = coef([sp[0][0] for sp in specs])
        self.b1 = coef([sp[0][1] for sp in specs])
        self.b2 = coef([sp[0][2] for sp in specs])
        self.bfrac = coef([sp[1] for sp in specs])
        self.bhalf = coef([1 << (sp[1] - 1) for sp in specs])
        self.c1 = [coef([sp[2][i][1] for sp in specs]) for i in range(len(self.ks))]
        self.c2 = [coef([sp[2][i][2] for sp in specs]) for i in range(len(self.ks))]
        self.r1 = coef([sp[3] for sp in specs])
        self.r2 = coef([sp[4] for sp in specs])
        self.has_c2 = [bool(np.any(c)) for c in self.c2]
        self.has_r2 = bool(np.any(self.r2))
        self._tiles: dict[int, tuple] = {}
        self.reset(0)

    def _full(self, n: int) -> np.ndarray:
        shape = (n,) if self.channels is None else (n, self.channels)
        return np.zeros(shape, dtype=np.int64)

    def reset(self, v: int | list[int]) -> None:
        """Start settled on a constant input ``v`` (one value, or one per channel)."""
        nc = 1 if self.channels is None else self.channels
        vs = [int(a) for a in np.broadcast_to(np.asarray(v, dtype=object), (nc,))]
        specs = self.specs if len(self.specs) == nc else self.specs * nc
        cols = [fp.la_steady(sp, a) for sp, a in zip(specs, vs, strict=True)]

        def hist(n: int, i: int) -> np.ndarray:
            h = self._full(n)
            h[...] = [c[i] for c in cols] if self.channels is not None else cols[0][i]
            return h

        self.xh = self._full(2)
        self.xh[...] = vs if self.channels is not None else vs[0]
        self.sh = [hist(2 * k, i) for i, k in enumerate(self.ks)]
        self.yh = hist(2 * self.m, len(self.ks) + 1)

    def steady(self, v: int | list[int]) -> list[int]:
        """The constant output per channel for a constant input (no state change)."""
        nc = 1 if self.channels is None else self.channels
        vs = [int(a) for a in np.broadcast_to(np.asarray(v, dtype=object), (nc,))]
        specs = self.specs if len(self.specs) == nc else self.specs * nc
        return [fp.la_steady(sp, a)[-1] for sp, a in zip(specs, vs, strict=True)]

    def process(self, x: np.ndarray) -> np.ndarray:
        """Filter a block of shape (N,) or (N, C); state carries over.

        Long blocks go through in chunks of CHUNK samples: the temporaries then stay in the
        cache instead of being fresh multi-megabyte allocations.
        """
        if x.shape[0] <= CHUNK:
            return self._process(x)
        return np.concatenate([self._process(x[s:s + CHUNK])
                               for s in range(0, x.shape[0], CHUNK)])

    def _tiled(self, n: int) -> tuple:
        """The coefficients as arrays of the block's shape (n, C), cached per length.

        Multiplying an (n, C) block by a (C,) vector makes numpy loop over rows of C
        values (~3x slower for C = 4 than an elementwise pass); a full-shape operand keeps
        it one flat loop. Scalars (coefficients shared by all channels) stay scalars.
        """
        got = self._tiles.get(n)
        if got is None:
            def tile(c: np.int64 | np.ndarray, r: int) -> np.int64 | np.ndarray:
                if np.ndim(c) == 0:
                    return c
                return np.ascontiguousarray(np.broadcast_to(c, (r, len(c))))

            if len(self._tiles) >= 16:  # batch lengths vary by a few samples: bound it
                self._tiles.clear()
            m = min(n, self.m)
            got = (*[tile(c, n) for c in (self.b0, self.b1, self.b2, self.bhalf, self.bfrac)],
                   [tile(c, n) for c in self.c1], [tile(c, n) for c in self.c2],
                   tile(self.r1, m), tile(self.r2, m))
            self._tiles[n] = got
        return got

    def _process(self, x: np.ndarray) -> np.ndarray:
        # Written for few numpy calls per block: the per-call cost dominates short blocks.
        n = x.shape[0]
        if self.channels is None:
            b0, b1, b2, bhalf, bfrac = self.b0, self.b1, self.b2, self.bhalf, self.bfrac
            c1s, c2s, r1, r2 = self.c1, self.c2, self.r1, self.r2
        else:
            b0, b1, b2, bhalf, bfrac, c1s, c2s, r1, r2 = self._tiled(n)
        full = np.concatenate([self.xh, x])
        u = full[2:] * b0
        u += full[1:-1] * b1
        u += full[:-2] * b2
        u += bhalf
        u >>= bfrac
        _clip(u, _LO, _HI, out=u)
        self.xh = full[-2:]
        for i, k in enumerate(self.ks):
            f = np.concatenate([self.sh[i], u])
            acc = f[k:k + n] * c1s[i]
            if self.has_c2[i]:
                acc += f[:n] * c2s[i]
            acc += _HALF
            acc >>= _FRAC
            acc += u
            _clip(acc, _LO, _HI, out=acc)
            self.sh[i] = f[n:]  # the last 2k inputs
            u = acc
        m = self.m
        y = np.concatenate([self.yh, u])  # y[2M + i] will hold output i
        # u + ((r1 yM + r2 y2M + half) >> 30) == ((u << 30) + half + r1 yM + r2 y2M) >> 30
        u <<= _FRAC
        u += _HALF
        use_r2 = self.has_r2
        vec = np.ndim(r1) > 0
        for s in range(0, n, m):
            e = min(s + m, n)
            r1s = r1[:e - s] if vec else r1
            acc = y[s + m:e + m] * r1s
            if use_r2:
                acc += y[s:e] * (r2[:e - s] if np.ndim(r2) > 0 else r2)
            acc += u[s:e]
            acc >>= _FRAC
            _clip(acc, _LO, _HI, out=acc)
            y[s + 2 * m:e + 2 * m] = acc
        self.yh = y[n:]  # the last 2M outputs
        return y[2 * m:]


class LookaheadCascade:
    """Sections in series (vectorised ``fixedpoint.LookaheadCascade``).

    ``specs`` is a list of sections shared by all channels, or with ``per_channel=True`` a
    list (one per channel) of lists of sections: level i then runs the i-th section of every
    channel that has one in a single numpy pass (the others just pass through).
    """

    def __init__(self, specs: list, channels: int | None = None,
                 per_channel: bool = False) -> None:
        self.per_channel = per_channel
        if per_channel:
            depth = max(len(c) for c in specs)
            self.active = [[c for c in range(len(specs)) if len(specs[c]) > i]
                           for i in range(depth)]
            self.sections = [LookaheadSection([specs[c][i] for c in act])
                             for i, act in enumerate(self.active)]
            # A run of adjacent channels as a slice: a view, not a fancy-indexed copy.
            self._cols = [slice(a[0], a[-1] + 1) if a == list(range(a[0], a[-1] + 1)) else a
                          for a in self.active]
            self.channels = len(specs)
        else:
            self.sections = [LookaheadSection(s, channels) for s in specs]

    def reset(self, v: int | list[int]) -> int | list[int]:
        """Settle on constant input(s); returns the constant output (one per channel)."""
        if not self.per_channel:
            for s in self.sections:
                s.reset(v)
                v = s.steady(v)
            return v[0] if self.sections and self.sections[0].channels is None else v
        vs = [int(a) for a in v]
        for s, act in zip(self.sections, self.active, strict=True):
            s.reset([vs[c] for c in act])
            for c, y in zip(act, s.steady([vs[c] for c in act]), strict=True):
                vs[c] = y
        return vs

    def process(self, x: np.ndarray) -> np.ndarray:
        if not self.per_channel:
            for s in self.sections:
                x = s.process(x)
            return x
        for i, (s, act) in enumerate(zip(self.sections, self.active, strict=True)):
            if len(act) == self.channels:
                x = s.process(x)
            else:
                if i == 0:
                    x = x.copy()
                cols = self._cols[i]
                x[:, cols] = s.process(np.ascontiguousarray(x[:, cols]))
        return x


class FirDecimator:
    """Vectorised ``fixedpoint.FirDecimator``: only the kept outputs are computed."""

    def __init__(self, taps: list[int], frac: int, factor: int, channels: int | None = None):
        self.h = np.asarray(taps, dtype=np.int64)
        self._h_rev = np.ascontiguousarray(self.h[::-1])
        self.frac = frac
        self.factor = factor
        self.channels = channels
        nh = len(taps) - 1
        self.hist = np.zeros((nh,) if channels is None else (nh, channels), dtype=np.int64)
        self.phase = 0
        # A half-band decimator (400 -> 200 Hz) has every other tap zero but the centre
        # one: then one parity of taps goes through the window product and the lone tap of
        # the other is one strided multiply (half the work; integer sums, the same result).
        self._split: tuple[int, np.ndarray, int, np.int64] | None = None
        hr = self._h_rev
        for par in (0, 1):
            lone = np.flatnonzero(hr[1 - par::2])
            if len(hr) >= 8 and len(lone) == 1:
                self._split = (par, np.ascontiguousarray(hr[par::2]), 1 - par + 2 * int(lone[0]),
                               np.int64(hr[1 - par + 2 * int(lone[0])]))
                break

    def reset(self, v: int | list[int]) -> None:
        self.hist[...] = v

    def process(self, x: np.ndarray) -> np.ndarray:
        """Decimate a block of shape (N,) or (N, C) (in cache-sized chunks); state carries."""
        step = CHUNK * self.factor
        if x.shape[0] <= step:
            return self._process(x)
        return np.concatenate([self._process(x[s:s + step])
                               for s in range(0, x.shape[0], step)])

    def _process(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        nh = len(self.h) - 1
        d = self.factor
        full = np.concatenate([self.hist, x])
        first = (-self.phase) % d  # index in x of the first kept output
        count = 0 if first >= n else (n - 1 - first) // d + 1
        shape = (count,) if self.channels is None else (count, self.channels)
        if count:
            # y[q] = sum_j h[j] full[nh + first + q d - j]: one strided window, one matmul.
            # (The window is sliding_window_view(full[first:], nh + 1, axis=0)[::d], built
            # directly: that helper spends more time checking arguments than the matmul.)
            item = full.itemsize
            row = full.strides[0]
            par, taps, step = 0, self._h_rev, 1
            if self._split is not None:
                par, taps, lone, h_lone = self._split
                step = 2
            if self.channels is None:
                shape_w: tuple[int, ...] = (count, len(taps))
                strides: tuple[int, ...] = (d * item, step * item)
            else:
                c = self.channels
                shape_w = (count, c, len(taps))
                strides = (d * c * item, item, step * c * item)
            win = np.ndarray(shape_w, dtype=full.dtype, buffer=full,
                             offset=(first + par) * row, strides=strides)
            acc = win @ taps
            if self._split is not None:
                lo = first + lone
                acc += full[lo:lo + (count - 1) * d + 1:d] * h_lone
            _sat_(_round_shift_(acc, self.frac))
        else:
            acc = np.zeros(shape, dtype=np.int64)
        self.phase = (self.phase + n) % d
        self.hist = full[len(full) - nh:].copy() if nh else full[:0].copy()
        return acc


class Integrator:
    """Vectorised ``fixedpoint.Integrator`` (np.cumsum when the accumulator cannot clamp)."""

    def __init__(self, shift: int, acc: int = 0) -> None:
        fp.Integrator(shift, acc)  # the same argument checks
        self.shift = shift
        self.acc = acc

    def process(self, x: object) -> np.ndarray:
        xs = as_i64(x)
        n = len(xs)
        if n == 0:
            return xs.copy()
        peak = int(np.abs(xs).max())
        if abs(self.acc) + n * peak <= fp.ACC_MAX:  # no partial sum can reach the clamp
            acc = np.cumsum(xs)
            acc += self.acc
            self.acc = int(acc[-1])
            out = acc
        else:  # rare: near the clamp, the per-sample definition (exact, slower)
            k = fp.Integrator(self.shift, self.acc)
            res = k.process(xs.tolist())
            self.acc = k.acc
            return as_i64(res)
        return _sat_(_round_shift_(out, self.shift))


class RestTracker:
    """Vectorised ``fixedpoint.RestTracker``: filter the non-held samples, hold the rest."""

    def __init__(self, shift: int, initial: int = 0, log2m: int = 8) -> None:
        self.section = LookaheadSection(fp.tracker_spec(shift, log2m))
        self.reset(initial)

    def reset(self, v: int) -> None:
        """Jump to rest value ``v`` (as ``fixedpoint.RestTracker.reset``)."""
        self.section.reset(v)
        self.rest = self.section.steady(v)[0]

    def process(self, x: object, hold: object) -> tuple[np.ndarray, np.ndarray]:
        """Returns ``(rest, residual)`` int64 arrays; ``hold`` a boolean per sample."""
        xs = as_i64(x)
        h = np.asarray(hold, dtype=bool)
        if h.shape != xs.shape:
            raise ValueError(f"hold must have one flag per sample: {h.shape} vs {xs.shape}")
        live = ~h
        filt = self.section.process(xs[live])
        idx = np.cumsum(live) - 1  # index into filt of the latest tracked sample
        rest = np.where(idx >= 0, filt[np.maximum(idx, 0)] if len(filt) else 0, self.rest)
        rest = rest.astype(np.int64)
        if len(filt):
            self.rest = int(filt[-1])
        res = xs - rest
        return rest, _sat_(res)


def lsq_slope(samples: object, fs: int) -> int:
    """Vectorised ``fixedpoint.lsq_slope``: int64 partial sums, combined as Python ints."""
    y = as_i64(samples)
    n = len(y)
    if n < 2:
        raise ValueError(f"lsq_slope needs at least 2 samples, got {n}")
    sy = 0
    siy = 0
    step = 1 << 16  # i < 2**16 .. per chunk: |i * y| < 2**45, chunk sums < 2**61
    for s in range(0, n, step):
        c = y[s:s + step]
        sy += int(c.sum())
        siy += int(np.dot(np.arange(len(c), dtype=np.int64), c)) + s * int(c.sum())
    si = n * (n - 1) // 2
    sii = (n - 1) * n * (2 * n - 1) // 6
    return fp.round_div(fs * (n * siy - si * sy), n * sii - si * si)
