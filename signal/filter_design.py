"""Coefficients of every filter of the accelerometer chain, derived here from first principles.

Why a hand derivation and not scipy: the terminal must be able to re-derive its filters for
any sensor rate without scipy (it is a test-only dependency), and the derivation is short:

* IIR sections come from the analog prototypes by the bilinear transform
  ``s = K (1 - z^-1) / (1 + z^-1)`` with ``K = w0 / tan(w0 / 2 fs)`` (prewarped so that each
  section's characteristic frequency ``w0`` lands exactly where the analog one is).
* The decimator is a Kaiser-windowed sinc (the Bessel I0 of the window by its power series).
* Quantisation turns float coefficients into the integer words the kernels of
  ``fixedpoint``/``dsp`` take, CMSIS style: a word is ``round(c * 2**frac)`` below 2**31 in
  magnitude, ``frac`` chosen per group (the "postShift" when a coefficient exceeds 1).

Filter choices (documented here because the ride module relies on them):

* Analysis rate 200 Hz: keeps the ISO 2631-1 band up to 80 Hz and is plenty for the 10 Hz
  low-pass. The decimator passes 0..80 Hz (ripple < 1e-4) and stops from ``fs_out - 80`` Hz
  (>= 80 dB), so nothing aliases into 0..80 Hz.
* ISO 18738-1 acceleration low-pass: 10 Hz 4th-order Butterworth (two sections). 4th order
  rather than 2nd because car vibration at 10..30 Hz must not reach a_max/jerk; its delay at
  low frequency is ~0.04 s and is reported so it can be compensated.
* ISO 2631-1 Annex A weightings: band limit high-pass 0.4 Hz and low-pass 100 Hz (both 2nd
  order Butterworth, Q = 1/sqrt2), acceleration-velocity transition and (Wk only) upward step.
  At 200 Hz the 100 Hz band limit sits at Nyquist, where the bilinear transform cannot place
  it: it is clipped to ``0.45 fs`` (90 Hz at 200 Hz), above the 80 Hz band of interest.
"""

from __future__ import annotations

import cmath
import math

# ISO 2631-1 Table A.2: (f3, f4, Q4, f5, Q5, f6, Q6); None where the weighting has no step.
ISO2631 = {
    "Wk": (12.5, 12.5, 0.63, 2.37, 0.91, 3.35, 0.91),
    "Wd": (2.0, 2.0, 0.63, None, None, None, None),
}
BAND_LOW_HZ = 0.4
BAND_HIGH_HZ = 100.0
BAND_HIGH_MAX_FRAC = 0.45  # of fs: where the 100 Hz band limit is clipped to
LP_ACCEL_HZ = 10.0
LP_ACCEL_ORDER = 4
DECIM_PASS_HZ = 80.0
DECIM_ATTEN_DB = 80.0
WORD_LIMIT = 1 << 31  # every coefficient word fits a signed 32-bit int
STATE_FRAC = 30  # fraction bits of the look-ahead stage and recursion coefficients

Sos = list[list[float]]  # rows b0, b1, b2, a0(=1), a1, a2 as in scipy.signal


def bilinear(bs: list[float], as_: list[float], fs: float, f_warp: float | None) -> list[float]:
    """One analog section ``(B0 + B1 s + B2 s^2) / (A0 + A1 s + A2 s^2)`` to a digital SOS row.

    ``f_warp`` is the frequency kept exact by prewarping (None: plain ``K = 2 fs``).
    """
    if f_warp is None:
        k = 2.0 * fs
    else:
        w0 = 2.0 * math.pi * f_warp
        k = w0 / math.tan(w0 / (2.0 * fs))
    b0, b1, b2 = bs
    a0, a1, a2 = as_
    nb = [b0 + b1 * k + b2 * k * k, 2.0 * b0 - 2.0 * b2 * k * k, b0 - b1 * k + b2 * k * k]
    na = [a0 + a1 * k + a2 * k * k, 2.0 * a0 - 2.0 * a2 * k * k, a0 - a1 * k + a2 * k * k]
    g = na[0]
    return [nb[0] / g, nb[1] / g, nb[2] / g, 1.0, na[1] / g, na[2] / g]


