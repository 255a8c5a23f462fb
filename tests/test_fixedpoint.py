"""Fixed-point kernels: scalar (fixedpoint) and numpy (dsp) paths give identical integers,
each is within 70 dB of its float64 reference, and full-scale input saturates, never wraps.
Also the filter derivations of filter_design against their analog prototypes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal as ss
from dsp_reference import lift_counts, ser_db
from hypothesis import given, settings
from hypothesis import strategies as st
from liftwatch.signal import dsp
from liftwatch.signal import filter_design as fd
from liftwatch.signal import fixedpoint as fp

FS = 200
SIG = st.integers(fp.SIG_MIN, fp.SIG_MAX)
HYP = settings(max_examples=30, deadline=None)


def typical_q24(seconds: float = 20.0, axis: int = 2, seed: int = 0) -> np.ndarray:
    """A lift signal at 200 Hz in Q24 g: trip + vibration + noise (gravity on z)."""
    counts = lift_counts(seconds, fs=FS, seed=seed)[:, axis]
    return counts * (fp.G_ONE // 256)


def split(xs: list, cuts: list[int]) -> list[list]:
    """xs cut at the given (sorted, clipped) positions."""
    pos = sorted({min(max(c, 0), len(xs)) for c in cuts} | {0, len(xs)})
    return [xs[a:b] for a, b in zip(pos[:-1], pos[1:], strict=True)]


FILTERS = {
    "lp10": fd.lowpass_accel_sos(FS),
    "wk": fd.iso2631_sos("Wk", FS),
    "wd": fd.iso2631_sos("Wd", FS),
    "hp04": fd.butterworth_sos(0.4, FS, 2, "high"),
}


# ---------------------------------------------------------------- bit identity


@HYP
@given(st.sampled_from(sorted(FILTERS)), st.integers(1, 8),
       st.lists(SIG, min_size=1, max_size=300), st.lists(st.integers(0, 300), max_size=4),
       st.integers(-(1 << 26), 1 << 26))
def test_lookahead_cascade_scalar_equals_numpy(name: str, log2m: int, xs: list[int],
                                               cuts: list[int], settle: int) -> None:
    specs = fd.lookahead_sos(FILTERS[name], log2m)
    a = fp.LookaheadCascade(specs)
    b = dsp.LookaheadCascade(specs)
    assert a.reset(settle) == b.reset(settle)
    ya = a.process(xs)
    yb = np.concatenate([b.process(np.asarray(p, dtype=np.int64)) for p in split(xs, cuts)])
    assert ya == yb.tolist()


@HYP
@given(st.lists(st.tuples(SIG, SIG, SIG), min_size=1, max_size=200), st.integers(3, 6))
def test_lookahead_per_channel_bank_equals_scalar_per_channel(rows: list, log2m: int) -> None:
    """The chain's bank: different filters side by side in one numpy pass."""
    cols = [fd.lookahead_sos(FILTERS[n], log2m) for n in ("wk", "wd", "lp10")]
    x = np.asarray(rows, dtype=np.int64)
    bank = dsp.LookaheadCascade(cols, per_channel=True)
    bank.reset([1, 2, 3])
    y = bank.process(x)
    for c, specs in enumerate(cols):
        k = fp.LookaheadCascade(specs)
        k.reset(c + 1)
        assert k.process(x[:, c].tolist()) == y[:, c].tolist()


@HYP
@given(st.lists(SIG, min_size=1, max_size=200), st.lists(st.integers(0, 200), max_size=3))
def test_biquad_df1_scalar_equals_numpy(xs: list[int], cuts: list[int]) -> None:
    q = fd.quantize_sos_df1(FILTERS["wk"])
    a = fp.BiquadDF1(q)
    b = dsp.BiquadDF1(q)
    yb = np.concatenate([b.process(p) for p in split(xs, cuts)])
    assert a.process(xs) == yb.tolist()


@HYP
@given(st.sampled_from([200, 400, 800, 1600]), st.floats(0.05, 8.0),
       st.lists(SIG, min_size=1, max_size=400), st.lists(st.integers(0, 400), max_size=4))
