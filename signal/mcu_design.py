"""Coefficient words of the MCU profile (``mcu``), derived from ``filter_design``'s filters.

Why a second set of words: the Pi's chain (``chain``) multiplies Q30 words by Q24/Q29
signals into 64-bit accumulators; on a 32-bit MicroPython every such product is a heap
big int. The MCU profile keeps every product and sum below 2**30 (a small int):

* every coefficient is one 15-bit word ``w`` with its own fraction bits ``f``
  (``|w| < 2**15``, CMSIS postShift per word), multiplied by a signal ``|x| < 2**29`` with
  ``mcu.mul``: two 15 x 15-bit partial products, exactly ``round_half_up(w * x / 2**f)``;
* the IIR sections are the trapezoidal (TPT) state-variable filter, the bilinear
  transform of the analog SVF: its coefficients are ``g = tan(pi f0 / fs)`` and ``1/Q``
  terms, small where the poles sit near z = 1 (0.4 Hz at 200 Hz: g = 0.0063), so 15-bit
  words place those poles to ~1e-4 relative (a direct-form a1 = -1.982 would need 30 bits);
* the decimator is a half-band FIR (every other tap zero) on the raw 16-bit counts: a
  Q16 word times a count is below 2**30, so it needs no split; rotation and the unit
  change follow at 200 Hz.

``generate_source()`` writes ``mcu_coeffs.py`` (committed; a test regenerates it) for the
sensor of the example traces (400 Hz, 256 LSB/g); ``profile(fs_in, lsb_per_g)`` gives the
words for any other sensor.
"""

from __future__ import annotations

import cmath
import math
import textwrap
from pathlib import Path

from liftwatch.signal import filter_design as fd

FS_OUT = 200
WORD_LIMIT = 1 << 15  # a coefficient word and a 15-bit half of a signal multiply below 2**30
FRAC_MAX = 44         # mcu.mul's rounding constant 2**(f-16) stays below 2**28
SIG_FRAC = 22         # internal signal format: Q22 g (1 g = 2**22), range +-32 g
SIG_LIMIT = (1 << 27) - 1   # +-32 g in Q22 g: every section output is clamped here
STATE_LIMIT = (1 << 28) - 1  # SVF states (overshoot room): clamped here
HB_FRAC = 16         # half-band words: Q16 (a word x a raw count < 2**30)
HB_SHIFT = 3         # each half-band product >> 3: the decimated counts are Q13
DEC_FRAC = HB_FRAC - HB_SHIFT
W_GAIN_BITS = 5      # Wk/Wd run 5 bits finer after their high-pass (Q27 g, +-1 g)
OUT_FRAC = 24        # outputs in Q24 g, as the chain's
HALFBAND_ATTEN_DB = 80.0
PROFILE_FS_IN = 400
PROFILE_LSB_PER_G = 256.0  # the example traces' sensor (hil_tests/traces headers)
COEFFS_FILE = Path(__file__).with_name("mcu_coeffs.py")


def word(c: float) -> list[int]:
    """``[w, f]``: the most fraction bits f (1..FRAC_MAX) with ``|round(c 2**f)| < 2**15``."""
    if c == 0.0:
        return [0, 16]
    f = FRAC_MAX
    while f > 1 and abs(round(c * 2.0**f)) >= WORD_LIMIT:
        f -= 1
    w = int(round(c * 2.0**f))
    if abs(w) >= WORD_LIMIT:
        raise ValueError(f"coefficient {c!r} does not fit a 15-bit word")
    return [w, f]


def word_value(w: list[int]) -> float:
    return w[0] / 2.0**w[1]


