"""numpy twin of the MCU profile (``mcu``): the same integers, for the Pi, tests and bench.

Why a twin: ``mcu`` splits each multiply into 15-bit halves so that a 32-bit MicroPython
never leaves its small ints; here each product is one int64 ``w * x`` rounded half up,
which is the same integer (floor divisions nest), so agreement of the two tests both the
split and the wiring. The half-band FIR runs vectorised over the block; the state-variable
sections are recursive and run sample by sample, vectorised over the four channels.

``peaks`` records the largest |value| of every intermediate the scalar code forms (sums
before clamping, partial products): the bench prints it, a test holds it below 2**30.
"""

from __future__ import annotations

import numpy as np
from liftwatch.signal import mcu, mcu_design

SEC_LEN = 12
CHAN_AXIS = [2, 2, 0, 1]  # a_z, w_z, w_x, w_y take z, z, x, y


def _round_mul(w: np.ndarray | int, x: np.ndarray, f: np.ndarray | int) -> np.ndarray:
    return (np.asarray(w, dtype=np.int64) * x + np.left_shift(np.int64(1), np.asarray(f) - 1)) \
        >> f


class FrontEndNumpy:
    """Block form of ``mcu.FrontEnd``: ``process((N, 3) counts) -> (M, 4)`` Q24 g outputs
    (a_z, w_z, w_x, w_y) for the inputs 0, 2, 4, ... counted from the first ever fed."""

    def __init__(self, coeffs: dict, rot: list[list[int]] | None = None) -> None:
        if rot is None:
            rot = [[16384, 0, 0], [0, 16384, 0], [0, 0, 16384]]
        rw = np.asarray(mcu.rotation_words(rot, coeffs["ROT_GAIN"]), dtype=np.int64)
        self.rw, self.rf = rw[:, 0].reshape(3, 3), rw[:, 1].reshape(3, 3)
        self.c = coeffs
        self.n = coeffs["HB_LEN"]
        self.mid = (self.n - 1) // 2
        self.hb = np.asarray(coeffs["HB_WORDS"], dtype=np.int64)
        nsec = 4
        words = np.zeros((nsec, SEC_LEN, 4), dtype=np.int64)
        active = np.zeros((nsec, 4), dtype=bool)  # sections a channel has (others pass)
        for ch, key in enumerate(("LP", "WK", "WD", "WD")):
            secs = list(coeffs[key]) + [mcu_design.IDENTITY] * (nsec - len(coeffs[key]))
            for k, sec in enumerate(secs):
                words[k, :, ch] = sec
                active[k, ch] = k < len(coeffs[key])
        self.words = words
        self.active = active
        self.state = np.zeros((nsec, 2, 4), dtype=np.int64)
        self.hist: np.ndarray | None = None  # last n - 1 rotated samples
        self.count = 0
        self.peaks = {"rotate": 0, "fir": 0, "mul": 0, "section": 0}

    def _peak(self, key: str, a: np.ndarray) -> None:
        if a.size:
            self.peaks[key] = max(self.peaks[key], int(np.abs(a).max()))

    def _mul(self, w: np.ndarray, x: np.ndarray, f: np.ndarray) -> np.ndarray:
        """The scalar ``mul``'s integer; records its partial products' peaks."""
        hi = w * (x >> 15)
        lo = w * (x & 32767)
        r1 = np.where(f == 15, 1 << 14, 0)
        r2 = np.where(f >= 16, np.left_shift(1, np.maximum(f - 16, 0)), 0)
        wide = hi + ((lo + r1) >> 15) + r2
        self._peak("mul", hi)
        self._peak("mul", lo)
        self._peak("mul", wide)
        return _round_mul(w, x, f)

    def process(self, block: object) -> np.ndarray:
        raw = np.asarray(block, dtype=np.int64).reshape(-1, 3)
        c = self.c
        if not len(raw):
            return np.zeros((0, 4), dtype=np.int64)
        first = self.hist is None
        if first:
            self.hist = np.repeat(raw[:1], self.n - 1, axis=0)
        x = np.concatenate([self.hist, raw])
        self.hist = x[len(x) - (self.n - 1):]
        # outputs at inputs whose global index is even
        start = (-self.count) % 2
        idx = np.arange(start, len(raw), 2) + (self.n - 1)  # positions in x of the newest
        self.count += len(raw)
        centre = idx - self.mid
        sh = c["HB_SHIFT"]
        acc = (x[centre] << c["HB_CENTRE_SHIFT"]) + c["HB_BIAS"]
        for k, w in enumerate(self.hb):
            d = 2 * k + 1
            pa, pb = w * x[centre - d], w * x[centre + d]
            self._peak("fir", pa)
            self._peak("fir", pb)
            acc = acc + (pa >> sh) + (pb >> sh)
            self._peak("fir", acc)
        xd = np.clip(acc, -c["X_LIMIT"], c["X_LIMIT"])
        # rotation and unit gain, Q13 counts -> Q22 g
        dec = np.zeros_like(xd)
        rs = c["ROT_SHIFT"]
        for a in range(3):
            v = self._mul(self.rw[a, 0], xd[:, 0], self.rf[a, 0])
            v = v + self._mul(self.rw[a, 1], xd[:, 1], self.rf[a, 1])
            v = v + self._mul(self.rw[a, 2], xd[:, 2], self.rf[a, 2])
            self._peak("rotate", v)
            if rs >= 0:
                lim = c["SIG_LIMIT"] >> rs
                dec[:, a] = np.clip(v, -lim, lim) << rs
            else:
                dec[:, a] = np.clip((v + (1 << (-rs - 1))) >> -rs,
                                    -c["SIG_LIMIT"], c["SIG_LIMIT"])
        if first:
            self._settle(dec[0])
        return self._sections(dec[:, CHAN_AXIS])

    def _finish(self, y: np.ndarray, sh: np.ndarray) -> np.ndarray:
        lim = self.c["SIG_LIMIT"] >> sh
        return np.clip(y, -lim, lim) << sh

    def _settle(self, d0: np.ndarray) -> None:
        v = d0[CHAN_AXIS].astype(np.int64)
        for k in range(self.words.shape[0]):
            w = self.words[k]
            self.state[k, 0] = 0
            self.state[k, 1] = v
            kind = w[0]
            y = np.select([kind == mcu_design.HIGH, kind == mcu_design.STEP],
                          [np.zeros_like(v), _round_mul(w[10], v, w[11])], v)
            v = np.where(self.active[k], self._finish(y, w[1]), v)

    def _sections(self, v_in: np.ndarray) -> np.ndarray:
        c = self.c
        slim = c["STATE_LIMIT"]
        out = np.empty_like(v_in)
        words, st = self.words, self.state
        m = self._mul
        kinds = [(w[0] == mcu_design.HIGH, w[0] == mcu_design.BAND_LOW,
                  w[0] == mcu_design.STEP) for w in words]
        for i in range(len(v_in)):
            v0 = v_in[i]
            for k in range(words.shape[0]):
                w = words[k]
                ic1, ic2 = st[k, 0], st[k, 1]
                v3 = v0 - ic2
                v1 = ic1 - m(w[2], ic1, w[3]) + m(w[4], v3, w[5])
                v2 = ic2 + m(w[4], ic1, w[5]) + m(w[6], v3, w[7])
                t1 = 2 * np.clip(v1, -slim, slim) - ic1
                t2 = 2 * np.clip(v2, -slim, slim) - ic2
                v1 = np.clip(v1, -slim, slim)
                v2 = np.clip(v2, -slim, slim)
                act = self.active[k]
                st[k, 0] = np.where(act, np.clip(t1, -slim, slim), st[k, 0])
                st[k, 1] = np.where(act, np.clip(t2, -slim, slim), st[k, 1])
                x1 = m(w[8], v1, w[9])
                x2 = m(w[10], v2, w[11])
                is_high, is_bl, is_step = kinds[k]
                y = np.select([is_high, is_bl, is_step],
                              [v0 - v2 - v1 - x1, v1 + v2, v0 - v2 + x1 + x2], v2)
                for a in (v3, t1, t2, y, v0 - v2 - v1, v0 - v2 + x1):
                    self._peak("section", np.where(act, a, 0))
                v0 = np.where(act, self._finish(y, w[1]), v0)
            out[i] = v0
        out[:, 0] <<= c["A_SHIFT"]
        ws = c["W_SHIFT"]
        out[:, 1:] = (out[:, 1:] + (1 << (ws - 1))) >> ws
        return out