def test_fir_decimator_scalar_equals_numpy(fs_in: int, gain: float, xs: list[int],
                                           cuts: list[int]) -> None:
    words, frac = fd.quantize_taps(fd.decimator_taps(fs_in, 200), gain)
    d = fs_in // 200
    a = fp.FirDecimator(words, frac, d)
    b = dsp.FirDecimator(words, frac, d)
    ya: list[int] = []
    parts = split(xs, cuts)
    for p in parts:  # scalar fed in other pieces than numpy: state must carry either way
        ya += a.process(p)
    yb = np.concatenate(  # numpy fed 7 samples at a time, whatever the factor
        [b.process(np.asarray(xs[i:i + 7], dtype=np.int64)) for i in range(0, len(xs), 7)])
    assert ya == yb.tolist()
    assert len(ya) == (len(xs) + d - 1) // d


@HYP
@given(st.lists(st.tuples(st.integers(-(1 << 15), 1 << 15), st.integers(-(1 << 15), 1 << 15),
                          st.integers(-(1 << 15), 1 << 15)), min_size=1, max_size=50),
       st.lists(st.lists(st.integers(-(1 << 15), (1 << 15) - 1), min_size=3, max_size=3),
                min_size=3, max_size=3), st.sampled_from([0, 7, 14]))
def test_rotate_scalar_equals_numpy(rows: list, m: list[list[int]], shift: int) -> None:
    a = fp.rotate_q14([list(r) for r in rows], m, shift)
    b = dsp.rotate_q14(rows, m, shift)
    assert a == b.tolist()
    assert all(fp.SIG_MIN <= v <= fp.SIG_MAX for r in a for v in r)


@HYP
@given(st.lists(SIG, min_size=1, max_size=300), st.integers(0, 40),
       st.sampled_from([0, fp.ACC_MAX - (1 << 35), fp.ACC_MIN + (1 << 35)]))
def test_integrator_scalar_equals_numpy(xs: list[int], shift: int, acc0: int) -> None:
    a = fp.Integrator(shift, acc0)
    b = dsp.Integrator(shift, acc0)
    assert a.process(xs) == b.process(xs).tolist()
    assert a.acc == b.acc


@HYP
@given(st.lists(st.tuples(st.integers(-(1 << 27), 1 << 27), st.booleans()), min_size=1,
                max_size=300), st.integers(1, 12), st.integers(-(1 << 24), 1 << 24))
def test_rest_tracker_scalar_equals_numpy(rows: list, shift: int, init: int) -> None:
    xs = [r[0] for r in rows]
    hold = [r[1] for r in rows]
    a = fp.RestTracker(shift, init)
    b = dsp.RestTracker(shift, init)
    ra, ea = a.process(xs, hold)
    rb, eb = b.process(np.asarray(xs), np.asarray(hold))
    assert ra == rb.tolist() and ea == eb.tolist()


@HYP
@given(st.lists(SIG, min_size=2, max_size=500), st.integers(1, 1600))
def test_lsq_slope_scalar_equals_numpy(ys: list[int], fs: int) -> None:
    assert fp.lsq_slope(ys, fs) == dsp.lsq_slope(np.asarray(ys), fs)