def halfband_taps(fs_in: int) -> list[float]:
    """Kaiser-windowed half-band low-pass for fs_in -> fs_in/2, unity DC gain.

    Cutoff at fs_in/4: the taps at even distance from the centre are exactly zero, so
    only the centre (1/2) and the odd-distance pairs multiply. Passband 0..80 Hz,
    stopband from fs_in/2 - 80 Hz at >= 80 dB: length 4k+3 from Kaiser's formula, grown
    until the attenuation of the quantised words (``halfband_words``) reaches 80 dB.
    """
    f_pass = fd.DECIM_PASS_HZ
    f_stop = fs_in / 2.0 - f_pass
    if f_stop <= f_pass:
        raise ValueError(f"input rate {fs_in!r} Hz too low for the 80 Hz band")
    dw = 2.0 * math.pi * (f_stop - f_pass) / fs_in
    n = int(math.ceil((HALFBAND_ATTEN_DB - 8.0) / (2.285 * dw))) + 1
    n += (3 - n) % 4
    beta = 0.1102 * (HALFBAND_ATTEN_DB - 8.7)
    while True:
        taps = _kaiser_halfband(n, beta)
        if stopband_db(words_as_taps(halfband_words(taps)), fs_in, f_stop) \
                >= HALFBAND_ATTEN_DB:
            return taps
        n += 4


def halfband_words(taps: list[float]) -> list[int]:
    """The pair taps (distance 1, 3, 5, ..) as Q16 words (the centre is 1/2 = 2**15),
    the largest adjusted so that the words sum to exactly 1 (gravity passes exactly)."""
    mid = (len(taps) - 1) // 2
    words = [int(round(taps[mid - d] * 2.0**HB_FRAC)) for d in range(1, mid + 1, 2)]
    words[0] += (1 << (HB_FRAC - 2)) - sum(words)
    return words


def words_as_taps(words: list[int]) -> list[float]:
    """The FIR the half-band words make (for checking their response)."""
    mid = 2 * len(words) - 1
    taps = [0.0] * (2 * mid + 1)
    taps[mid] = 0.5
    for k, w in enumerate(words):
        taps[mid - 2 * k - 1] = taps[mid + 2 * k + 1] = w / 2.0**HB_FRAC
    return taps


def _kaiser_halfband(n: int, beta: float) -> list[float]:
    mid = (n - 1) // 2
    taps = []
    for i in range(n):
        t = i - mid
        s = 0.5 if t == 0 else (0.0 if t % 2 == 0 else math.sin(math.pi * t / 2.0) / (math.pi * t))
        r = 2.0 * t / (n - 1)
        taps.append(s * fd._bessel_i0(beta * math.sqrt(max(0.0, 1.0 - r * r)))
                    / fd._bessel_i0(beta))
    total = sum(taps)
    return [v / total for v in taps]


def stopband_db(taps: list[float], fs_in: float, f_stop: float, points: int = 400) -> float:
    """Smallest attenuation (dB) of an FIR from f_stop to fs_in/2 (grid of ``points``)."""
    worst = 0.0
    for i in range(points + 1):
        f = f_stop + (fs_in / 2.0 - f_stop) * i / points
        z = cmath.exp(-2j * math.pi * f / fs_in)
        worst = max(worst, abs(sum(t * z**k for k, t in enumerate(taps))))
    return -20.0 * math.log10(max(worst, 1e-300))


def svf(f0: float, q: float, m0: float, m1: float, m2: float, fs: float,
        shift: int = 0) -> dict:
    """One TPT state-variable section: analog ``(m0 s'^2 + m1 s' + m2) / (s'^2 + s'/q + 1)``
    with ``s' = s / (2 pi f0)``, bilinear with prewarp at f0 (as ``filter_design``).

    Simper's form: ``v3 = v0 - ic2; v1 = a1 ic1 + a2 v3; v2 = ic2 + a2 ic1 + a3 v3``;
    high = v0 - k v1 - v2, band = v1, low = v2. The output ``m0 high + m1 band + m2 low``
    is computed as ``M0 (v0 - v2) + M1 v1 + M2 v2`` (``M0 = m0``, ``M1 = m1 - k m0``,
    ``M2 = m2``): gravity (in v0 and v2) cancels before any multiply. ``a1`` is stored as
    ``A1 = 1 - a1`` (small when the poles are near z = 1).
    """
    g = math.tan(math.pi * f0 / fs)
    k = 1.0 / q
    a1 = 1.0 / (1.0 + g * (g + k))
    a2 = g * a1
    a3 = g * a2
    return {"f0": f0, "q": q, "m": [m0, m1, m2], "shift": shift,
            "float": [1.0 - a1, a2, a3, m0, m1 - k * m0, m2]}


