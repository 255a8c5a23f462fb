"""Scalar fixed-point kernels of the accelerometer chain, in the Python MicroPython runs.

These are the reference definition of every kernel's integers: ``dsp`` vectorises each one
with numpy and must give the same bits (tests). Ints and lists only, no imports, so the same
file runs on a microcontroller (checked with mpy-cross in the tests).

Formats (CMSIS-DSP conventions, q31-like but with guard bits so that numpy int64 never
overflows):

* Signals are integers saturated to ``[SIG_MIN, SIG_MAX]`` = ``[-2**29, 2**29 - 1]``.
  Accelerations in the chain are Q24 g (``G_ONE = 2**24`` is 1 g, range +-32 g).
* Coefficient words are below 2**31 in magnitude, with a per-group number of fraction bits
  ``frac`` (the CMSIS postShift generalised, chosen by ``filter_design``). A product
  word * signal is below 2**60 and a kernel sums at most five: the accumulator is the
  64-bit one of CMSIS, emulated exactly by Python ints (and by int64 in numpy).
* Rounding is half up: ``(acc + (1 << (frac - 1))) >> frac`` (arithmetic shift = floor).
* Saturation, never wrap: every stored signal value is clamped to the signal range.
"""

SIG_MAX = (1 << 29) - 1
SIG_MIN = -(1 << 29)
G_ONE = 1 << 24  # 1 g in the Q24 g acceleration format
Q14_ONE = 1 << 14  # 1.0 in the Q14 rotation matrix
LA_FRAC = 30  # fraction bits of look-ahead stage and recursion coefficients
LA_HALF = 1 << (LA_FRAC - 1)
ACC_MAX = (1 << 62) - 1  # integrator accumulator range (wide, still int64 in numpy)
ACC_MIN = -(1 << 62)


def sat(v: int) -> int:
    """Clamp to the signal range (saturation instead of two's-complement wrap)."""
    if v > SIG_MAX:
        return SIG_MAX
    if v < SIG_MIN:
        return SIG_MIN
    return v


def rshift_round(acc: int, shift: int) -> int:
    """Round half up while dropping ``shift`` fraction bits."""
    if shift <= 0:
        return acc << (-shift)
    return (acc + (1 << (shift - 1))) >> shift


def rotate_q14(samples: list, m: list, shift: int) -> list:
    """Rotate 3-axis samples by a Q14 matrix: ``out_i = sat(round(sum_j m_ij v_j >> shift))``.

    ``m`` is 3 rows of 3 Q14 ints (1.0 = 16384). With shift 0 the output keeps the Q14
    scaling of the matrix (no rounding at all); with shift 14 it is in input units.
    """
    m00, m01, m02 = m[0]
    m10, m11, m12 = m[1]
    m20, m21, m22 = m[2]
    out = []
    for s in samples:
        x, y, z = s[0], s[1], s[2]
        out.append([
            sat(rshift_round(m00 * x + m01 * y + m02 * z, shift)),
            sat(rshift_round(m10 * x + m11 * y + m12 * z, shift)),
            sat(rshift_round(m20 * x + m21 * y + m22 * z, shift)),
        ])
    return out


def shift_round(xs: list, shift: int) -> list:
    """Drop ``shift`` fraction bits of each sample, rounding half up, saturated."""
    return [sat(rshift_round(x, shift)) for x in xs]


class BiquadDF1:
    """Cascade of direct-form-I biquads (CMSIS ``arm_biquad_cascade_df1_q31`` model).

    ``sections``: rows ``[b0, b1, b2, na1, na2, frac]`` (denominator negated, words at
    ``frac`` fraction bits). Per section: ``acc = b0 x0 + b1 x1 + b2 x2 + na1 y1 + na2 y2``
    (64-bit), ``y = sat(round(acc >> frac))``. State: the last two inputs and outputs.
    Exact but inherently per-sample; the chain runs the look-ahead form instead.
    """

    def __init__(self, sections: list) -> None:
        self.sections = [list(s) for s in sections]
        self.state = [[0, 0, 0, 0] for _ in self.sections]

    def process(self, xs: list) -> list:
        """Filter a block; state carries over to the next call."""
        out = list(xs)
        for si in range(len(self.sections)):
            b0, b1, b2, a1, a2, frac = self.sections[si]
            half = 1 << (frac - 1)
            x1, x2, y1, y2 = self.state[si]
            for i in range(len(out)):
                x0 = out[i]
                acc = b0 * x0 + b1 * x1 + b2 * x2 + a1 * y1 + a2 * y2
                y0 = (acc + half) >> frac
                if y0 > SIG_MAX:
                    y0 = SIG_MAX
                elif y0 < SIG_MIN:
                    y0 = SIG_MIN
                x2 = x1
                x1 = x0
                y2 = y1
                y1 = y0
                out[i] = y0
            self.state[si] = [x1, x2, y1, y2]
        return out


