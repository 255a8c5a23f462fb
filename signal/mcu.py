"""The MCU profile of the accelerometer front-end: 31-bit small ints only, no allocation.

400 Hz raw 3-axis counts in, per sample (``FrontEnd.push``); every other sample (200 Hz)
the chain's four outputs in Q24 g: a_z (10 Hz low-pass), w_z (Wk), w_x, w_y (Wd).
MicroPython subset: no imports, no floats, ints and preallocated lists only, so the same
file runs on a 32-bit MicroPython (tests run it on MicroPython 1.27 under
``micropython.heap_lock()``: one big int, i.e. one value beyond +-2**30, raises there).
``mcu_numpy`` is its numpy twin (same integers); ``mcu_design`` derives the words and
``mcu_coeffs`` holds them. Stages (bounds: docs/architecture.md, "The MCU profile"):

    counts --rotate (Q13 words, sum < 3*2**28) --> Q2 counts, clamped to +-32 g
           --half-band FIR /2 (gain folded in) --> Q22 g at 200 Hz         (3 axes)
              z --10 Hz Butterworth, 2 SVF sections --------> a_z  (<< 2: Q24 g)
              z --Wk, 4 SVF sections (Q27 g after the HP) --> w_z  (round >> 3: Q24 g)
              x, y --Wd, 3 SVF sections (Q27 g after the HP) -> w_x, w_y

Every coefficient multiply is ``mul(w, x, f)``: ``|w| < 2**15`` times ``|x| < 2**29``,
split into two partial products below 2**30, result exactly ``round_half_up(w x / 2**f)``
(the numpy twin computes that with one int64 product: the same integer).
"""

SEC_LEN = 13  # words per section: A1 fA1 A2 fA2 A3 fA3 M0 fM0 M1 fM1 M2 fM2 shift


def mul(w, x, f):
    """``round_half_up(w * x / 2**f)`` from two 15-bit partial products (|w| < 2**15,
    |x| < 2**29, 1 <= f <= 44): hi = w (x >> 15) and lo = w (x & 0x7fff), each < 2**30.
    Floor division nests (floor(floor(a / b) / c) = floor(a / (b c))), so it is exact."""
    hi = w * (x >> 15)
    lo = w * (x & 32767)
    if f >= 16:
        return (hi + (lo >> 15) + (1 << (f - 16))) >> (f - 15)
    return (hi << (15 - f)) + ((lo + (1 << (f - 1))) >> f)


def clamp(v, lim):
    if v > lim:
        return lim
    if v < -lim:
        return -lim
    return v


def rotation_q13(q14):
    """The chain's Q14 rotation rows (``chain.rotation_q14``) as Q13 words (round half up)."""
    return [[(v + 1) >> 1 for v in row] for row in q14]


def section_step(c, o, st, s, v0, slim):
    """One TPT state-variable section (words at c[o:o+13], states st[s], st[s+1]).

    Returns the output: ``M0 (v0 - v2) + M1 v1 + M2 v2``, clamped to +-(SIG_LIMIT >> shift)
    and shifted left by ``shift`` (the Wk/Wd high-pass's gain bits)."""
    ic1 = st[s]
    ic2 = st[s + 1]
    v3 = v0 - ic2
    v1 = ic1 - mul(c[o], ic1, c[o + 1]) + mul(c[o + 2], v3, c[o + 3])
    if v1 > slim:
        v1 = slim
    elif v1 < -slim:
        v1 = -slim
    v2 = ic2 + mul(c[o + 2], ic1, c[o + 3]) + mul(c[o + 4], v3, c[o + 5])
    if v2 > slim:
        v2 = slim
    elif v2 < -slim:
        v2 = -slim
    t = v1 + v1 - ic1
    if t > slim:
        t = slim
    elif t < -slim:
        t = -slim
    st[s] = t
    t = v2 + v2 - ic2
    if t > slim:
        t = slim
    elif t < -slim:
        t = -slim
    st[s + 1] = t
    y = mul(c[o + 6], v0 - v2, c[o + 7]) + mul(c[o + 8], v1, c[o + 9]) \
        + mul(c[o + 10], v2, c[o + 11])
    return y