def butterworth_sos(fc: float, fs: float, order: int, kind: str) -> Sos:
    """Butterworth low-pass (``kind='low'``) or high-pass of even order, prewarped at fc."""
    if order < 2 or order % 2:
        raise ValueError(f"Butterworth order must be even and >= 2, got {order!r}")
    if not 0.0 < fc < fs / 2.0:
        raise ValueError(f"cutoff {fc!r} Hz must lie in (0, fs/2 = {fs / 2.0!r} Hz)")
    w = 2.0 * math.pi * fc
    rows = []
    for i in range(order // 2):
        theta = math.pi * (2 * i + 1) / (2 * order)
        q = 1.0 / (2.0 * math.cos(theta))
        den = [1.0, 1.0 / (q * w), 1.0 / (w * w)]  # 1 + s/(Q w) + (s/w)^2
        num = [1.0, 0.0, 0.0] if kind == "low" else [0.0, 0.0, 1.0 / (w * w)]
        rows.append(bilinear(num, den, fs, fc))
    return rows


def lowpass_accel_sos(fs: float) -> Sos:
    """ISO 18738-1 10 Hz acceleration low-pass (4th-order Butterworth, see module doc)."""
    return butterworth_sos(LP_ACCEL_HZ, fs, LP_ACCEL_ORDER, "low")


def band_high_hz(fs: float) -> float:
    """The ISO 2631-1 100 Hz band limit, clipped below Nyquist (see module doc)."""
    return min(BAND_HIGH_HZ, BAND_HIGH_MAX_FRAC * fs)


def iso2631_sos(weighting: str, fs: float) -> Sos:
    """ISO 2631-1 Annex A weighting ``Wk`` or ``Wd`` as digital sections, unity-gain rows."""
    if weighting not in ISO2631:
        raise ValueError(f"weighting must be one of {sorted(ISO2631)}, got {weighting!r}")
    f3, f4, q4, f5, q5, f6, q6 = ISO2631[weighting]
    rows = butterworth_sos(BAND_LOW_HZ, fs, 2, "high")
    rows += butterworth_sos(band_high_hz(fs), fs, 2, "low")
    w3, w4 = 2.0 * math.pi * f3, 2.0 * math.pi * f4
    # a-v transition: (1 + s/w3) / (1 + s/(Q4 w4) + (s/w4)^2)
    rows.append(bilinear([1.0, 1.0 / w3, 0.0], [1.0, 1.0 / (q4 * w4), 1.0 / (w4 * w4)], fs, f4))
    if f5 is not None:
        w5, w6 = 2.0 * math.pi * f5, 2.0 * math.pi * f6
        g = (w5 / w6) ** 2
        # upward step: (1 + s/(Q5 w5) + (s/w5)^2) / (1 + s/(Q6 w6) + (s/w6)^2) * (w5/w6)^2
        num = [g, g / (q5 * w5), g / (w5 * w5)]
        rows.append(bilinear(num, [1.0, 1.0 / (q6 * w6), 1.0 / (w6 * w6)], fs, f6))
    return rows


def sos_response(sos: Sos, f: float, fs: float) -> complex:
    """Complex frequency response of a cascade at f Hz."""
    z1 = cmath.exp(-2j * math.pi * f / fs)
    h = 1.0 + 0j
    for b0, b1, b2, _a0, a1, a2 in sos:
        h *= (b0 + b1 * z1 + b2 * z1 * z1) / (1.0 + a1 * z1 + a2 * z1 * z1)
    return h


def sos_group_delay(sos: Sos, f: float, fs: float) -> float:
    """Group delay in seconds of a cascade at f Hz (numeric phase derivative)."""
    df = 1e-4 * fs
    p1 = cmath.phase(sos_response(sos, f - df / 2, fs))
    p2 = cmath.phase(sos_response(sos, f + df / 2, fs))
    dp = (p2 - p1 + math.pi) % (2 * math.pi) - math.pi
    return -dp / (2.0 * math.pi * df)


def _bessel_i0(x: float) -> float:
    term, total, k = 1.0, 1.0, 1
    while term > 1e-17 * total:
        term *= (x / (2.0 * k)) ** 2
        total += term
        k += 1
    return total


def decimator_taps(fs_in: int, fs_out: int) -> list[float]:
    """Kaiser-windowed sinc anti-alias low-pass for fs_in -> fs_out, unity DC gain.

    Passband 0..80 Hz, stopband from ``fs_out - 80`` Hz at 80 dB (Kaiser's formulas), odd
    length so the delay is a whole number of input samples: ``(len - 1) / 2``.
    """
    if fs_out - DECIM_PASS_HZ <= DECIM_PASS_HZ:  # no room for a transition band
        raise ValueError(f"analysis rate {fs_out!r} Hz too low for the 80 Hz band")
    if fs_in == fs_out:
        return [1.0]
    f_stop = fs_out - DECIM_PASS_HZ
    dw = 2.0 * math.pi * (f_stop - DECIM_PASS_HZ) / fs_in
    a = DECIM_ATTEN_DB
    n = int(math.ceil((a - 8.0) / (2.285 * dw))) + 1
    if n % 2 == 0:
        n += 1
    beta = 0.1102 * (a - 8.7)
    fc = (DECIM_PASS_HZ + f_stop) / 2.0 / fs_in  # cycles per input sample
    mid = (n - 1) / 2.0
    taps = []
    for i in range(n):
        t = i - mid
        s = 2.0 * fc if t == 0 else math.sin(2.0 * math.pi * fc * t) / (math.pi * t)
        r = 2.0 * t / (n - 1)
        taps.append(s * _bessel_i0(beta * math.sqrt(max(0.0, 1.0 - r * r))) / _bessel_i0(beta))
    total = sum(taps)
    return [v / total for v in taps]


def choose_frac(values: list[float], max_frac: int = 40, sum_limit: int = 0) -> int:
    """Fraction bits so every word stays below 2**31 (and the sum of |words| below sum_limit).

    This is the CMSIS postShift generalised: big coefficients get fewer fraction bits, small
    ones more, so each group keeps ~31 significant bits.
    """
    peak = max(abs(v) for v in values)
    if peak == 0.0:
        return max_frac
    frac = max_frac
    total = sum(abs(v) for v in values)
    while frac > 0 and (
        round(peak * 2.0**frac) >= WORD_LIMIT or (sum_limit and total * 2.0**frac >= sum_limit)
    ):
        frac -= 1
    return frac


def quantize(values: list[float], frac: int) -> list[int]:
    """Round to integer words ``round(v * 2**frac)``; raise if one does not fit 32 bits."""
    words = [int(round(v * 2.0**frac)) for v in values]
    for w in words:
        if abs(w) >= WORD_LIMIT:
            raise ValueError(f"coefficient word {w} does not fit 32 bits at frac {frac}")
    return words


def quantize_sos_df1(sos: Sos) -> list[list[int]]:
    """SOS rows to the DF1 kernel's ``[b0, b1, b2, -a1, -a2, frac]`` words (a negated, CMSIS)."""
    out = []
    for b0, b1, b2, _a0, a1, a2 in sos:
        vals = [b0, b1, b2, -a1, -a2]
        frac = choose_frac(vals, max_frac=STATE_FRAC)
        out.append(quantize(vals, frac) + [frac])
    return out


def lookahead_section(row: list[float], log2m: int) -> list:
    """One SOS row to the look-ahead form the vectorised kernels run exactly.

    ``H = B(z)/D(z) = B(z) P(z) / D_M(z)`` with ``D_M`` a polynomial in ``z^-M`` only
    (M = 2**log2m): ``P`` is the product of the sparse factors ``1 - d1 z^-k + d2 z^-2k``,
    k = 1, 2, 4, .. M/2, each turning ``1 + d1 z^-k + d2 z^-2k`` into one in ``z^-2k``.
    Every output then depends on outputs M and 2M samples back only, so M consecutive outputs
    are computed at once. Returns ``[b_words, b_frac, stages, r1, r2, m]`` with
    ``stages = [[k, c1, c2], ...]`` and ``r1 = -A1``, ``r2 = -A2`` (words, frac STATE_FRAC).
    """
    b0, b1, b2, _a0, a1, a2 = row
    bvals = [b0, b1, b2]
    b_frac = choose_frac(bvals, max_frac=40)
    bw = quantize(bvals, b_frac)
    if abs(b0 + b1 + b2) <= 1e-12 * max(abs(b0), abs(b1), abs(b2)):
        bw[1] = -(bw[0] + bw[2])  # a zero at DC stays exact: gravity must not leak through
    stages = []
    d1, d2 = a1, a2
    k = 1
    for _ in range(log2m):
        stages.append([k] + quantize([-d1, d2], STATE_FRAC))
        d1, d2 = 2.0 * d2 - d1 * d1, d2 * d2
        k *= 2
    r1, r2 = quantize([-d1, -d2], STATE_FRAC)
    return [bw, b_frac, stages, r1, r2, k]


def with_gain_bits(sos: Sos, bits: int) -> Sos:
    """The cascade with its first numerator scaled by 2**bits.

    Why: rounding noise entering a section with poles near DC is amplified by its 1/D
    (~6000x at DC for the 0.4 Hz band limit at 200 Hz), which costs 30 dB of the Wd/Wk
    output's accuracy at Q24 g. Running the weightings ``bits`` finer (the first section
    removes gravity, so the range left is ample) and rounding back once at the end
    (``shift_round``) restores it.
    """
    rows = [list(r) for r in sos]
    g = float(1 << bits)
    rows[0] = [rows[0][0] * g, rows[0][1] * g, rows[0][2] * g] + rows[0][3:]
    return rows


def lookahead_sos(sos: Sos, log2m: int) -> list[list]:
    """Every row of a cascade in look-ahead form (see ``lookahead_section``)."""
    return [lookahead_section(row, log2m) for row in sos]


def quantize_taps(taps: list[float], gain: float) -> tuple[list[int], int]:
    """FIR taps times ``gain`` as words, with frac keeping ``sum|words| * 2**29 < 2**62``."""
    vals = [t * gain for t in taps]
    frac = choose_frac(vals, max_frac=40, sum_limit=1 << 33)
    return quantize(vals, frac), frac