def la_steady(spec: list, v: int) -> list:
    """Constant values of a look-ahead section's signals for an input held at ``v`` forever.

    Returns ``[u_0, u_1, .., u_m, y]``: the b-stage output, each stage's output and the
    recursion's fixed point (iterated in the kernel's own arithmetic). Used to start a
    filter "already settled" on the first sample instead of ringing from zero.
    """
    bw, bfrac, stages, r1, r2, _m = spec
    u = sat(rshift_round((bw[0] + bw[1] + bw[2]) * v, bfrac))
    vals = [u]
    for st in stages:
        u = sat(u + ((st[1] + st[2]) * u + LA_HALF >> LA_FRAC))
        vals.append(u)
    y = u
    for _ in range(400):
        ny = sat(u + ((r1 + r2) * y + LA_HALF >> LA_FRAC))
        if ny == y:
            break
        y = ny
    vals.append(y)
    return vals


class LookaheadSection:
    """One IIR section in look-ahead form (see ``filter_design.lookahead_section``).

    ``spec = [b_words, b_frac, stages, r1, r2, M]``. Per sample n:

    * ``u = sat(round((b0 x[n] + b1 x[n-1] + b2 x[n-2]) >> b_frac))``
    * per stage ``[k, c1, c2]``: ``u = sat(u[n] + round((c1 u[n-k] + c2 u[n-2k]) >> 30))``
    * ``y = sat(u[n] + round((r1 y[n-M] + r2 y[n-2M]) >> 30))``

    The same transfer function as the biquad, but an output depends on outputs M samples
    back at the earliest, which is what lets ``dsp`` compute M outputs per numpy step.
    """

    def __init__(self, spec: list) -> None:
        self.spec = spec
        bw, self.bfrac, stages, self.r1, self.r2, self.m = spec
        self.b0, self.b1, self.b2 = bw
        self.stages = [list(s) for s in stages]
        self.reset(0)

    def reset(self, v: int) -> None:
        """Start as if the input had been ``v`` forever."""
        vals = la_steady(self.spec, v)
        self.x1 = v
        self.x2 = v
        self.bufs = [[vals[i]] * (2 * self.stages[i][0]) for i in range(len(self.stages))]
        self.pos = [0] * len(self.stages)
        self.ybuf = [vals[-1]] * (2 * self.m)
        self.ypos = 0

    def process(self, xs: list) -> list:
        """Filter a block; state carries over to the next call."""
        b0, b1, b2, bfrac = self.b0, self.b1, self.b2, self.bfrac
        bhalf = 1 << (bfrac - 1)
        x1, x2 = self.x1, self.x2
        stages, bufs, pos = self.stages, self.bufs, self.pos
        ns = len(stages)
        r1, r2, m, ybuf = self.r1, self.r2, self.m, self.ybuf
        m2 = 2 * m
        yp = self.ypos
        out = []
        for x in xs:
            u = (b0 * x + b1 * x1 + b2 * x2 + bhalf) >> bfrac
            if u > SIG_MAX:
                u = SIG_MAX
            elif u < SIG_MIN:
                u = SIG_MIN
            x2 = x1
            x1 = x
            for i in range(ns):
                k, c1, c2 = stages[i]
                buf = bufs[i]
                p = pos[i]
                v = u + ((c1 * buf[(p + k) % (2 * k)] + c2 * buf[p] + LA_HALF) >> LA_FRAC)
                buf[p] = u
                pos[i] = (p + 1) % (2 * k)
                if v > SIG_MAX:
                    v = SIG_MAX
                elif v < SIG_MIN:
                    v = SIG_MIN
                u = v
            y = u + ((r1 * ybuf[(yp + m) % m2] + r2 * ybuf[yp] + LA_HALF) >> LA_FRAC)
            if y > SIG_MAX:
                y = SIG_MAX
            elif y < SIG_MIN:
                y = SIG_MIN
            ybuf[yp] = y
            yp = (yp + 1) % m2
            out.append(y)
        self.x1, self.x2, self.ypos = x1, x2, yp
        return out


class LookaheadCascade:
    """Sections in series; ``reset(v)`` settles the whole cascade on a constant input."""

    def __init__(self, specs: list) -> None:
        self.sections = [LookaheadSection(s) for s in specs]

    def reset(self, v: int) -> int:
        """Settle on constant input ``v``; returns the cascade's constant output."""
        for s in self.sections:
            s.reset(v)
            v = la_steady(s.spec, v)[-1]
        return v

    def process(self, xs: list) -> list:
        for s in self.sections:
            xs = s.process(xs)
        return xs


