"""The MCU profile of the accelerometer front-end: 31-bit small ints only, no allocation.

400 Hz raw 3-axis counts in, per sample (``FrontEnd.push``); every other sample (200 Hz)
the chain's four outputs in Q24 g: a_z (10 Hz low-pass), w_z (Wk), w_x, w_y (Wd).
MicroPython subset: no imports, no floats, ints and preallocated lists only, so the same
file runs on a 32-bit MicroPython (tests run it on MicroPython 1.27 under
``micropython.heap_lock()``: one big int, i.e. one value beyond +-2**30, raises there).
``mcu_numpy`` is its numpy twin (same integers); ``mcu_design`` derives the words and
``mcu_coeffs`` holds them. Stages (bounds: docs/architecture.md, "The MCU profile"):

    counts --half-band FIR /2 (Q16 words x counts) --> Q13 counts at 200 Hz  (3 axes)
           --rotate x unit gain (15-bit words) ----> Q22 g
              z --10 Hz Butterworth, 2 SVF sections --------> a_z  (<< 2: Q24 g)
              z --Wk, 4 SVF sections (Q27 g after the HP) --> w_z  (round >> 3: Q24 g)
              x, y --Wd, 3 SVF sections (Q27 g after the HP) -> w_x, w_y

The decimator multiplies Q16 words by raw counts (below 2**30 as they are); every other
coefficient multiply is ``mul(w, x, f)`` (inlined): ``|w| < 2**15`` times ``|x| < 2**29``,
split into two partial products below 2**30, result exactly ``round_half_up(w x / 2**f)``
(the numpy twin computes that with one int64 product: the same integer).
"""

SEC_LEN = 12  # words per section in mcu_coeffs: kind shift A1 fA1 A2 fA2 A3 fA3 X1 fX1 X2 fX2
LOW = 0
HIGH = 1
BAND_LOW = 2
STEP = 3


def mul(w, x, f):
    """``round_half_up(w * x / 2**f)`` from two 15-bit partial products (|w| < 2**15,
    |x| < 2**29, 15 <= f <= 44): hi = w (x >> 15) and lo = w (x & 0x7fff), each < 2**30.
    Floor division nests (floor(floor(a / b) / c) = floor(a / (b c))), so it is exact.
    The hot loop inlines it with ``split(w, f)``'s constants."""
    w, r1, r2, s = split(w, f)
    return (w * (x >> 15) + ((w * (x & 32767) + r1) >> 15) + r2) >> s


def split(w, f):
    """``[w, r1, r2, s]`` of the inlined multiply ``(w hi + ((w lo + r1) >> 15) + r2) >> s``:
    f = 15 rounds at the low product (r1 = 2**14), f > 15 after it (r2 = 2**(f - 16))."""
    if f < 15 or f > 44:
        raise ValueError("multiply fraction bits must be 15..44")
    if f == 15:
        return [w, 1 << 14, 0, 0]
    return [w, 0, 1 << (f - 16), f - 15]


def rotation_words(q14, gain):
    """The chain's Q14 rotation rows (``chain.rotation_q14``, 1.0 = 16384) times the gain
    word ``[w, f]`` (``ROT_GAIN``): 9 words ``[w, f]``, |w| <= |gain w| < 2**15."""
    gw = gain[0]
    out = []
    for row in q14:
        for m in row:
            if m > 16384 or m < -16384:
                raise ValueError("rotation entries must be Q14 within [-1, 1]")
            out.append([(m * gw + 8192) >> 14, gain[1]])
    return out