def test_kernels_identical_on_an_example_trace() -> None:
    """Each kernel on the z axis of the normal_day example, its first trip's last 15 s
    (the braking among them): both paths agree."""
    from dsp_reference import first_trip_end, trace_counts

    counts, fs, _lsb = trace_counts("normal_day.jsonl.gz", first_trip_end("normal_day"))
    z = (counts[-6000:, 2] * fp.Q14_ONE).tolist()  # Q14 counts, the decimator's input
    words, frac = fd.quantize_taps(fd.decimator_taps(fs, 200), 4.0)
    dz = fp.FirDecimator(words, frac, fs // 200).process(z)
    assert dz == dsp.FirDecimator(words, frac, fs // 200).process(np.asarray(z)).tolist()
    for name in ("lp10", "wk", "wd"):
        specs = fd.lookahead_sos(FILTERS[name], 8)
        assert fp.LookaheadCascade(specs).process(dz) == \
            dsp.LookaheadCascade(specs).process(np.asarray(dz)).tolist()
    hold = [i % 500 > 300 for i in range(len(dz))]
    assert fp.RestTracker(9).process(dz, hold)[1] == \
        dsp.RestTracker(9).process(dz, hold)[1].tolist()
    assert fp.Integrator(8).process(dz) == dsp.Integrator(8).process(dz).tolist()
    assert fp.lsq_slope(dz, 200) == dsp.lsq_slope(np.asarray(dz), 200)


# ---------------------------------------------------------------- accuracy vs float


@pytest.mark.parametrize("name", sorted(FILTERS))
@pytest.mark.parametrize("axis", [0, 2])
def test_iir_kernels_within_70db_of_float(name: str, axis: int) -> None:
    """Look-ahead and DF1 forms against scipy sosfilt with the unquantised coefficients.

    The weightings get the chain's 5 extra fraction bits (``with_gain_bits``); the 10 Hz
    low-pass runs at plain Q24 g, as in the chain.
    """
    x = typical_q24(axis=axis)
    sos = FILTERS[name]
    bits = 0 if name == "lp10" else 5
    ref = ss.sosfilt(np.asarray(sos), x.astype(np.float64),
                     zi=ss.sosfilt_zi(np.asarray(sos)) * x[0])[0]
    casc = dsp.LookaheadCascade(fd.lookahead_sos(fd.with_gain_bits(sos, bits), 8))
    casc.reset(int(x[0]))
    got = dsp.shift_round(casc.process(x), bits)
    assert ser_db(ref, got) >= 70.0
    df1 = fp.BiquadDF1(fd.quantize_sos_df1(fd.with_gain_bits(sos, bits)))
    got1 = fp.shift_round(df1.process(x.tolist()), bits)
    # DF1 starts from zero state: compare once its start transient has died out
    assert ser_db(ref[3000:], np.asarray(got1[3000:])) >= 70.0


@pytest.mark.parametrize("fs_in", [400, 800, 1600])
def test_fir_decimator_within_70db_of_float(fs_in: int) -> None:
    counts = lift_counts(10.0, fs=fs_in)[:, 2] * fp.Q14_ONE
    gain = fp.G_ONE / (256.0 * fp.Q14_ONE)
    taps = fd.decimator_taps(fs_in, 200)
    words, frac = fd.quantize_taps(taps, gain)
    got = dsp.FirDecimator(words, frac, fs_in // 200).process(counts)
    ref = np.convolve(counts.astype(np.float64), np.asarray(taps) * gain)[: len(counts)]
    assert ser_db(ref[:: fs_in // 200], got) >= 70.0


def test_integrator_and_tracker_against_float() -> None:
    x = typical_q24(axis=2) - fp.G_ONE
    got = dsp.Integrator(4).process(x)
    ref = np.cumsum(x.astype(np.float64)) / 16.0
    assert ser_db(ref, got) >= 70.0
    # a constant is tracked to within an LSB; held samples do not move it
    tr = dsp.RestTracker(6, 0)
    rest, res = tr.process(np.full(3000, 123456), np.zeros(3000, dtype=bool))
    assert abs(int(rest[-1]) - 123456) <= 1 and abs(int(res[-1])) <= 1
    rest2, _ = tr.process(np.full(500, -999999), np.ones(500, dtype=bool))
    assert (rest2 == rest[-1]).all()


def test_lsq_slope_is_exact_on_a_line_and_matches_polyfit() -> None:
    line = [1000 + 37 * i for i in range(200)]
    assert fp.lsq_slope(line, 200) == 37 * 200
    rng = np.random.default_rng(3)
    y = (np.arange(150) * 5000.0 + rng.normal(0, 20000.0, 150)).round().astype(np.int64)
    ref = np.polyfit(np.arange(150) / 400.0, y.astype(np.float64), 1)[0]
    assert abs(dsp.lsq_slope(y, 400) - ref) <= 0.5 + 1e-9 * abs(ref)
    with pytest.raises(ValueError, match="at least 2"):
        fp.lsq_slope([5], 200)
    with pytest.raises(ValueError, match="at least 2"):
        dsp.lsq_slope(np.asarray([5]), 200)


# ---------------------------------------------------------------- saturation


def full_scale_square(n: int, period: int) -> list[int]:
    return [fp.SIG_MAX if (i // period) % 2 == 0 else fp.SIG_MIN for i in range(n)]


@pytest.mark.parametrize("name", ["hp04", "wk", "lp10"])
def test_iir_saturates_on_full_scale_instead_of_wrapping(name: str) -> None:
    """A full-scale square wave: the float output overshoots the range (the high-pass
    doubles each step); the fixed point clamps there and keeps the sign."""
    x = full_scale_square(2000, 150)
    specs = fd.lookahead_sos(FILTERS[name], 6)
    ya = fp.LookaheadCascade(specs).process(x)
    yb = dsp.LookaheadCascade(specs).process(np.asarray(x))
    assert ya == yb.tolist()
    y = np.asarray(ya)
    assert y.max() <= fp.SIG_MAX and y.min() >= fp.SIG_MIN
    ref = ss.sosfilt(np.asarray(FILTERS[name]), np.asarray(x, dtype=np.float64))
    big = np.abs(ref) > 2 ** 28
    assert big.any()
    assert (np.sign(y[big]) == np.sign(ref[big])).all()  # a wrap would flip the sign
    if name == "hp04":  # the steps overshoot to twice full scale: the output hits the rails
        assert (ref > fp.SIG_MAX * 1.5).any() and (ref < fp.SIG_MIN * 1.5).any()
        assert y.max() == fp.SIG_MAX and y.min() == fp.SIG_MIN


def test_other_kernels_saturate() -> None:
    big = [fp.SIG_MAX] * 50 + [fp.SIG_MIN] * 50
    words, frac = fd.quantize_taps(fd.decimator_taps(400, 200), 4.0)  # gain 4: 4x overflow
    for y in (fp.FirDecimator(words, frac, 2).process(big),
              dsp.FirDecimator(words, frac, 2).process(np.asarray(big)).tolist()):
        assert max(y) == fp.SIG_MAX and min(y) == fp.SIG_MIN
    m = [[(1 << 15) - 1] * 3] * 3
    rot = dsp.rotate_q14([[1 << 15] * 3, [-(1 << 15)] * 3], m, 0)
    assert rot.tolist() == [[fp.SIG_MAX] * 3, [fp.SIG_MIN] * 3]
    integ = fp.Integrator(0, fp.ACC_MAX - 5)
    out = integ.process([fp.SIG_MAX] * 3)
    assert integ.acc == fp.ACC_MAX and out == [fp.SIG_MAX] * 3
    nd = dsp.Integrator(62, fp.ACC_MIN + 5)
    nd.process([fp.SIG_MIN] * 3)
    assert nd.acc == fp.ACC_MIN


# ---------------------------------------------------------------- filter derivations


def iso_analog(weighting: str, f: np.ndarray) -> np.ndarray:
    """ISO 2631-1 Annex A weighting, analog, straight from its formulas."""
    f3, f4, q4, f5, q5, f6, q6 = fd.ISO2631[weighting]
    s = 2j * np.pi * f
    w1, w2, w3, w4 = (2 * np.pi * v for v in (0.4, 100.0, f3, f4))
    h = 1 / (1 + math.sqrt(2) * w1 / s + (w1 / s) ** 2)
    h = h / (1 + math.sqrt(2) * s / w2 + (s / w2) ** 2)
    h = h * (1 + s / w3) / (1 + s / (q4 * w4) + (s / w4) ** 2)
    if f5 is not None:
        w5, w6 = 2 * np.pi * f5, 2 * np.pi * f6
        h = h * (1 + s / (q5 * w5) + (s / w5) ** 2) / (1 + s / (q6 * w6) + (s / w6) ** 2)
        h = h * (w5 / w6) ** 2
    return h


@pytest.mark.parametrize("weighting", ["Wk", "Wd"])
def test_weightings_follow_iso_2631(weighting: str) -> None:
    f = np.array([0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 12.5, 16.0])
    h = ss.sosfreqz(np.asarray(fd.iso2631_sos(weighting, FS)), worN=f, fs=FS)[1]
    err_db = 20 * np.log10(np.abs(h) / np.abs(iso_analog(weighting, f)))
    assert np.abs(err_db).max() < 0.2
    # up to 31.5 Hz within 1 dB (the 100 Hz band limit is clipped to 90 Hz at 200 Hz)
    h2 = ss.sosfreqz(np.asarray(fd.iso2631_sos(weighting, FS)), worN=[31.5], fs=FS)[1]
    assert abs(20 * np.log10(abs(h2[0]) / abs(iso_analog(weighting, np.array([31.5]))[0]))) < 1
    # ISO 2631-1 Table 3 spot values (x1000): Wk 1 Hz 482, 8 Hz 1036; Wd 1 Hz 1011, 2 Hz 890
    spot = {"Wk": {1.0: 0.482, 8.0: 1.036}, "Wd": {1.0: 1.011, 2.0: 0.890}}[weighting]
    for fr, val in spot.items():
        g = abs(fd.sos_response(fd.iso2631_sos(weighting, FS), fr, FS))
        assert abs(g - val) < 0.01 * val


@pytest.mark.parametrize(("fc", "order", "kind"), [(10.0, 4, "low"), (0.4, 2, "high"),
                                                    (90.0, 2, "low"), (3.0, 6, "high")])
def test_butterworth_equals_scipy(fc: float, order: int, kind: str) -> None:
    f = np.linspace(0.05, 99.0, 300)
    ours = ss.sosfreqz(np.asarray(fd.butterworth_sos(fc, FS, order, kind)), worN=f, fs=FS)[1]
    ref = ss.sosfreqz(ss.butter(order, fc, btype=kind, fs=FS, output="sos"), worN=f, fs=FS)[1]
    assert np.abs(ours - ref).max() < 1e-9


@pytest.mark.parametrize("fs_in", [400, 800, 1600])
def test_decimator_meets_its_band_spec(fs_in: int) -> None:
    taps = fd.decimator_taps(fs_in, 200)
    assert len(taps) % 2 == 1 and abs(sum(taps) - 1.0) < 1e-12
    w, h = ss.freqz(taps, worN=np.linspace(0, fs_in / 2, 4000), fs=fs_in)
    db = 20 * np.log10(np.maximum(np.abs(h), 1e-12))
    assert np.abs(db[w <= 80.0]).max() < 0.01
    assert db[w >= 120.0].max() < -78.0


def test_lookahead_form_has_the_biquads_response() -> None:
    """B(z) P(z) / D_M(z) rebuilt from the quantised words equals the section's B/D."""
    for row in FILTERS["wk"] + FILTERS["lp10"]:
        bw, bfrac, stages, r1, r2, m = fd.lookahead_section(row, 6)
        for f in (0.3, 2.0, 10.0, 60.0):
            z1 = np.exp(-2j * np.pi * f / FS)
            num = sum(w * z1 ** i for i, w in enumerate(bw)) / 2.0 ** bfrac
            for k, c1, c2 in stages:
                num *= 1 + (c1 * z1 ** k + c2 * z1 ** (2 * k)) / 2.0 ** 30
            den = 1 - (r1 * z1 ** m + r2 * z1 ** (2 * m)) / 2.0 ** 30
            want = fd.sos_response([row], f, FS)
            assert abs(num / den - want) < 1e-6 * max(1.0, abs(want))


def test_design_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="even"):
        fd.butterworth_sos(10.0, FS, 3, "low")
    with pytest.raises(ValueError, match="cutoff"):
        fd.butterworth_sos(150.0, FS, 2, "low")
    with pytest.raises(ValueError, match="weighting"):
        fd.iso2631_sos("Wz", FS)
    with pytest.raises(ValueError, match="32 bits"):
        fd.quantize([3.0], 30)
    with pytest.raises(ValueError, match="shift"):
        fp.tracker_spec(0, 4)
    with pytest.raises(ValueError, match="shift"):
        dsp.Integrator(63)
    with pytest.raises(ValueError, match="one flag per sample"):
        dsp.RestTracker(4).process(np.zeros(3), np.zeros(2, dtype=bool))