def lowpass_svf(fs: float) -> list[dict]:
    """The 10 Hz 4th-order Butterworth of ``filter_design.lowpass_accel_sos`` as SVFs."""
    order = fd.LP_ACCEL_ORDER
    return [svf(fd.LP_ACCEL_HZ, 1.0 / (2.0 * math.cos(math.pi * (2 * i + 1) / (2 * order))),
                0.0, 0.0, 1.0, fs) for i in range(order // 2)]


def iso2631_svf(weighting: str, fs: float, gain_bits: int) -> list[dict]:
    """``filter_design.iso2631_sos`` as SVFs; the high-pass scales its output 2**gain_bits."""
    f3, f4, q4, f5, q5, f6, q6 = fd.ISO2631[weighting]
    q_bw = 1.0 / math.sqrt(2.0)
    rows = [svf(fd.BAND_LOW_HZ, q_bw, 1.0, 0.0, 0.0, fs, gain_bits),
            svf(fd.band_high_hz(fs), q_bw, 0.0, 0.0, 1.0, fs),
            svf(f4, q4, 0.0, f4 / f3, 1.0, fs)]  # a-v transition: 1 + s/w3
    if f5 is not None:
        r = f6 / f5  # upward step: (w5/w6)^2 (1 + s/(Q5 w5) + s^2/w5^2), in s' = s/w6
        g = 1.0 / (r * r)
        rows.append(svf(f6, q6, g * r * r, g * r / q5, g, fs))
    return rows


# Section kinds: which output mix ``M0 (v0 - v2) + M1 v1 + M2 v2`` a section has, so that
# the exact 0 and 1 factors cost no multiply and every multiplied word is below 1 (f >= 15).
LOW = 0        # M = (0, 0, 1):       y = v2
HIGH = 1       # M = (1, -k, 0):      y = (v0 - v2) - v1 - X1 v1, X1 = k - 1
BAND_LOW = 2   # M = (0, 1, 1):       y = v1 + v2
STEP = 3       # M = (1, M1, M2):     y = (v0 - v2) + X1 v1 + X2 v2
IDENTITY = [LOW, 0, 0, 16, 0, 16, 0, 16, 0, 16, 0, 16]  # the twin's padding (see _settle)


def section_kind(m: list[float]) -> tuple[int, float, float]:
    """The kind of an output mix and its two multiplied factors X1, X2."""
    m0, m1, m2 = m

    def one(v: float) -> bool:
        return abs(v - 1.0) < 1e-12

    if m0 == 0.0 and m1 == 0.0 and one(m2):
        return LOW, 0.0, 0.0
    if one(m0) and m2 == 0.0 and -2.0 < m1 <= -1.0:
        return HIGH, -m1 - 1.0, 0.0
    if m0 == 0.0 and one(m1) and one(m2):
        return BAND_LOW, 0.0, 0.0
    if one(m0) and abs(m1) < 1.0 and abs(m2) < 1.0:
        return STEP, m1, m2
    raise ValueError(f"no section kind for the output mix {m!r}")


def section_words(sec: dict) -> list[int]:
    """``[kind, shift, A1, fA1, A2, fA2, A3, fA3, X1, fX1, X2, fX2]``: mcu's layout."""
    a1m, a2, a3, m0, m1, m2 = sec["float"]
    kind, x1, x2 = section_kind([m0, m1, m2])
    out = [kind, sec["shift"]]
    for c in (a1m, a2, a3, x1, x2):
        w = word(c)
        if w[1] < 15:
            raise ValueError(f"coefficient {c!r} >= 1: mcu's multiply takes f >= 15")
        out += w
    return out


def profile(fs_in: int = PROFILE_FS_IN, lsb_per_g: float = PROFILE_LSB_PER_G) -> dict:
    """Every word of the MCU profile for a sensor (fs_in must be 2 x 200 Hz)."""
    if fs_in != 2 * FS_OUT:
        raise ValueError(f"the MCU profile decimates by 2 to {FS_OUT} Hz: fs_in must be "
                         f"{2 * FS_OUT}, got {fs_in!r}")
    if not 1.0 <= lsb_per_g <= 1e6:
        raise ValueError(f"lsb_per_g must be in [1, 1e6], got {lsb_per_g!r}")
    fs = float(FS_OUT)
    taps = halfband_taps(fs_in)
    hb = halfband_words(taps)
    # Q13 counts in (decimated), Q22 g out: gain = g1 2**rot_shift, g1 in [0.5, 1) riding
    # on the rotation words (each then below 1: f >= 15), 2**rot_shift a shift of the
    # rotated sum (left when positive, rounded right when negative).
    gain = 2.0**SIG_FRAC / (lsb_per_g * 2.0**DEC_FRAC)
    rot_shift = math.floor(math.log2(gain)) + 1
    g1 = word(gain / 2.0**rot_shift)
    if g1[1] < 15:
        raise ValueError("the rotation's gain word must be below 1")
    # Decimated counts clamp: 32 g and below 2**28, so three rotation terms sum < 2**30.
    x_limit = min((1 << 28) - 1, int(SIG_LIMIT / gain))
    lp = lowpass_svf(fs)
    wk = iso2631_svf("Wk", fs, W_GAIN_BITS)
    wd = iso2631_svf("Wd", fs, W_GAIN_BITS)
    return {
        "FS_IN": fs_in, "FS_OUT": FS_OUT, "LSB_PER_G": lsb_per_g,
        "HB_WORDS": hb, "HB_LEN": len(taps), "HB_SHIFT": HB_SHIFT,
        "HB_CENTRE_SHIFT": HB_FRAC - 1 - HB_SHIFT,
        "HB_BIAS": (2 * len(hb) * ((1 << HB_SHIFT) - 1)) >> (HB_SHIFT + 1),
        "X_LIMIT": x_limit, "ROT_GAIN": g1, "ROT_SHIFT": rot_shift,
        "SIG_LIMIT": SIG_LIMIT, "STATE_LIMIT": STATE_LIMIT,
        "LP": [section_words(s) for s in lp],
        "WK": [section_words(s) for s in wk],
        "WD": [section_words(s) for s in wd],
        "A_SHIFT": OUT_FRAC - SIG_FRAC, "W_SHIFT": SIG_FRAC + W_GAIN_BITS - OUT_FRAC,
        "_float": {"taps": taps, "gain": gain, "lp": lp, "wk": wk, "wd": wd},
    }


def generate_source(fs_in: int = PROFILE_FS_IN, lsb_per_g: float = PROFILE_LSB_PER_G) -> str:
    """The text of ``mcu_coeffs.py``: plain literals MicroPython loads as they are."""
    p = profile(fs_in, lsb_per_g)
    lines = [
        '"""Coefficient words of the MCU profile: GENERATED by',
        "``python -m liftwatch.signal.mcu_design`` from filter_design (do not edit).",
        "",
        f"Sensor: {fs_in} Hz, {lsb_per_g!r} LSB/g. Words are ``[w, f]`` (value w / 2**f,",
        "|w| < 2**15);",
        "a section is ``[kind, shift, A1, fA1, A2, fA2, A3, fA3, X1, fX1, X2, fX2]``",
        "(kinds: mcu_design.LOW, HIGH, BAND_LOW, STEP).",
        '"""',
        "",
    ]
    for key, val in p.items():
        if key.startswith("_"):
            continue
        if isinstance(val, list) and val and isinstance(val[0], list):
            lines.append(f"{key} = [")
            lines += [f"    {row!r}," for row in val]
            lines.append("]")
        elif len(f"{key} = {val!r}") > 96:
            lines.append(f"{key} = [")
            lines += ["    " + line.strip() for line in
                      textwrap.wrap(", ".join(map(repr, val)) + ",", 90)]
            lines.append("]")
        else:
            lines.append(f"{key} = {val!r}")
    return "\n".join(lines) + "\n"


def coeffs_dict(module: object) -> dict:
    """The profile's words as the dict ``mcu.FrontEnd`` takes, from ``mcu_coeffs``."""
    return {k: getattr(module, k) for k in dir(module) if k.isupper()}


if __name__ == "__main__":
    COEFFS_FILE.write_text(generate_source())
    print(f"wrote {COEFFS_FILE}")