class FrontEnd:
    """The whole front-end for one sensor: ``push(x, y, z)`` per 400 Hz sample.

    ``coeffs`` is the dict of ``mcu_coeffs``' names (``mcu_design.coeffs_dict``),
    ``rot`` the chain's Q14 rotation rows (None: identity). Every list is made here;
    ``push`` allocates nothing. After a push that returns 1, ``out`` holds a_z, w_z, w_x,
    w_y (Q24 g) of the output for that input (inputs 0, 2, 4, ... counted from the first).
    """

    def __init__(self, coeffs, rot=None):
        if rot is None:
            rot = [[16384, 0, 0], [0, 16384, 0], [0, 0, 16384]]
        rw = []
        for w in rotation_words(rot, coeffs["ROT_GAIN"]):
            rw += split(w[0], w[1])
        self.rw = rw
        self.rot_shift = coeffs["ROT_SHIFT"]
        self.xlim = coeffs["X_LIMIT"]
        self.slim = coeffs["SIG_LIMIT"]
        self.stlim = coeffs["STATE_LIMIT"]
        self.a_shift = coeffs["A_SHIFT"]
        self.w_shift = coeffs["W_SHIFT"]
        self.hb = list(coeffs["HB_WORDS"])
        self.hb_shift = coeffs["HB_SHIFT"]
        self.hb_centre = coeffs["HB_CENTRE_SHIFT"]
        self.hb_bias = coeffs["HB_BIAS"]
        self.n = coeffs["HB_LEN"]
        self.mid = (self.n - 1) // 2
        self.buf = [[0] * (2 * self.n) for _ in range(3)]
        self.pos = 0
        self.phase = 0
        # Filter channels a_z, w_z, w_x, w_y (axes z, z, x, y); per section 22 ints:
        # kind, shift, then A1, A2, A3, X1, X2 each as split()'s [w, r1, r2, s].
        self.chan_axis = [2, 2, 0, 1]
        self.words = []
        self.nsec = []
        self.sections = []
        for key in ("LP", "WK", "WD", "WD"):
            flat = []
            for sec in coeffs[key]:
                flat.append(sec[0])
                flat.append(sec[1])
                for i in range(2, SEC_LEN, 2):
                    flat += split(sec[i], sec[i + 1])
            self.words.append(flat)
            self.nsec.append(len(coeffs[key]))
            self.sections.append([flat[22 * k:22 * k + 22] for k in range(len(coeffs[key]))])
        self.state = [[0] * (2 * n) for n in self.nsec]
        self.xd = [0, 0, 0]
        self.dec = [0, 0, 0]
        self.out = [0, 0, 0, 0]
        self.started = 0

    def push(self, x, y, z):
        """One 400 Hz sample of raw counts (|count| <= 32768, as 16-bit registers give).
        Returns 1 when ``out`` holds a new 200 Hz output, else 0."""
        n = self.n
        if not self.started:
            # settled start: the decimator's history holds this sample
            self.started = 1
            p = n - 1
            self.pos = p
            for i in range(2 * n):
                self.buf[0][i] = x
                self.buf[1][i] = y
                self.buf[2][i] = z
        else:
            p = self.pos + 1
            if p == n:
                p = 0
            self.pos = p
            b = self.buf[0]
            b[p] = x
            b[p + n] = x
            b = self.buf[1]
            b[p] = y
            b[p + n] = y
            b = self.buf[2]
            b[p] = z
            b[p + n] = z
        ph = self.phase
        self.phase = 1 - ph
        if ph:
            return 0
        # half-band decimator on the raw counts: Q16 words x counts < 2**30, each product
        # >> 3 (HB_BIAS restores their mean), centre 1/2 exact: Q13 counts
        hb = self.hb
        sh = self.hb_shift
        lim = self.xlim
        centre = p + n - self.mid
        xd = self.xd
        for a in range(3):
            b = self.buf[a]
            acc = (b[centre] << self.hb_centre) + self.hb_bias
            i = centre - 1
            j = centre + 1
            for w in hb:
                acc += ((w * b[i]) >> sh) + ((w * b[j]) >> sh)
                i -= 2
                j += 2
            if acc > lim:
                acc = lim
            elif acc < -lim:
                acc = -lim
            xd[a] = acc
        # rotation and unit gain: Q13 counts -> Q22 g (three split multiplies per axis)
        r = self.rw
        x0 = xd[0]
        x1 = xd[1]
        x2 = xd[2]
        rs = self.rot_shift
        slim = self.slim
        dec = self.dec
        o = 0
        for a in range(3):
            w = r[o]
            v = (w * (x0 >> 15) + ((w * (x0 & 32767) + r[o + 1]) >> 15) + r[o + 2]) >> r[o + 3]
            w = r[o + 4]
            v += (w * (x1 >> 15) + ((w * (x1 & 32767) + r[o + 5]) >> 15) + r[o + 6]) \
                >> r[o + 7]
            w = r[o + 8]
            v += (w * (x2 >> 15) + ((w * (x2 & 32767) + r[o + 9]) >> 15) + r[o + 10]) \
                >> r[o + 11]
            if rs >= 0:
                lim = slim >> rs
                if v > lim:
                    v = lim
                elif v < -lim:
                    v = -lim
                dec[a] = v << rs
            else:
                v = (v + (1 << (-rs - 1))) >> -rs
                if v > slim:
                    v = slim
                elif v < -slim:
                    v = -slim
                dec[a] = v
            o += 12
        if self.started == 1:
            self.started = 2
            self._settle_sections()
        self._run()
        return 1

    def _settle_sections(self):
        """Settled start (as the chain's): for a constant input v a section's exact fixed
        point is v1 = ic1 = 0, v2 = ic2 = v; its output is then LOW/BAND_LOW v, HIGH 0,
        STEP round(X2 v), as ``_run`` computes it from these states."""
        for ch in range(4):
            st = self.state[ch]
            v = self.dec[self.chan_axis[ch]]
            c = self.words[ch]
            o = 0
            for k in range(self.nsec[ch]):
                st[2 * k] = 0
                st[2 * k + 1] = v
                kind = c[o]
                if kind == STEP:
                    w = c[o + 18]
                    v = (w * (v >> 15) + ((w * (v & 32767) + c[o + 19]) >> 15)
                         + c[o + 20]) >> c[o + 21]
                elif kind == HIGH:
                    v = 0
                lim = self.slim >> c[o + 1]
                if v > lim:
                    v = lim
                elif v < -lim:
                    v = -lim
                v = v << c[o + 1]
                o += 22
        # the sections' outputs follow from these states in _run

    def _run(self):
        """The state-variable sections of the four channels on the decimated sample.

        Each section's 22 ints are unpacked into locals at once (one bytecode and 22
        stores instead of ~100 bytecodes of indexed loads)."""
        dec = self.dec
        out = self.out
        slim = self.stlim
        sig = self.slim
        for ch in range(4):
            v0 = dec[self.chan_axis[ch]]
            st = self.state[ch]
            s = 0
            for sec in self.sections[ch]:
                (kind, shift, w1, p1, q1, s1, w2, p2, q2, s2, w3, p3, q3, s3,
                 w4, p4, q4, s4, w5, p5, q5, s5) = sec
                ic1 = st[s]
                ic2 = st[s + 1]
                v3 = v0 - ic2
                v1 = ic1 - ((w1 * (ic1 >> 15) + ((w1 * (ic1 & 32767) + p1) >> 15) + q1) >> s1) \
                    + ((w2 * (v3 >> 15) + ((w2 * (v3 & 32767) + p2) >> 15) + q2) >> s2)
                if v1 > slim:
                    v1 = slim
                elif v1 < -slim:
                    v1 = -slim
                v2 = ic2 + ((w2 * (ic1 >> 15) + ((w2 * (ic1 & 32767) + p2) >> 15) + q2) >> s2) \
                    + ((w3 * (v3 >> 15) + ((w3 * (v3 & 32767) + p3) >> 15) + q3) >> s3)
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
                if kind == LOW:
                    v0 = v2
                elif kind == BAND_LOW:
                    v0 = v1 + v2
                else:
                    t = (w4 * (v1 >> 15) + ((w4 * (v1 & 32767) + p4) >> 15) + q4) >> s4
                    if kind == HIGH:
                        v0 = v0 - v2 - v1 - t
                    else:
                        v0 = v0 - v2 + t \
                            + ((w5 * (v2 >> 15) + ((w5 * (v2 & 32767) + p5) >> 15) + q5) >> s5)
                lim = sig >> shift
                if v0 > lim:
                    v0 = lim
                elif v0 < -lim:
                    v0 = -lim
                v0 = v0 << shift
                s += 2
            out[ch] = v0
        out[0] = out[0] << self.a_shift
        ws = self.w_shift
        wh = 1 << (ws - 1)
        out[1] = (out[1] + wh) >> ws
        out[2] = (out[2] + wh) >> ws
        out[3] = (out[3] + wh) >> ws