class FrontEnd:
    """The whole front-end for one sensor: ``push(x, y, z)`` per 400 Hz sample.

    ``coeffs`` is the dict of ``mcu_coeffs``' names (``mcu_design.coeffs_dict``),
    ``rot`` 3 rows of 3 Q13 words (None: identity). Every list is made here; ``push``
    allocates nothing. After a push that returns 1, ``out`` holds a_z, w_z, w_x, w_y
    (Q24 g) of the output for that input (inputs 0, 2, 4, ... counted from the first).
    """

    def __init__(self, coeffs, rot=None):
        if rot is None:
            rot = [[8192, 0, 0], [0, 8192, 0], [0, 0, 8192]]
        self.rot = [rot[0][0], rot[0][1], rot[0][2], rot[1][0], rot[1][1], rot[1][2],
                    rot[2][0], rot[2][1], rot[2][2]]
        for v in self.rot:
            if v > 8192 or v < -8192:
                raise ValueError("rotation words must be Q13 within [-1, 1]")
        self.rot_shift = coeffs["ROT_SHIFT"]
        self.xlim = coeffs["X_LIMIT"]
        self.slim = coeffs["SIG_LIMIT"]
        self.stlim = coeffs["STATE_LIMIT"]
        self.a_shift = coeffs["A_SHIFT"]
        self.w_shift = coeffs["W_SHIFT"]
        self.n = coeffs["HB_LEN"]
        self.mid = (self.n - 1) // 2
        hb = [coeffs["HB_CENTER"][0], coeffs["HB_CENTER"][1]]
        for p in coeffs["HB_PAIRS"]:
            hb.append(p[0])
            hb.append(p[1])
        self.hb = hb
        self.npairs = len(coeffs["HB_PAIRS"])
        self.buf = [[0] * (2 * self.n) for _ in range(3)]
        self.pos = 0
        self.phase = 0
        # Filter channels a_z, w_z, w_x, w_y: flat words and states, axis z, z, x, y.
        self.chan_axis = [2, 2, 0, 1]
        self.words = []
        for key in ("LP", "WK", "WD", "WD"):
            flat = []
            for sec in coeffs[key]:
                for v in sec:
                    flat.append(v)
            self.words.append(flat)
        self.nsec = [len(coeffs[k]) for k in ("LP", "WK", "WD", "WD")]
        self.state = [[0] * (2 * n) for n in self.nsec]
        self.dec = [0, 0, 0]
        self.out = [0, 0, 0, 0]
        self.started = 0

    def _settle(self, r):
        """Start every filter as if rotated sample r had been the input forever."""
        for a in range(3):
            b = self.buf[a]
            for i in range(2 * self.n):
                b[i] = r[a]
        for a in range(3):
            self.dec[a] = self._fir(a)
        for ch in range(4):
            v = self.dec[self.chan_axis[ch]]
            c = self.words[ch]
            st = self.state[ch]
            for k in range(self.nsec[ch]):
                # constant input v: v1 = ic1 = 0, v2 = ic2 = v is the SVF's exact fixed point
                st[2 * k] = 0
                st[2 * k + 1] = v
                v = self._finish(c, k * SEC_LEN, mul(c[k * SEC_LEN + 10], v,
                                                     c[k * SEC_LEN + 11]))

    def _finish(self, c, o, y):
        sh = c[o + 12]
        lim = self.slim >> sh
        if y > lim:
            y = lim
        elif y < -lim:
            y = -lim
        return y << sh

    def _fir(self, a):
        """Half-band output (Q22 g) of axis a for the newest sample in its buffer."""
        b = self.buf[a]
        hb = self.hb
        centre = self.pos + self.n - self.mid
        acc = mul(hb[0], b[centre], hb[1])
        d = 1
        for k in range(self.npairs):
            acc += mul(hb[2 + 2 * k], b[centre - d] + b[centre + d], hb[3 + 2 * k])
            d += 2
        lim = self.slim
        if acc > lim:
            return lim
        if acc < -lim:
            return -lim
        return acc

    def push(self, x, y, z):
        """One 400 Hz sample of raw counts (|count| <= 32768). Returns 1 when ``out`` holds
        a new 200 Hz output, else 0."""
        m = self.rot
        sh = self.rot_shift
        half = 1 << (sh - 1)
        lim = self.xlim
        r0 = clamp((m[0] * x + m[1] * y + m[2] * z + half) >> sh, lim)
        r1 = clamp((m[3] * x + m[4] * y + m[5] * z + half) >> sh, lim)
        r2 = clamp((m[6] * x + m[7] * y + m[8] * z + half) >> sh, lim)
        n = self.n
        if not self.started:
            self.started = 1
            self.pos = n - 1
            self.dec[0] = r0
            self.dec[1] = r1
            self.dec[2] = r2
            self._settle(self.dec)
            self.pos = n - 1
        else:
            p = self.pos + 1
            if p == n:
                p = 0
            self.pos = p
            b = self.buf[0]
            b[p] = r0
            b[p + n] = r0
            b = self.buf[1]
            b[p] = r1
            b[p + n] = r1
            b = self.buf[2]
            b[p] = r2
            b[p + n] = r2
        ph = self.phase
        self.phase = 1 - ph
        if ph:
            return 0
        dec = self.dec
        dec[0] = self._fir(0)
        dec[1] = self._fir(1)
        dec[2] = self._fir(2)
        out = self.out
        slim = self.stlim
        for ch in range(4):
            v = dec[self.chan_axis[ch]]
            c = self.words[ch]
            st = self.state[ch]
            o = 0
            for k in range(self.nsec[ch]):
                v = self._finish(c, o, section_step(c, o, st, k + k, v, slim))
                o += SEC_LEN
            out[ch] = v
        out[0] = out[0] << self.a_shift
        ws = self.w_shift
        wh = 1 << (ws - 1)
        out[1] = (out[1] + wh) >> ws
        out[2] = (out[2] + wh) >> ws
        out[3] = (out[3] + wh) >> ws
        return 1