class FirDecimator:
    """FIR anti-alias filter keeping every ``factor``-th output (polyphase decimator).

    Output for input index n (n a multiple of ``factor`` counted from the first input ever):
    ``sat(round(sum_j h[j] x[n - j] >> frac))``. History holds the last ``len(h) - 1``
    inputs, so any block length streams correctly.
    """

    def __init__(self, taps: list, frac: int, factor: int) -> None:
        self.h = list(taps)
        self.frac = frac
        self.factor = factor
        self.hist = [0] * (len(self.h) - 1)
        self.phase = 0  # input index (mod factor) of the next input

    def reset(self, v: int) -> None:
        """Start as if the input had been ``v`` forever."""
        self.hist = [v] * (len(self.h) - 1)

    def process(self, xs: list) -> list:
        h, frac, d = self.h, self.frac, self.factor
        nh = len(h) - 1
        buf = self.hist + list(xs)
        half = (1 << (frac - 1)) if frac > 0 else 0
        out = []
        ph = self.phase
        for i in range(len(xs)):
            if ph == 0:
                n = nh + i
                acc = 0
                for j in range(nh + 1):
                    acc += h[j] * buf[n - j]
                out.append(sat((acc + half) >> frac))
            ph += 1
            if ph == d:
                ph = 0
        self.phase = ph
        self.hist = buf[len(buf) - nh:] if nh else []
        return out


class Integrator:
    """Running sum in a wide saturating accumulator, output scaled down by ``shift`` bits.

    ``acc[n] = clamp(acc[n-1] + x[n])`` to +-2**62, ``out[n] = sat(round(acc[n] >> shift))``.
    With x in Q24 g at fs, ``out * 2**shift / fs`` is in g*s, i.e. speed; applied twice it
    gives position. The motion module resets it (``acc = 0``) at every rest.
    """

    def __init__(self, shift: int, acc: int = 0) -> None:
        if shift < 0 or shift > 62:
            raise ValueError("integrator shift must be 0..62, got " + str(shift))
        self.shift = shift
        self.acc = acc

    def process(self, xs: list) -> list:
        acc, shift = self.acc, self.shift
        out = []
        for x in xs:
            acc += x
            if acc > ACC_MAX:
                acc = ACC_MAX
            elif acc < ACC_MIN:
                acc = ACC_MIN
            out.append(sat(rshift_round(acc, shift)))
        self.acc = acc
        return out


def tracker_spec(shift: int, log2m: int) -> list:
    """Look-ahead spec of the rest tracker ``r += (x - r) / 2**shift`` (pole 1 - 2**-shift).

    Exact words, no float: b = 2**-shift at frac 30 (a word below 2**31 like every other);
    the pole's powers are rounded at Q30.
    """
    if shift < 1 or shift > 30:
        raise ValueError(f"tracker shift must be 1..30, got {shift!r}")
    bfrac = LA_FRAC
    one = 1 << LA_FRAC
    d1 = -(one - (one >> shift))  # a1 of 1 + a1 z^-1, Q30
    stages = []
    k = 1
    for _ in range(log2m):
        stages.append([k, -d1, 0])
        d1 = -((d1 * d1 + LA_HALF) >> LA_FRAC)
        k *= 2
    return [[1 << (bfrac - shift), 0, 0], bfrac, stages, -d1, 0, k]


class RestTracker:
    """Gravity and bias removal: a slow first-order tracker of the rest value, with hold.

    Samples with ``hold`` true (the motion tracker says the car moves) are skipped: the rest
    value stays frozen through a trip and resumes tracking after it. Returns per sample the
    rest value and the residual ``sat(x - rest)``. Time constant ``2**shift`` samples.
    """

    def __init__(self, shift: int, initial: int = 0, log2m: int = 8) -> None:
        self.section = LookaheadSection(tracker_spec(shift, log2m))
        self.section.reset(initial)
        self.rest = la_steady(self.section.spec, initial)[-1]

    def reset(self, v: int) -> None:
        """Jump to rest value ``v`` (e.g. the first sample, or after a remount)."""
        self.section.reset(v)
        self.rest = la_steady(self.section.spec, v)[-1]

    def process(self, xs: list, hold: list) -> tuple:
        """Returns ``(rest, residual)`` lists; ``hold[i]`` truthy freezes sample i."""
        rest_out = []
        res_out = []
        r = self.rest
        for i in range(len(xs)):
            x = xs[i]
            if not hold[i]:
                r = self.section.process([x])[0]
            rest_out.append(r)
            res_out.append(sat(x - r))
        self.rest = r
        return rest_out, res_out


def round_div(num: int, den: int) -> int:
    """``num / den`` rounded half up, for den > 0, in integers only."""
    return (2 * num + den) // (2 * den)


def lsq_slope(samples: list, fs: int) -> int:
    """Least-squares slope of evenly spaced samples, in sample units per second (rounded).

    ``slope = fs * (n S_iy - S_i S_y) / (n S_ii - S_i^2)`` with exact integer sums, i the
    sample index. For Q24 g samples at fs Hz the result is Q24 g/s: jerk in m/s^3 is
    ``slope * 9.80665 / 2**24``. Needs at least two samples.
    """
    n = len(samples)
    if n < 2:
        raise ValueError("lsq_slope needs at least 2 samples, got " + str(n))
    sy = 0
    siy = 0
    for i in range(n):
        y = samples[i]
        sy += y
        siy += i * y
    si = n * (n - 1) // 2
    sii = (n - 1) * n * (2 * n - 1) // 6
    return round_div(fs * (n * siy - si * sy), n * sii - si * si)
